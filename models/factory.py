"""`create_model`, the one factory (timm-style), and the name resolution it shares with `model_dims`.

Three ways a name resolves, in this order:
1. a registered name (`medmnist-resnet18`, `vit3d`);
2. a registered prefix plus a base name, `PREFIX:BASE` (`slices:tf_efficientnet_lite0`, `acs:resnet18`);
3. any timm 2D model name (the registry's fallback, see `models.architectures.timm2d`).

Importing this module imports `models.architectures`, which registers the built-in architectures.
"""

from __future__ import annotations

import difflib

import torch.nn as nn

import models.architectures  # noqa: F401  registers the built-in architectures
from models.errors import ModelError
from models.registry import Dims, ModelEntry, entries, get_fallback, get_model, get_prefix

#: timm's own `scheme:name` forms, handed to the fallback rather than read as a registered prefix.
_TIMM_SCHEMES = ("hf-hub", "hf_hub", "local-dir")


def list_models() -> list[ModelEntry]:
    """Registered names and prefixes, 2D first, by name (timm names are accepted besides these)."""
    return sorted(entries(), key=lambda e: (e.dims, e.name))


def _resolve(name: str) -> tuple[ModelEntry | None, str | None]:
    """(entry, base name for a prefix) for a registered name; (None, None) for the fallback."""
    entry = get_model(name)
    if entry is not None:
        return entry, None
    if ":" in name:
        prefix, base = name.split(":", 1)
        entry = get_prefix(prefix)
        if entry is not None:
            return entry, base
        if prefix in _TIMM_SCHEMES:
            return None, None
        known = sorted(e.name for e in entries() if e.is_prefix)
        raise ModelError(f"Unknown model prefix '{prefix}:' in '{name}'. Known prefixes: "
                         f"{', '.join(p + ':' for p in known)}.")
    return None, None


def _check_fallback(name: str) -> None:
    fallback = get_fallback()
    if fallback is not None and fallback.is_known(name):
        return
    import timm

    candidates = [*(e.name + (":" if e.is_prefix else "") for e in entries()), *timm.list_models()]
    close = difflib.get_close_matches(name, candidates, n=4, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ModelError(f"Unknown model '{name}'.{hint} Run `vlm models` to list registered names; any timm model name works too.")


def model_dims(name: str) -> Dims:
    """'2d' or '3d': the kind of input a model name takes; ModelError for an unknown name."""
    entry, _ = _resolve(name)
    if entry is not None:
        return entry.dims
    _check_fallback(name)
    return "2d"


def create_model(
    name: str,
    num_classes: int,
    *,
    in_chans: int | None = None,
    pretrained: bool = False,
    weights: str | None = None,
    **kwargs,
) -> nn.Module:
    """Build a model that maps an image batch to `num_classes` logits.

    Args:
        name: a registered name (`medmnist-resnet18`, `vit3d`), a prefixed name
            (`slices:tf_efficientnet_lite0`, `acs:resnet18`), or any timm 2D model (`resnet50`).
        num_classes: outputs of the head (classes, or labels for multi-label tasks).
        in_chans: input channels the model takes; None keeps the architecture's default (3 for 2D
            models, 1 for 3D models).
        pretrained: start from pretrained weights (from `weights` when given; otherwise the
            architecture's own download, which fails offline with a clear message).
        weights: a local checkpoint (.safetensors / .pt / .pth) loaded into the backbone; a head that
            does not have `num_classes` outputs is re-initialised (one that does is kept, so a
            fine-tuned checkpoint reloads whole).
        **kwargs: architecture options (e.g. `image_size`, `slice_axis` for `slices:`).

    Example:
        >>> create_model("medmnist-resnet18", num_classes=2)          # doctest: +SKIP
        >>> create_model("slices:tf_efficientnet_lite0", 2, weights="lite0.safetensors")  # doctest: +SKIP
    """
    entry, base = _resolve(name)
    common = dict(pretrained=pretrained or weights is not None, weights=weights, **kwargs)
    if in_chans is not None:
        common["in_chans"] = in_chans
    if entry is not None:
        return entry.factory(base, num_classes, **common) if base is not None else entry.factory(num_classes, **common)
    _check_fallback(name)
    return get_fallback().factory(name, num_classes, **common)
