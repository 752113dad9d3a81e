"""The MedMNIST data layer: locate, verify, download and load splits as resident uint8 tensors.

A split is kept whole in memory (MedMNIST is small) as a uint8 tensor in channels-first layout:
(N, C, H, W) for 2D and (N, C, D, H, W) for 3D, with labels (N, L) as int64. Batches are built by
indexing this tensor; preprocessing happens on the tensor, on its device (see `vlm.preprocess`).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vlm.errors import VlmError
from vlm.files import file_digest
from vlm.tasks import SPLITS, TaskSpec, get_task, medmnist_info

if TYPE_CHECKING:  # numpy and torch load with the first split, not with `vlm datasets`
    import numpy as np
    import torch

ENV_ROOT = "VLM_DATA_ROOT"
_FINGERPRINT_SAMPLES = 32


@dataclass
class Split:
    """One split of one dataset at one size, resident as tensors."""

    images: torch.Tensor  # uint8, (N, C, H, W) or (N, C, D, H, W)
    labels: torch.Tensor  # int64, (N, L)
    task: TaskSpec
    split: str
    size: int

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> "Split":
        """The same split with its images and labels on `device`."""
        return Split(self.images.to(device), self.labels.to(device), self.task, self.split, self.size)

    def class_counts(self) -> list[int]:
        """Images per class (multi-label: positives per label)."""
        return class_counts(self.task, self.labels)


def data_fingerprint(split: Split) -> str:
    """A cheap content fingerprint: shape, labels and up to 32 evenly spaced images."""
    import torch

    digest = hashlib.sha256()
    images = split.images
    digest.update(repr((tuple(images.shape), str(images.dtype))).encode())
    digest.update(split.labels.detach().cpu().contiguous().numpy().tobytes())
    n = images.shape[0]
    if n:
        idx = torch.linspace(0, n - 1, steps=min(n, _FINGERPRINT_SAMPLES)).round().long().unique()
        digest.update(images[idx.to(images.device)].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def class_counts(task: TaskSpec, labels: torch.Tensor) -> list[int]:
    """Per-class counts of a label tensor (N, L); positives per label for multi-label tasks."""
    import torch

    if task.kind == "multi-label":
        return labels.sum(dim=0).tolist()
    return torch.bincount(labels[:, 0].long().cpu(), minlength=task.num_classes).tolist()


def default_root() -> Path:
    """medmnist's own default data folder (~/.medmnist)."""
    return Path(medmnist_info().DEFAULT_ROOT)


def resolve_root(data_root: str | os.PathLike | None = None) -> Path:
    """The data folder: the argument, else $VLM_DATA_ROOT, else medmnist's default."""
    if data_root:
        return Path(data_root).expanduser()
    if os.environ.get(ENV_ROOT):
        return Path(os.environ[ENV_ROOT]).expanduser()
    return default_root()


def file_name(task: TaskSpec, size: int) -> str:
    """MedMNIST's file name for a dataset at a size: 'breastmnist.npz', 'breastmnist_224.npz'."""
    return f"{task.flag}.npz" if size == 28 else f"{task.flag}_{size}.npz"


def file_path(task: TaskSpec, size: int, data_root: str | os.PathLike | None = None) -> Path:
    task.check_size(size)
    return resolve_root(data_root) / file_name(task, size)


def local_sizes(task: TaskSpec, data_root: str | os.PathLike | None = None) -> list[int]:
    """Sizes of this dataset whose file is present under the data root."""
    root = resolve_root(data_root)
    return [s for s in task.sizes if (root / file_name(task, s)).is_file()]


def verify(task: TaskSpec, size: int, data_root: str | os.PathLike | None = None) -> Path:
    """Check a local file against the MD5 that medmnist.INFO lists; return its path."""
    path = ensure_file(task, size, data_root)
    expected = task.md5(size)
    actual = file_digest(path, "md5")
    if actual != expected:
        raise VlmError(
            f"{path} has MD5 {actual}, expected {expected}: the file is corrupt or from another "
            f"MedMNIST version. Delete it and download it again from {task.url(size)}"
        )
    return path


def download(task: TaskSpec, size: int, data_root: str | os.PathLike | None = None) -> Path:
    """Download a dataset file (MD5-checked) into the data root, unless it is already there."""
    path = file_path(task, size, data_root)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    from torchvision.datasets.utils import download_url

    try:
        download_url(task.url(size), str(path.parent), filename=path.name, md5=task.md5(size))
    except Exception as exc:  # network errors come in many types
        raise VlmError(
            f"Could not download {task.url(size)} ({type(exc).__name__}: {exc}). "
            f"Download it by hand and save it as {path} (MD5 {task.md5(size)})."
        ) from None
    return path


def ensure_file(
    task: TaskSpec, size: int, data_root: str | os.PathLike | None = None, download_missing: bool = False
) -> Path:
    """The local file of a dataset at a size; download it if asked, else explain where to put it."""
    path = file_path(task, size, data_root)
    if path.is_file():
        return path
    if download_missing:
        return download(task, size, data_root)
    present = local_sizes(task, data_root)
    also = f" Sizes present there: {', '.join(map(str, present))}." if present else ""
    raise VlmError(
        f"{path.name} not found in {path.parent}.{also} Download it from {task.url(size)} "
        f"(MD5 {task.md5(size)}) into that folder, pass --download, or point --data-root / ${ENV_ROOT} "
        f"at the folder that holds it."
    )


def expected_image_shape(task: TaskSpec, size: int) -> tuple[int, ...]:
    """One image's shape in a MedMNIST file: grey 2D (H, W), colour 2D (H, W, 3), 3D (D, H, W)."""
    if task.is_3d:
        return (size, size, size)
    return (size, size) if task.n_channels == 1 else (size, size, task.n_channels)


def check_arrays(images: np.ndarray, labels: np.ndarray, task: TaskSpec, size: int, path: Path, split: str) -> None:
    """A VlmError naming the file, the array and what was expected unless `images` and `labels` are what
    MedMNIST stores for `task` at `size`: uint8 images of `expected_image_shape`, one label row per image,
    integer class indices in range (multi-label: 0/1 per label)."""
    import numpy as np

    where = f"{path}: {split}_images"
    if images.dtype != np.uint8:
        raise VlmError(f"{where} has dtype {images.dtype}, expected uint8 (MedMNIST stores 0-255 pixels); "
                       f"convert it with (x * 255).round().astype('uint8') if it holds [0, 1] floats.")
    shape = expected_image_shape(task, size)
    if images.ndim != 1 + len(shape) or tuple(images.shape[1:]) != shape:
        raise VlmError(f"{where} has shape {tuple(images.shape)}, expected (N, {', '.join(map(str, shape))}) for "
                       f"{task.flag} ({task.dims}, {task.n_channels} channel(s)) at size {size}.")
    where = f"{path}: {split}_labels"
    width = task.num_classes if task.kind == "multi-label" else 1
    if labels.ndim not in (1, 2) or labels.reshape(len(labels), -1).shape != (len(images), width):
        raise VlmError(f"{where} has shape {tuple(labels.shape)}, expected ({len(images)}, {width}): one row per "
                       f"image of {split}_images.")
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.bool_)):
        raise VlmError(f"{where} has dtype {labels.dtype}, expected integer class indices.")
    top = 2 if task.kind == "multi-label" else task.num_classes
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= top):
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise VlmError(f"{where} holds the value {bad}, expected 0..{top - 1} "
                       f"({'0/1 per label' if task.kind == 'multi-label' else f'{top} classes'}).")


def _to_channels_first(images: np.ndarray, task: TaskSpec) -> np.ndarray:
    """MedMNIST arrays (checked by `check_arrays`) -> (N, C, H, W) / (N, C, D, H, W)."""
    if task.is_3d or images.ndim == 3:
        return images[:, None]
    return images.transpose(0, 3, 1, 2)


def load_split(
    flag: str | TaskSpec,
    split: str = "test",
    size: int = 28,
    data_root: str | os.PathLike | None = None,
    download: bool = False,
    check_md5: bool = False,
) -> Split:
    """Load one split of a dataset at a size into uint8/int64 tensors on the CPU.

    Example: `load_split("breastmnist", "test", 28, "../shared/data/medmnist")` -> Split of 156 images.
    """
    import numpy as np
    import torch

    task = flag if isinstance(flag, TaskSpec) else get_task(flag)
    if split not in SPLITS:
        raise VlmError(f"Unknown split '{split}': choose one of {', '.join(SPLITS)}.")
    task.check_size(size)
    path = ensure_file(task, size, data_root, download_missing=download)
    if check_md5:
        verify(task, size, data_root)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in (f"{split}_images", f"{split}_labels") if k not in npz.files]
            if missing:
                raise VlmError(f"{path} has no array {missing[0]} (it holds {', '.join(npz.files) or 'nothing'}): "
                               f"not a MedMNIST file, or a damaged one; download it again from {task.url(size)}.")
            images = npz[f"{split}_images"]
            labels = npz[f"{split}_labels"]
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise VlmError(
            f"{path} is not a readable MedMNIST file ({type(exc).__name__}: {exc}). It may be truncated: "
            f"delete it and download it again from {task.url(size)} (MD5 {task.md5(size)})."
        ) from None
    check_arrays(images, labels, task, size, path, split)
    images = np.ascontiguousarray(_to_channels_first(images, task))
    return Split(
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels.astype(np.int64).reshape(len(labels), -1)),
        task=task,
        split=split,
        size=size,
    )


def load_splits(task: TaskSpec, size: int, data_root: str | os.PathLike | None,
                download: bool = False) -> tuple[Split, Split, Split]:
    """The train, val and test splits of a dataset at a size (`load_split` of each)."""
    return tuple(load_split(task, s, size, data_root, download=download) for s in ("train", "val", "test"))  # type: ignore[return-value]


def dataset_info(
    flag: str,
    size: int = 28,
    data_root: str | os.PathLike | None = None,
    download: bool = False,
    check_md5: bool = False,
) -> dict:
    """Label names, per-split per-class counts (from the local file) and local files of a dataset."""
    task = get_task(flag)
    task.check_size(size)
    root = resolve_root(data_root)
    info: dict = {
        "flag": task.flag,
        "python_class": task.python_class,
        "modality": task.modality,
        "task": task.kind,
        "medmnist_task": task.medmnist_task,
        "dims": task.dims,
        "n_channels": task.n_channels,
        "labels": list(task.labels),
        "n_samples": task.n_samples,
        "data_root": str(root),
        "files": {s: str(root / file_name(task, s)) for s in local_sizes(task, data_root)},
        "size": size,
        "counts": None,
    }
    if download or size in local_sizes(task, data_root):
        counts = {}
        for split in SPLITS:
            loaded = load_split(task, split, size, data_root, download=download, check_md5=check_md5 and split == "train")
            counts[split] = {"n": len(loaded), "per_class": loaded.class_counts()}
        info["counts"] = counts
        info["files"] = {s: str(root / file_name(task, s)) for s in local_sizes(task, data_root)}
    return info
