"""The encoder interface, the backend registry, name resolution and `load_encoder` (aliases: `aliases`).

Backends (`vlm.encoders.open_clip`, `.hf_clip`, `.timm`) register themselves with `register_backend`
when the package is imported; nothing here imports a backend or its library.

A name is resolved in this order:

1. an alias from `ALIASES` (`biomedclip`, `clip-vit-b-32`, `plip`, ... see `vlm models`);
2. an explicit backend prefix a backend registered: `open_clip:NAME` (or `open-clip:`),
   `transformers:ID_OR_FOLDER`, `timm:NAME`;
3. the backends' rules, lowest rank first (first match wins):

   ==== ============ =======================================================================
   rank backend      matches
   ==== ============ =======================================================================
   5    medclip      `medclip-vit:FOLDER`, `medclip-resnet:FOLDER` (also the prefix `medclip:FOLDER`)
   10   open_clip    `hf-hub:ORG/REPO`, `local-dir:FOLDER`, a built-in architecture (`ViT-B-32`,
                     optionally `ViT-B-32:TAG`)
   19   medclip      a local folder with `pytorch_model.bin` and `text/config.json` (no `config.json`)
   20   open_clip    a local folder with `open_clip_config.json` (-> `local-dir:FOLDER`)
   21   transformers a local folder with `config.json`
   30   (here)       any other local folder or path-like name: an error naming it
   40   timm         a timm model name (`resnet18`, `tf_efficientnet_lite0`): image-only
   50   transformers `ORG/NAME`: a transformers hub id (`vinid/plip`)
   ==== ============ =======================================================================

4. otherwise an "Unknown model" error listing the aliases, closest first.
"""

from __future__ import annotations

import difflib
import os
import re
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from vlm.encoders.aliases import ALIASES, EncoderAlias, list_aliases  # noqa: F401 - re-exported
from vlm.encoders.checkpoints import check_weights_file
from vlm.encoders.hub import OPEN_CLIP_CONFIG
from vlm.errors import VlmError
from vlm.preprocess import INTERPOLATIONS, PIL_ONLY, Preprocess
from vlm.runtime import resolve_device

RANDOM_INIT = "random-init"
TEXT_BATCH = 256  # texts per tokenizer/text-tower call


# ----------------------------------------------------------------------------- the interface
class Encoder(ABC):
    """An image encoder, with a text encoder when `has_text`.

    Attributes: `id` (stable string naming the architecture/source), `weights_id` (sha256 prefix of the
    weights file, or the pretrained tag / hub id), `preprocess` (the model's own preprocessing as a
    `vlm.preprocess.Preprocess`), `embed_dim`, `logit_scale` (the model's own, exp'd; 1.0 for
    image-only models), `device`, `has_text`, `name` (what the user asked for), `backend`, and for the text
    side `text_id` (the tokenizer and its settings; "" = text embeddings are not cached) and `context_length`.
    """

    backend: str = ""
    has_text: bool = True
    text_id: str = ""
    context_length: int | None = None

    def __init__(self, *, id: str, weights_id: str, preprocess: Preprocess, embed_dim: int, logit_scale: float,
                 device: torch.device, name: str = "", description: str = "") -> None:
        self.id = id
        self.weights_id = weights_id
        self.preprocess = preprocess
        self.embed_dim = int(embed_dim)
        self.logit_scale = float(logit_scale)
        self.device = torch.device(device)
        self.name = name or id
        self.description = description

    @abstractmethod
    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed float images (B, 3, H, W) on `device` -> unnormalised features (B, E)."""

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Strings -> unnormalised text features (T, E) on `device`, float32."""

    @abstractmethod
    def image_tower(self) -> nn.Module:
        """The module mapping preprocessed images to features (shares parameters with the encoder)."""

    def describe(self) -> dict[str, Any]:
        """What a run record needs to know about this encoder."""
        return {"name": self.name, "id": self.id, "backend": self.backend, "weights_id": self.weights_id,
                "embed_dim": self.embed_dim, "logit_scale": self.logit_scale, "has_text": self.has_text,
                "preprocess": self.preprocess.to_dict()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, weights_id={self.weights_id!r}, embed_dim={self.embed_dim})"


def no_text_error(encoder: Encoder) -> VlmError:
    """The error an image-only encoder raises when asked to encode text."""
    return VlmError(f"{encoder.id} is an image-only backbone: it has no text encoder, so it cannot do zero-shot "
                    f"classification. Use it for fine-tuning, or pick a vision-language model "
                    f"({', '.join(ALIASES)}).")


PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "area", 5: "hamming"}  # PIL codes


def interpolation_name(value: Any, who: str) -> str:
    """A PIL resample code or an open_clip / timm / torchvision interpolation name -> ours ('box' is 'area');
    one the "pil" resampler cannot do becomes bicubic, with a warning naming `who`."""
    if isinstance(value, int):
        name = PIL_RESAMPLE.get(int(value), f"PIL code {int(value)}")
    else:
        name = str(getattr(value, "value", value) or "bicubic").lower()
    name = {"box": "area"}.get(name, name)
    if name in INTERPOLATIONS + PIL_ONLY:
        return name
    warnings.warn(f"{who}: interpolation '{name}' is not reproduced on tensors; using bicubic.", stacklevel=3)
    return "bicubic"


def square_size(size: Any, who: str) -> int:
    """An int, (H, W) or HF size dict as one side; non-square sizes are a VlmError naming `who`."""
    if isinstance(size, dict):
        if "height" in size and "width" in size:
            size = (size["height"], size["width"])
        else:
            size = size.get("shortest_edge") or next(iter(size.values()))
    if isinstance(size, (tuple, list)):
        sizes = [int(s) for s in size]
        if len(set(sizes)) != 1:
            raise VlmError(f"{who} expects non-square {tuple(sizes)} inputs; only square inputs are supported.")
        return sizes[0]
    return int(size)


def per_channel(values: Any) -> tuple[float, ...]:
    """A mean/std given as one number or a sequence, as a tuple of floats."""
    return tuple(float(v) for v in values) if isinstance(values, (list, tuple)) else (float(values),) * 3


# ----------------------------------------------------------------------------- the backend registry
Matcher = Callable[[str], "str | None"]  # a stripped model name -> the backend's target, or None
Loader = Callable[[str, "Path | None", torch.device, "EncoderAlias | None"], Encoder]  # target, weights, device, alias


@dataclass(frozen=True)
class Backend:
    """How one library's models are named and loaded.

    `load(target, weights, device, alias)` builds the encoder. `prefixes` name the backend explicitly
    (`timm:NAME`). `rules` are `(rank, matches)` pairs tried with every backend's rules in rank order (see
    the module docstring). `names()` lists architecture names suggested in "Unknown model" errors.
    `weights_as_tag(target, weights)` lets a `--weights` value that is no file name pretrained weights: it
    returns the new target, or None. `lazy_load` (same arguments) returns an encoder whose ids, preprocessing
    and logit scale come from config files and whose towers are built on first use.
    """

    name: str
    load: Loader
    prefixes: tuple[str, ...] = ()
    rules: tuple[tuple[int, Matcher], ...] = ()
    names: Callable[[], list[str]] | None = None
    weights_as_tag: Callable[[str, str], "str | None"] | None = None
    lazy_load: Loader | None = None


BACKENDS: dict[str, Backend] = {}
PATH_RULE_RANK = 30  # where local paths no backend claimed become an error


def register_backend(backend: Backend) -> Backend:
    """Add (or replace) a backend; its rules take part in `resolve_name` from now on."""
    BACKENDS[backend.name] = backend
    return backend


@dataclass(frozen=True)
class Resolved:
    """What a model name means: a backend, the target it loads, and the alias it came from (if any)."""

    backend: str
    target: str
    alias: EncoderAlias | None = None


def looks_like_path(name: str) -> bool:
    """A filesystem path rather than a hub id ('ORG/NAME')."""
    return name.startswith((".", "/", "~")) or (os.sep in name and not re.fullmatch(r"[\w.-]+/[\w.-]+", name))


def _unclaimed_path(raw: str) -> None:
    """Rank 30: a folder no backend recognised, or a path that does not exist, is an error here."""
    path = Path(raw).expanduser()
    if path.is_dir():
        raise VlmError(f"Folder {path} holds neither {OPEN_CLIP_CONFIG} (open_clip) nor config.json (transformers).")
    if looks_like_path(raw):
        raise VlmError(f"Model folder {path} not found.")


def resolve_name(name: str) -> Resolved:
    """Which backend and target a model name means (see the module docstring for the order)."""
    raw = name.strip()
    if not raw:
        raise VlmError("Empty model name: pass --model with an alias (" + ", ".join(ALIASES) + ") or a model name.")
    alias = ALIASES.get(raw.lower())
    if alias is not None:
        return Resolved(alias.backend, alias.target, alias)
    for backend in BACKENDS.values():
        for prefix in backend.prefixes:
            if raw.lower().startswith(prefix):
                return Resolved(backend.name, raw[len(prefix):])
    rules = [(rank, backend.name, matches) for backend in BACKENDS.values() for rank, matches in backend.rules]
    rules.append((PATH_RULE_RANK, "", _unclaimed_path))
    for _, backend_name, matches in sorted(rules, key=lambda rule: rule[0]):
        target = matches(raw)
        if target is not None:
            return Resolved(backend_name, target)
    raise VlmError(unknown_model_message(raw))


def unknown_model_message(name: str) -> str:
    """'Unknown model' with the known aliases, closest first, and the other accepted forms."""
    ranked = sorted(ALIASES, key=lambda a: -difflib.SequenceMatcher(None, name.lower(), a).ratio())
    hints = ""
    for backend in BACKENDS.values():
        close = difflib.get_close_matches(name, backend.names(), n=3, cutoff=0.6) if backend.names else []
        if close:
            hints += f" Close {backend.name} architectures: {', '.join(close)}."
    return (f"Unknown model '{name}'. Known aliases (closest first): {', '.join(ranked)}.{hints} Also accepted: "
            f"an open_clip architecture (optionally NAME:TAG, e.g. ViT-B-32:laion2b_s34b_b79k), hf-hub:ORG/REPO, "
            f"local-dir:FOLDER, a transformers hub id (ORG/NAME) or local folder with config.json, or a timm model name.")


# ----------------------------------------------------------------------------- the factory
def load_encoder(name: str, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                 lazy: bool = False) -> Encoder:
    """Load an encoder by alias or name, optionally with a local weights file, on a device.

    `lazy=True` defers building the model to its first use where the backend can (open_clip, transformers):
    an encoder whose embeddings all come from caches then never builds a tower.

    `weights=FILE` (a state dict saved with `torch.save`, or a `.safetensors` file) replaces the weights
    that the name would bring; for an open_clip architecture `weights` may also be a pretrained tag
    (`load_encoder("ViT-B-32", weights="openai")` is `load_encoder("ViT-B-32:openai")`).

    Example: `load_encoder("ViT-B-32", weights="vitb32.pt")`, `load_encoder("biomedclip")`,
    `load_encoder("local-dir:/models/biomedclip")`, `load_encoder("vinid/plip")`,
    `load_encoder("tf_efficientnet_lite0", weights="../shared/weights/tf_efficientnet_lite0.safetensors")`.
    """
    resolved = resolve_name(str(name))
    backend = BACKENDS[resolved.backend]
    if weights is not None and backend.weights_as_tag and not Path(weights).expanduser().is_file():
        target = backend.weights_as_tag(resolved.target, str(weights))
        if target is not None:
            resolved, weights = Resolved(resolved.backend, target, resolved.alias), None
    weights_path = check_weights_file(weights)
    load = backend.lazy_load if lazy and backend.lazy_load is not None else backend.load
    return load(resolved.target, weights_path, resolve_device(device), resolved.alias)
