"""ROC curves and confusion matrices of scored runs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlm.errors import VlmError
from vlm.plots.figure import as_np, check_out, class_colors, new_figure, save_figure, short
from vlm.results import RunRecord, load_scores
from vlm.tasks import get_task


def macro_curve(curves: dict[str, tuple[Any, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean TPR of several ROC curves on the union of their FPR values (for drawing, as in sklearn's example)."""
    items = [(as_np(f), as_np(t)) for f, t in curves.values()]
    grid = np.unique(np.concatenate([f for f, _ in items]))
    return grid, np.mean([np.interp(grid, f, t) for f, t in items], axis=0)


def plot_roc(
    entries: Sequence[dict[str, Any]],
    out: str | os.PathLike,
    title: str = "ROC",
) -> Path:
    """ROC curves: `entries` are dicts with `label`, `fpr`, `tpr` and optional `auc`, `style`, `color`.

    `style` is a matplotlib line style ("-" by default); the legend shows "label (AUC 0.912)" below the axes,
    where it covers no curve (two columns from five entries on; the figure grows with its rows).
    """
    if not entries:
        raise VlmError("No ROC curves to plot.")
    ncols = 1 if len(entries) < 4 else 2
    rows = -(-(len(entries) + 1) // ncols)
    fig = new_figure(6.4, 5.2 + 0.2 * rows)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.75", lw=1, ls=":", label="chance")
    colors = class_colors(len(entries))
    for entry, color in zip(entries, colors):
        label = entry["label"] + (f" (AUC {entry['auc']:.3f})" if entry.get("auc") is not None else "")
        ax.plot(as_np(entry["fpr"]), as_np(entry["tpr"]), ls=entry.get("style", "-"), lw=entry.get("lw", 1.6),
                color=entry.get("color", color), label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncols=ncols, fontsize="small" if len(entries) < 8 else "x-small",
               frameon=False)
    return save_figure(fig, out)


def _run_labels(records: Sequence[RunRecord]) -> list[str]:
    """Short legend labels: the experiment's method name, else the record's label ("train tiny"); the longer
    `vlm compare` row label only where two methods share one; " seed N" where a method has several runs."""
    from vlm.compare import method_key, method_labels

    identities: dict[str, RunRecord] = {}
    for r in records:
        identities.setdefault(method_key(r), r)
    names = {k: str(r.config.get("experiment_method") or r.label) for k, r in identities.items()}
    shared = {n for n in names.values() if list(names.values()).count(n) > 1}
    full = method_labels(identities) if shared else {}
    labels = {k: full[k] if n in shared else n for k, n in names.items()}
    keys = [method_key(r) for r in records]
    counts = {k: keys.count(k) for k in keys}
    return [labels[k] + (f" seed {r.seed}" if counts[k] > 1 else "") for k, r in zip(keys, records)]


def roc_figure(
    records: Sequence[RunRecord],
    out: str | os.PathLike,
    *,
    data_root: str | os.PathLike | None = None,
    title: str | None = None,
) -> Path:
    """ROC curves of runs on one test set: one curve per run, AUC (the run's recorded AUC) in the legend.

    Binary: the positive-class curve. Multi-class/ordinal and multi-label: one macro curve per run;
    with a single run, its per-class (per-label) curves are drawn too, with their own AUCs.
    All runs must share dataset, size and split (a VlmError names the odd one out).
    """
    from vlm.data import load_split
    from vlm.evaluate import roc_points

    check_out(out)
    if not records:
        raise VlmError("No runs to plot.")
    first = records[0]
    for r in records[1:]:
        if (r.dataset, int(r.size), r.split) != (first.dataset, int(first.size), first.split):
            raise VlmError(f"Run {r.run_id} is on {r.dataset} {r.size}px {r.split}, not {first.dataset} "
                           f"{first.size}px {first.split}: one ROC figure shows one test set.")
    split = load_split(first.dataset, first.split, int(first.size), data_root)
    task = split.task
    entries: list[dict[str, Any]] = []
    for record, label in zip(records, _run_labels(records)):
        scores = load_scores(record)
        if scores.shape[0] != len(split):
            raise VlmError(f"Run {record.run_id} has {scores.shape[0]} rows of scores; the {task.flag} {split.split} "
                           f"split has {len(split)} samples.")
        curves = roc_points(task, split.labels, scores)
        auc = record.metrics.get("auc")
        if task.kind == "binary":
            fpr, tpr = next(iter(curves.values()))
            entries.append({"label": label, "fpr": fpr, "tpr": tpr, "auc": auc})
            continue
        per_class = {c["label"]: c.get("auc") for c in record.metrics.get("per_class", [])}
        classes = {k: v for k, v in curves.items() if k != "macro"}
        macro = curves["macro"] if "macro" in curves else macro_curve(classes)
        if len(records) == 1:
            for name, (fpr, tpr) in classes.items():
                entries.append({"label": short(name, 24), "fpr": fpr, "tpr": tpr, "auc": per_class.get(name), "lw": 1.0})
            entries.append({"label": f"{label} macro", "fpr": macro[0], "tpr": macro[1], "auc": auc, "style": "--",
                            "color": "black", "lw": 2.2})
        else:
            entries.append({"label": label, "fpr": macro[0], "tpr": macro[1], "auc": auc})
    title = title or f"ROC · {task.flag} {first.size}px {first.split}" + ("" if task.kind == "binary" else " (macro)")
    return plot_roc(entries, out, title)


# ----------------------------------------------------------------------------- confusion matrix
def plot_confusion(
    confusion: Any,
    class_names: Sequence[str],
    out: str | os.PathLike,
    title: str = "Confusion matrix",
) -> Path:
    """Counts and row-normalised rates side by side.

    `confusion` is (K, K) with rows = true class, columns = predicted class, or (L, 2, 2) per label for
    multi-label tasks, drawn as an L x 4 grid of TN, FP, FN, TP (rates normalised per true value).
    """
    cm = np.asarray(confusion, dtype=float)
    if cm.ndim == 3:
        if cm.shape[1:] != (2, 2) or cm.shape[0] != len(class_names):
            raise VlmError(f"A multi-label confusion must be (L, 2, 2) with L={len(class_names)}; got {cm.shape}.")
        counts = cm.reshape(len(class_names), 4)
        negatives, positives = cm[:, 0].sum(1, keepdims=True), cm[:, 1].sum(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            rates = np.nan_to_num(counts / np.concatenate([negatives, negatives, positives, positives], axis=1))
        rows, cols, xlabel, ylabel = list(class_names), ["TN", "FP", "FN", "TP"], "", "label"
    else:
        k = len(class_names)
        if cm.shape != (k, k):
            raise VlmError(f"The confusion matrix must be {k} x {k} for {k} classes; got {cm.shape}.")
        counts = cm
        with np.errstate(invalid="ignore", divide="ignore"):
            rates = np.nan_to_num(cm / cm.sum(axis=1, keepdims=True))
        rows, cols, xlabel, ylabel = list(class_names), list(class_names), "predicted", "true"
    n_rows, n_cols = counts.shape
    side = max(3.6, 0.45 * max(n_rows, n_cols) + 2.4)
    fig = new_figure(2 * side + 0.8, side + 0.6)
    fig.suptitle(title)
    font = max(5, min(10, 110 / max(n_rows, n_cols, 1)))
    for ax_i, (values, name, fmt) in enumerate(((counts, "counts", "{:.0f}"), (rates, "row-normalised", "{:.2f}"))):
        ax = fig.add_subplot(1, 2, ax_i + 1)
        image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if ax_i else max(values.max(), 1), aspect="auto")
        fig.colorbar(image, ax=ax, shrink=0.8)
        ax.set_xticks(range(n_cols), [short(c, 16) for c in cols], rotation=45 if n_cols > 4 else 0, ha="right"
                      if n_cols > 4 else "center", fontsize=font)
        ax.set_yticks(range(n_rows), [short(r, 20) for r in rows], fontsize=font)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=name)
        if n_rows * n_cols <= 400:
            top = values.max() if values.size else 1
            for i in range(n_rows):
                for j in range(n_cols):
                    ax.text(j, i, fmt.format(values[i, j]), ha="center", va="center", fontsize=font,
                            color="white" if values[i, j] > 0.6 * (1 if ax_i else top) else "black")
    return save_figure(fig, out)


def confusion_figure(record: RunRecord, out: str | os.PathLike) -> Path:
    """The confusion matrix recorded with a run (counts and row-normalised)."""
    check_out(out)
    confusion = record.metrics.get("confusion")
    if not confusion:
        raise VlmError(f"Run {record.run_id} has no confusion matrix in its metrics (recorded by an older version?); "
                       f"re-score it with `vlm evaluate --record`.")
    task = get_task(record.dataset)
    names = [c["label"] for c in record.metrics.get("per_class", [])] or list(task.labels)
    title = f"{record.label} · {record.dataset} {record.size}px {record.split} (n={record.metrics.get('n', '?')})"
    if task.kind == "binary":
        title += f", threshold {record.metrics.get('threshold', 0.5)}"
    return plot_confusion(confusion, names, out, title)
