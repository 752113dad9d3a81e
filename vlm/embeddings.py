"""Image embeddings of a split, computed once per (encoder, weights, data, preprocessing) and cached.

`image_embeddings(encoder, split)` returns L2-normalised (N, E) float32 embeddings and how many
images it had to encode (0 on a cache hit). Batches are slices of the resident uint8 split,
preprocessed on the encoder's device by `encoder.preprocess`; on CUDA the encoder runs under bf16
autocast, on CPU in fp32, always under `torch.inference_mode()`.

3D volumes (N, C, D, H, W) are encoded slice by slice along `slice_axis` (0, 1, 2 = D, H, W): each
slice embedding is L2-normalised, the slices of a volume are pooled (mean or max) and the result is
renormalised. Counts and progress are in volumes.

Progress: on the CPU a forward pass takes at most `CPU_PASS` images (3D: slices; bigger batches are no
faster there), so a bar advances every pass, within a volume too (by the fraction of its slices done);
on a GPU a pass is `batch_size` images or whole volumes. The embeddings do not depend on the pass size
beyond float rounding, and the pass size depends only on the device, so a run is repeatable.

`EmbeddingPolicy` bundles those choices (slice axis, pool, encoding batch size, cache folder) for the
methods that work on embeddings (zero-shot, the linear probe and kNN).

Cache: one `<key>.safetensors` (tensor "embeddings") and a `<key>.json` sidecar that spells out the
key, under `cache_dir` (default `$VLM_CACHE_DIR`, else `~/.cache/medvlm/embeddings`). The key is the
encoder id and weights id, dataset, size, split, the preprocessing id, the 3D policy, the split's data
fingerprint (`vlm.data.data_fingerprint`: shape, labels and a strided sample of images, so that a
re-generated or edited file is not mistaken for the old one) and the format version; its sha256 names
the file. The entry's metadata holds the full key and a sha256 over key and embeddings, and a read
verifies both (and the shape, and finite values): an entry that does not match (another key, rows
reordered or changed on disk, a damaged file) is discarded with one warning and its split encoded again.
Files are written atomically. Random-initialised encoders (weights id `random-init`) are never cached.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from vlm.data import Split, data_fingerprint
from vlm.encoders import RANDOM_INIT, Encoder
from vlm.errors import VlmError
from vlm.preprocess import channels_last
from vlm.ranges import check_option
from vlm.files import atomic_write_bytes, atomic_write_text

FORMAT_VERSION = 2  # 2: the metadata holds the full key and a content digest, verified on every read
ENV_CACHE = "VLM_CACHE_DIR"
POOLS = ("mean", "max")
SLICE_AXES = {0: "D", 1: "H", 2: "W"}
_RESIDENT_LIMIT = 4 << 30  # move a split to the GPU whole when it is below 4 GiB
CPU_PASS = 16  # images (3D: slices) per forward pass on the CPU: the bar advances every second or two

EmbedProgress = Callable[[int], Any]


def default_cache_dir() -> Path:
    """$VLM_CACHE_DIR, else ~/.cache/medvlm/embeddings."""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medvlm" / "embeddings"


def check_policy(slice_axis: int, pool: str) -> None:
    """Validate the 3D slice axis and pooling (raises VlmError)."""
    check_option("slice_axis", slice_axis)  # 0, 1, 2: D (depth), H, W of a (C, D, H, W) volume
    if pool not in POOLS:
        raise VlmError(f"Unknown pooling '{pool}': use {' or '.join(POOLS)}.")


@dataclass(frozen=True)
class EmbeddingPolicy:
    """How a split becomes (cached) image embeddings: 3D slice axis and pooling, encoding batch, cache folder."""

    slice_axis: int = 0
    pool: str = "mean"
    batch_size: int = 256
    cache_dir: str | os.PathLike | None = None  # None: `default_cache_dir()`

    def check(self) -> None:
        """Validate the 3D slice axis and pooling (raises VlmError)."""
        check_policy(self.slice_axis, self.pool)

    def volume_fields(self, is_3d: bool) -> dict[str, Any]:
        """`{"slice_axis": .., "pool": ..}` for 3D data, else `{}`: the 3D policy as records and their
        preprocessing entries store it."""
        return {"slice_axis": self.slice_axis, "pool": self.pool} if is_3d else {}

    def embed(self, encoder: Encoder, split: Split, progress: EmbedProgress | None = None) -> tuple[torch.Tensor, int]:
        """`image_embeddings` of a split under this policy: (N, E) embeddings and the number encoded."""
        return image_embeddings(encoder, split, batch_size=self.batch_size, cache_dir=self.cache_dir,
                                slice_axis=self.slice_axis, pool=self.pool, progress=progress)


def cache_key(encoder: Encoder, split: Split, slice_axis: int = 0, pool: str = "mean") -> dict[str, Any]:
    """The fields that identify a cached embedding matrix (hashed into its file name)."""
    is_3d = split.images.dim() == 5
    return {
        "format_version": FORMAT_VERSION,
        "encoder": encoder.id,
        "weights_id": encoder.weights_id,
        "dataset": split.task.flag,
        "size": split.size,
        "split": split.split,
        "n": int(split.images.shape[0]),
        "preprocess": encoder.preprocess.id,
        "volume_policy": f"slices={SLICE_AXES[slice_axis]};pool={pool}" if is_3d else "2d",
        "data": data_fingerprint(split),
    }


def cache_path(key: dict[str, Any], cache_dir: str | os.PathLike | None = None) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:40]
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / f"{key['dataset']}_{key['split']}_{digest}.safetensors"


def entry_digest(key_json: str, emb: torch.Tensor, *extra: str) -> str:
    """sha256 over a cache entry's key, any `extra` text (the text cache's prompts) and its embeddings."""
    h = hashlib.sha256(key_json.encode())
    for text in extra:
        h.update(b"\0" + text.encode() + b"\0")
    h.update(emb.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def read_entry(path: Path) -> tuple[torch.Tensor, dict[str, str]]:
    """The "embeddings" tensor of a safetensors cache entry and its metadata (raises on a damaged file)."""
    from safetensors.torch import load

    data = path.read_bytes()
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    return load(data)["embeddings"], header.get("__metadata__") or {}


def discard_entry(path: Path, what: str, reason: str, again: str) -> None:
    """Warn (one line) that a cache entry failed verification, and delete it."""
    warnings.warn(f"{what} cache entry {path} discarded: {reason}; {again}.", stacklevel=4)
    path.unlink(missing_ok=True)


def _read_cache(path: Path, key: dict[str, Any], dim: int) -> torch.Tensor | None:
    """The verified embeddings of a cache entry, or None: no entry, or one that failed verification (discarded
    with a warning)."""
    if not path.is_file():
        return None
    again = f"the {key['dataset']} {key['split']} split is encoded again"
    try:
        emb, meta = read_entry(path)
    except Exception as exc:  # noqa: BLE001 - any damage is a mismatch
        return discard_entry(path, "Image-embedding", f"it cannot be read ({type(exc).__name__})", again)
    key_json = json.dumps(key, sort_keys=True)
    if meta.get("key") != key_json:
        return discard_entry(path, "Image-embedding", "its stored key differs from this split's", again)
    if emb.dim() != 2 or emb.shape != (key["n"], dim) or not torch.isfinite(emb).all():
        return discard_entry(path, "Image-embedding", f"its embeddings {tuple(emb.shape)} do not fit {key['n']} "
                             f"images x {dim}", again)
    if meta.get("sha256") != entry_digest(key_json, emb):
        return discard_entry(path, "Image-embedding", "its checksum does not match its contents", again)
    return emb.float()


def _write_cache(path: Path, emb: torch.Tensor, key: dict[str, Any]) -> None:
    from safetensors.torch import save

    emb = emb.detach().float().cpu().contiguous()
    key_json = json.dumps(key, sort_keys=True)
    data = save({"embeddings": emb}, metadata={"key": key_json, "sha256": entry_digest(key_json, emb)})
    try:
        atomic_write_bytes(path, data)
        atomic_write_text(path.with_suffix(".json"), json.dumps({**key, "file": path.name,
                                                                  "shape": list(emb.shape)}, indent=2))
    except (VlmError, OSError):
        pass  # a read-only cache folder must not fail a run; the embeddings are still returned


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def encode_split(encoder: Encoder, split: Split, *, batch_size: int = 256, slice_axis: int = 0, pool: str = "mean",
                 progress: EmbedProgress | None = None) -> torch.Tensor:
    """Encode every image (or volume) of a split: L2-normalised (N, E) float32 on the encoder's device.

    `progress(advance)` gets the images (volumes, fractions of a volume within one) done by each pass."""
    check_policy(slice_axis, pool)
    if batch_size < 1:
        raise VlmError(f"Batch size must be at least 1, not {batch_size}.")
    device = encoder.device
    images = split.images
    if device.type == "cuda" and images.device != device and images.numel() < _RESIDENT_LIMIT:
        images = images.to(device, non_blocking=True)  # keep the split resident, batch by indexing
    n = images.shape[0]
    is_3d = images.dim() == 5
    n_slices = images.shape[2 + slice_axis] if is_3d else 1
    per_pass = min(batch_size, CPU_PASS) if device.type == "cpu" else batch_size
    step = max(1, per_pass // n_slices)
    out = torch.empty(n, encoder.embed_dim, dtype=torch.float32, device=device)
    with torch.inference_mode(), _autocast(device):
        for start in range(0, n, step):
            batch = images[start:start + step]
            b = batch.shape[0]
            if is_3d:  # (b, C, D, H, W) -> (b * S, C, h, w), slices of one volume contiguous
                batch = batch.movedim(2 + slice_axis, 1)
                batch = batch.reshape(b * n_slices, *batch.shape[2:])
            parts = []
            for lo in range(0, batch.shape[0], per_pass):  # one part unless a volume has more slices than a pass
                x = channels_last(encoder.preprocess(batch[lo:lo + per_pass], device))
                parts.append(F.normalize(encoder.encode_images(x).float(), dim=-1))
                if progress is not None and is_3d and b * n_slices > per_pass:
                    progress(parts[-1].shape[0] / n_slices)
            feats = torch.cat(parts) if len(parts) > 1 else parts[0]
            if is_3d:
                feats = feats.view(b, n_slices, -1)
                feats = feats.mean(dim=1) if pool == "mean" else feats.amax(dim=1)
                feats = F.normalize(feats, dim=-1)
            out[start:start + b] = feats
            if progress is not None and not (is_3d and b * n_slices > per_pass):
                progress(b)
    return out


def image_embeddings(
    encoder: Encoder,
    split: Split,
    *,
    batch_size: int = 256,
    cache_dir: str | os.PathLike | None = None,
    slice_axis: int = 0,
    pool: str = "mean",
    progress: EmbedProgress | None = None,
    use_cache: bool = True,
) -> tuple[torch.Tensor, int]:
    """L2-normalised (N, E) float32 embeddings of a split (on the encoder's device) and the number of
    images (volumes for 3D) encoded in this call: 0 on a cache hit.

    `progress(advance)` is called after each forward pass (see the module doc); if it also has a
    `set_total(n)` method, that is called first with the number of images to encode (0 on a cache hit),
    and a `describe(what, unit)` method first hears what is encoded ("breastmnist test", "images").

    Example: `emb, encoded = image_embeddings(load_encoder("biomedclip"), load_split("breastmnist"))`.
    """
    check_policy(slice_axis, pool)
    n = int(split.images.shape[0])
    cacheable = use_cache and not encoder.weights_id.startswith(RANDOM_INIT)
    path = None
    if cacheable:
        key = cache_key(encoder, split, slice_axis, pool)
        path = cache_path(key, cache_dir)
        hit = _read_cache(path, key, encoder.embed_dim)
        if hit is not None:
            if hasattr(progress, "set_total"):
                progress.set_total(0)  # type: ignore[union-attr]
            return hit.to(encoder.device), 0
    if hasattr(progress, "describe"):
        progress.describe(f"{split.task.flag} {split.split}", "volumes" if split.images.dim() == 5 else "images")
    if hasattr(progress, "set_total"):
        progress.set_total(n)  # type: ignore[union-attr]
    emb = encode_split(encoder, split, batch_size=batch_size, slice_axis=slice_axis, pool=pool, progress=progress)
    if cacheable and path is not None:
        _write_cache(path, emb, key)
    return emb, n
