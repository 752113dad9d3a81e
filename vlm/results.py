"""Run records: one folder per run under a runs folder, written atomically, never overwritten.

Layout of a run folder `runs/<run_id>/`:
    record.json   the RunRecord (method, model, dataset, split, seed, config, metrics, versions, ...)
    scores.npy    the (N, K) score matrix the metrics were computed from
    logits.npy, val_logits.npy   the logits of the scored and the val split, where the method has them
    (trainers add checkpoints and epochs.jsonl beside them)
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from vlm.errors import VlmError
from vlm.files import atomic_save_npy, atomic_write_text, load_npy

RECORD_FILE = "record.json"
SCORES_FILE = "scores.npy"
DEFAULT_RUNS_DIR = "runs"
RECORD_SCHEMA_VERSION = 1  # `vlm.schemas.RecordSchema`; records written before versions existed read as 1


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape a result."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("medvlm", "torch", "torchvision", "timm", "open_clip_torch", "transformers", "medmnist",
                 "numpy", "scikit-learn"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "run"


_RUN_DIR_HOOK: ContextVar[Callable[[Path], None] | None] = ContextVar("new_run_dir_hook", default=None)


@contextmanager
def on_new_run_dir(callback: Callable[[Path], None]) -> Iterator[None]:
    """Call `callback(folder)` for every run folder `new_run_dir` creates inside the block (how an
    experiment worker learns its job's run folder, to resume it if the worker dies)."""
    token = _RUN_DIR_HOOK.set(callback)
    try:
        yield
    finally:
        _RUN_DIR_HOOK.reset(token)


def new_run_dir(runs_dir: str | os.PathLike, name: str) -> Path:
    """Create and return a fresh, uniquely named run folder; an existing one is never reused."""
    runs_dir = Path(runs_dir)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        for i in range(1000):
            candidate = runs_dir / (f"{stamp}_{_slug(name)}" + (f"_{i}" if i else ""))
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            hook = _RUN_DIR_HOOK.get()
            if hook is not None:
                hook(candidate)
            return candidate
    except OSError as exc:
        raise VlmError(f"Cannot create a run folder in {runs_dir}: {exc.strerror}.") from None
    raise VlmError(f"Too many runs named '{name}' this second in {runs_dir}.")


@dataclass
class RunRecord:
    """Everything needed to trust and compare one scored run."""

    method: str  # "zero-shot", "train", "linear-probe", "knn", "full", "zs-init", "scores", ...
    model: str  # model name or encoder id
    dataset: str
    size: int
    split: str
    metrics: dict[str, Any]
    weights_id: str | None = None
    seed: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    score_convention: str = "softmax probabilities (N, K); multi-label: per-label probabilities"
    preprocessing: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=library_versions)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    status: str = "finished"
    calibrated: dict[str, Any] | None = None  # `vlm calibrate`: temperature and the calibrated test metrics
    run_id: str = ""
    path: str = ""
    schema_version: int = RECORD_SCHEMA_VERSION

    @property
    def label(self) -> str:
        """A short method label for tables: 'zero-shot ViT-B-32 [clip]'."""
        extra = self.config.get("style") or self.config.get("mode")
        return f"{self.method} {self.model}" + (f" [{extra}]" if extra and extra != self.method else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunRecord":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def save_run(
    record: RunRecord,
    scores: np.ndarray | None,
    runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR,
    run_dir: str | os.PathLike | None = None,
) -> Path:
    """Write a record (and its scores) into a new run folder, or into `run_dir` if the run made one."""
    folder = Path(run_dir) if run_dir is not None else new_run_dir(runs_dir, f"{record.dataset}_{record.method}_{record.model}")
    record.run_id = folder.name
    record.path = str(folder)
    if scores is not None:
        atomic_save_npy(folder / SCORES_FILE, scores)
    atomic_write_text(folder / RECORD_FILE, json.dumps(record.to_dict(), indent=2, default=_json_default))
    return folder


def jsonable(value: Any) -> Any:
    """A copy of nested dicts/lists/tuples fit for strict JSON: tuples become lists, nan/inf become None."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def parse_record(data: Any, source: str | os.PathLike) -> RunRecord:
    """A RunRecord from a record's JSON object, checked against `vlm.schemas.RecordSchema` (types, required
    fields, no unknown keys, this tool's schema version); a one-line VlmError naming `source` otherwise."""
    from vlm.schemas import RecordSchema, validate

    version = data.get("schema_version", RECORD_SCHEMA_VERSION) if isinstance(data, dict) else None
    if isinstance(data, dict) and version != RECORD_SCHEMA_VERSION:
        raise VlmError(f"{source}: a run record of schema version {version!r}, this medvlm reads version "
                       f"{RECORD_SCHEMA_VERSION} (written by another version or another tool).")
    if not isinstance(data, dict) or not {"method", "model", "dataset"} & set(data):
        raise VlmError(f"{source}: not a medvlm run record (a JSON object with method, model, dataset, "
                       f"metrics, ...).")
    validate(RecordSchema, data, str(source))
    return RunRecord.from_dict(data)


def _read_record(record_path: Path) -> Any:
    try:
        return json.loads(record_path.read_bytes())
    except FileNotFoundError:
        raise VlmError(f"No run record at {record_path}.") from None
    except IsADirectoryError:
        raise VlmError(f"{record_path} is a folder, not a run record.") from None
    except OSError as exc:
        raise VlmError(f"{record_path} cannot be read ({exc.strerror}).") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        where = f", line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise VlmError(f"{record_path} is not valid JSON ({getattr(exc, 'msg', exc)}{where}).") from None


def load_run(run: str | os.PathLike) -> RunRecord:
    """Read a run folder (or its record.json), checked against the record schema (`parse_record`)."""
    path = Path(run)
    record_path = path if path.suffix == ".json" else path / RECORD_FILE
    record = parse_record(_read_record(record_path), record_path)
    record.path = str(record_path.parent)
    return record


def load_scores(record: RunRecord) -> np.ndarray:
    """The run's saved (N, K) scores (`vlm.files.load_npy`'s checks)."""
    path = Path(record.path) / SCORES_FILE
    if not path.is_file():
        raise VlmError(f"Run {record.run_id} has no scores file at {path}.")
    return load_npy(path)


def load_runs(runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR, status: str | None = "finished",
              skipped: list[str] | None = None) -> list[RunRecord]:
    """All run records under a runs folder, oldest first.

    Folders without a record.json (runs not finished yet) are passed over; a record that cannot be read or
    does not follow the record schema (missing fields, wrong types, another schema version, another tool's
    JSON) is skipped, and one line naming it and why is appended to `skipped`. One `os.scandir` of the
    folder and one read, parse and schema check per record (thousands of runs take about a second); the
    status is checked before a RunRecord is built.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise VlmError(f"Runs folder {runs_dir} does not exist" + (" (it is a file)." if runs_dir.exists() else "."))
    with os.scandir(runs_dir) as entries:
        names = sorted(entry.name for entry in entries if entry.is_dir())
    records = []
    for name in names:
        folder = runs_dir / name
        if not (folder / RECORD_FILE).exists():
            continue
        try:
            data = _read_record(folder / RECORD_FILE)
            if isinstance(data, dict) and status is not None and data.get("status", "finished") != status:
                continue
            record = parse_record(data, folder / RECORD_FILE)
        except VlmError as exc:
            if skipped is not None:
                skipped.append(str(exc))
            continue
        record.path = str(folder)
        records.append(record)
    return records


class Timer:
    """Context manager that measures wall seconds: `with Timer() as t: ...; t.seconds`."""

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
