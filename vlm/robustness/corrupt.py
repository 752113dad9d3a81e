"""MedMNIST-C's corrupted test splits, made with the `medmnistc` package's own corruption functions and cached.

For a dataset flag, `corruptions(flag)` lists what MedMNIST-C defines for it (`CORRUPTIONS_DS`, in the
package's order); `corrupted_split(test, name, severity)` applies that corruption at severity 1-5 to every
image of a clean split and returns a Split of the same shape, uint8 like the clean one. Each image goes
through the package's pipeline (`DatasetManager.create_single_dataset`): PIL RGB image -> `corruptor.apply(img,
severity - 1)` -> greyscale again for the grey datasets (`DATASET_RGB`).

Two departures, both needed to run the package as it is:
- randomness: every (dataset, corruption, severity) seeds NumPy's and Python's generators with its own seed,
  derived from `seed`, so that a cache entry can be made alone (the package's DatasetManager runs one stream
  through all corruptions in turn); random draws therefore differ from the published MedMNIST-C files, their
  distribution does not. The callers' generator states are restored afterwards.
- `MotionBlur.apply` of medmnistc 0.1.0 calls `np.fromstring` (removed in NumPy 2) and tells grey from RGB
  output by a 224 x 224 shape; here the same ImageMagick motion blur (`MotionImage`, same radius, sigma and
  random angle) is decoded with `np.frombuffer` and a grey result is told by its number of dimensions.

The severities were designed for 224 px images; at 28 px some are far stronger (pixelate 0.10 keeps 2 x 2
pixels, a motion-blur radius of 17 spans most of the image), and a few cannot be drawn at all (pathmnist's and
bloodmnist's stain_deposit and bubble, dermamnist's characters at 28 px): `CorruptionSizeError`.

Cache: `<cache_dir>/<flag>_<size>_<corruption>_s<severity>_<digest>.npy` (uint8, (N, C, H, W)) and a `.json`
sidecar spelling out the key: dataset, size, split, corruption, severity, medmnistc version, seed and a
fingerprint of the clean split. Default folder: `<data root>/medmnistc`. Files are written atomically.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
from functools import lru_cache
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlm.data import Split, resolve_root
from vlm.errors import VlmError
from vlm.files import atomic_save_npy, atomic_write_text

SEVERITIES = (1, 2, 3, 4, 5)


class CorruptionSizeError(VlmError):
    """A corruption the medmnistc package cannot apply at this image size."""
FORMAT_VERSION = 1


@lru_cache(maxsize=1)
def _registry() -> tuple[dict[str, dict[str, Any]], dict[str, bool]]:
    """medmnistc's CORRUPTIONS_DS and DATASET_RGB (VlmError naming what to install when it cannot be imported)."""
    try:
        from medmnistc.corruptions.registry import CORRUPTIONS_DS, DATASET_RGB
    except ImportError as exc:
        raise VlmError(f"MedMNIST-C corruptions need the medmnistc package and ImageMagick's MagickWand ({exc}): "
                       f"pip install 'medvlm[robustness]' and apt-get install libmagickwand-dev.") from None
    return CORRUPTIONS_DS, DATASET_RGB


def medmnistc_version() -> str:
    """The installed medmnistc version (part of every cache key)."""
    from importlib.metadata import version

    return version("medmnistc")


def corruptions(flag: str) -> list[str]:
    """The corruptions MedMNIST-C defines for a dataset, in its registry's order (VlmError if none)."""
    registry, _ = _registry()
    if flag not in registry:
        raise VlmError(f"MedMNIST-C defines no corruptions for {flag}; it covers {', '.join(sorted(registry))}.")
    return list(registry[flag])


def _seed(seed: int, flag: str, name: str, severity: int) -> int:
    """The seed of one (dataset, corruption, severity): 32 bits of sha256 of the four."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{flag}:{name}:{severity}".encode()).digest()[:4], "little")


def _motion_blur(corruptor: Any, img: Any, level: int) -> np.ndarray:
    """medmnistc's MotionBlur.apply with np.frombuffer and an ndim test for grey output (see the module docstring)."""
    import cv2
    from medmnistc.corruptions.filter import MotionImage

    radius, sigma = corruptor.severity_params[level]
    buf = BytesIO()
    img.save(buf, format="PNG")
    blurred = MotionImage(blob=buf.getvalue())
    blurred.motion_blur(radius=radius, sigma=sigma, angle=np.random.uniform(-45, 45))
    out = cv2.imdecode(np.frombuffer(blurred.make_blob(), np.uint8), cv2.IMREAD_UNCHANGED)
    out = np.stack([out] * 3, axis=-1) if out.ndim == 2 else out[..., [2, 1, 0]]
    return np.clip(out, 0, 255).astype(np.uint8)


def corrupt_images(images: np.ndarray, flag: str, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Corrupt uint8 images (N, C, H, W) with MedMNIST-C's `name` at `severity` (1-5); same shape and dtype."""
    from medmnistc.corruptions.filter import MotionBlur
    from PIL import Image

    registry, rgb = _registry()
    if name not in corruptions(flag):
        raise VlmError(f"MedMNIST-C has no corruption '{name}' for {flag}: choose from {', '.join(corruptions(flag))}.")
    if severity not in SEVERITIES:
        raise VlmError(f"Severity {severity} is out of range: MedMNIST-C has severities 1 to 5.")
    corruptor = copy.copy(registry[flag][name])
    states, value = (np.random.get_state(), random.getstate()), _seed(seed, flag, name, severity)
    np.random.seed(value)
    random.seed(value)  # the microscopy corruptions draw from Python's random
    corruptor.rng = np.random.default_rng(value)  # ImpulseNoise draws from it
    try:
        out = np.empty_like(images)
        for i, image in enumerate(images):
            img = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)).convert("RGB")
            try:
                done = (_motion_blur(corruptor, img, severity - 1) if isinstance(corruptor, MotionBlur)
                        else corruptor.apply(img, severity - 1))
            except ValueError as exc:  # e.g. stains, bubbles or characters larger than a 28 px image
                raise CorruptionSizeError(f"MedMNIST-C's {name} (severity {severity}) cannot be drawn on "
                                          f"{img.size[0]} px images ({exc}); its corruptions were designed for "
                                          f"224 px.") from None
            if not rgb[flag]:
                out[i, 0] = np.asarray(Image.fromarray(done).convert("L"))
            else:
                out[i] = np.asarray(done).transpose(2, 0, 1)
    finally:
        np.random.set_state(states[0])
        random.setstate(states[1])
    return out


def cache_key(split: Split, name: str, severity: int, seed: int) -> dict[str, Any]:
    """What identifies one cached corrupted split."""
    from vlm.data import data_fingerprint

    return {"format_version": FORMAT_VERSION, "dataset": split.task.flag, "size": split.size, "split": split.split,
            "corruption": name, "severity": severity, "medmnistc": medmnistc_version(), "seed": seed,
            "data": data_fingerprint(split)}


def default_cache_dir(data_root: str | os.PathLike | None = None) -> Path:
    """`<data root>/medmnistc` (the data root as `vlm.data` resolves it)."""
    return resolve_root(data_root) / "medmnistc"


def corrupted_split(split: Split, name: str, severity: int, *, seed: int = 0,
                    cache_dir: str | os.PathLike | None = None, data_root: str | os.PathLike | None = None) -> Split:
    """The split with MedMNIST-C's `name` at `severity` applied to every image, from the cache when it is there.

    `cache_dir` defaults to `default_cache_dir(data_root)`; a damaged entry is made again.
    """
    key = cache_key(split, name, severity, seed)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(data_root)
    path = folder / f"{split.task.flag}_{split.size}_{name}_s{severity}_{digest}.npy"
    shape = tuple(split.images.shape)
    images = None
    if path.is_file():
        try:
            images = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            images = None
        if images is not None and (images.shape != shape or images.dtype != np.uint8):
            images = None
    if images is None:
        images = corrupt_images(split.images.cpu().numpy(), split.task.flag, name, severity, seed)
        atomic_save_npy(path, images)
        atomic_write_text(path.with_suffix(".json"), json.dumps({**key, "file": path.name}, indent=2))
    return Split(torch.from_numpy(np.ascontiguousarray(images)), split.labels, split.task, split.split, split.size)
