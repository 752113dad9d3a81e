"""Input checks shared by every evaluator function: task kind, class names, labels and scores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vlm.errors import VlmError
from vlm.tasks import TaskKind, TaskSpec

KINDS: tuple[TaskKind, ...] = ("binary", "multi-class", "multi-label", "ordinal")

Array = Any  # a torch tensor, numpy array or nested list
_TOLERANCE = 1e-6  # rounding of float32 probabilities


def _resolve(
    task_or_kind: TaskSpec | str, labels: Sequence[str] | None
) -> tuple[TaskKind, tuple[str, ...] | None, str]:
    """(kind, class names or None, name for messages) from a TaskSpec or a kind string."""
    if isinstance(task_or_kind, TaskSpec):
        if labels is not None and tuple(labels) != task_or_kind.labels:
            raise VlmError(f"labels {list(labels)} differ from {task_or_kind.flag}'s {list(task_or_kind.labels)}; "
                           f"pass labels only with a task kind string.")
        return task_or_kind.kind, task_or_kind.labels, task_or_kind.flag
    if task_or_kind not in KINDS:
        raise VlmError(f"Unknown task kind '{task_or_kind}': choose one of {', '.join(KINDS)}.")
    return task_or_kind, (tuple(labels) if labels is not None else None), f"this {task_or_kind} task"


def _split_of(task: TaskSpec | None, n: int) -> str:
    """A ' (breastmnist test split)'-style hint naming the splits of `task` that have `n` samples."""
    if task is None:
        return ""
    splits = [s for s, count in task.n_samples.items() if count == n]
    return f" ({task.flag} {'/'.join(splits)} split)" if splits else ""


def _prepare(
    kind: TaskKind, y_true: Array, scores: Array, labels: Sequence[str] | None, name: str, task: TaskSpec | None = None,
    probabilities: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate labels and scores; return labels (N, L) int64 and scores (N, K) float64 on the scores' device.

    Scores are real numbers, finite, of shape (N, K) (binary also (N,)) and, with `probabilities` (all but
    logits), in [0, 1]."""
    try:
        s = torch.as_tensor(scores)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise VlmError(f"Scores must be an array of numbers ({type(exc).__name__}: {exc}).") from None
    if s.is_complex() or s.dtype == torch.bool:
        raise VlmError(f"Scores must be real numbers, got dtype {s.dtype}.")
    s = s.to(torch.float64)
    y = torch.as_tensor(y_true, device=s.device)
    if y.is_floating_point():
        if not torch.equal(y, y.round()):
            raise VlmError("Labels must be integers (class indices, or 0/1 per label for multi-label tasks).")
    y = y.long()
    if s.ndim == 1 and kind == "binary":
        s = s[:, None]
    if s.ndim != 2:
        allowed = "(N, K) or (N,)" if kind == "binary" else "(N, K)"
        raise VlmError(f"Scores must have shape {allowed} for {name}; got shape {tuple(s.shape)}.")
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2:
        raise VlmError(f"Labels must have shape (N, L); got shape {tuple(y.shape)}.")
    n, k = s.shape
    if y.shape[0] != n:
        raise VlmError(f"Expected one row of scores per sample: {y.shape[0]} samples{_split_of(task, y.shape[0])}, "
                       f"got {n} rows of scores.")
    if n == 0:
        raise VlmError("No samples to evaluate (0 rows).")
    if labels is not None:
        expected = len(labels)
        ok = k == expected or (kind == "binary" and k == 1)
        if not ok:
            also = ", or 1 column of positive-class scores" if kind == "binary" else ""
            classes = ", ".join(f"'{label}'" for label in labels)
            raise VlmError(f"{name} has K={expected} classes ({classes}); the scores have {k} columns "
                           f"(expected {expected}{also}).")
    elif kind == "binary" and k > 2:
        raise VlmError(f"A binary task takes 1 or 2 score columns; the scores have {k}.")
    elif kind == "multi-label" and k != y.shape[1]:
        raise VlmError(f"A multi-label task takes one score column per label: {y.shape[1]} labels, {k} columns.")
    elif kind in ("multi-class", "ordinal") and k < 2:
        raise VlmError(f"A {kind} task takes one score column per class (K >= 2); the scores have {k}.")
    width = k if kind == "multi-label" else 1
    if y.shape[1] != width:
        raise VlmError(f"Labels for {name} must have shape (N, {width}); got {tuple(y.shape)}.")
    top = 2 if kind in ("binary", "multi-label") else k
    if bool(((y < 0) | (y >= top)).any()):
        bad = y[(y < 0) | (y >= top)][0].item()
        raise VlmError(f"Label value {bad} is out of range for {name}: expected 0..{top - 1}.")
    bad_rows = int((~torch.isfinite(s)).any(dim=1).sum())
    if bad_rows:
        raise VlmError(f"Scores contain NaN or infinite values in {bad_rows} of {n} rows.")
    if probabilities and bool(((s < -_TOLERANCE) | (s > 1 + _TOLERANCE)).any()):
        raise VlmError(f"Scores must be probabilities in [0, 1] (softmax, or per-label sigmoid for multi-label); "
                       f"they range over [{s.min().item():.4g}, {s.max().item():.4g}]. Logits? Apply softmax first.")
    return y, s


def check_scores(task: TaskSpec, y_true: Array, scores: Array) -> None:
    """Raise a one-line VlmError if `scores` (N, K) do not fit `task` and its labels (N, L).

    Checks the number of rows against the labels (naming the split of that size), K against the
    task's classes (naming them), the number of dimensions, label values and NaN/inf values.
    A binary task also accepts one column (or a 1-D tensor) of positive-class scores, as medmnist does.
    """
    _prepare(task.kind, y_true, scores, task.labels, task.flag, task)


def _class_names(kind: TaskKind, labels: tuple[str, ...] | None, k: int) -> tuple[str, ...]:
    if labels is not None:
        return labels
    return tuple(str(i) for i in range(2 if kind == "binary" else k))
