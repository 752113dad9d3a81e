"""TaskSpec: what a MedMNIST dataset is, read from `medmnist.INFO` (the single source of truth)."""

from __future__ import annotations

import difflib
import importlib.util
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Literal

from vlm.errors import VlmError

TaskKind = Literal["binary", "multi-class", "multi-label", "ordinal"]

# medmnist.INFO "task" strings -> our task kinds.
_KINDS: dict[str, TaskKind] = {
    "binary-class": "binary",
    "multi-class": "multi-class",
    "multi-label, binary-class": "multi-label",
    "ordinal-regression": "ordinal",
}

# Imaging modality per dataset (MedMNIST v2 paper, Table 1); INFO has only free text for it.
_MODALITY = {
    "pathmnist": "Colon pathology",
    "chestmnist": "Chest X-ray",
    "dermamnist": "Dermatoscope",
    "octmnist": "Retinal OCT",
    "pneumoniamnist": "Chest X-ray",
    "retinamnist": "Fundus camera",
    "breastmnist": "Breast ultrasound",
    "bloodmnist": "Blood cell microscope",
    "tissuemnist": "Kidney cortex microscope",
    "organamnist": "Abdominal CT",
    "organcmnist": "Abdominal CT",
    "organsmnist": "Abdominal CT",
    "organmnist3d": "Abdominal CT",
    "nodulemnist3d": "Chest CT",
    "adrenalmnist3d": "Shape from abdominal CT",
    "fracturemnist3d": "Chest CT",
    "vesselmnist3d": "Shape from brain MRA",
    "synapsemnist3d": "Electron microscope",
}

SPLITS = ("train", "val", "test")
SIZES_2D = (28, 64, 128, 224)
SIZES_3D = (28, 64)


@dataclass(frozen=True, eq=False)
class TaskSpec:
    """One MedMNIST dataset: its flag, task kind, labels, channels and dimensionality."""

    flag: str
    python_class: str
    kind: TaskKind
    labels: tuple[str, ...]
    n_channels: int
    is_3d: bool
    n_samples: dict[str, int]
    modality: str
    info: dict

    @property
    def num_classes(self) -> int:
        """Columns of a score matrix: classes, or labels for multi-label."""
        return len(self.labels)

    @property
    def medmnist_task(self) -> str:
        """medmnist's own task string (`INFO[flag]["task"]`), e.g. 'multi-label, binary-class'."""
        return self.info["task"]

    @property
    def sizes(self) -> tuple[int, ...]:
        return SIZES_3D if self.is_3d else SIZES_2D

    @property
    def dims(self) -> str:
        return "3D" if self.is_3d else "2D"

    def url(self, size: int) -> str:
        return self.info["url" if size == 28 else f"url_{size}"]

    def md5(self, size: int) -> str:
        return self.info["MD5" if size == 28 else f"MD5_{size}"]

    def check_size(self, size: int) -> None:
        """Raise a clear error if the dataset has no files at this size."""
        if size not in self.sizes:
            raise VlmError(
                f"{self.flag} is {self.dims} and comes in sizes {', '.join(map(str, self.sizes))}, not {size}."
            )


@lru_cache(maxsize=1)
def medmnist_info() -> ModuleType:
    """The `medmnist.info` module (INFO, DEFAULT_ROOT), run from its file: `import medmnist.info` would run
    medmnist's `__init__`, which imports torch, its dataset classes and its evaluator (sklearn, pandas)."""
    if "medmnist.info" in sys.modules:
        return sys.modules["medmnist.info"]
    spec = importlib.util.find_spec("medmnist")
    if spec is None or spec.origin is None:
        raise VlmError("medmnist is not installed: pip install medmnist.")
    info_spec = importlib.util.spec_from_file_location("_medmnist_info", Path(spec.origin).with_name("info.py"))
    module = importlib.util.module_from_spec(info_spec)  # type: ignore[arg-type]
    info_spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _info() -> dict:
    return medmnist_info().INFO


def all_tasks() -> list[TaskSpec]:
    """All 18 MedMNIST datasets, 2D first, in `medmnist.INFO` order."""
    return [get_task(flag) for flag in _info()]


@lru_cache(maxsize=None)
def get_task(flag: str) -> TaskSpec:
    """The TaskSpec of a dataset flag such as 'breastmnist'; unknown flags suggest the closest."""
    info = _info()
    key = flag.lower()
    if key not in info:
        close = difflib.get_close_matches(key, list(info), n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise VlmError(f"Unknown dataset '{flag}'.{hint} Run `vlm datasets` for the list of 18.")
    entry = info[key]
    labels = tuple(entry["label"][str(i)] for i in range(len(entry["label"])))
    return TaskSpec(
        flag=key,
        python_class=entry["python_class"],
        kind=_KINDS[entry["task"]],
        labels=labels,
        n_channels=int(entry["n_channels"]),
        is_3d=key.endswith("3d"),
        n_samples=dict(entry["n_samples"]),
        modality=_MODALITY.get(key, ""),
        info=entry,
    )
