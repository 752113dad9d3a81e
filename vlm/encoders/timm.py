"""The timm backend: image-only backbones (no text tower), head-less, with weights from a local file.

timm is imported inside the functions that need it. Without `weights` the backbone is random-initialised
(a warning says so); a file in timm's key layout loads strictly, its classifier keys dropped.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from vlm.encoders.base import (
    RANDOM_INIT,
    Backend,
    Encoder,
    EncoderAlias,
    interpolation_name,
    no_text_error,
    per_channel,
    register_backend,
    square_size,
    unknown_model_message,
)
from vlm.encoders.checkpoints import load_strict, read_weights, weights_file_id
from vlm.errors import VlmError, exception_summary
from vlm.preprocess import Preprocess

DEFAULT_CROP_PCT = 0.875  # timm.data.DEFAULT_CROP_PCT: what create_transform uses when crop_pct is unset


class TimmEncoder(Encoder):
    """A timm backbone with its classifier removed: images -> pooled features; no text."""

    backend = "timm"
    has_text = False

    def __init__(self, model: nn.Module, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model

    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        raise no_text_error(self)

    def image_tower(self) -> nn.Module:
        return self.model


def _match_name(raw: str) -> str | None:
    """A timm model name (`resnet18`, `tf_efficientnet_lite0`)."""
    import timm

    return raw if timm.is_model(raw) else None


def _load(target: str, weights: Path | None, device: torch.device, alias: EncoderAlias | None) -> TimmEncoder:
    """Build a head-less timm model (`num_classes=0`) and load `weights` into it, if given."""
    import timm
    from timm.data import resolve_model_data_config

    if not timm.is_model(target):
        raise VlmError(unknown_model_message(target))
    try:
        model = timm.create_model(target, pretrained=False, num_classes=0)
    except Exception as exc:  # noqa: BLE001
        raise VlmError(f"Cannot build timm model {target} ({exception_summary(exc)}).") from None
    if weights is not None:
        _load_weights(model, weights, target)
    else:
        warnings.warn(f"{target}: no --weights: the backbone is random-initialised.", stacklevel=3)
    preprocess = data_config_preprocess(resolve_model_data_config(model), target)
    model = model.to(device, memory_format=torch.channels_last).eval()
    return TimmEncoder(model, id=f"timm:{target}", weights_id=weights_file_id(weights) if weights else RANDOM_INIT,
                       preprocess=preprocess, embed_dim=int(model.num_features), logit_scale=1.0, device=device,
                       name=target)


CROP_MODES = {"center": "shortest", "squash": "squash", "border": "longest"}  # timm crop_mode -> resize mode


def data_config_preprocess(cfg: dict[str, Any], who: str) -> Preprocess:
    """timm's eval transform, `create_transform(**cfg)` of a resolved data config, as tensor ops: a PIL resize
    to floor(size / crop_pct) (shortest side for crop_mode 'center', both sides for 'squash', longest side
    for 'border'), then a centre crop to size (padded with the mean colour for 'border'), ToTensor, Normalize."""
    if cfg.get("crop_border_pixels"):
        raise VlmError(f"{who}: crop_border_pixels={cfg['crop_border_pixels']} is not supported.")
    size = square_size(cfg["input_size"][1:], who)
    crop_pct = cfg.get("crop_pct") or DEFAULT_CROP_PCT
    crop_mode = cfg.get("crop_mode") or "center"
    if crop_mode not in CROP_MODES:
        raise VlmError(f"{who}: unknown crop_mode '{crop_mode}' (timm knows {', '.join(CROP_MODES)}).")
    mean = per_channel(cfg["mean"])
    fill = tuple(round(255 * m) for m in mean) if crop_mode == "border" else (0,)
    return Preprocess(size=size, resize=math.floor(size / crop_pct), resize_mode=CROP_MODES[crop_mode], mean=mean,
                      std=per_channel(cfg["std"]), interpolation=interpolation_name(cfg.get("interpolation"), who),
                      fill=fill, resampler="pil",
                      source=f"timm create_transform(crop_pct={crop_pct}, crop_mode={crop_mode})")


def _load_weights(model: nn.Module, weights: Path, target: str) -> None:
    """Strictly load a timm-layout state dict into a head-less model (classifier keys are dropped)."""
    state = read_weights(weights)
    heads = model.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own or not any(k.startswith(f"{h}.") for h in heads)}
    load_strict(model, state, target, weights)


register_backend(Backend("timm", _load, prefixes=("timm:",), rules=((40, _match_name),)))
