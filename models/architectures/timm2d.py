"""2D transfer backbones: every timm model (the registry's fallback) and torchvision-only nets.

Any timm 2D model name works through `create_model`:

    create_model("resnet50", num_classes=2, in_chans=1)                       # random init
    create_model("tf_efficientnet_lite0", 2, weights="lite0.safetensors")     # offline ImageNet
    create_model("resnet18", 2, pretrained=True)                              # timm's own download

The head is sized to `num_classes` and the input convolution to `in_chans` (timm's `in_chans`,
which also adapts pretrained stems: 1 channel sums the RGB filters). Extra keyword arguments go to
the timm model (`drop_rate=0.2`, `img_size=112`, ...); ones it does not take raise `ModelError`.

Weights (`weights=FILE`): the file goes through timm's own pretrained pipeline
(`pretrained_cfg_overlay=dict(file=FILE)` for `.safetensors`, which timm reads by extension; torch
pickles are read with `models.weights.read_state_dict`, which unwraps more checkpoint layouts than
timm's `file` loader, e.g. MedMNIST's `{"net": ...}`, and passed as `dict(state_dict=...)`); timm then
runs the model's checkpoint filter and adapts the stem to `in_chans`. We build the model
with the head the file has, so timm loads *strictly*: any key that does not fit raises `ModelError`
(timm alone would load non-strictly and only log when the class count differs). The head is then
kept when it already has `num_classes` outputs, otherwise re-initialised with `reset_classifier`.

`pretrained=True` without a file tries timm's download (Hugging Face hub, else the legacy URL);
offline, that fails with a `ModelError` naming the file to fetch and pass as `--weights FILE`.

Torchvision-only architectures from the MedMNIST studies (`alexnet`, `squeezenet1_0`,
`squeezenet1_1`) are registered here too: torchvision's model with `num_classes` outputs and its
first conv rebuilt for `in_chans != 3`; `weights=FILE` loads a torchvision state dict (for example
`alexnet-owt-7be5be79.pth`) with the stem adapted and the 1000-class head dropped.

Both kinds carry a timm-style `pretrained_cfg` (input size, mean, std, ...), which
`models.inputs.input_size` / `fixed_input_size` read.
"""

from __future__ import annotations

import re
from pathlib import Path

import timm
import torch.nn as nn

from models.errors import ModelError
from models.options import unexpected_option
from models.registry import register_model, set_fallback
from models.weights import _few, _one_line, load_weights, read_shapes, read_state_dict

__all__ = ["TORCHVISION_ONLY", "create_timm_model", "is_known"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: torchvision architectures timm does not have: name -> (weights enum, first conv, classifier, min side).
_TORCHVISION = {
    "alexnet": ("AlexNet_Weights", "features.0", "classifier.6", 63),
    "squeezenet1_0": ("SqueezeNet1_0_Weights", "features.0", "classifier.1", 21),
    "squeezenet1_1": ("SqueezeNet1_1_Weights", "features.0", "classifier.1", 17),
}
TORCHVISION_ONLY = tuple(_TORCHVISION)


def is_known(name: str) -> bool:
    """True for names the fallback builds: timm models (with or without `.tag`) and torchvision-only ones."""
    return name in _TORCHVISION or timm.is_model(name)


# --- timm fallback ----------------------------------------------------------------------------------


def _download_hint(name: str) -> str:
    cfg = timm.models.get_pretrained_cfg(name)
    places = []
    if cfg is not None and cfg.hf_hub_id:
        filename = cfg.hf_hub_filename or "model.safetensors"
        places.append(f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/{filename}")
    if cfg is not None and isinstance(cfg.url, str) and cfg.url:
        places.append(cfg.url)
    if not places:
        return f"timm has no pretrained weights for '{name}'; pass a local checkpoint with --weights FILE."
    return f"Download {' or '.join(places)} and pass it with --weights FILE."


def _load_error(name: str, source: str, err: RuntimeError) -> ModelError:
    """Condense torch's `load_state_dict` error into one line naming a few keys."""
    msg = str(err)
    parts = []
    for label in ("Missing", "Unexpected"):
        m = re.search(label + r" key\(s\) in state_dict: ([^\n]*)", msg)
        if m:
            keys = re.findall(r'"([^"]+)"', m.group(1))
            parts.append(f"{label.lower()} {_few(keys)}")
    sizes = re.findall(r"size mismatch for ([^:]+): copying a param with shape torch\.Size\((\[[^\]]*\])\) "
                       r"from checkpoint, the shape in current model is torch\.Size\((\[[^\]]*\])\)", msg)
    if sizes:
        parts.append("size mismatch for " + _few([f"{k} (file {a}, model {b})" for k, a, b in sizes]))
    detail = "; ".join(parts) if parts else _one_line(err)
    return ModelError(f"Weights {source} do not fit '{name}': {detail}.")


def _head_key(name: str) -> str:
    cfg = timm.models.get_pretrained_cfg(name)
    classifier = cfg.classifier if cfg is not None else None
    if not classifier:
        raise ModelError(f"timm does not say where the head of '{name}' is; it cannot take --weights here.")
    return (classifier if isinstance(classifier, str) else classifier[0]) + ".weight"


def _timm_from_file(name: str, num_classes: int, in_chans: int, path: Path, kwargs: dict) -> nn.Module:
    head = _head_key(name)
    if path.suffix == ".safetensors":  # timm reads it itself: only the header is read here
        rows = (read_shapes(path).get(head) or (0,))[0]
        source = dict(file=str(path))
    else:  # torch pickles: our reader, so every architecture unwraps checkpoints the same way
        state = read_state_dict(path)
        rows = state[head].shape[0] if head in state else 0
        source = dict(state_dict=state)
    try:
        # Built with the file's own head (0 = none) so that timm loads strictly.
        model = timm.create_model(
            name, pretrained=True, num_classes=rows, in_chans=in_chans,
            pretrained_cfg_overlay=dict(source, num_classes=rows, label_offset=0), **kwargs,
        )
    except TypeError as e:
        raise unexpected_option(name, kwargs, e) or e
    except RuntimeError as e:  # load_state_dict: missing / unexpected / size mismatch
        raise _load_error(name, str(path), e) from e
    model.pretrained_cfg.pop("state_dict", None)  # do not keep a copy of the weights around
    model.pretrained_cfg["file"] = str(path)
    if rows != num_classes:
        model.reset_classifier(num_classes)
    return model


def create_timm_model(
    name: str,
    num_classes: int,
    *,
    in_chans: int = 3,
    pretrained: bool = False,
    weights: str | Path | None = None,
    **kwargs,
) -> nn.Module:
    """Any timm 2D model with a `num_classes` head and `in_chans` inputs (see module doc)."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ModelError(f"Weights file not found: {path}")
        return _timm_from_file(name, num_classes, in_chans, path, kwargs)
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs)
    except TypeError as e:
        raise unexpected_option(name, kwargs, e) or e
    except Exception as e:
        if not pretrained:
            raise
        # Offline: huggingface_hub's LocalEntryNotFoundError, urllib's URLError, ... or no weights at all.
        raise ModelError(f"Could not get pretrained weights for '{name}' ({_one_line(e)}). "
                         f"{_download_hint(name)}") from e


set_fallback(create_timm_model, is_known)


# --- torchvision-only architectures ---------------------------------------------------------------


def _torchvision_factory(arch: str):
    enum_name, first_conv, classifier, min_side = _TORCHVISION[arch]

    def factory(num_classes: int, *, in_chans: int = 3, pretrained: bool = False, weights=None, **kwargs) -> nn.Module:
        import torchvision.models as tvm

        try:
            model = getattr(tvm, arch)(weights=None, num_classes=num_classes, **kwargs)
        except TypeError as e:
            raise unexpected_option(arch, kwargs, e) or e
        if in_chans != 3:
            old = model.features[0]
            model.features[0] = nn.Conv2d(in_chans, old.out_channels, old.kernel_size, old.stride, old.padding)
        weights_enum = getattr(tvm, enum_name).IMAGENET1K_V1
        model.pretrained_cfg = dict(
            architecture=arch, source="torchvision", url=weights_enum.url, num_classes=num_classes,
            input_size=(in_chans, 224, 224), min_input_size=(in_chans, min_side, min_side),
            interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD,
            first_conv=first_conv, classifier=classifier,
        )
        if weights is not None:
            load_weights(model, weights, head=classifier, first_conv=first_conv, name=arch)
            model.pretrained_cfg["file"] = str(weights)
        elif pretrained:
            try:
                state = weights_enum.get_state_dict(progress=False)
            except Exception as e:
                raise ModelError(f"Could not download torchvision weights for '{arch}' ({_one_line(e)}). "
                                 f"Download {weights_enum.url} and pass it with --weights FILE.") from e
            load_weights(model, state, head=classifier, first_conv=first_conv, name=arch)
        return model

    return factory


for _arch in _TORCHVISION:
    register_model(_arch, dims="2d", description=f"torchvision {_arch} (ImageNet weights: --weights FILE)")(
        _torchvision_factory(_arch))
