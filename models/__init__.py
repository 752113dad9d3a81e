"""Transfer-learning architectures for MedMNIST and their registry (depends on torch/timm only).

    from models import create_model
    net = create_model("medmnist-resnet18", num_classes=2)

Modules: `registry` (a leaf: names -> factories), `factory` (`create_model`, `model_dims`,
`list_models`), `architectures` (the built-ins, registered when it is imported), `weights`
(checkpoint loading), `options` (option checks), `inputs` (input sizes), `errors` (`ModelError`).

`import models` and `from models.errors import ModelError` do not import torch: the names below
are loaded on first use, and the first use of any of them imports `models.factory`, which imports
(and so registers) every architecture.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from models.errors import ModelError

if TYPE_CHECKING:
    from models.factory import create_model, list_models, model_dims
    from models.inputs import fixed_input_size, input_size
    from models.registry import ModelEntry, register_model, register_prefix

_LAZY = {
    "create_model": "models.factory",
    "list_models": "models.factory",
    "model_dims": "models.factory",
    "fixed_input_size": "models.inputs",
    "input_size": "models.inputs",
    "ModelEntry": "models.registry",
    "register_model": "models.registry",
    "register_prefix": "models.registry",
}

__all__ = ["ModelEntry", "ModelError", "create_model", "fixed_input_size", "input_size", "list_models", "model_dims",
           "register_model", "register_prefix"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'models' has no attribute '{name}'")
    importlib.import_module("models.factory")  # registers the built-in architectures
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
