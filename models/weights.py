"""Loading local checkpoints into models: the one helper every architecture (2D and 3D) uses.

    from models.weights import load_weights
    report = load_weights(model, "resnet18.pth", head="fc", first_conv="conv1")

Reading (`read_state_dict`):
- `.safetensors` files are read with safetensors; anything else with `torch.load(weights_only=True)`
  (no pickled code is ever run).
- Training checkpoints are unwrapped like timm's `load_state_dict` does, then a little further:
  the first of `state_dict_ema`, `model_ema`, `state_dict`, `model`, `model_state_dict`, `net` that
  holds a mapping is taken (`net` is what MedMNIST's experiments save).
- `module.` (DataParallel/DDP) and `_orig_mod.` (torch.compile) key prefixes are stripped.

Loading (`load_weights`):
- head tensors (keys under the `head` prefixes) are kept when their shape fits, dropped (left as
  the module initialised them) when it does not, e.g. a 1000-class ImageNet head into a 2-class model;
- the first conv (`first_conv` prefixes) is adapted when only its input channels differ, the way
  timm does (1 channel: sum over the file's channels; otherwise repeat and rescale), for 2D and 3D
  kernels alike;
- any other shape mismatch, or too few backbone tensors found in the file (`min_loaded`), raises
  `ModelError` naming a few missing / unexpected keys; nothing is loaded in that case.

Only torch and safetensors are imported here (never `vlm`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from models.errors import ModelError

__all__ = ["LoadReport", "read_state_dict", "read_shapes", "read_tensor", "load_weights"]

#: Checkpoint keys that wrap the actual state dict, in the order they are looked for.
WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "model_state_dict", "net")
_STRIP_PREFIXES = ("module.", "_orig_mod.")
_IGNORED_SUFFIXES = ("num_batches_tracked",)  # BatchNorm counters: absent from old checkpoints


@dataclass
class LoadReport:
    """What `load_weights` did. Keys are the module's state-dict keys."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the module, not taken from the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the module
    reinitialised: list[str] = field(default_factory=list)  # head tensors whose shape did not fit
    adapted: list[str] = field(default_factory=list)  # first-conv tensors adapted to in_chans


def _few(keys: Iterable[str], n: int = 3) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:n])
    return shown + (f" (+{len(keys) - n} more)" if len(keys) > n else "") if keys else "none"


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:200]}" if text else type(err).__name__


def _clean_key(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _STRIP_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key


def _unwrap(obj: object, source: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise ModelError(f"Weights file {source} holds a {type(obj).__name__}, not a state dict.")
    tensors = {_clean_key(str(k)): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelError(f"Weights file {source} holds no tensors (top-level keys: {_few(map(str, obj))}).")
    return tensors


def _check_path(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelError(f"Weights file not found: {p}")
    return p


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a local checkpoint into a flat `{key: tensor}` dict on the CPU (see module doc)."""
    p = _check_path(path)
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(p), device="cpu")
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickled code refused by weights_only, ...
        kind = "safetensors" if p.suffix == ".safetensors" else "torch"
        raise ModelError(f"Cannot read weights file {p} as a {kind} checkpoint ({_one_line(e)}).") from e
    return _unwrap(obj, str(p))


def read_tensor(path: str | Path, key: str) -> torch.Tensor | None:
    """One tensor of a checkpoint by its (cleaned) key, None if absent, reading as little as the format
    allows: the header and that tensor of a `.safetensors` file, a memory-mapped `torch.load` otherwise."""
    p = _check_path(path)
    if p.suffix == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(p), framework="pt") as f:
                name = next((k for k in f.keys() if _clean_key(k) == key), None)
                return f.get_tensor(name) if name is not None else None
        except Exception as e:
            raise ModelError(f"Cannot read weights file {p} ({_one_line(e)}).") from e
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip checkpoint (no mmap): read it whole
        return read_state_dict(p).get(key)
    return _unwrap(obj, str(p)).get(key)


def read_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a checkpoint; reads only the header of a `.safetensors` file."""
    p = _check_path(path)
    if p.suffix == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(p), framework="pt") as f:
                return {_clean_key(k): tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as e:
            raise ModelError(f"Cannot read weights file {p} ({_one_line(e)}).") from e
    return {k: tuple(v.shape) for k, v in read_state_dict(p).items()}


def _as_prefixes(names: str | Iterable[str] | None) -> tuple[str, ...]:
    if not names:
        return ()
    return (names,) if isinstance(names, str) else tuple(names)


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _adapt_input_channels(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """timm's `adapt_input_conv` for kernels of any rank (O, I, *k): 1 channel sums the file's
    channels; more channels repeat them and rescale by base/in_chans so activations keep their size."""
    base = weight.shape[1]
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeat = math.ceil(in_chans / base)
    reps = [1, repeat] + [1] * (weight.ndim - 2)
    return weight.repeat(*reps)[:, :in_chans] * (base / in_chans)


def load_weights(
    module: nn.Module,
    weights: str | Path | Mapping[str, torch.Tensor],
    *,
    head: str | Iterable[str] | None = None,
    first_conv: str | Iterable[str] | None = None,
    min_loaded: float = 1.0,
    name: str | None = None,
) -> LoadReport:
    """Load a local checkpoint (path or state dict) into `module`, in place.

    Args:
        module: the freshly built model (its head already sized for the task).
        weights: a `.safetensors` / `.pt` / `.pth` / `.bin` path, or a state dict already read
            (e.g. 2D weights inflated to 3D by the caller).
        head: module-name prefixes of the classifier (`"fc"`, `("classifier.6",)`); their tensors
            are loaded when the shapes fit and re-initialised (left as built) otherwise.
        first_conv: module-name prefixes of input convolutions whose `.weight` is adapted when only
            the input-channel dimension differs (`in_chans=1` models from RGB weights).
        min_loaded: fraction of the module's non-head tensors (BatchNorm counters aside) that must
            come from the file; 1.0 (default) requires the whole backbone.
        name: the model's name for messages.

    Returns:
        A `LoadReport` (loaded / missing / unexpected / reinitialised / adapted keys). Unexpected
        keys alone only warn.

    Raises:
        ModelError: unreadable file, shape mismatch outside the head, or too little of the backbone
            found in the file. The module is left untouched in that case.
    """
    if isinstance(weights, Mapping):
        source = "<state dict>"
        state = _unwrap(weights, source)
    else:
        source = str(weights)
        state = read_state_dict(weights)
    label = f"'{name}'" if name else type(module).__name__
    heads, convs = _as_prefixes(head), _as_prefixes(first_conv)
    target = module.state_dict()
    report = LoadReport(source)

    to_load: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    for key, value in state.items():
        if key not in target:
            report.unexpected.append(key)
            continue
        want = target[key].shape
        if value.shape != want and key.endswith(".weight") and _under(key[: -len(".weight")], convs) \
                and value.ndim == len(want) and value.ndim >= 3 and value.shape[0] == want[0] \
                and value.shape[2:] == want[2:]:
            value = _adapt_input_channels(value, want[1]).to(target[key].dtype)
            report.adapted.append(key)
        if value.shape != want:
            if _under(key, heads):
                report.reinitialised.append(key)
            else:
                mismatched.append(f"{key} (file {tuple(value.shape)}, model {tuple(want)})")
            continue
        to_load[key] = value

    if mismatched:
        raise ModelError(f"Weights {source} do not fit {label}: size mismatch for {_few(mismatched)}.")

    backbone = [k for k in target if not _under(k, heads) and not k.endswith(_IGNORED_SUFFIXES)]
    report.missing = [k for k in target if k not in to_load]
    found = [k for k in backbone if k in to_load]
    if not found or len(found) < min_loaded * len(backbone):
        absent = [k for k in backbone if k not in to_load]
        raise ModelError(
            f"Weights {source} do not fit {label}: {len(found)}/{len(backbone)} backbone tensors found; "
            f"missing e.g. {_few(absent)}; unexpected e.g. {_few(report.unexpected)}."
        )

    module.load_state_dict(to_load, strict=False)
    report.loaded = list(to_load)
    if report.unexpected:
        warnings.warn(f"Weights {source}: {len(report.unexpected)} keys not used by {label} "
                      f"({_few(report.unexpected)}).", stacklevel=2)
    return report


def weights_or_scratch(model: nn.Module, name: str, weights, pretrained: bool, *, head: str, first_conv: str) -> nn.Module:
    """For architectures without published weights: load a local checkpoint, or refuse `pretrained`."""
    if weights is not None:
        load_weights(model, weights, head=head, first_conv=first_conv, name=name)
    elif pretrained:
        raise ModelError(f"'{name}' has no published pretrained weights; pass a checkpoint with --weights FILE "
                         f"or train from scratch.")
    return model
