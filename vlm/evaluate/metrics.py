"""`evaluate`: AUC, ACC, calibration, bootstrap CIs, per-class results and confusion matrices in one `Metrics`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from vlm.evaluate.bootstrap import _check_bootstrap_args, _percentile_ci, _resample_sums
from vlm.evaluate.calibration import _calibration, _from_sums, _linear_columns
from vlm.evaluate.core import _full_column_aucs, _hits, _plans, _predictions, _undefined
from vlm.evaluate.inputs import Array, _class_names, _prepare, _resolve
from vlm.results import jsonable
from vlm.tasks import TaskKind, TaskSpec


@dataclass
class Metrics:
    """Everything `evaluate` reports; `to_dict()` is JSON-ready (nan becomes None).

    `per_class`: one dict per class (multi-label: per label) with `label`, `support` (samples of the
    class; positives of the label), `auc` (one-vs-rest; per label; for binary both entries carry the
    task AUC, which is symmetric), `acc` (recall of the class; accuracy of the label) and `ece`
    (class-wise ECE of the class; the label's top-label ECE).
    `confusion`: K x K counts, rows = true class, columns = predicted class (binary at `threshold`,
    otherwise argmax); for multi-label one [[TN, FP], [FN, TP]] per label, as scikit-learn's
    `multilabel_confusion_matrix`.
    `balanced_acc`: mean recall over the classes present (scikit-learn's balanced_accuracy_score);
    for multi-label the mean over labels of that score per label.
    Calibration (`vlm.evaluate.calibration`, 15 bins; binary/multi-label top labels at 0.5 whatever
    `threshold`): `ece` (top-label, equal-width bins),
    `ece_adaptive` (equal-mass bins), `mce`, `brier`, `nll`; `ece_ci`, `brier_ci`, `nll_ci` come from
    the same bootstrap resamples as `auc_ci` and `acc_ci`.
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
    ece: float = float("nan")
    ece_ci: tuple[float, float] | None = None
    ece_adaptive: float = float("nan")
    mce: float = float("nan")
    brier: float = float("nan")
    brier_ci: tuple[float, float] | None = None
    nll: float = float("nan")
    nll_ci: tuple[float, float] | None = None

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
    """MedMNIST AUC and ACC of `scores` (N, K) against `y_true` (N, L), calibration metrics, percentile bootstrap CIs.

    `labels` names the classes when a kind string is given (a TaskSpec brings its own).
    `n_bootstrap=0` disables the CIs. Runs on the scores' device.
    """
    kind, names, name = _resolve(task_or_kind, labels)
    _check_bootstrap_args(n_bootstrap, ci, threshold)
    y, s = _prepare(kind, y_true, scores, names, name, task_or_kind if isinstance(task_or_kind, TaskSpec) else None)
    n, k = s.shape
    names = _class_names(kind, names, k)
    plans = _plans(kind, y, s)
    col_auc = _full_column_aucs(plans, n, s.device)
    hits = _hits(kind, y, s, threshold)
    notes = _undefined(kind, y, s, names, col_auc)
    calib = _calibration(kind, y, s)
    auc_ci = acc_ci = None
    calib_ci: dict[str, tuple[float, float] | None] = {"ece_ci": None, "brier_ci": None, "nll_ci": None}
    skipped = 0
    if n_bootstrap:
        columns = torch.cat([hits[:, None].double(), _linear_columns(kind, y, s)], dim=1)
        boot_auc, sums = _resample_sums([plans], columns, n_bootstrap, seed)
        skipped = int((~torch.isfinite(boot_auc[0])).sum())
        auc_ci = _percentile_ci(boot_auc[0], ci) if not notes else None
        acc_ci = _percentile_ci(sums[:, 0] / y.numel(), ci)
        calib_ci = {key: _percentile_ci(v, ci) for key, v in zip(calib_ci, _from_sums(sums[:, 1:], y))}
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
        {"label": label, "support": int(sup), "auc": float(a), "acc": float(c), "ece": e}
        for label, sup, a, c, e in zip(names, support.tolist(), col_auc.tolist(), class_acc.tolist(), calib["per_class"])
    ]
    return Metrics(
        kind=kind, n=n, auc=col_auc.mean().item(), acc=hits.sum().item() / y.numel(), auc_ci=auc_ci, acc_ci=acc_ci,
        balanced_acc=balanced.item(), threshold=float(threshold), ci_level=ci, n_bootstrap=n_bootstrap, seed=seed,
        per_class=per_class, confusion=confusion.tolist(), auc_bootstrap_skipped=skipped, notes=notes,
        ece=calib["ece"], ece_adaptive=calib["ece_adaptive"], mce=calib["mce"], brier=calib["brier"], nll=calib["nll"],
        **calib_ci,
    )
