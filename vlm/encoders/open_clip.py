"""The open_clip backend: built-in architectures (with pretrained tags), `hf-hub:` repos and `local-dir:` folders.

open_clip is imported inside the functions that need it. A model is always built without weights (no
hub access) and its checkpoint loaded here, so that a file that does not fit gets a clear error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn as nn

from vlm.encoders.base import (
    RANDOM_INIT,
    TEXT_BATCH,
    Backend,
    Encoder,
    EncoderAlias,
    per_channel,
    register_backend,
    square_size,
    unknown_model_message,
)
from vlm.encoders.checkpoints import mismatch_message, read_weights, weights_file_id
from vlm.encoders.hub import (
    OPEN_CLIP_CONFIG,
    TEXT_SUBDIR,
    fetch_open_clip_hub,
    fetch_tag_weights,
    localize_text_config,
    offline_reason,
)
from vlm.errors import VlmError, exception_summary
from vlm.preprocess import Preprocess


class OpenClipEncoder(Encoder):
    """An open_clip CLIP model: `encode_image` / `encode_text` with its own tokenizer."""

    backend = "open_clip"

    def __init__(self, model: nn.Module, tokenizer: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.tokenizer = tokenizer

    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        texts = list(texts)
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), TEXT_BATCH):
                tokens = self.tokenizer(texts[i:i + TEXT_BATCH]).to(self.device)
                out.append(self.model.encode_text(tokens).float())
        return torch.cat(out) if out else torch.empty(0, self.embed_dim, device=self.device)

    def image_tower(self) -> nn.Module:
        return self.model.visual


# ----------------------------------------------------------------------------- names
def _architectures() -> list[str]:
    import open_clip

    return open_clip.list_models()


def _match_name(raw: str) -> str | None:
    """`hf-hub:`, `local-dir:` or a built-in architecture (`ViT-B-32`, `ViT-B/32`, `ViT-B-32:TAG`)."""
    if raw.startswith(("hf-hub:", "local-dir:")):
        return raw
    models = _architectures()
    arch = raw.split(":", 1)[0]
    return raw if arch in models or arch.replace("/", "-") in models else None


def _match_folder(raw: str) -> str | None:
    """A local folder with open_clip_config.json, as `local-dir:FOLDER`."""
    path = Path(raw).expanduser()
    return f"local-dir:{path}" if path.is_dir() and (path / OPEN_CLIP_CONFIG).is_file() else None


def _weights_as_tag(target: str, weights: str) -> str | None:
    """`--model ViT-B-32 --weights openai` means the pretrained tag, when no such file exists."""
    if target.startswith(("hf-hub:", "local-dir:")):
        return None
    import open_clip

    arch, _, tag = target.partition(":")
    if not tag and weights in open_clip.list_pretrained_tags_by_model(arch.replace("/", "-")):
        return f"{arch}:{weights}"
    return None


# ----------------------------------------------------------------------------- loading
def _folder_model_cfg(folder: Path) -> dict[str, Any]:
    """The `model_cfg` of an hf-hub snapshot or local-dir folder's open_clip_config.json."""
    config_file = folder / OPEN_CLIP_CONFIG
    if not config_file.is_file():
        raise VlmError(f"{folder} has no {OPEN_CLIP_CONFIG}: a local-dir: folder needs {OPEN_CLIP_CONFIG} and "
                       f"open_clip_pytorch_model.bin (or open_clip_model.safetensors).")
    try:
        return json.loads(config_file.read_text())["model_cfg"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise VlmError(f"{config_file} is not an open_clip config with a 'model_cfg' entry "
                       f"({exception_summary(exc)}).") from None


@dataclass
class _Plan:
    """What to build and load for one target: open_clip's model name and kwargs, checkpoint and ids."""

    create_name: str
    enc_id: str
    ckpt: Path | None
    weights_id: str
    model_cfg: dict[str, Any]
    create_kwargs: dict[str, Any] = field(default_factory=dict)
    text_cfg: dict[str, Any] | None = None  # an HF text tower's (localised) text_cfg, for its tokenizer


def _plan_folder(schema: str, ident: str, weights: Path | None, alias: EncoderAlias | None) -> _Plan:
    """`hf-hub:ORG/REPO` (from the HF cache or the hub) or `local-dir:FOLDER`."""
    from open_clip.factory import _find_checkpoint_in_dir

    ckpt, weights_id = weights, weights_file_id(weights) if weights else RANDOM_INIT
    if schema == "hf-hub":
        folder, hub_weights = fetch_open_clip_hub(ident, alias.text_model if alias else None)
        rev = folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) else ""
        enc_id = f"open_clip:hf-hub:{ident}"
        if ckpt is None:
            ckpt, weights_id = hub_weights, f"hf-hub:{ident}" + (f"@{rev[:12]}" if rev else "")
    else:
        folder = Path(ident).expanduser()
        if not folder.is_dir():
            raise VlmError(f"local-dir:{folder}: folder not found.")
        enc_id = f"open_clip:local-dir:{folder.resolve().name}"
    model_cfg = _folder_model_cfg(folder)
    if ckpt is None:
        found = _find_checkpoint_in_dir(folder)
        if not found:
            raise VlmError(f"No weights in {folder}: put open_clip_pytorch_model.bin or open_clip_model.safetensors "
                           f"(the CLIP checkpoint) next to {OPEN_CLIP_CONFIG}, or pass --weights FILE.")
        ckpt = Path(found)
        weights_id = weights_file_id(ckpt)
    text_cfg = localize_text_config(model_cfg.get("text_cfg", {}), folder, required=schema == "local-dir")
    if text_cfg.get("hf_model_name"):
        text_cfg["hf_model_pretrained"] = False
    return _Plan(f"local-dir:{folder}", enc_id, ckpt, weights_id, model_cfg, {"text_cfg": text_cfg}, text_cfg)


def _plan_architecture(ident: str, weights: Path | None) -> _Plan:
    """A built-in architecture, `ARCH` or `ARCH:TAG` (the tag's weights unless `weights` is given)."""
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    arch, _, tag = ident.partition(":")
    arch = arch.replace("/", "-")
    if arch not in open_clip.list_models():
        raise VlmError(unknown_model_message(ident))
    ckpt, weights_id = weights, weights_file_id(weights) if weights else RANDOM_INIT
    create_kwargs: dict[str, Any] = {}
    if tag:
        tag_cfg = get_pretrained_cfg(arch, tag)
        if not tag_cfg:
            tags = open_clip.list_pretrained_tags_by_model(arch)
            raise VlmError(f"Unknown pretrained tag '{tag}' for {arch}. Known tags: {', '.join(tags) or 'none'}.")
        if tag_cfg.get("quick_gelu"):
            create_kwargs["force_quick_gelu"] = True
        create_kwargs["force_preprocess_cfg"] = {k: tag_cfg[k] for k in ("mean", "std", "interpolation",
                                                                         "resize_mode") if k in tag_cfg}
        if ckpt is None:
            ckpt = fetch_tag_weights(arch, tag, tag_cfg)
            weights_id = tag
    elif ckpt is None:
        warnings.warn(f"{arch}: no pretrained tag and no --weights: the model is random-initialised.", stacklevel=4)
    model_cfg = open_clip.get_model_config(arch) or {}
    text_cfg = model_cfg.get("text_cfg", {})
    plan = _Plan(arch, f"open_clip:{arch}", ckpt, weights_id, model_cfg, create_kwargs)
    if text_cfg.get("hf_model_name"):
        plan.text_cfg = create_kwargs["text_cfg"] = dict(text_cfg, hf_model_pretrained=False)
    return plan


def _load(target: str, weights: Path | None, device: torch.device, alias: EncoderAlias | None) -> OpenClipEncoder:
    """Build an open_clip model for `target` (see `vlm.encoders.base`) and load its weights."""
    from open_clip.factory import parse_model_name

    schema, ident = parse_model_name(target)
    plan = _plan_folder(schema, ident, weights, alias) if schema in ("hf-hub", "local-dir") \
        else _plan_architecture(ident, weights)
    model = _create(plan.create_name, target, plan.text_cfg, plan.create_kwargs)
    if plan.ckpt is not None:
        _load_checkpoint(model, plan.ckpt, target)
    tokenizer = _tokenizer(plan.create_name, plan.model_cfg, plan.text_cfg, target)
    model = model.to(device, memory_format=torch.channels_last).eval()
    preprocess = _preprocess(model, target)
    embed_dim = int(plan.model_cfg.get("embed_dim") or model.text_projection.shape[-1])
    return OpenClipEncoder(model, tokenizer, id=plan.enc_id, weights_id=plan.weights_id, preprocess=preprocess,
                           embed_dim=embed_dim, logit_scale=float(model.logit_scale.detach().exp().float().cpu().item()),
                           device=device, name=alias.name if alias else target,
                           description=alias.description if alias else "")


def _preprocess(model: nn.Module, target: str) -> Preprocess:
    """The eval `preprocess` that `open_clip.create_model_and_transforms` returns for `model`, as tensor ops:
    `image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)` is a PIL resize
    (shortest side + centre crop, longest side + crop-or-pad with `fill_color`, or squash), RGB, ToTensor
    and Normalize."""
    from open_clip.transform import PreprocessCfg

    cfg = PreprocessCfg(**model.visual.preprocess_cfg)
    interpolation = "bilinear" if cfg.interpolation == "bilinear" else "bicubic"  # open_clip's rule ('random' too)
    mode = cfg.resize_mode or "shortest"
    return Preprocess(size=square_size(cfg.size, target), mean=per_channel(cfg.mean), std=per_channel(cfg.std),
                      interpolation=interpolation, resize_mode=mode, fill=(int(cfg.fill_color),), resampler="pil",
                      source=f"open_clip image_transform(resize_mode={mode}, interpolation={cfg.interpolation})")


def _create(create_name: str, target: str, text_cfg: dict[str, Any] | None, create_kwargs: dict[str, Any]) -> nn.Module:
    """open_clip.create_model without loading anything (no hub access); failures name the text tower to place."""
    import open_clip

    try:
        with _quiet_open_clip():
            return open_clip.create_model(create_name, pretrained=None, load_weights=False, pretrained_image=False,
                                          pretrained_text=False, device="cpu", **create_kwargs)
    except VlmError:
        raise
    except Exception as exc:  # noqa: BLE001 - HF text config fetches etc.
        hint = ""
        if text_cfg and text_cfg.get("hf_model_name"):
            hint = (f" Its text tower is the Hugging Face model '{text_cfg['hf_model_name']}': for offline use "
                    f"put its config.json and tokenizer files in FOLDER/{TEXT_SUBDIR}/ and pass --model local-dir:FOLDER.")
        raise VlmError(f"Cannot build open_clip model {target} ({offline_reason(exc)}).{hint}") from None


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """open_clip logs a warning for every model built without weights; we load them right after."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(level)


def _load_checkpoint(model: nn.Module, ckpt: Path, target: str) -> None:
    import open_clip

    try:
        incompatible = open_clip.load_checkpoint(model, str(ckpt), strict=False)
    except Exception as exc:  # noqa: BLE001 - unreadable file, size mismatches, open_clip's resize asserts, ...
        state = read_weights(ckpt)  # raises "Cannot read weights file" if the file is no state dict
        own = model.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state.items()
                  if k in own and tuple(v.shape) != tuple(own[k].shape)]
        detail = f"{len(shapes)} shape mismatch(es), e.g. {shapes[0]}." if shapes else exception_summary(exc)
        raise VlmError(mismatch_message(target, ckpt, missing, unexpected, detail)) from None
    missing = list(getattr(incompatible, "missing_keys", []) or [])
    unexpected = list(getattr(incompatible, "unexpected_keys", []) or [])
    if missing or unexpected:
        raise VlmError(mismatch_message(target, ckpt, missing, unexpected))


def _tokenizer(create_name: str, model_cfg: dict, text_cfg: dict | None, target: str) -> Any:
    import open_clip
    from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

    cfg_text = model_cfg.get("text_cfg", {}) if model_cfg else {}
    context_length = cfg_text.get("context_length", 77)
    try:
        if text_cfg and text_cfg.get("hf_tokenizer_name"):
            return HFTokenizer(text_cfg["hf_tokenizer_name"], context_length=context_length,
                               tokenizer_mode=cfg_text.get("tokenizer_mode"), **cfg_text.get("tokenizer_kwargs", {}))
        if create_name.startswith("local-dir:"):
            return SimpleTokenizer(context_length=context_length, **cfg_text.get("tokenizer_kwargs", {}))
        return open_clip.get_tokenizer(create_name)
    except Exception as exc:  # noqa: BLE001
        raise VlmError(f"Cannot load the tokenizer of {target} ({offline_reason(exc)}). For offline use put the "
                       f"tokenizer files in FOLDER/{TEXT_SUBDIR}/ of a local-dir:FOLDER.") from None


register_backend(Backend("open_clip", _load, prefixes=("open_clip:", "open-clip:"),
                         rules=((10, _match_name), (20, _match_folder)),
                         names=_architectures, weights_as_tag=_weights_as_tag))
