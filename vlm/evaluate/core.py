"""MedMNIST's AUC and ACC: the weighted rank-AUC kernel (plain, bootstrap, paired) and ACC's hits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vlm.errors import VlmError
from vlm.evaluate.inputs import Array, _class_names, _prepare, _resolve
from vlm.tasks import TaskKind, TaskSpec


@dataclass(frozen=True)
class _AucPlan:
    """One binary AUC problem, sorted once, evaluated for any per-sample weights.

    For weights w the Mann-Whitney statistic of row r is
        U_r = sum over positives i, negatives j of w_ri * w_rj * ([s_i > s_j] + 0.5 [s_i == s_j])
    and AUC_r = U_r / (P_r * Q_r) with P_r, Q_r the total positive and negative weight. With all
    weights 1 this is scikit-learn's roc_auc_score (average ranks for ties).

    Weights come as int32 (R, 1 + N): column 0 is a zero pad and column 1 + i weighs sample i, so
    that the prefix sums of negative weight start at 0. Prefix sums are exact integers (int32's
    cumsum is also several times faster than float32's on the CPU); products and sums are float64.
    """

    pos: torch.Tensor  # (1, P) padded column of each positive sample
    neg: torch.Tensor  # (1, 1 + Q) the pad column, then the negatives' padded columns in ascending score order
    below: torch.Tensor  # (1, P) per positive: number of negatives scoring strictly lower
    upto: torch.Tensor  # (1, P) per positive: number of negatives scoring lower or equal

    @classmethod
    def build(cls, target: torch.Tensor, score: torch.Tensor) -> "_AucPlan":
        """Plan for boolean targets (N,) and scores (N,)."""
        pos = torch.nonzero(target).flatten()
        neg = torch.nonzero(~target).flatten()
        neg_scores, order = torch.sort(score[neg])
        pos_scores = score[pos]
        below = torch.searchsorted(neg_scores, pos_scores)
        upto = torch.searchsorted(neg_scores, pos_scores, right=True)
        neg_columns = torch.nn.functional.pad(neg[order] + 1, (1, 0))
        return cls((pos + 1)[None], neg_columns[None], below[None], upto[None])

    def __call__(self, weights: torch.Tensor) -> torch.Tensor:
        """AUC per row of padded weights (R, 1 + N); nan where a row has no positive or no negative weight."""
        cum = _take(weights, self.neg).cumsum_(1)  # cum[:, k] = weight of the k lowest negatives
        pos_w = _take(weights, self.pos).double()
        credit = (_take(cum, self.below) + _take(cum, self.upto)).double()  # twice the credit
        twice_u = torch.matmul(pos_w[:, None, :], credit[:, :, None]).flatten()
        pairs = pos_w.sum(1) * cum[:, -1].double()
        return torch.where(pairs > 0, twice_u / (2 * pairs), torch.nan)


def _take(rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """rows[:, columns[0]] for columns (1, M): torch.gather, several times faster than index_select on the CPU."""
    return torch.gather(rows, 1, columns.expand(rows.shape[0], -1))


def _targets(kind: TaskKind, y: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean targets (N, C) and scores (N, C) of the binary problems whose AUCs medmnist averages."""
    if kind == "binary":
        return y == 1, s[:, -1:]
    if kind == "multi-label":
        return y == 1, s
    return y == torch.arange(s.shape[1], device=y.device), s


def _plans(kind: TaskKind, y: torch.Tensor, s: torch.Tensor) -> list[_AucPlan]:
    targets, columns = _targets(kind, y, s)
    return [_AucPlan.build(targets[:, c], columns[:, c]) for c in range(columns.shape[1])]


def _column_aucs(plans: list[_AucPlan], weights: torch.Tensor) -> torch.Tensor:
    """(R, C) AUC of each averaged problem for each row of padded weights (R, 1 + N)."""
    return torch.stack([plan(weights) for plan in plans], dim=1)


def _undefined(
    kind: TaskKind, y: torch.Tensor, s: torch.Tensor, names: Sequence[str], col_auc: torch.Tensor
) -> list[str]:
    """One message per class (label) whose AUC is undefined."""
    targets, _ = _targets(kind, y, s)
    what = "label" if kind == "multi-label" else "class"
    names = names[-1:] if kind == "binary" else names
    out = []
    for c in torch.nonzero(torch.isnan(col_auc)).flatten().tolist():
        positives = int(targets[:, c].sum())
        lacking = "positive" if positives == 0 else "negative"
        out.append(f"AUC undefined for {what} '{names[c]}': no {lacking} samples among {len(y)}")
    return out


# ---------------------------------------------------------------------------------------------------
# ACC


def _predictions(kind: TaskKind, s: torch.Tensor, threshold: float) -> torch.Tensor:
    """Predicted class (N,) for single-label kinds, predicted 0/1 per label (N, L) for multi-label."""
    if kind == "binary":
        return (s[:, -1] > threshold).long()
    if kind == "multi-label":
        return (s > threshold).long()
    return s.argmax(dim=1)  # first maximum on ties, like numpy.argmax


def _hits(kind: TaskKind, y: torch.Tensor, s: torch.Tensor, threshold: float) -> torch.Tensor:
    """Right answers per sample (N,) int64: 0/1, or the number of right labels for multi-label.

    medmnist's ACC is their sum over N * L (L = labels per sample: 1 for single-label kinds).
    """
    pred = _predictions(kind, s, threshold)
    if kind == "multi-label":
        return (pred == y).sum(dim=1)
    return (pred == y[:, 0]).long()


def _full_column_aucs(plans: list[_AucPlan], n: int, device: torch.device) -> torch.Tensor:
    """(C,) AUC of each averaged problem on the full set: padded weights (1, 1 + n), every sample once."""
    weights = torch.ones(1, 1 + n, dtype=torch.int32, device=device)
    weights[:, 0] = 0
    return _column_aucs(plans, weights)[0]


def _strict_auc(
    kind: TaskKind, y: torch.Tensor, s: torch.Tensor, plans: list[_AucPlan], names: tuple[str, ...] | None
) -> float:
    """The full-set AUC, or a VlmError naming the classes whose AUC is undefined."""
    col_auc = _full_column_aucs(plans, len(y), y.device)
    undefined = _undefined(kind, y, s, _class_names(kind, names, s.shape[1]), col_auc)
    if undefined:
        raise VlmError("; ".join(undefined) + " (AUC needs positive and negative samples of every class).")
    return col_auc.mean().item()


def auc_score(kind: TaskKind | TaskSpec, y_true: Array, scores: Array) -> float:
    """MedMNIST AUC (`medmnist.evaluator.getAUC`); raises VlmError where a class's AUC is undefined."""
    kind, names, name = _resolve(kind, None)
    y, s = _prepare(kind, y_true, scores, names, name)
    return _strict_auc(kind, y, s, _plans(kind, y, s), names)


def acc_score(kind: TaskKind | TaskSpec, y_true: Array, scores: Array, threshold: float = 0.5) -> float:
    """MedMNIST ACC (`medmnist.evaluator.getACC`): threshold for binary/multi-label, argmax otherwise."""
    kind, names, name = _resolve(kind, None)
    y, s = _prepare(kind, y_true, scores, names, name)
    return _hits(kind, y, s, threshold).sum().item() / y.numel()
