"""One interface over image(-text) encoders: open_clip, transformers CLIP-style models, timm backbones.

`load_encoder(name, weights=None, device="cpu")` turns a short alias or a full model name into an
`Encoder`; `vlm.encoders.base` says in which order names resolve, `vlm.encoders.hub` which files go
where for offline use. An open_clip architecture named with neither a pretrained tag nor `weights` is
random-initialised (its `weights_id` is `random-init` and its embeddings are never cached).

Modules: `aliases` (the alias table), `base` (interface, backend registry, name resolution, `load_encoder`), `hub`
(offline hub access and messages), `checkpoints` (weights files), and one per backend, each
registering itself on import: `open_clip`, `transformers`, `timm`, `medclip`. Importing this package (or its
torch-free `aliases`) imports neither torch nor a backend: the names below load on first use, and the
first use of any of them imports every backend; a backend imports its own library only when it resolves
or loads a name.

Adding a backend: write `vlm/encoders/NAME.py` with an `Encoder` subclass and a loader
`load(target, weights, device, alias) -> Encoder`, end it with
`register_backend(Backend("NAME", load, prefixes=("NAME:",), rules=((RANK, matches),)))` (RANK places
its name rule among the others, see `vlm.encoders.base`), and add it to `_BACKENDS` below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vlm.encoders.aliases import ALIASES, EncoderAlias, list_aliases
    from vlm.encoders.base import (BACKENDS, RANDOM_INIT, Backend, Encoder, Resolved, load_encoder, register_backend,
                                   resolve_name, unknown_model_message)
    from vlm.encoders.checkpoints import weights_file_id
    from vlm.encoders.hub import hub_offline, hub_reachable, localize_text_config
    from vlm.encoders.open_clip import OpenClipEncoder
    from vlm.encoders.timm import TimmEncoder
    from vlm.encoders.transformers import TransformersEncoder

_BACKENDS = ("medclip", "open_clip", "timm", "transformers")  # each registers its backend when imported
_LAZY = {
    **dict.fromkeys(("ALIASES", "EncoderAlias", "list_aliases"), "aliases"),
    **dict.fromkeys(("BACKENDS", "RANDOM_INIT", "Backend", "Encoder", "Resolved", "load_encoder", "register_backend",
                     "resolve_name", "unknown_model_message"), "base"),
    "weights_file_id": "checkpoints",
    **dict.fromkeys(("hub_offline", "hub_reachable", "localize_text_config"), "hub"),
    "OpenClipEncoder": "open_clip",
    "TimmEncoder": "timm",
    "TransformersEncoder": "transformers",
}

__all__ = [
    "ALIASES", "BACKENDS", "RANDOM_INIT", "Backend", "Encoder", "EncoderAlias", "OpenClipEncoder", "Resolved",
    "TimmEncoder", "TransformersEncoder", "hub_offline", "hub_reachable", "list_aliases", "load_encoder",
    "localize_text_config", "register_backend", "resolve_name", "unknown_model_message", "weights_file_id",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'vlm.encoders' has no attribute '{name}'")
    for backend in _BACKENDS:
        importlib.import_module(f"vlm.encoders.{backend}")
    value = getattr(importlib.import_module(f"vlm.encoders.{_LAZY[name]}"), name)
    globals()[name] = value
    return value
