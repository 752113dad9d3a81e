"""The one evaluator: MedMNIST's AUC and ACC in torch, bootstrap CIs, per-class metrics, ROC curves.

Definitions follow `medmnist.evaluator.getAUC/getACC` exactly:

- binary: AUC and ACC use the LAST score column (or a 1-D score); ACC predicts `score > threshold`;
- multi-class and ordinal: AUC is the mean of the K one-vs-rest AUCs; ACC is argmax accuracy;
- multi-label: AUC and ACC are means over labels of the per-label AUC and of the per-label accuracy
  at `score > threshold`.

Everything runs in torch on the device that holds the scores, in float64. AUC is the rank
(Mann-Whitney) statistic with half credit for ties, i.e. scikit-learn's `roc_auc_score`, computed by
one weighted kernel (`_AucPlan`) that serves the plain AUC (all weights 1), the bootstrap and the
paired bootstrap (weights = how often each sample was drawn in a resample; whole numbers, held
exactly in int32).

Every public function takes a task kind string ("binary", "multi-class", "multi-label", "ordinal")
or a TaskSpec, whose class names then label messages and per-class results.

Undefined AUC: a class (or label) with no positive or no negative samples has no AUC (scikit-learn
used to raise; 1.9 warns and returns nan, so medmnist's average becomes nan). `auc_score` raises a
VlmError naming the class; `evaluate` returns `auc = nan` (None in `to_dict()`), the per-class AUCs
that are defined, and a note naming the class, so a run on a small subset still reports its ACC.
Bootstrap resamples whose AUC is undefined are left out of the AUC percentiles and counted in
`Metrics.auc_bootstrap_skipped`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from vlm.errors import VlmError
from vlm.results import jsonable
from vlm.tasks import TaskKind, TaskSpec

KINDS: tuple[TaskKind, ...] = ("binary", "multi-class", "multi-label", "ordinal")

# Bootstrap rounds are processed in chunks of about this many (round, sample) weights: small enough
# on the CPU for a chunk to stay in cache (about 4x faster than one big block), large on accelerators.
_CHUNK_ELEMENTS = {"cpu": 1 << 19}
_CHUNK_ELEMENTS_DEFAULT = 1 << 24

Array = Any  # a torch tensor, numpy array or nested list


# ---------------------------------------------------------------------------------------------------
# Input checks


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
    kind: TaskKind, y_true: Array, scores: Array, labels: Sequence[str] | None, name: str, task: TaskSpec | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate labels and scores; return labels (N, L) int64 and scores (N, K) float64 on the scores' device."""
    s = torch.as_tensor(scores)
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


# ---------------------------------------------------------------------------------------------------
# The weighted AUC kernel


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


# ---------------------------------------------------------------------------------------------------
# Bootstrap


def _resample_weights(n: int, rounds: int, seed: int, device: torch.device) -> Iterator[torch.Tensor]:
    """Padded int32 multiplicity weights (r, 1 + n) of `rounds` bootstrap resamples, in chunks; seeded."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    chunk = max(1, _CHUNK_ELEMENTS.get(device.type, _CHUNK_ELEMENTS_DEFAULT) // n)
    for start in range(0, rounds, chunk):
        r = min(chunk, rounds - start)
        drawn = torch.randint(1, n + 1, (r, n), generator=gen, device=device)
        weights = torch.zeros(r, 1 + n, dtype=torch.int32, device=device)
        yield weights.scatter_add_(1, drawn, torch.ones(1, 1, dtype=torch.int32, device=device).expand(r, n))


def _bootstrap(
    runs: list[tuple[list[_AucPlan], torch.Tensor]], y: torch.Tensor, rounds: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """AUC and ACC (S, rounds) of S runs (AUC plans, hits per sample) on the SAME resamples of labels y (N, L)."""
    n, units = y.shape
    hits = torch.stack([h for _, h in runs], dim=1).double()  # (N, S)
    aucs, accs = [], []
    for weights in _resample_weights(n, rounds, seed, y.device):
        aucs.append(torch.stack([_column_aucs(plans, weights).mean(dim=1) for plans, _ in runs]))
        accs.append((weights[:, 1:].double() @ hits).T / (n * units))
    return torch.cat(aucs, dim=1), torch.cat(accs, dim=1)


def _check_bootstrap_args(n_bootstrap: int, ci: float) -> None:
    if n_bootstrap < 0:
        raise VlmError(f"n_bootstrap must be >= 0 (0 disables CIs), got {n_bootstrap}.")
    if not 0 < ci < 1:
        raise VlmError(f"ci must be a level between 0 and 1 such as 0.95, got {ci}.")


def _percentile_ci(values: torch.Tensor, ci: float) -> tuple[float, float] | None:
    """Percentile interval of the finite values (numpy's linear interpolation); None if there are none."""
    values = values[torch.isfinite(values)]
    if values.numel() == 0:
        return None
    alpha = (1 - ci) / 2
    lo, hi = torch.quantile(values, torch.tensor([alpha, 1 - alpha], dtype=values.dtype, device=values.device))
    return lo.item(), hi.item()


# ---------------------------------------------------------------------------------------------------
# Metrics


@dataclass
class Metrics:
    """Everything `evaluate` reports; `to_dict()` is JSON-ready (nan becomes None).

    `per_class`: one dict per class (multi-label: per label) with `label`, `support` (samples of the
    class; positives of the label), `auc` (one-vs-rest; per label; for binary both entries carry the
    task AUC, which is symmetric) and `acc` (recall of the class; accuracy of the label).
    `confusion`: K x K counts, rows = true class, columns = predicted class (binary at `threshold`,
    otherwise argmax); for multi-label one [[TN, FP], [FN, TP]] per label, as scikit-learn's
    `multilabel_confusion_matrix`.
    `balanced_acc`: mean recall over the classes present (scikit-learn's balanced_accuracy_score);
    for multi-label the mean over labels of that score per label.
    """

    kind: str
    n: int
    auc: float
    acc: float
    auc_ci: tuple[float, float] | None
    acc_ci: tuple[float, float] | None
    balanced_acc: float
    threshold: float
    ci_level: float
    n_bootstrap: int
    seed: int
    per_class: list[dict[str, Any]]
    confusion: list[list[int]] | list[list[list[int]]]
    auc_bootstrap_skipped: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict for JSON: tuples become lists, nan becomes None."""
        return jsonable(asdict(self))




def _confusion(kind: TaskKind, y: torch.Tensor, pred: torch.Tensor, k: int) -> torch.Tensor:
    """(K, K) counts for single-label kinds, (L, 2, 2) for multi-label."""
    if kind == "multi-label":
        cells = (2 * y + pred) + 4 * torch.arange(y.shape[1], device=y.device)
        return torch.bincount(cells.flatten(), minlength=4 * k).view(k, 2, 2)
    k = 2 if kind == "binary" else k
    return torch.bincount(y[:, 0] * k + pred, minlength=k * k).view(k, k)


def _recalls(confusion: torch.Tensor) -> torch.Tensor:
    """Recall per true class (rows) of a (..., K, K) confusion matrix; nan where a class is absent."""
    support = confusion.sum(dim=-1).double()
    return torch.diagonal(confusion, dim1=-2, dim2=-1).double() / support


def evaluate(
    task_or_kind: TaskSpec | TaskKind,
    y_true: Array,
    scores: Array,
    *,
    threshold: float = 0.5,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    labels: Sequence[str] | None = None,
) -> Metrics:
    """MedMNIST AUC and ACC of `scores` (N, K) against `y_true` (N, L), with percentile bootstrap CIs.

    `labels` names the classes when a kind string is given (a TaskSpec brings its own).
    `n_bootstrap=0` disables the CIs. Runs on the scores' device.
    """
    kind, names, name = _resolve(task_or_kind, labels)
    _check_bootstrap_args(n_bootstrap, ci)
    y, s = _prepare(kind, y_true, scores, names, name, task_or_kind if isinstance(task_or_kind, TaskSpec) else None)
    n, k = s.shape
    names = _class_names(kind, names, k)
    plans = _plans(kind, y, s)
    col_auc = _full_column_aucs(plans, n, s.device)
    hits = _hits(kind, y, s, threshold)
    notes = _undefined(kind, y, s, names, col_auc)
    auc_ci = acc_ci = None
    skipped = 0
    if n_bootstrap:
        boot_auc, boot_acc = _bootstrap([(plans, hits)], y, n_bootstrap, seed)
        skipped = int((~torch.isfinite(boot_auc[0])).sum())
        auc_ci = _percentile_ci(boot_auc[0], ci) if not notes else None
        acc_ci = _percentile_ci(boot_acc[0], ci)
        if skipped and not notes:
            notes.append(f"{skipped} of {n_bootstrap} bootstrap resamples lacked a class; left out of the AUC CI")

    pred = _predictions(kind, s, threshold)
    confusion = _confusion(kind, y, pred, k)
    if kind == "multi-label":
        support = y.sum(dim=0)
        class_acc = (pred == y).double().mean(dim=0)
        balanced = torch.nanmean(_recalls(confusion), dim=-1).mean()
    else:
        support = confusion.sum(dim=1)
        class_acc = _recalls(confusion)
        balanced = torch.nanmean(class_acc)
        if kind == "binary":
            col_auc = col_auc.expand(2)
    per_class = [
        {"label": label, "support": int(sup), "auc": float(a), "acc": float(c)}
        for label, sup, a, c in zip(names, support.tolist(), col_auc.tolist(), class_acc.tolist())
    ]
    return Metrics(
        kind=kind, n=n, auc=col_auc.mean().item(), acc=hits.sum().item() / y.numel(), auc_ci=auc_ci, acc_ci=acc_ci,
        balanced_acc=balanced.item(), threshold=float(threshold), ci_level=ci, n_bootstrap=n_bootstrap, seed=seed,
        per_class=per_class, confusion=confusion.tolist(), auc_bootstrap_skipped=skipped, notes=notes,
    )


def paired_bootstrap(
    kind: TaskKind | TaskSpec,
    y_true: Array,
    scores_a: Array,
    scores_b: Array,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Compare two runs on the same samples: AUC and ACC differences a - b with CIs and p-values.

    Both runs are scored on the same resamples. For "auc" and "acc" the result holds `a`, `b`,
    `diff` (a - b on the full set), `ci` (percentile interval of the resampled differences) and
    `p_value`, two-sided: min(1, 2 * min(P(d <= 0), P(d >= 0))) over the resampled differences d,
    with the usual +1 correction ((count + 1) / (rounds + 1)) so that it is never exactly 0.
    Resamples where an AUC is undefined are left out of the AUC statistics. Raises VlmError if
    the full-set AUC is undefined.
    """
    kind, names, name = _resolve(kind, None)
    _check_bootstrap_args(n_bootstrap, ci)
    if n_bootstrap == 0:
        raise VlmError("paired_bootstrap needs n_bootstrap >= 1.")
    runs = [_prepare(kind, y_true, sc, names, name) for sc in (scores_a, scores_b)]
    if runs[0][1].shape != runs[1][1].shape:
        raise VlmError(f"The two runs' scores differ in shape: {tuple(runs[0][1].shape)} vs {tuple(runs[1][1].shape)}.")
    y = runs[0][0]
    plans = [_plans(kind, y, s) for _, s in runs]
    auc = [_strict_auc(kind, y, s, p, names) for (_, s), p in zip(runs, plans)]
    hits = [_hits(kind, y, s, threshold) for _, s in runs]
    boot_auc, boot_acc = _bootstrap(list(zip(plans, hits)), y, n_bootstrap, seed)
    out: dict[str, Any] = {"n_bootstrap": n_bootstrap, "seed": seed, "ci_level": ci, "threshold": float(threshold)}
    for metric, (a, b), boot in (("auc", auc, boot_auc), ("acc", [h.sum().item() / y.numel() for h in hits], boot_acc)):
        d = boot[0] - boot[1]
        d = d[torch.isfinite(d)]
        rounds = d.numel()
        tail = min(int((d <= 0).sum()), int((d >= 0).sum()))
        out[metric] = {"a": a, "b": b, "diff": a - b, "ci": _percentile_ci(d, ci),
                       "p_value": min(1.0, 2 * (tail + 1) / (rounds + 1)), "rounds": rounds}
    return out


# ---------------------------------------------------------------------------------------------------
# ROC curves and thresholds


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
