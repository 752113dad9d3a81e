"""The input size a model should be fed at, read off the model itself (timm and torchvision alike).

`input_size(model)`: the side length (px) to feed by default; `fixed_input_size(model)`: whether
another size would fail (ViT-style patch embeddings). The trainer upsamples to `input_size` only
when the size is fixed, or when told to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch.nn as nn


def _cfg(model: nn.Module) -> dict[str, Any]:
    return getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}


def input_size(model: nn.Module) -> int | None:
    """Side length (px) to feed `model` at by default, or None when it has no preference.

    ViT-style models report their patch embedding's `img_size` (so `img_size=112` is honoured);
    other timm and torchvision models the `input_size` of their pretrained config (224, 299 for
    inception, ...); models without a pretrained config (medmnist-resnet*, small-cnn) None: they
    train at the dataset's own size.
    """
    img = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img is not None:
        return int(img[-1]) if isinstance(img, (tuple, list)) else int(img)
    size = _cfg(model).get("input_size")
    return int(size[-1]) if size else None


def fixed_input_size(model: nn.Module) -> bool:
    """True when `model` only accepts `input_size(model)` (e.g. ViTs without `dynamic_img_size`)."""
    if getattr(model, "dynamic_img_size", False):
        return False
    pe = getattr(model, "patch_embed", None)
    if pe is not None and getattr(pe, "strict_img_size", None) is False:
        return False
    return bool(_cfg(model).get("fixed_input_size", False))
