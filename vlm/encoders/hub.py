"""Offline-first access to the Hugging Face hub, and the messages that say which file goes where.

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

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from vlm.errors import VlmError, exception_summary

TEXT_SUBDIR = "text"
OPEN_CLIP_CONFIG = "open_clip_config.json"
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer_config.json",
                   "special_tokens_map.json", "spiece.model", "sentencepiece.bpe.model")


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


def hub_local_only() -> bool:
    """Use the local Hugging Face cache only (offline by setting, or no network)."""
    return hub_offline() or not hub_reachable()


def hub_fetch(repo: str, filename: str, **kwargs: Any) -> str:
    """A file of a hub repo from the local HF cache, else (network permitting) from the hub."""
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(repo_id=repo, filename=filename, local_files_only=True, **kwargs)
    except Exception:  # noqa: BLE001 - not cached
        if hub_local_only():
            raise
    return hf_hub_download(repo_id=repo, filename=filename, **kwargs)


def offline_reason(exc: Exception) -> str:
    """Why a hub fetch failed, in words: offline by setting, no network, or the exception's summary."""
    if hub_offline():
        return "HF_HUB_OFFLINE is set and the files are not in the Hugging Face cache"
    if not hub_reachable():
        return "the Hugging Face hub cannot be reached from here and the files are not in its local cache"
    return exception_summary(exc)


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
    tokenizer_files = [f for f in TOKENIZER_FILES if f not in ("merges.txt", "special_tokens_map.json")]
    if tok_name and not any((local / f).is_file() for f in tokenizer_files):
        raise VlmError(f"{local} has the text model's config.json but no tokenizer files ({', '.join(tokenizer_files[:4])}"
                       f"...): copy the tokenizer of '{tok_name}' there too.")
    if hf_name:
        out["hf_model_name"] = str(local)
    if tok_name:
        out["hf_tokenizer_name"] = str(local)
    out["hf_model_pretrained"] = False
    return out


def tokenizer_files_id(folder: str | os.PathLike) -> str:
    """A digest of the tokenizer files in a folder ("" when it holds none): part of a text-cache key."""
    files = sorted(p for p in (Path(folder) / f for f in TOKENIZER_FILES) if p.is_file())
    if not files:
        return ""
    return hashlib.sha256(b"".join(p.name.encode() + b"\0" + p.read_bytes() for p in files)).hexdigest()[:16]


def fetch_open_clip_hub(repo: str, text_model: str | None = None) -> tuple[Path, Path]:
    """(snapshot folder, weights file) of an open_clip hf-hub repo, from the HF cache or the hub.

    `text_model` (the HF text model its config names, if known) goes into the offline instructions.
    """
    try:
        config_path = Path(hub_fetch(repo, OPEN_CLIP_CONFIG))
        weights = None
        last: Exception | None = None
        for fname in ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin"):
            try:
                weights = Path(hub_fetch(repo, fname))
                break
            except Exception as exc:  # noqa: BLE001 - any miss -> try the next name
                last = exc
        if weights is None:
            raise last or FileNotFoundError("no weights")
    except VlmError:
        raise
    except Exception as exc:  # noqa: BLE001 - network/cache errors come in many types
        text = f", plus the config.json and tokenizer files (vocab.txt, tokenizer_config.json, special_tokens_map.json) " \
               f"of its text model {text_model} into FOLDER/{TEXT_SUBDIR}/," if text_model else \
               f" (if its text_cfg names an hf_model_name, that model's config.json and tokenizer files go in FOLDER/{TEXT_SUBDIR}/)"
        raise VlmError(
            f"Cannot load hf-hub:{repo} ({offline_reason(exc)}). To use it offline, download {OPEN_CLIP_CONFIG} and "
            f"open_clip_pytorch_model.bin (or open_clip_model.safetensors) from https://huggingface.co/{repo} into a "
            f"folder FOLDER{text} and pass --model local-dir:FOLDER."
        ) from None
    return config_path.parent, weights


def fetch_tag_weights(arch: str, tag: str, tag_cfg: dict[str, Any]) -> Path:
    """The weights file of open_clip's pretrained `tag` of `arch` (its hub repo or URL), or a VlmError
    saying where to download it from."""
    hub = tag_cfg.get("hf_hub", "")
    url = tag_cfg.get("url", "")
    if "file" in tag_cfg:
        return Path(tag_cfg["file"])
    try:
        if hub:
            # open_clip's convention: 'org/repo/' (default file names) or 'org/repo/filename'
            repo, fname = (hub.rstrip("/"), "") if hub.endswith("/") else os.path.split(hub)
            if fname:
                return Path(hub_fetch(repo, fname))
            last: Exception | None = None
            for candidate in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
                try:
                    return Path(hub_fetch(repo, candidate))
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
            f"Cannot fetch the '{tag}' weights of {arch} ({offline_reason(exc)}). Download them from {where} and "
            f"pass --model {arch} --weights FILE."
        ) from None


# ----------------------------------------------------------------------------- transformers
def transformers_offline_error(target: str, exc: Exception) -> VlmError:
    """The error for a transformers hub id that cannot be loaded: how to fetch it into a folder."""
    return VlmError(
        f"Cannot load transformers model {target} ({offline_reason(exc)}). To use it offline run "
        f"`huggingface-cli download {target} --local-dir DIR` on a machine with internet (config.json, "
        f"model.safetensors or pytorch_model.bin, preprocessor_config.json and the tokenizer files), copy DIR here "
        f"and pass --model DIR.")
