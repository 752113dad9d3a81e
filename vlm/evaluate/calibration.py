"""Calibration metrics of the one evaluator: ECE (equal-width and equal-mass bins), MCE, class-wise ECE,
Brier score and NLL, plus reliability-diagram data.

Scores are read as probabilities in MedMNIST's convention (see `vlm.evaluate`), in float64 on their
device; B = 15 bins unless `n_bins` says otherwise.

Binary problems. A binary task, and each label of a multi-label task, is scored on the two columns
[1 - p, p] with p = the LAST score column, as for AUC and ACC (a given first column is not read).
The top label is class 1 when p > 0.5 and class 0 otherwise: `evaluate`'s ACC at its default
threshold 0.5, so a tie p = 0.5 predicts class 0, with confidence 0.5. Its confidence is
max(p, 1 - p). The ECE family always uses this 0.5 decision, whatever `evaluate(threshold=...)` says:
the top-label confidence belongs to it. Multi-class and ordinal: confidence = max_k p_k, prediction =
argmax (the first maximum on ties, as ACC).

- `ece`: top-label expected calibration error over equal-width bins. Bin b is (e_b, e_{b+1}] with
  edges e = torch.linspace(0, 1, B + 1) in float64: bins are right-closed, and a confidence of exactly
  0 goes to the first bin (in exact arithmetic, bin ceil(c * B) - 1). Each bin weighs the fraction of
  samples in it: ECE = sum_b (n_b / N) |acc_b - conf_b| = sum_b |sum_{i in b} (correct_i - c_i)| / N.
- `ece_adaptive`: the same sum over equal-mass bins. Samples sorted by confidence (stable sort: ties
  keep their input order) are cut into B contiguous groups as `numpy.array_split` cuts (the first
  N mod B groups hold one more sample); with N < B some bins stay empty.
- `mce`: the maximum over non-empty equal-width bins of |acc_b - conf_b|.
- per-class `ece` (class-wise): for class k, equal-width bins over p_k and, per bin,
  |mean(y == k) - mean(p_k)| weighted by the bin's fraction of samples. Binary: the classes of [1 - p, p].
- `brier`: the mean over samples of sum_k (p_k - y_k)^2 over the K columns, y one-hot. Binary on
  [1 - p, p] gives 2 (p - y)^2: twice scikit-learn's `brier_score_loss`, which scores the positive
  column only.
- `nll`: the mean over samples of -log max(p_true, 1e-12); binary on [1 - p, p] (scikit-learn's `log_loss`).

Multi-label: `ece`, `ece_adaptive` and `mce` are means over labels of the label's binary (top-label)
value, and the per-label `ece` is that binary value, so that `ece` is the mean of the per-label
entries; `brier` is the mean over labels and samples of (p - y)^2 (scikit-learn's binary Brier per
label, averaged); `nll` is the mean binary cross-entropy over labels and samples (clamped as above).

torchmetrics (1.9) agreement: `multiclass_calibration_error(n_bins=B, norm="l1")` ("max") is the
top-label `ece` (`mce`), for binary on [1 - p, p] with num_classes=2. `binary_calibration_error(p_k,
y == k)` is the class-wise per-class `ece`: it calibrates the positive column, not the top label (the
binary `ece` folds p and 1 - p into the same bins and equals it only when all p lie on one side of
0.5). torchmetrics bins by `bucketize(..., right=True)`, i.e. left-closed [e_b, e_{b+1}) with a
confidence of exactly 1 alone in an extra bin: the values agree to 1e-12 in float64 except when
confidences lie exactly on an inner edge or at 1 (a null set for continuous scores).
`multiclass_calibration_error` itself casts confidences to float32 and sums its bins in float32, so
it agrees to about 1e-5; its binning code (`_ce_compute`) run in float64 agrees to 1e-12.

Bootstrap: ECE, Brier and NLL of a resample are functions of weighted sums of per-sample columns
(`_linear_columns`), so the evaluator's bootstrap (`vlm.evaluate.bootstrap`) computes them with one
matrix product on the same resamples as AUC and ACC.
"""

from __future__ import annotations

from typing import Any

import torch

from vlm.evaluate.core import _predictions
from vlm.evaluate.inputs import Array, _prepare, _resolve
from vlm.tasks import TaskKind, TaskSpec

N_BINS = 15
_EPS = 1e-12


def _top_label(kind: TaskKind, y: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-label confidence and correctness (N, C) float64: one column per label for multi-label, else C = 1."""
    pred = _predictions(kind, s, 0.5)
    if kind != "multi-label":
        pred = pred[:, None]
    if kind in ("binary", "multi-label"):
        p = s[:, -1:] if kind == "binary" else s
        conf = torch.where(pred == 1, p, 1 - p)
    else:
        conf = s.gather(1, pred)
    return conf, (pred == y).double()


def _class_wise(kind: TaskKind, y: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Probability and 0/1 target (N, K) of each class of a single-label kind; binary: [1 - p, p]."""
    if kind == "binary":
        p = s[:, -1:]
        return torch.cat([1 - p, p], dim=1), torch.cat([y == 0, y == 1], dim=1).double()
    return s, (y == torch.arange(s.shape[1], device=y.device)).double()


def _per_sample_losses(kind: TaskKind, y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """(N, 2) per-sample Brier and NLL whose means over samples are `brier` and `nll`."""
    if kind == "multi-label":
        prob, target = s, y.double()
        p_true = torch.where(y == 1, s, 1 - s)
        brier = (prob - target).square().mean(dim=1)
        nll = -p_true.clamp(min=_EPS).log().mean(dim=1)
    else:
        prob, target = _class_wise(kind, y, s)
        brier = (prob - target).square().sum(dim=1)
        nll = -(prob * target).sum(dim=1).clamp(min=_EPS).log()
    return torch.stack([brier, nll], dim=1)


def _equal_width(conf: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Bin (N, C) of each confidence: b for e_b < c <= e_{b+1}; c <= e_1 (c = 0 included) in bin 0."""
    edges = torch.linspace(0, 1, n_bins + 1, dtype=conf.dtype, device=conf.device)
    return torch.bucketize(conf, edges[1:-1])


def _equal_mass(conf: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Bin (N, C) of each confidence: ranks of a stable sort cut like numpy.array_split into n_bins groups."""
    n = conf.shape[0]
    big, small = n // n_bins + 1, max(n // n_bins, 1)
    first = (n % n_bins) * big  # ranks held by the groups of size n // n_bins + 1
    rank = torch.arange(n, device=conf.device)
    rank_bin = torch.where(rank < first, rank // big, n % n_bins + (rank - first) // small)
    order = torch.sort(conf, dim=0, stable=True).indices
    return torch.empty_like(order).scatter_(0, order, rank_bin[:, None].expand_as(order).contiguous())


def _bin_sums(bins: torch.Tensor, values: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Sum (C, n_bins) of the values (N, C) falling into each (column, bin)."""
    c = values.shape[1]
    index = (bins + n_bins * torch.arange(c, device=bins.device)).flatten()
    sums = torch.zeros(c * n_bins, dtype=values.dtype, device=values.device)
    return sums.index_add_(0, index, values.flatten()).view(c, n_bins)


def _binned(conf: torch.Tensor, hit: torch.Tensor, bins: torch.Tensor, n_bins: int) -> dict[str, torch.Tensor]:
    """Per (column, bin) count, confidence sum and hit sum, each (C, n_bins)."""
    return {"count": _bin_sums(bins, torch.ones_like(conf), n_bins),
            "conf": _bin_sums(bins, conf, n_bins), "hit": _bin_sums(bins, hit, n_bins)}


def _ece(b: dict[str, torch.Tensor], n: int) -> torch.Tensor:
    """ECE (C,) per column from `_binned` sums: sum over bins of |hits - confidences| / N."""
    return (b["hit"] - b["conf"]).abs().sum(dim=1) / n


def _mce(b: dict[str, torch.Tensor]) -> torch.Tensor:
    """MCE (C,) per column: max over non-empty bins of |acc - conf|."""
    gap = (b["hit"] - b["conf"]).abs() / b["count"].clamp(min=1)
    return torch.where(b["count"] > 0, gap, 0.0).amax(dim=1)


def _calibration(kind: TaskKind, y: torch.Tensor, s: torch.Tensor, n_bins: int = N_BINS) -> dict[str, Any]:
    """Point estimates on prepared labels (N, L) and scores (N, K): floats, and `per_class` ECEs (list)."""
    n = len(y)
    conf, hit = _top_label(kind, y, s)
    top = _binned(conf, hit, _equal_width(conf, n_bins), n_bins)
    adaptive = _binned(conf, hit, _equal_mass(conf, n_bins), n_bins)
    if kind == "multi-label":
        per_class = _ece(top, n)
    else:
        prob, target = _class_wise(kind, y, s)
        per_class = _ece(_binned(prob, target, _equal_width(prob, n_bins), n_bins), n)
    brier, nll = _per_sample_losses(kind, y, s).mean(dim=0).tolist()
    return {"ece": _ece(top, n).mean().item(), "ece_adaptive": _ece(adaptive, n).mean().item(),
            "mce": _mce(top).mean().item(), "brier": brier, "nll": nll, "per_class": per_class.tolist()}


def _linear_columns(kind: TaskKind, y: torch.Tensor, s: torch.Tensor, n_bins: int = N_BINS) -> torch.Tensor:
    """Per-sample columns (N, M + 2) whose weighted sums give a resample's ECE, Brier and NLL (`_from_sums`).

    Each of the first M columns is one occupied (problem, equal-width bin) cell and holds correct -
    confidence of the samples whose top label falls into it, 0 elsewhere (empty cells would add
    nothing to any resample's ECE); the last two hold the per-sample Brier and NLL.
    """
    conf, hit = _top_label(kind, y, s)
    cell = _equal_width(conf, n_bins) + n_bins * torch.arange(conf.shape[1], device=conf.device)
    used, column = torch.unique(cell, return_inverse=True)
    gaps = torch.zeros(len(conf), len(used), dtype=conf.dtype, device=conf.device).scatter_(1, column, hit - conf)
    return torch.cat([gaps, _per_sample_losses(kind, y, s)], dim=1)


def _from_sums(sums: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ECE, Brier and NLL (R,) of resamples of labels y (N, L) from their weighted `_linear_columns` sums (R, M + 2).

    ECE is the mean over the L problems (1 for single-label kinds) of sum over bins |sum of gaps| / N.
    """
    n, problems = y.shape
    return sums[:, :-2].abs().sum(dim=1) / (n * problems), sums[:, -2] / n, sums[:, -1] / n


def calibration_metrics(
    kind: TaskKind | TaskSpec, y_true: Array, scores: Array, n_bins: int = N_BINS
) -> dict[str, Any]:
    """`ece`, `ece_adaptive`, `mce`, `brier`, `nll` (floats) and `per_class` (ECE per class or label), no CIs.

    The definitions are the module's; `evaluate` reports the same values (with B = 15) and their CIs.
    """
    kind, names, name = _resolve(kind, None)
    y, s = _prepare(kind, y_true, scores, names, name)
    return _calibration(kind, y, s, n_bins)


def reliability_bins(kind: TaskKind | TaskSpec, y_true: Array, scores: Array, n_bins: int = N_BINS) -> dict[str, Any]:
    """Reliability-diagram data of the top label over the equal-width bins of `ece`.

    Returns `edges` (n_bins + 1 floats) and per bin `confidence` (mean top-label confidence),
    `accuracy` (fraction of right top labels), both nan for an empty bin, and `count` (ints), plus `n`
    (the samples binned). Multi-label: all (sample, label) pairs are pooled into one diagram, so
    `n` = samples x labels (the module's `ece` is instead the mean of per-label values).
    """
    kind, names, name = _resolve(kind, None)
    y, s = _prepare(kind, y_true, scores, names, name)
    conf, hit = _top_label(kind, y, s)
    conf, hit = conf.reshape(-1, 1), hit.reshape(-1, 1)
    b = {key: v[0] for key, v in _binned(conf, hit, _equal_width(conf, n_bins), n_bins).items()}
    empty = b["count"] == 0
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    return {"edges": edges.tolist(), "confidence": torch.where(empty, torch.nan, b["conf"] / b["count"]).tolist(),
            "accuracy": torch.where(empty, torch.nan, b["hit"] / b["count"]).tolist(),
            "count": b["count"].long().tolist(), "n": len(conf)}
