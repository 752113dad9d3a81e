"""The K-shot protocol: which training (and optionally validation) examples a few-shot run may see.

Drawing (`draw_indices`), with a NumPy PCG64 generator seeded by `(seed, stream)` (stream 0 = train,
1 = val), so a draw is the same on every machine:

- binary / multi-class / ordinal: per class, a random permutation of its examples and the first K.
  The permutation does not depend on K, so the draws are nested (the 1-shot set is inside the 2-shot
  set of the same seed). A class with fewer than K examples gives all of them and is listed in
  `short_classes`.
- multi-label: "at least K positives per label". Labels are visited in order; for each, examples
  already drawn count towards its K and the missing ones are drawn from its remaining positives.
  Drawn examples carry all their labels (and serve as negatives of the others), so a label can end
  with more than K positives; one with fewer than K positives in the split gives all of them.
- K = "all": every example of the split (the full-data reference point of a curve).

The drawn indices go into a shots file (JSON, `ShotsFile` schema below) written atomically. A run
with the same (dataset, size, K, seed, val K) reuses the file, so every method of a curve trains on
the same examples; a file whose dataset, size, split fingerprint (`vlm.embeddings.data_fingerprint`)
or draw settings differ from the run's is refused with a VlmError naming the file and the fields.
Validation is the full val split unless `val_shots=K` asks for a strict few-shot val drawn the same
way (recorded in the file). The test split is never subsampled.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from vlm.data import Split, class_counts
from vlm.embeddings import data_fingerprint
from vlm.errors import VlmError
from vlm.files import atomic_write_text, file_digest
from vlm.tasks import TaskSpec

SCHEMA_VERSION = 1
ALL = "all"
Shot = Union[int, Literal["all"]]
_STREAMS = {"train": 0, "val": 1}


class DrawModel(BaseModel):
    """One split's draw as stored in a shots file."""

    model_config = ConfigDict(extra="forbid")
    split: Literal["train", "val"]
    k: Shot
    n_split: int
    fingerprint: str
    indices: list[int]
    per_class: list[int]
    short_classes: list[str]


class ShotsFile(BaseModel):
    """The schema of a shots file (version 1)."""

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1]
    dataset: str
    size: int
    kind: str
    seed: int
    train: DrawModel
    val: DrawModel | None  # None: the full validation split


@dataclass(frozen=True)
class Shots:
    """A loaded or freshly written shots file: the train draw, the val draw (None = full val), its sha256."""

    path: Path
    sha256: str
    data: ShotsFile

    @property
    def k(self) -> Shot:
        return self.data.train.k

    @property
    def seed(self) -> int:
        return self.data.seed

    @property
    def train_indices(self) -> torch.Tensor:
        return torch.tensor(self.data.train.indices, dtype=torch.long)

    @property
    def val_indices(self) -> torch.Tensor | None:
        return None if self.data.val is None else torch.tensor(self.data.val.indices, dtype=torch.long)

    def summary(self) -> dict:
        """What a run record keeps about its shots."""
        val = self.data.val
        return {"shots": self.k, "shots_file": str(self.path), "shots_sha256": self.sha256,
                "n_train": len(self.data.train.indices), "per_class": self.data.train.per_class,
                "short_classes": self.data.train.short_classes,
                "val": "full" if val is None else {"shots": val.k, "n": len(val.indices), "per_class": val.per_class}}


def check_shot(k: Shot, what: str = "shots") -> Shot:
    """A positive int or "all" (VlmError otherwise)."""
    if k == ALL:
        return k
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise VlmError(f"{what} must be a positive number of examples per class or 'all', got {k!r}.")
    return int(k)


def draw_indices(task: TaskSpec, labels: torch.Tensor, k: Shot, seed: int, stream: int = 0) -> tuple[list[int], list[str]]:
    """Sorted example indices of a K-shot draw and the classes that had fewer than K (see the module doc)."""
    k = check_shot(k)
    y = labels.detach().cpu().numpy()
    n = len(y)
    if k == ALL:
        return list(range(n)), []
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(stream)]))
    chosen: list[int] = []
    short: list[str] = []
    if task.kind == "multi-label":
        taken = np.zeros(n, dtype=bool)
        for label in range(y.shape[1]):
            positives = np.flatnonzero(y[:, label] > 0)
            need = k - int(taken[positives].sum())
            if len(positives) < k:
                short.append(task.labels[label])
            if need > 0:
                extra = rng.permutation(positives[~taken[positives]])[:need]
                taken[extra] = True
        chosen = np.flatnonzero(taken).tolist()
    else:
        for c in range(task.num_classes):
            members = np.flatnonzero(y[:, 0] == c)
            if len(members) < k:
                short.append(task.labels[c])
            chosen += rng.permutation(members)[:k].tolist()
    return sorted(chosen), short


def draw_split(split: Split, k: Shot, seed: int) -> DrawModel:
    """The K-shot draw of one split (train or val) with its fingerprint and per-class counts."""
    indices, short = draw_indices(split.task, split.labels, k, seed, _STREAMS[split.split])
    picked = split.labels[torch.tensor(indices, dtype=torch.long)] if indices else split.labels[:0]
    return DrawModel(split=split.split, k=check_shot(k), n_split=len(split), fingerprint=data_fingerprint(split),
                     indices=indices, per_class=class_counts(split.task, picked), short_classes=short)


def default_shots_path(shots_dir: str | os.PathLike, flag: str, size: int, k: Shot, seed: int,
                       val_shots: Shot | None = None) -> Path:
    """`<shots_dir>/<flag>_<size>_<K>shot_seed<seed>[_val<V>].json`."""
    val = f"_val{val_shots}" if val_shots is not None else ""
    return Path(shots_dir) / f"{flag}_{size}_{k}shot_seed{seed}{val}.json"


def read_shots(path: str | os.PathLike) -> Shots:
    """Read and validate a shots file (VlmError naming the file on any problem)."""
    path = Path(path)
    try:
        data = ShotsFile.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        raise VlmError(f"Shots file {path} not found.") from None
    except json.JSONDecodeError as exc:
        raise VlmError(f"Shots file {path} is not valid JSON ({exc.msg}, line {exc.lineno}).") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise VlmError(f"Shots file {path} does not follow the shots schema v{SCHEMA_VERSION}: {where}: "
                       f"{first['msg']}.") from None
    for draw in (data.train, data.val):
        if draw is not None and any(i < 0 or i >= draw.n_split for i in draw.indices):
            raise VlmError(f"Shots file {path}: {draw.split} indices fall outside the split's {draw.n_split} examples.")
    return Shots(path, file_digest(path), data)


def _mismatches(data: ShotsFile, train: Split, val: Split, k: Shot | None, seed: int | None,
                val_shots: Shot | None) -> list[str]:
    found = []

    def differ(name: str, file_value, run_value) -> None:
        if file_value != run_value:
            found.append(f"{name} {file_value!r} in the file vs {run_value!r} here")

    differ("dataset", data.dataset, train.task.flag)
    differ("size", data.size, train.size)
    differ("train size", data.train.n_split, len(train))
    if data.train.n_split == len(train):
        differ("train data fingerprint", data.train.fingerprint, data_fingerprint(train))
    if k is not None:
        differ("K", data.train.k, check_shot(k))
    if seed is not None:
        differ("seed", data.seed, int(seed))
    differ("val shots", None if data.val is None else data.val.k, val_shots)
    if data.val is not None:
        differ("val data fingerprint", data.val.fingerprint, data_fingerprint(val))
    return found


def prepare_shots(train: Split, val: Split, k: Shot | None, seed: int | None, path: str | os.PathLike, *,
                  val_shots: Shot | None = None) -> Shots:
    """Reuse the shots file at `path` when it exists and matches, else draw and write it atomically.

    `k`/`seed` None: take them from the existing file (which must then exist). A file that does not
    match the data or the asked draw is refused (VlmError naming the file and every difference).
    """
    path = Path(path)
    if val_shots is not None:
        val_shots = check_shot(val_shots, "val_shots")
    if path.is_file():
        shots = read_shots(path)
        problems = _mismatches(shots.data, train, val, k, seed, val_shots)
        if problems:
            raise VlmError(f"Shots file {path} does not match this run: {'; '.join(problems)}. Use another "
                           f"--shots-file (or remove this one to draw again).")
        return shots
    if k is None or seed is None:
        raise VlmError(f"Shots file {path} not found (K and seed come from it when they are not given).")
    data = ShotsFile(schema_version=SCHEMA_VERSION, dataset=train.task.flag, size=train.size, kind=train.task.kind,
                     seed=int(seed), train=draw_split(train, k, seed),
                     val=None if val_shots is None else draw_split(val, val_shots, seed))
    atomic_write_text(path, json.dumps(data.model_dump(), indent=1) + "\n")
    return Shots(path, file_digest(path), data)
