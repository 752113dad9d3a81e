"""ROC curves (scikit-learn's `roc_curve`, per-class and macro points for plots) and threshold tuning."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from vlm.errors import VlmError
from vlm.evaluate.core import _targets
from vlm.evaluate.inputs import Array, _class_names, _prepare, _resolve
from vlm.tasks import TaskKind, TaskSpec


def roc_curve(y_true_binary: Array, score: Array) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(fpr, tpr, thresholds) as `sklearn.metrics.roc_curve(..., drop_intermediate=False)`.

    Thresholds are the distinct scores in decreasing order, preceded by +inf. Raises VlmError when
    the targets hold only one class (the curve is undefined).
    """
    s = torch.as_tensor(score).to(torch.float64).flatten()
    y = torch.as_tensor(y_true_binary, device=s.device).flatten() == 1
    positives = int(y.sum())
    if positives in (0, len(y)):
        raise VlmError(f"ROC curve undefined: all {len(y)} samples are {'negative' if positives == 0 else 'positive'}.")
    values, group = torch.unique(s, sorted=True, return_inverse=True)
    pos = torch.zeros(len(values), dtype=torch.float64, device=s.device).index_add_(0, group, y.double())
    total = torch.bincount(group, minlength=len(values)).double()
    zero = torch.zeros(1, dtype=torch.float64, device=s.device)
    tps = torch.cat([zero, pos.flip(0).cumsum(0)])
    fps = torch.cat([zero, (total - pos).flip(0).cumsum(0)])
    thresholds = torch.cat([zero + math.inf, values.flip(0)])
    return fps / fps[-1], tps / tps[-1], thresholds


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """numpy.interp for increasing (possibly repeated) xp: the last of repeated points wins."""
    j = (torch.searchsorted(xp, x, right=True) - 1).clamp(0, len(xp) - 1)
    nxt = (j + 1).clamp(max=len(xp) - 1)
    x0, x1 = xp[j], xp[nxt]
    t = torch.where(x1 > x0, (x - x0) / (x1 - x0), torch.zeros_like(x)).clamp(0, 1)
    return fp[j] + t * (fp[nxt] - fp[j])


def roc_points(
    kind: TaskKind | TaskSpec, y_true: Array, scores: Array, labels: Sequence[str] | None = None
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """ROC curves (fpr, tpr) by class name for plotting.

    Binary: the positive (last) class only. Multi-class/ordinal: one-vs-rest per class plus "macro",
    the mean of the class curves interpolated onto the union of their fpr values (as in
    scikit-learn's ROC example). Multi-label: one curve per label. Classes whose curve is undefined
    (no positive or no negative samples) are left out.
    """
    kind, names, name = _resolve(kind, labels)
    y, s = _prepare(kind, y_true, scores, names, name)
    names = _class_names(kind, names, s.shape[1])
    targets, columns = _targets(kind, y, s)
    if kind == "binary":
        names = names[-1:]
    curves = {}
    for c, label in enumerate(names):
        if 0 < int(targets[:, c].sum()) < len(y):
            fpr, tpr, _ = roc_curve(targets[:, c], columns[:, c])
            curves[label] = (fpr, tpr)
    if kind in ("multi-class", "ordinal") and curves:
        grid = torch.unique(torch.cat([fpr for fpr, _ in curves.values()]))
        mean_tpr = torch.stack([_interp(grid, fpr, tpr) for fpr, tpr in curves.values()]).mean(dim=0)
        curves["macro"] = (grid, mean_tpr)
    return curves


def tune_threshold(kind: TaskKind | TaskSpec, y_val: Array, s_val: Array) -> float:
    """The threshold that maximises validation ACC (binary: last column; multi-label: one shared threshold).

    Candidates are 0.5, the midpoints between consecutive distinct scores, and points just below the
    lowest and at the highest score; among equally good candidates the one closest to 0.5 wins,
    so 0.5 comes back unless another threshold is strictly better. Multi-label ACC is the mean over
    labels of per-label accuracy, i.e. accuracy over all (sample, label) pairs, which one shared
    threshold maximises directly. Other kinds use argmax: 0.5 is returned unchanged.
    """
    kind, names, name = _resolve(kind, None)
    y, s = _prepare(kind, y_val, s_val, names, name)
    if kind not in ("binary", "multi-label"):
        return 0.5
    targets, columns = _targets(kind, y, s)
    score, order = torch.sort(columns.flatten())
    positive = targets.flatten()[order].long()
    values = torch.unique_consecutive(score)
    candidates = torch.cat([
        values.new_tensor([0.5, torch.nextafter(values[0], values.new_tensor(-math.inf)).item()]),
        (values[:-1] + values[1:]) / 2,
        values[-1:],
    ])
    # For threshold t: samples with score <= t are predicted negative.
    at_or_below = torch.searchsorted(score, candidates, right=True)
    pos_below = torch.nn.functional.pad(positive.cumsum(0), (1, 0))[at_or_below]
    correct = (at_or_below - pos_below) + (positive.sum() - pos_below)
    best = torch.nonzero(correct == correct.max()).flatten()
    return candidates[best[torch.argmin((candidates[best] - 0.5).abs())]].item()
