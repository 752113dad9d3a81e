"""The model registry: names and `PREFIX:` schemes mapped to factories (a leaf: imports no architecture).

Architectures register themselves with the decorators below when `models.architectures` is imported:

    @register_model("medmnist-resnet18", dims="2d")     # the name itself
    @register_prefix("slices", dims="3d")               # `slices:BASE` for any BASE

Factories take `(num_classes, *, in_chans, pretrained, weights, **kwargs)`; prefix factories take
the base name first. One fallback factory (timm's 2D models) builds names the registry does not
hold. Name resolution and `create_model` live in `models.factory`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal

if TYPE_CHECKING:
    import torch.nn as nn

Dims = Literal["2d", "3d"]
Factory = Callable[..., "nn.Module"]


@dataclass(frozen=True)
class ModelEntry:
    """One registered model name (`vit3d`) or prefix (`slices`, used as `slices:BASE`)."""

    name: str
    dims: Dims
    factory: Factory
    description: str
    is_prefix: bool = False


@dataclass(frozen=True)
class Fallback:
    """The factory `f(name, num_classes, **kw)` for names the registry does not hold, and its name test."""

    factory: Factory
    is_known: Callable[[str], bool]


_MODELS: dict[str, ModelEntry] = {}
_PREFIXES: dict[str, ModelEntry] = {}
_fallback: Fallback | None = None


def _register(table: dict[str, ModelEntry], name: str, dims: Dims, description: str,
              is_prefix: bool) -> Callable[[Factory], Factory]:
    def wrap(factory: Factory) -> Factory:
        summary = description or (factory.__doc__ or "").strip().split("\n")[0]
        table[name] = ModelEntry(name, dims, factory, summary, is_prefix)
        return factory

    return wrap


def register_model(name: str, *, dims: Dims, description: str = "") -> Callable[[Factory], Factory]:
    """Decorator registering a factory `f(num_classes, *, in_chans, pretrained, weights, **kw)`."""
    return _register(_MODELS, name, dims, description, is_prefix=False)


def register_prefix(prefix: str, *, dims: Dims, description: str = "") -> Callable[[Factory], Factory]:
    """Decorator registering `PREFIX:BASE` names: factory `f(base, num_classes, *, in_chans, ...)`."""
    return _register(_PREFIXES, prefix, dims, description, is_prefix=True)


def set_fallback(factory: Factory, is_known: Callable[[str], bool]) -> None:
    """Install the factory for names the registry does not hold (timm's 2D models)."""
    global _fallback
    _fallback = Fallback(factory, is_known)


def get_model(name: str) -> ModelEntry | None:
    """The entry registered under `name`, or None."""
    return _MODELS.get(name)


def get_prefix(prefix: str) -> ModelEntry | None:
    """The entry registered for `PREFIX:` names, or None."""
    return _PREFIXES.get(prefix)


def get_fallback() -> Fallback | None:
    """The fallback factory, or None before one is installed."""
    return _fallback


def entries() -> list[ModelEntry]:
    """Every registered model and prefix, in registration order (models first)."""
    return [*_MODELS.values(), *_PREFIXES.values()]
