"""One interface over image(-text) encoders: open_clip, transformers CLIP-style models, timm backbones.

`load_encoder(name, weights=None, device="cpu")` turns a short alias or a full model name into an
`Encoder`. Names are resolved in this order:

1. an alias from `ALIASES` (`biomedclip`, `clip-vit-b-32`, `plip`, ... see `vlm models` / `ALIASES`);
2. an explicit backend prefix: `open_clip:NAME`, `transformers:ID_OR_FOLDER`, `timm:NAME`;
3. open_clip: `hf-hub:ORG/REPO`, `local-dir:FOLDER`, a built-in architecture (`ViT-B-32`) optionally
   with a pretrained tag (`ViT-B-32:laion2b_s34b_b79k`);
4. a local folder: with `open_clip_config.json` -> open_clip, with `config.json` -> transformers;
5. a timm model name (`resnet18`, `tf_efficientnet_lite0`): image-only;
6. `ORG/NAME` -> a transformers hub id (`vinid/plip`, `openai/clip-vit-base-patch32`).

`weights=FILE` (a state dict saved with `torch.save`, or a `.safetensors` file) replaces the weights
that the name would bring; for an open_clip architecture `weights` may also be a pretrained tag
(`load_encoder("ViT-B-32", weights="openai")` is `load_encoder("ViT-B-32:openai")`). An open_clip
architecture named with neither a tag nor `weights` is
random-initialised (its `weights_id` is `random-init` and its embeddings are never cached).

Offline layouts (nothing here downloads when `HF_HUB_OFFLINE=1`; a failed fetch raises one
`VlmError` that says which files to put where):

* open_clip `local-dir:FOLDER`::

      FOLDER/open_clip_config.json            # {"model_cfg": {...}, "preprocess_cfg": {...}}
      FOLDER/open_clip_pytorch_model.bin      # or open_clip_model.safetensors / *.safetensors / *.bin / *.pth
      FOLDER/text/config.json                 # only if model_cfg.text_cfg names an hf_model_name
      FOLDER/text/<tokenizer files>           #   (BiomedCLIP: microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract:
                                              #    config.json, vocab.txt, tokenizer_config.json, ...)

  `FOLDER/<last part of hf_model_name>/` is accepted in place of `FOLDER/text/`. The text model's
  own weights are not needed: the CLIP checkpoint holds them.
* transformers: the folder written by `huggingface-cli download ID --local-dir DIR` (`config.json`,
  `model.safetensors` or `pytorch_model.bin`, `preprocessor_config.json`, tokenizer files).
* timm: any timm name plus `weights=FILE` in timm's key layout (classifier keys are dropped).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
import re
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from vlm.errors import VlmError, exception_summary
from vlm.files import file_digest
from vlm.preprocess import INTERPOLATIONS, Preprocess
from vlm.runtime import resolve_device

log = logging.getLogger(__name__)

RANDOM_INIT = "random-init"
TEXT_SUBDIR = "text"
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
TEXT_BATCH = 256


# ----------------------------------------------------------------------------- aliases
@dataclass(frozen=True)
class EncoderAlias:
    """A short name for a well-known encoder."""

    name: str
    backend: str  # "open_clip" | "transformers" | "timm"
    target: str  # what load_encoder resolves it to
    description: str
    text_model: str | None = None  # HF text model an open_clip config names (needed offline in FOLDER/text/)


ALIASES: dict[str, EncoderAlias] = {
    a.name: a
    for a in (
        EncoderAlias("biomedclip", "open_clip", "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
                     "BiomedCLIP: ViT-B/16 + PubMedBERT text tower, trained on PMC-15M figure-caption pairs (224 px)",
                     text_model="microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"),
        EncoderAlias("clip-vit-b-32", "open_clip", "ViT-B-32:openai",
                     "OpenAI CLIP ViT-B/32 (open_clip, QuickGELU, 224 px)"),
        EncoderAlias("clip-vit-b-16", "open_clip", "ViT-B-16:openai",
                     "OpenAI CLIP ViT-B/16 (open_clip, QuickGELU, 224 px)"),
        EncoderAlias("clip-vit-b-32-laion", "open_clip", "ViT-B-32:laion2b_s34b_b79k",
                     "LAION-2B CLIP ViT-B/32 (open_clip, 224 px)"),
        EncoderAlias("clip-vit-b-32-hf", "transformers", "openai/clip-vit-base-patch32",
                     "OpenAI CLIP ViT-B/32 (transformers CLIPModel, 224 px)"),
        EncoderAlias("plip", "transformers", "vinid/plip",
                     "PLIP: CLIP ViT-B/32 fine-tuned on OpenPath pathology image-text pairs (transformers)"),
        EncoderAlias("pubmedclip", "transformers", "flaviagiammarino/pubmed-clip-vit-base-patch32",
                     "PubMedCLIP: CLIP ViT-B/32 fine-tuned on ROCO radiology image-caption pairs (transformers)"),
        EncoderAlias("quiltnet", "open_clip", "hf-hub:wisdomik/QuiltNet-B-32",
                     "QuiltNet: CLIP ViT-B/32 fine-tuned on Quilt-1M histopathology video frames (open_clip)"),
    )
}


def list_aliases() -> list[dict[str, str]]:
    """The alias table as plain rows (name, backend, target, description)."""
    return [{"name": a.name, "backend": a.backend, "target": a.target, "description": a.description}
            for a in ALIASES.values()]


# ----------------------------------------------------------------------------- the interface
class Encoder(ABC):
    """An image encoder, with a text encoder when `has_text`.

    Attributes: `id` (stable string naming the architecture/source), `weights_id` (sha256 prefix of the
    weights file, or the pretrained tag / hub id), `preprocess` (the model's own preprocessing as a
    `vlm.preprocess.Preprocess`), `embed_dim`, `logit_scale` (the model's own, exp'd; 1.0 for
    image-only models), `device`, `has_text`, `name` (what the user asked for), `backend`.
    """

    backend: str = ""
    has_text: bool = True

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


def _no_text(encoder: Encoder) -> VlmError:
    return VlmError(f"{encoder.id} is an image-only backbone: it has no text encoder, so it cannot do zero-shot "
                    f"classification. Use it for fine-tuning, or pick a vision-language model "
                    f"({', '.join(ALIASES)}).")


class OpenClipEncoder(Encoder):
    backend = "open_clip"

    def __init__(self, model: nn.Module, tokenizer: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.tokenizer = tokenizer

    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        texts = list(texts)
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), TEXT_BATCH):
                tokens = self.tokenizer(texts[i:i + TEXT_BATCH]).to(self.device)
                out.append(self.model.encode_text(tokens).float())
        return torch.cat(out) if out else torch.empty(0, self.embed_dim, device=self.device)

    def image_tower(self) -> nn.Module:
        return self.model.visual


class _HFImageTower(nn.Module):
    """Preprocessed images -> projected image features of a transformers CLIP-style model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if hasattr(model, "vision_model") and hasattr(model, "visual_projection"):
            self.vision_model = model.vision_model
            self.visual_projection = model.visual_projection
            self.model = None
        else:
            self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.model is not None:
            return _features(self.model.get_image_features(pixel_values=x))
        return self.visual_projection(self.vision_model(pixel_values=x).pooler_output)


def _features(out: Any) -> torch.Tensor:
    """transformers >= 5 returns a ModelOutput from get_*_features (projected in pooler_output)."""
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:
        pooled = out[0] if isinstance(out, (tuple, list)) else out["pooler_output"]
    return pooled


class TransformersEncoder(Encoder):
    backend = "transformers"

    def __init__(self, model: nn.Module, tokenizer: Any, context_length: int | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.tokenizer = tokenizer
        self.context_length = context_length

    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=x))

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        texts = list(texts)
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), TEXT_BATCH):
                enc = self.tokenizer(texts[i:i + TEXT_BATCH], padding=True, truncation=True,
                                     max_length=self.context_length, return_tensors="pt")
                kwargs = {"input_ids": enc["input_ids"].to(self.device)}
                if "attention_mask" in enc:
                    kwargs["attention_mask"] = enc["attention_mask"].to(self.device)
                out.append(_features(self.model.get_text_features(**kwargs)).float())
        return torch.cat(out) if out else torch.empty(0, self.embed_dim, device=self.device)

    def image_tower(self) -> nn.Module:
        return _HFImageTower(self.model)


class TimmEncoder(Encoder):
    backend = "timm"
    has_text = False

    def __init__(self, model: nn.Module, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model

    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        raise _no_text(self)

    def image_tower(self) -> nn.Module:
        return self.model


# ----------------------------------------------------------------------------- helpers
def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, read now rather than at import time."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover
        return False


def weights_file_id(path: str | os.PathLike) -> str:
    """The weights id of a local file: 'sha256:' + the first 16 hex digits of its sha256."""
    return f"sha256:{file_digest(path)[:16]}"


def _check_weights_file(weights: str | os.PathLike | None) -> Path | None:
    if weights is None:
        return None
    path = Path(weights).expanduser()
    if not path.is_file():
        where = "" if path.parent.is_dir() else f" (folder {path.parent} does not exist either)"
        raise VlmError(f"Weights file {path} not found{where}.")
    return path


def _interp(value: Any) -> str:
    """Map open_clip / timm / PIL interpolation names or codes to ours."""
    if isinstance(value, int):  # PIL resample codes
        return {0: "nearest", 2: "bilinear", 3: "bicubic", 4: "area"}.get(value, "bicubic")
    value = str(value or "bicubic").lower()
    if value in INTERPOLATIONS:
        return value
    return "bicubic"  # 'random', 'lanczos', ... -> the common CLIP choice


def _square(size: Any, who: str) -> int:
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


def _mismatch_message(target: str, source: Path, missing: Sequence[str], unexpected: Sequence[str],
                      detail: str = "") -> str:
    parts = [f"Weights {source} do not fit {target}."]
    if missing:
        parts.append(f"{len(missing)} missing key(s), e.g. {', '.join(list(missing)[:4])}.")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s), e.g. {', '.join(list(unexpected)[:4])}.")
    if detail:
        parts.append(detail)
    parts.append("Pass the --model the checkpoint was saved from.")
    return " ".join(parts)


def _size_mismatch_detail(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln]
    if lines:
        return f"{len(lines)} shape mismatch(es), e.g. {lines[0][:200]}"
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


# ----------------------------------------------------------------------------- name resolution
@dataclass(frozen=True)
class Resolved:
    backend: str
    target: str
    alias: EncoderAlias | None = None


def _open_clip_models() -> list[str]:
    import open_clip

    return open_clip.list_models()


def _looks_like_path(name: str) -> bool:
    """A filesystem path rather than a hub id ('ORG/NAME')."""
    return name.startswith((".", "/", "~")) or (os.sep in name and not re.fullmatch(r"[\w.-]+/[\w.-]+", name))


def resolve_name(name: str) -> Resolved:
    """Which backend and target a model name means (see the module docstring for the order)."""
    raw = name.strip()
    if not raw:
        raise VlmError("Empty model name: pass --model with an alias (" + ", ".join(ALIASES) + ") or a model name.")
    alias = ALIASES.get(raw.lower())
    if alias is not None:
        return Resolved(alias.backend, alias.target, alias)
    for prefix, backend in (("open_clip:", "open_clip"), ("open-clip:", "open_clip"), ("transformers:", "transformers"),
                            ("timm:", "timm")):
        if raw.lower().startswith(prefix):
            return Resolved(backend, raw[len(prefix):])
    if raw.startswith(("hf-hub:", "local-dir:")):
        return Resolved("open_clip", raw)
    models = _open_clip_models()
    arch = raw.split(":", 1)[0]
    if arch in models or arch.replace("/", "-") in models:
        return Resolved("open_clip", raw)
    path = Path(raw).expanduser()
    if path.is_dir():
        if (path / OPEN_CLIP_CONFIG).is_file():
            return Resolved("open_clip", f"local-dir:{path}")
        if (path / "config.json").is_file():
            return Resolved("transformers", str(path))
        raise VlmError(f"Folder {path} holds neither {OPEN_CLIP_CONFIG} (open_clip) nor config.json (transformers).")
    if _looks_like_path(raw):
        raise VlmError(f"Model folder {path} not found.")
    import timm

    if timm.is_model(raw):
        return Resolved("timm", raw)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", raw):
        return Resolved("transformers", raw)
    raise VlmError(unknown_model_message(raw))


def unknown_model_message(name: str) -> str:
    """'Unknown model' with the known aliases, closest first, and the other accepted forms."""
    ranked = sorted(ALIASES, key=lambda a: -difflib.SequenceMatcher(None, name.lower(), a).ratio())
    close_arch = difflib.get_close_matches(name, _open_clip_models(), n=3, cutoff=0.6)
    arch_hint = f" Close open_clip architectures: {', '.join(close_arch)}." if close_arch else ""
    return (f"Unknown model '{name}'. Known aliases (closest first): {', '.join(ranked)}.{arch_hint} Also accepted: "
            f"an open_clip architecture (optionally NAME:TAG, e.g. ViT-B-32:laion2b_s34b_b79k), hf-hub:ORG/REPO, "
            f"local-dir:FOLDER, a transformers hub id (ORG/NAME) or local folder with config.json, or a timm model name.")


# ----------------------------------------------------------------------------- open_clip
def localize_text_config(text_cfg: dict[str, Any], folder: str | os.PathLike, required: bool = True) -> dict[str, Any]:
    """Point an open_clip `text_cfg` that names a Hugging Face text model at a local copy in `folder`.

    open_clip builds an `hf_model_name` text tower (BiomedCLIP's PubMedBERT) from the hub's config and
    tokenizer even when the CLIP weights are local. If `folder/text/` (or `folder/<last part of the
    hf_model_name>/`) holds that model's `config.json` and tokenizer files, `hf_model_name` and
    `hf_tokenizer_name` are rewritten to it and `hf_model_pretrained` is turned off (the CLIP checkpoint
    carries the text weights). Without such a folder: VlmError if `required`, else the config unchanged.
    """
    out = dict(text_cfg)
    hf_name = text_cfg.get("hf_model_name")
    tok_name = text_cfg.get("hf_tokenizer_name")
    if not hf_name and not tok_name:
        return out
    folder = Path(folder)
    ref = hf_name or tok_name
    candidates = [folder / TEXT_SUBDIR, folder / Path(str(ref)).name]
    local = next((c for c in candidates if (c / "config.json").is_file()), None)
    if local is None:
        if all(Path(str(n)).expanduser().is_dir() for n in (hf_name, tok_name) if n):
            out["hf_model_pretrained"] = False
            return out
        if not required:
            return out
        raise VlmError(
            f"{folder / OPEN_CLIP_CONFIG} builds its text tower from the Hugging Face model '{ref}', which would be "
            f"fetched from the hub. For offline use put that model's config.json and tokenizer files (vocab.txt, "
            f"tokenizer_config.json, special_tokens_map.json or tokenizer.json; no weights needed) in "
            f"{folder / TEXT_SUBDIR}/ (e.g. `huggingface-cli download {ref} config.json vocab.txt tokenizer_config.json "
            f"special_tokens_map.json --local-dir {folder / TEXT_SUBDIR}`).")
    tokenizer_files = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer_config.json", "spiece.model",
                       "sentencepiece.bpe.model")
    if tok_name and not any((local / f).is_file() for f in tokenizer_files):
        raise VlmError(f"{local} has the text model's config.json but no tokenizer files ({', '.join(tokenizer_files[:4])}"
                       f"...): copy the tokenizer of '{tok_name}' there too.")
    if hf_name:
        out["hf_model_name"] = str(local)
    if tok_name:
        out["hf_tokenizer_name"] = str(local)
    out["hf_model_pretrained"] = False
    return out


@lru_cache(maxsize=1)
def hub_reachable() -> bool:
    """Can the Hugging Face endpoint be reached at all? (One quick TCP connect, so that a machine without
    network fails in a second instead of after huggingface_hub's retries; assumed yes behind a proxy.)"""
    import socket
    import urllib.parse

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    try:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    except Exception:  # pragma: no cover
        endpoint = "https://huggingface.co"
    parsed = urllib.parse.urlparse(endpoint)
    try:
        with socket.create_connection((parsed.hostname or "huggingface.co", parsed.port or 443), timeout=3):
            return True
    except OSError:
        return False


def _hub_local_only() -> bool:
    return hub_offline() or not hub_reachable()


def _hub_fetch(repo: str, filename: str, **kwargs: Any) -> str:
    """A file of a hub repo from the local HF cache, else (network permitting) from the hub."""
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(repo_id=repo, filename=filename, local_files_only=True, **kwargs)
    except Exception:  # noqa: BLE001 - not cached
        if _hub_local_only():
            raise
    return hf_hub_download(repo_id=repo, filename=filename, **kwargs)


def _offline_reason(exc: Exception) -> str:
    if hub_offline():
        return "HF_HUB_OFFLINE is set and the files are not in the Hugging Face cache"
    if not hub_reachable():
        return "the Hugging Face hub cannot be reached from here and the files are not in its local cache"
    return exception_summary(exc)


def _fetch_open_clip_hub(repo: str, alias: EncoderAlias | None) -> tuple[Path, Path]:
    """(snapshot folder, weights file) of an open_clip hf-hub repo, from the HF cache or the hub."""
    try:
        config_path = Path(_hub_fetch(repo, OPEN_CLIP_CONFIG))
        weights = None
        last: Exception | None = None
        for fname in ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin"):
            try:
                weights = Path(_hub_fetch(repo, fname))
                break
            except Exception as exc:  # noqa: BLE001 - any miss -> try the next name
                last = exc
        if weights is None:
            raise last or FileNotFoundError("no weights")
    except VlmError:
        raise
    except Exception as exc:  # noqa: BLE001 - network/cache errors come in many types
        text = f", plus the config.json and tokenizer files (vocab.txt, tokenizer_config.json, special_tokens_map.json) " \
               f"of its text model {alias.text_model} into FOLDER/{TEXT_SUBDIR}/," if alias and alias.text_model else \
               f" (if its text_cfg names an hf_model_name, that model's config.json and tokenizer files go in FOLDER/{TEXT_SUBDIR}/)"
        raise VlmError(
            f"Cannot load hf-hub:{repo} ({_offline_reason(exc)}). To use it offline, download {OPEN_CLIP_CONFIG} and "
            f"open_clip_pytorch_model.bin (or open_clip_model.safetensors) from https://huggingface.co/{repo} into a "
            f"folder FOLDER{text} and pass --model local-dir:FOLDER."
        ) from None
    return config_path.parent, weights


def _fetch_tag_weights(arch: str, tag: str, tag_cfg: dict[str, Any]) -> Path:
    hub = tag_cfg.get("hf_hub", "")
    url = tag_cfg.get("url", "")
    if "file" in tag_cfg:
        return Path(tag_cfg["file"])
    try:
        if hub:
            # open_clip's convention: 'org/repo/' (default file names) or 'org/repo/filename'
            repo, fname = (hub.rstrip("/"), "") if hub.endswith("/") else os.path.split(hub)
            if fname:
                return Path(_hub_fetch(repo, fname))
            last: Exception | None = None
            for candidate in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
                try:
                    return Path(_hub_fetch(repo, candidate))
                except Exception as exc:  # noqa: BLE001
                    last = exc
            raise last  # type: ignore[misc]
        if hub_offline():
            raise RuntimeError("HF_HUB_OFFLINE is set")
        from open_clip.pretrained import download_pretrained_from_url

        return Path(download_pretrained_from_url(url))
    except Exception as exc:  # noqa: BLE001
        where = (f"https://huggingface.co/{hub.rstrip('/')} (open_clip_model.safetensors or open_clip_pytorch_model.bin)"
                 if hub else url)
        raise VlmError(
            f"Cannot fetch the '{tag}' weights of {arch} ({_offline_reason(exc)}). Download them from {where} and "
            f"pass --model {arch} --weights FILE."
        ) from None


def _load_open_clip(target: str, weights: Path | None, device: torch.device, alias: EncoderAlias | None) -> OpenClipEncoder:
    import open_clip
    from open_clip.factory import _find_checkpoint_in_dir, parse_model_name
    from open_clip.pretrained import get_pretrained_cfg

    schema, ident = parse_model_name(target)
    create_kwargs: dict[str, Any] = {}
    tokenizer_source: dict[str, Any] | None = None  # text_cfg for an HF tokenizer
    ckpt: Path | None = weights
    weights_id = weights_file_id(weights) if weights else RANDOM_INIT

    if schema in ("hf-hub", "local-dir"):
        if schema == "hf-hub":
            folder, hub_weights = _fetch_open_clip_hub(ident, alias)
            rev = folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) else ""
            enc_id = f"open_clip:hf-hub:{ident}"
            if ckpt is None:
                ckpt, weights_id = hub_weights, f"hf-hub:{ident}" + (f"@{rev[:12]}" if rev else "")
        else:
            folder = Path(ident).expanduser()
            if not folder.is_dir():
                raise VlmError(f"local-dir:{folder}: folder not found.")
            enc_id = f"open_clip:local-dir:{folder.resolve().name}"
        config_file = folder / OPEN_CLIP_CONFIG
        if not config_file.is_file():
            raise VlmError(f"{folder} has no {OPEN_CLIP_CONFIG}: a local-dir: folder needs {OPEN_CLIP_CONFIG} and "
                           f"open_clip_pytorch_model.bin (or open_clip_model.safetensors).")
        try:
            config = json.loads(config_file.read_text())
            model_cfg = config["model_cfg"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise VlmError(f"{config_file} is not an open_clip config with a 'model_cfg' entry "
                           f"({exception_summary(exc)}).") from None
        if ckpt is None:
            found = _find_checkpoint_in_dir(folder)
            if not found:
                raise VlmError(f"No weights in {folder}: put open_clip_pytorch_model.bin or open_clip_model.safetensors "
                               f"(the CLIP checkpoint) next to {OPEN_CLIP_CONFIG}, or pass --weights FILE.")
            ckpt = Path(found)
            weights_id = weights_file_id(ckpt)
        text_cfg = localize_text_config(model_cfg.get("text_cfg", {}), folder, required=schema == "local-dir")
        if text_cfg.get("hf_model_name"):
            text_cfg["hf_model_pretrained"] = False
        create_kwargs["text_cfg"] = text_cfg
        tokenizer_source = text_cfg
        create_name = f"local-dir:{folder}"
    else:
        arch, _, tag = ident.partition(":")
        arch = arch.replace("/", "-")
        if arch not in open_clip.list_models():
            raise VlmError(unknown_model_message(ident))
        enc_id = f"open_clip:{arch}"
        if tag:
            tag_cfg = get_pretrained_cfg(arch, tag)
            if not tag_cfg:
                tags = open_clip.list_pretrained_tags_by_model(arch)
                raise VlmError(f"Unknown pretrained tag '{tag}' for {arch}. Known tags: {', '.join(tags) or 'none'}.")
            if tag_cfg.get("quick_gelu"):
                create_kwargs["force_quick_gelu"] = True
            create_kwargs["force_preprocess_cfg"] = {k: tag_cfg[k] for k in ("mean", "std", "interpolation",
                                                                             "resize_mode") if k in tag_cfg}
            if ckpt is None:
                ckpt = _fetch_tag_weights(arch, tag, tag_cfg)
                weights_id = tag
        elif ckpt is None:
            warnings.warn(f"{arch}: no pretrained tag and no --weights: the model is random-initialised.", stacklevel=3)
        model_cfg = open_clip.get_model_config(arch) or {}
        text_cfg = model_cfg.get("text_cfg", {})
        if text_cfg.get("hf_model_name"):
            text_cfg = dict(text_cfg, hf_model_pretrained=False)
            create_kwargs["text_cfg"] = text_cfg
            tokenizer_source = text_cfg
        create_name = arch

    # Build without loading anything (no hub access), then load the checkpoint ourselves for clear errors.
    try:
        with _quiet_open_clip():
            model = open_clip.create_model(create_name, pretrained=None, load_weights=False, pretrained_image=False,
                                           pretrained_text=False, device="cpu", **create_kwargs)
    except VlmError:
        raise
    except Exception as exc:  # noqa: BLE001 - HF text config fetches etc.
        hint = ""
        if tokenizer_source and tokenizer_source.get("hf_model_name"):
            hint = (f" Its text tower is the Hugging Face model '{tokenizer_source['hf_model_name']}': for offline use "
                    f"put its config.json and tokenizer files in FOLDER/{TEXT_SUBDIR}/ and pass --model local-dir:FOLDER.")
        raise VlmError(f"Cannot build open_clip model {target} ({_offline_reason(exc)}).{hint}") from None
    if ckpt is not None:
        _load_open_clip_checkpoint(model, ckpt, target)

    tokenizer = _open_clip_tokenizer(create_name, model_cfg, tokenizer_source, target)
    model = model.to(device, memory_format=torch.channels_last).eval()
    pp = model.visual.preprocess_cfg
    preprocess = Preprocess(size=_square(pp.get("size", 224), target), mean=tuple(pp["mean"]), std=tuple(pp["std"]),
                            interpolation=_interp(pp.get("interpolation")), rgb=True)
    embed_dim = int(model_cfg.get("embed_dim") or model.text_projection.shape[-1])
    return OpenClipEncoder(model, tokenizer, id=enc_id, weights_id=weights_id, preprocess=preprocess,
                           embed_dim=embed_dim, logit_scale=float(model.logit_scale.detach().exp().float().cpu().item()),
                           device=device, name=alias.name if alias else target,
                           description=alias.description if alias else "")


@contextlib.contextmanager
def _quiet_open_clip():
    """open_clip logs a warning for every model built without weights; we load them right after."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(level)


def _load_open_clip_checkpoint(model: nn.Module, ckpt: Path, target: str) -> None:
    import open_clip

    try:
        incompatible = open_clip.load_checkpoint(model, str(ckpt), strict=False)
    except Exception as exc:  # noqa: BLE001 - unreadable file, size mismatches, open_clip's resize asserts, ...
        state = _read_state_dict(ckpt)  # raises "Cannot read weights" if the file is no state dict
        own = model.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state.items()
                  if k in own and tuple(v.shape) != tuple(own[k].shape)]
        detail = f"{len(shapes)} shape mismatch(es), e.g. {shapes[0]}." if shapes else exception_summary(exc)
        raise VlmError(_mismatch_message(target, ckpt, missing, unexpected, detail)) from None
    missing = list(getattr(incompatible, "missing_keys", []) or [])
    unexpected = list(getattr(incompatible, "unexpected_keys", []) or [])
    if missing or unexpected:
        raise VlmError(_mismatch_message(target, ckpt, missing, unexpected))


def _open_clip_tokenizer(create_name: str, model_cfg: dict, text_cfg: dict | None, target: str) -> Any:
    import open_clip
    from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

    cfg_text = model_cfg.get("text_cfg", {}) if model_cfg else {}
    context_length = cfg_text.get("context_length", 77)
    try:
        if text_cfg and text_cfg.get("hf_tokenizer_name"):
            return HFTokenizer(text_cfg["hf_tokenizer_name"], context_length=context_length,
                               tokenizer_mode=cfg_text.get("tokenizer_mode"), **cfg_text.get("tokenizer_kwargs", {}))
        if create_name.startswith("local-dir:"):
            return SimpleTokenizer(context_length=context_length, **cfg_text.get("tokenizer_kwargs", {}))
        return open_clip.get_tokenizer(create_name)
    except Exception as exc:  # noqa: BLE001
        raise VlmError(f"Cannot load the tokenizer of {target} ({_offline_reason(exc)}). For offline use put the "
                       f"tokenizer files in FOLDER/{TEXT_SUBDIR}/ of a local-dir:FOLDER.") from None


# ----------------------------------------------------------------------------- transformers
HF_WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")


def _transformers_offline_error(target: str, exc: Exception) -> VlmError:
    return VlmError(
        f"Cannot load transformers model {target} ({_offline_reason(exc)}). To use it offline run "
        f"`huggingface-cli download {target} --local-dir DIR` on a machine with internet (config.json, "
        f"model.safetensors or pytorch_model.bin, preprocessor_config.json and the tokenizer files), copy DIR here "
        f"and pass --model DIR.")


def _transformers_preprocess(target: str, local: bool, model: nn.Module) -> Preprocess:
    """Size, mean, std and interpolation from preprocessor_config.json (CLIPImageProcessor), else the config."""
    cfg: dict[str, Any] = {}
    try:
        if local:
            path = Path(target) / "preprocessor_config.json"
            cfg = json.loads(path.read_text()) if path.is_file() else {}
        else:
            cfg = json.loads(Path(_hub_fetch(target, "preprocessor_config.json")).read_text())
    except Exception:  # noqa: BLE001 - fall back to the model config and CLIP's statistics
        cfg = {}
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    vision_cfg = getattr(model.config, "vision_config", model.config)
    size = cfg.get("crop_size") if cfg.get("do_center_crop", True) and cfg.get("crop_size") else cfg.get("size")
    size = size or getattr(vision_cfg, "image_size", 224)
    mean = tuple(cfg.get("image_mean", OPENAI_DATASET_MEAN)) if cfg.get("do_normalize", True) else (0.0, 0.0, 0.0)
    std = tuple(cfg.get("image_std", OPENAI_DATASET_STD)) if cfg.get("do_normalize", True) else (1.0, 1.0, 1.0)
    return Preprocess(size=_square(size, target), mean=mean, std=std, interpolation=_interp(cfg.get("resample", 3)),
                      rgb=True)


def _load_transformers(target: str, weights: Path | None, device: torch.device,
                       alias: EncoderAlias | None) -> TransformersEncoder:
    from transformers import AutoModel, AutoTokenizer

    path = Path(target).expanduser()
    local = path.is_dir()
    source = str(path) if local else target
    if not local and _looks_like_path(target):
        raise VlmError(f"Model folder {path} not found.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            local_only = local or _hub_local_only()
            model = AutoModel.from_pretrained(source, local_files_only=local_only)
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    except Exception as exc:  # noqa: BLE001
        if local:
            raise VlmError(f"Cannot load the transformers model in {path} ({exception_summary(exc)}): it needs "
                           f"config.json, model.safetensors or pytorch_model.bin and the tokenizer files.") from None
        raise _transformers_offline_error(target, exc) from None
    if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
        raise VlmError(f"{target} is a {type(model).__name__}, not a CLIP-style model (no get_image_features / "
                       f"get_text_features). Image-only backbones load through timm.")
    if weights is not None:
        state = _read_state_dict(weights)
        result = model.load_state_dict(state, strict=False) if _fits(model, state, target, weights) else None
        missing = [k for k in result.missing_keys if not k.endswith("position_ids")] if result else []
        if missing or (result and result.unexpected_keys):
            raise VlmError(_mismatch_message(target, weights, missing, result.unexpected_keys))
        weights_id = weights_file_id(weights)
    elif local:
        files = [path / n for n in HF_WEIGHT_NAMES if (path / n).is_file()]
        weights_id = weights_file_id(files[0]) if files else f"local:{path.resolve().name}"
    else:
        commit = getattr(model.config, "_commit_hash", None)
        weights_id = target + (f"@{commit[:12]}" if commit else "")
    enc_id = f"transformers:{path.resolve().name}" if local else f"transformers:{target}"
    model = model.to(device, memory_format=torch.channels_last).eval()
    cfg = model.config
    text_cfg = getattr(cfg, "text_config", None)
    context_length = getattr(text_cfg, "max_position_embeddings", None) if text_cfg is not None else None
    embed_dim = getattr(cfg, "projection_dim", None) or _probe_dim(model, device)
    scale = getattr(model, "logit_scale", None)
    logit_scale = float(scale.detach().exp().float().cpu().item()) if isinstance(scale, torch.Tensor) else 100.0
    return TransformersEncoder(model, tokenizer, context_length, id=enc_id, weights_id=weights_id,
                               preprocess=_transformers_preprocess(str(path) if local else target, local, model),
                               embed_dim=int(embed_dim), logit_scale=logit_scale, device=device,
                               name=alias.name if alias else target, description=alias.description if alias else "")


def _probe_dim(model: nn.Module, device: torch.device) -> int:
    size = getattr(getattr(model.config, "vision_config", model.config), "image_size", 224)
    with torch.inference_mode():
        return int(_features(model.get_image_features(pixel_values=torch.zeros(1, 3, size, size))).shape[-1])


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise VlmError(f"Cannot read weights {path} as a state dict saved with torch.save or safetensors "
                       f"({exception_summary(exc)}).") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VlmError(f"{path} does not hold a state dict (name -> tensor).")
    if state and next(iter(state)).startswith("module."):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _fits(model: nn.Module, state: dict[str, torch.Tensor], target: str, source: Path) -> bool:
    own = model.state_dict()
    bad = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
           if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise VlmError(_mismatch_message(target, source, [], [], f"{len(bad)} shape mismatch(es), e.g. {bad[0]}"))
    return True


# ----------------------------------------------------------------------------- timm
def _load_timm(target: str, weights: Path | None, device: torch.device) -> TimmEncoder:
    import timm
    from timm.data import resolve_data_config

    if not timm.is_model(target):
        raise VlmError(unknown_model_message(target))
    try:
        model = timm.create_model(target, pretrained=False, num_classes=0)
    except Exception as exc:  # noqa: BLE001
        raise VlmError(f"Cannot build timm model {target} ({exception_summary(exc)}).") from None
    if weights is not None:
        _load_timm_weights(model, weights, target)
    if weights is None:
        warnings.warn(f"{target}: no --weights: the backbone is random-initialised.", stacklevel=3)
    data_cfg = resolve_data_config({}, model=model)
    preprocess = Preprocess(size=_square(data_cfg["input_size"][1:], target), mean=tuple(data_cfg["mean"]),
                            std=tuple(data_cfg["std"]), interpolation=_interp(data_cfg.get("interpolation")), rgb=True)
    model = model.to(device, memory_format=torch.channels_last).eval()
    return TimmEncoder(model, id=f"timm:{target}", weights_id=weights_file_id(weights) if weights else RANDOM_INIT,
                       preprocess=preprocess, embed_dim=int(model.num_features), logit_scale=1.0, device=device,
                       name=target)


def _load_timm_weights(model: nn.Module, weights: Path, target: str) -> None:
    """Strictly load a timm-layout state dict into a head-less model (classifier keys are dropped)."""
    state = _read_state_dict(weights)
    heads = model.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own or not any(k.startswith(f"{h}.") for h in heads)}
    _fits(model, state, target, weights)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise VlmError(_mismatch_message(target, weights, result.missing_keys, result.unexpected_keys))


# ----------------------------------------------------------------------------- entry point
def _weights_as_tag(resolved: Resolved, weights: str) -> tuple[Resolved, str | None]:
    """`--model ViT-B-32 --weights openai` means the pretrained tag, when no such file exists."""
    if resolved.backend != "open_clip" or resolved.target.startswith(("hf-hub:", "local-dir:")):
        return resolved, weights
    import open_clip

    arch, _, tag = resolved.target.partition(":")
    if not tag and weights in open_clip.list_pretrained_tags_by_model(arch.replace("/", "-")):
        return Resolved("open_clip", f"{arch}:{weights}", resolved.alias), None
    return resolved, weights


def load_encoder(name: str, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> Encoder:
    """Load an encoder by alias or name, optionally with a local weights file, on a device.

    Example: `load_encoder("ViT-B-32", weights="vitb32.pt")`, `load_encoder("biomedclip")`,
    `load_encoder("local-dir:/models/biomedclip")`, `load_encoder("vinid/plip")`,
    `load_encoder("tf_efficientnet_lite0", weights="../shared/weights/tf_efficientnet_lite0.safetensors")`.
    """
    resolved = resolve_name(str(name))
    if weights is not None and not Path(weights).expanduser().is_file():
        resolved, weights = _weights_as_tag(resolved, str(weights))
    weights_path = _check_weights_file(weights)
    dev = resolve_device(device)
    if resolved.backend == "open_clip":
        return _load_open_clip(resolved.target, weights_path, dev, resolved.alias)
    if resolved.backend == "transformers":
        return _load_transformers(resolved.target, weights_path, dev, resolved.alias)
    if resolved.backend == "timm":
        return _load_timm(resolved.target, weights_path, dev)
    raise VlmError(f"Unknown backend '{resolved.backend}'.")  # pragma: no cover
