"""Text embeddings of prompts, cached on disk beside the image embeddings and kept in memory.

`TextCache(cache_dir).encode(encoder, prompts)` returns what `encoder.encode_texts(prompts)` would (T, E
float32 features, unnormalised) and encodes only the prompts it has not seen: so re-ranking prompt files
in which a few prompts changed runs the text tower on those few, and a run whose prompts are all cached
never builds a text tower (with a lazy encoder, `load_encoder(..., lazy=True)`).

Key of one entry: the format version, the encoder id, its weights id, its `text_id` (tokenizer and
settings) and `context_length`, and the exact prompt string. Entries that share all but the prompt live
in one folder, `<cache_dir>/text/<sha256 of those fields>/`, as shards: safetensors files holding the
(T, E) features ("embeddings") and, in their metadata, the fields, the T prompts in row order and a
sha256 over all three. A shard is verified on read: stored fields equal to the wanted ones, one row per
prompt, finite values of the encoder's width and a matching digest; one that fails is discarded (and
deleted) with a warning, and its prompts are encoded again. Newly encoded prompts are written as one new
shard; past `MAX_SHARDS` a folder is merged into one. Encoders without a `text_id`, random-initialised
ones (weights id `random-init`) and those whose features depend on the batch (`pads_per_class`) are never
cached.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from vlm.embeddings import default_cache_dir, discard_entry, entry_digest, read_entry
from vlm.encoders import RANDOM_INIT, Encoder
from vlm.errors import VlmError
from vlm.files import atomic_write_bytes

FORMAT_VERSION = 1
MAX_SHARDS = 32


def text_key(encoder: Encoder) -> dict[str, Any] | None:
    """The fields every cached prompt of this encoder shares, or None when its texts are not cacheable."""
    if not encoder.has_text or not encoder.text_id or encoder.weights_id.startswith(RANDOM_INIT) \
            or getattr(encoder, "pads_per_class", False):  # its features depend on the prompts batched together
        return None
    return {"format_version": FORMAT_VERSION, "encoder": encoder.id, "weights_id": encoder.weights_id,
            "text_id": encoder.text_id, "context_length": encoder.context_length}


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False)


class TextCache:
    """Prompt features for one process: read from `<cache_dir>/text/` once per encoder, then kept in memory.

    `encoded` counts the prompts this cache had the encoder encode (the others came from memory or disk).
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None) -> None:
        base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.root = base / "text"
        self.encoded = 0
        self._tables: dict[str, dict[str, torch.Tensor]] = {}
        self._shards: dict[str, set[str]] = {}  # shard file names read or written, per folder

    def encode(self, encoder: Encoder, prompts: Sequence[str]) -> torch.Tensor:
        """(T, E) float32 features of `prompts` on the encoder's device; only uncached prompts are encoded."""
        prompts = list(prompts)
        key = text_key(encoder)
        if key is None:
            self.encoded += len(prompts)
            return encoder.encode_texts(prompts)
        folder, key_json = self._folder(key), _canonical(key)
        table = self._table(folder, key_json, encoder.embed_dim)
        new = list(dict.fromkeys(p for p in prompts if p not in table))
        if new:
            feats = encoder.encode_texts(new).detach().float().cpu()
            table.update(zip(new, feats))
            self.encoded += len(new)
            self._write(folder, key_json, new, feats)
        if not prompts:
            return torch.empty(0, encoder.embed_dim, device=encoder.device)
        return torch.stack([table[p] for p in prompts]).to(encoder.device)

    def _folder(self, key: dict[str, Any]) -> Path:
        return self.root / hashlib.sha256(_canonical(key).encode()).hexdigest()[:32]

    def _table(self, folder: Path, key_json: str, dim: int) -> dict[str, torch.Tensor]:
        """Prompt -> features of one encoder: the verified shards of its folder, read on first use."""
        if folder.name in self._tables:
            return self._tables[folder.name]
        table: dict[str, torch.Tensor] = {}
        names: set[str] = set()
        for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
            entries = self._read(path, key_json, dim)
            if entries is not None:
                table.update(entries)
                names.add(path.name)
        self._tables[folder.name], self._shards[folder.name] = table, names
        return table

    def _read(self, path: Path, key_json: str, dim: int) -> dict[str, torch.Tensor] | None:
        """A shard's prompt -> features, or None (with a warning, the file deleted) if it fails verification."""
        try:
            emb, meta = read_entry(path)
            prompts = json.loads(meta["prompts"])
        except FileNotFoundError:  # merged away by another process meanwhile
            return None
        except Exception as exc:  # noqa: BLE001 - any damage is a mismatch
            return self._discard(path, f"it cannot be read ({type(exc).__name__})")
        if meta.get("key") != key_json:
            return self._discard(path, "its stored key differs from the encoder's")
        if emb.dim() != 2 or emb.shape != (len(prompts), dim) or emb.dtype != torch.float32 \
                or not torch.isfinite(emb).all():
            return self._discard(path, f"its embeddings {tuple(emb.shape)} do not fit {len(prompts)} prompts x {dim}")
        if meta.get("digest") != entry_digest(key_json, emb, meta["prompts"]):
            return self._discard(path, "its digest does not match its contents")
        return dict(zip(prompts, emb))

    def _discard(self, path: Path, reason: str) -> None:
        return discard_entry(path, "Text-embedding", reason, "its prompts are encoded again")

    def _write(self, folder: Path, key_json: str, prompts: list[str], feats: torch.Tensor) -> None:
        """One new shard for `prompts`; past MAX_SHARDS, the folder's known shards merged into one."""
        names = self._shards.setdefault(folder.name, set())
        merge = len(names) + 1 > MAX_SHARDS
        if merge:
            table = self._tables[folder.name]
            prompts, feats = list(table), torch.stack(list(table.values()))
        name = self._save(folder, key_json, prompts, feats)
        if name is None:
            return
        if merge:
            for old in names - {name}:
                (folder / old).unlink(missing_ok=True)
            names.clear()
        names.add(name)

    def _save(self, folder: Path, key_json: str, prompts: list[str], feats: torch.Tensor) -> str | None:
        from safetensors.torch import save

        prompts_json = _canonical(prompts)
        feats = feats.contiguous()
        meta = {"key": key_json, "prompts": prompts_json, "digest": entry_digest(key_json, feats, prompts_json)}
        name = hashlib.sha256(prompts_json.encode()).hexdigest()[:24] + ".safetensors"
        try:
            atomic_write_bytes(folder / name, save({"embeddings": feats}, metadata=meta))
        except (VlmError, OSError):
            return None  # a read-only cache folder must not fail a run
        return name
