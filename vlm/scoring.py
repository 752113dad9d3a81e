"""Score a split and keep the result: the one path from a score matrix to Metrics and a RunRecord.

Zero-shot, fine-tuning, training and `vlm evaluate` all end here, so every method is scored by the
same evaluator and recorded the same way.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlm.data import Split, load_split
from vlm.evaluate import Metrics, check_scores, evaluate
from vlm.files import atomic_save_npy, check_writable_folder, load_npy
from vlm.results import RunRecord, new_run_dir, save_run

LOGITS_FILE = "logits.npy"  # the scored split's logits (N, K), beside scores.npy
VAL_LOGITS_FILE = "val_logits.npy"  # the validation split's logits of the same model (checkpoint, style)

_TAGS: ContextVar[dict[str, Any]] = ContextVar("record_tags", default={})


@contextmanager
def record_tags(**tags: Any):
    """Add `tags` to the config of every record written inside the block (e.g. an experiment's job key)."""
    token = _TAGS.set({**_TAGS.get(), **tags})
    try:
        yield
    finally:
        _TAGS.reset(token)


def current_tags() -> dict[str, Any]:
    """The tags `record_tags` adds to records written now (empty outside its blocks)."""
    return dict(_TAGS.get())


def score_split(
    split: Split, scores: torch.Tensor, *, threshold: float = 0.5, n_bootstrap: int = 1000, seed: int = 0
) -> Metrics:
    """Check a (N, K) score matrix against a split and compute its metrics with CIs."""
    check_scores(split.task, split.labels, scores)
    return evaluate(split.task, split.labels.to(scores.device), scores, threshold=threshold,
                    n_bootstrap=n_bootstrap, seed=seed)


def record_run(
    split: Split,
    scores: torch.Tensor,
    metrics: Metrics,
    *,
    method: str,
    model: str,
    runs_dir: str | os.PathLike,
    run_dir: str | os.PathLike | None = None,
    logits: torch.Tensor | None = None,
    val_logits: torch.Tensor | None = None,
    **fields: Any,
) -> RunRecord:
    """Write the run record and its scores (atomically, in a new run folder unless `run_dir` is given).

    `logits` (the scored split's) and `val_logits` (the validation split's, same model) go to
    logits.npy and val_logits.npy beside scores.npy: what `vlm calibrate` fits a temperature on.
    """
    fields["config"] = {**fields.get("config", {}), **_TAGS.get()}
    record = RunRecord(method=method, model=model, dataset=split.task.flag, size=split.size, split=split.split,
                       metrics=metrics.to_dict(), **fields)
    if run_dir is None:
        run_dir = new_run_dir(runs_dir, f"{record.dataset}_{record.method}_{record.model}")
    for name, array in ((LOGITS_FILE, logits), (VAL_LOGITS_FILE, val_logits)):
        if array is not None:
            atomic_save_npy(Path(run_dir) / name, array.detach().float().cpu().numpy())
    save_run(record, scores.detach().float().cpu().numpy(), runs_dir, run_dir=run_dir)
    return record


def load_scores_file(path: str | os.PathLike) -> torch.Tensor:
    """A saved .npy score (or logit) array as a float64 tensor (`vlm.files.load_npy`'s checks)."""
    return torch.from_numpy(np.asarray(load_npy(path), dtype=np.float64))


def score_file(
    flag: str,
    scores_path: str | os.PathLike,
    *,
    split: str = "test",
    size: int = 28,
    data_root: str | os.PathLike | None = None,
    threshold: float = 0.5,
    n_bootstrap: int = 1000,
    seed: int = 0,
    runs_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """`vlm evaluate`: score a saved array against a split's labels; record it when `runs_dir` is set."""
    if runs_dir is not None:
        check_writable_folder(runs_dir, "Runs folder")
    scores = load_scores_file(scores_path)
    data = load_split(flag, split, size, data_root)
    metrics = score_split(data, scores, threshold=threshold, n_bootstrap=n_bootstrap, seed=seed)
    result = {"dataset": data.task.flag, "split": split, "size": size, **metrics.to_dict()}
    if runs_dir is not None:
        record = record_run(data, scores, metrics, method="scores", model=Path(scores_path).stem, runs_dir=runs_dir,
                            seed=seed, config={"scores_file": str(scores_path), "threshold": threshold})
        result["run_dir"] = record.path
    return result
