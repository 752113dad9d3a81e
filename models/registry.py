"""The model registry and its one factory, `create_model` (timm-style).

Three ways a name resolves, in this order:
1. a registered name (`@register_model("medmnist-resnet18", dims="2d")`);
2. a registered prefix plus a base name, `PREFIX:BASE` (`@register_prefix("slices", dims="3d")`
   makes `slices:tf_efficientnet_lite0` work);
3. any timm 2D model name (the fallback, see `models.timm2d`).

Factories take `(num_classes, *, in_chans, pretrained, weights, **kwargs)`; prefix factories take the
base name first. This module imports only torch/timm, never `vlm`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable, Literal

import torch.nn as nn

Dims = Literal["2d", "3d"]


class ModelError(ValueError):
    """A model that cannot be built as asked (unknown name, weights that do not fit, ...)."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    dims: Dims
    factory: Callable[..., nn.Module]
    description: str


_MODELS: dict[str, ModelEntry] = {}
_PREFIXES: dict[str, ModelEntry] = {}
_FALLBACK: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str, *, dims: Dims, description: str = "") -> Callable:
    """Decorator registering a factory `f(num_classes, *, in_chans, pretrained, weights, **kw)`."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _MODELS[name] = ModelEntry(name, dims, factory, description or (factory.__doc__ or "").strip().split("\n")[0])
        return factory

    return wrap


def register_prefix(prefix: str, *, dims: Dims, description: str = "") -> Callable:
    """Decorator registering `PREFIX:BASE` names: factory `f(base, num_classes, *, in_chans, ...)`."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _PREFIXES[prefix] = ModelEntry(prefix, dims, factory, description or (factory.__doc__ or "").strip().split("\n")[0])
        return factory

    return wrap


def set_fallback(factory: Callable[..., nn.Module], is_known: Callable[[str], bool]) -> None:
    """Install the factory for names the registry does not know (timm's 2D models)."""
    _FALLBACK["factory"] = factory
    _FALLBACK["is_known"] = is_known  # type: ignore[assignment]


def _load_builtin() -> None:
    # Importing the architecture modules runs their @register_* decorators.
    import models.architectures  # noqa: F401


def list_models() -> list[ModelEntry]:
    """Registered names and prefixes (timm names are accepted besides these)."""
    _load_builtin()
    return sorted([*_MODELS.values(), *_PREFIXES.values()], key=lambda e: (e.dims, e.name))


def _resolve(name: str) -> tuple[ModelEntry | None, str | None]:
    _load_builtin()
    if name in _MODELS:
        return _MODELS[name], None
    if ":" in name:
        prefix, base = name.split(":", 1)
        if prefix in _PREFIXES:
            return _PREFIXES[prefix], base
        if prefix in ("hf-hub", "hf_hub", "local-dir"):  # timm's own name schemes go to the fallback
            return None, None
        raise ModelError(f"Unknown model prefix '{prefix}:' in '{name}'. Known prefixes: "
                         f"{', '.join(p + ':' for p in sorted(_PREFIXES))}.")
    return None, None


def model_dims(name: str) -> Dims:
    """'2d' or '3d': the kind of input a model name takes."""
    entry, _ = _resolve(name)
    if entry is not None:
        return entry.dims
    _check_fallback(name)
    return "2d"


def _check_fallback(name: str) -> None:
    if _FALLBACK and _FALLBACK["is_known"](name):  # type: ignore[operator]
        return
    import timm

    candidates = [*_MODELS, *(p + ":" for p in _PREFIXES), *timm.list_models()]
    close = difflib.get_close_matches(name, candidates, n=4, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ModelError(f"Unknown model '{name}'.{hint} Run `vlm models` to list registered names; any timm model name works too.")


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
    return _FALLBACK["factory"](name, num_classes, **common)
