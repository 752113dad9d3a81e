"""One interface over image(-text) encoders: open_clip, transformers CLIP-style models, timm backbones.

`load_encoder(name, weights=None, device="cpu")` turns a short alias or a full model name into an
`Encoder`; `vlm.encoders.base` says in which order names resolve, `vlm.encoders.hub` which files go
where for offline use. An open_clip architecture named with neither a pretrained tag nor `weights` is
random-initialised (its `weights_id` is `random-init` and its embeddings are never cached).

Modules: `base` (interface, aliases, backend registry, name resolution, `load_encoder`), `hub`
(offline hub access and messages), `checkpoints` (weights files), and one per backend, each
registering itself on import: `open_clip`, `transformers`, `timm`, `medclip`. Importing this package imports
none of those libraries; a backend imports its own when it resolves or loads a name.

Adding a backend: write `vlm/encoders/NAME.py` with an `Encoder` subclass and a loader
`load(target, weights, device, alias) -> Encoder`, end it with
`register_backend(Backend("NAME", load, prefixes=("NAME:",), rules=((RANK, matches),)))` (RANK places
its name rule among the others, see `vlm.encoders.base`), and import it at the top of this file.
"""

from vlm.encoders import medclip, open_clip, timm, transformers  # noqa: F401 - each registers its backend
from vlm.encoders.base import (
    ALIASES,
    BACKENDS,
    RANDOM_INIT,
    Backend,
    Encoder,
    EncoderAlias,
    Resolved,
    list_aliases,
    load_encoder,
    register_backend,
    resolve_name,
    unknown_model_message,
)
from vlm.encoders.checkpoints import weights_file_id
from vlm.encoders.hub import hub_offline, hub_reachable, localize_text_config
from vlm.encoders.open_clip import OpenClipEncoder
from vlm.encoders.timm import TimmEncoder
from vlm.encoders.transformers import TransformersEncoder

__all__ = [
    "ALIASES", "BACKENDS", "RANDOM_INIT", "Backend", "Encoder", "EncoderAlias", "OpenClipEncoder", "Resolved",
    "TimmEncoder", "TransformersEncoder", "hub_offline", "hub_reachable", "list_aliases", "load_encoder",
    "localize_text_config", "register_backend", "resolve_name", "unknown_model_message", "weights_file_id",
]
