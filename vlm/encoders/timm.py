"""The timm backend: image-only backbones (no text tower), head-less, with weights from a local file.

timm is imported inside the functions that need it. Without `weights` the backbone is random-initialised
(a warning says so); a file in timm's key layout loads strictly, its classifier keys dropped.
"""

from __future__ import annotations

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
    make_preprocess,
    no_text_error,
    register_backend,
    unknown_model_message,
)
from vlm.encoders.checkpoints import load_strict, read_weights, weights_file_id
from vlm.errors import VlmError, exception_summary


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
    from timm.data import resolve_data_config

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
    data_cfg = resolve_data_config({}, model=model)
    preprocess = make_preprocess(target, data_cfg["input_size"][1:], data_cfg["mean"], data_cfg["std"],
                                 data_cfg.get("interpolation"))
    model = model.to(device, memory_format=torch.channels_last).eval()
    return TimmEncoder(model, id=f"timm:{target}", weights_id=weights_file_id(weights) if weights else RANDOM_INIT,
                       preprocess=preprocess, embed_dim=int(model.num_features), logit_scale=1.0, device=device,
                       name=target)


def _load_weights(model: nn.Module, weights: Path, target: str) -> None:
    """Strictly load a timm-layout state dict into a head-less model (classifier keys are dropped)."""
    state = read_weights(weights)
    heads = model.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own or not any(k.startswith(f"{h}.") for h in heads)}
    load_strict(model, state, target, weights)


register_backend(Backend("timm", _load, prefixes=("timm:",), rules=((40, _match_name),)))
