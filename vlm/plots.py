"""Figures: ROC curves, confusion matrices, prompt-style bars, data montages and embedding scatters.

Every `plot_*` function takes plain arrays and writes one file; the `*_figure` functions gather the
arrays from run records, dataset files or an encoder and call them. Figures are drawn on matplotlib's
Agg canvas without pyplot (no global backend switch, no open-figure state) and written atomically;
the file format follows the suffix of the output path: ``.png`` or ``.svg``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlm.errors import VlmError
from vlm.files import atomic_write_bytes
from vlm.results import RunRecord, load_scores
from vlm.tasks import SPLITS, TaskSpec, get_task

FORMATS = {".png": "png", ".svg": "svg"}
_NAME_WIDTH = 28


# ----------------------------------------------------------------------------- figure plumbing
def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def check_out(out: str | os.PathLike) -> Path:
    """The output path, or a VlmError if its suffix is not a supported figure format."""
    path = Path(out)
    if path.suffix.lower() not in FORMATS:
        raise VlmError(f"Cannot tell the figure format of '{path.name}': use a .png or .svg file name.")
    return path


def save_figure(fig, out: str | os.PathLike, dpi: int = 150) -> Path:
    """Write a figure to `out` (PNG or SVG by suffix) through a temporary file and an atomic rename."""
    path = check_out(out)
    buf = io.BytesIO()
    fig.savefig(buf, format=FORMATS[path.suffix.lower()], dpi=dpi)
    return atomic_write_bytes(path, buf.getvalue())


def _short(name: str, width: int = _NAME_WIDTH) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def _colors(k: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(k)]


# ----------------------------------------------------------------------------- ROC curves
def _as_np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def macro_curve(curves: dict[str, tuple[Any, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean TPR of several ROC curves on the union of their FPR values (for drawing, as in sklearn's example)."""
    items = [(_as_np(f), _as_np(t)) for f, t in curves.values()]
    grid = np.unique(np.concatenate([f for f, _ in items]))
    return grid, np.mean([np.interp(grid, f, t) for f, t in items], axis=0)


def plot_roc(
    entries: Sequence[dict[str, Any]],
    out: str | os.PathLike,
    title: str = "ROC",
) -> Path:
    """ROC curves: `entries` are dicts with `label`, `fpr`, `tpr` and optional `auc`, `style`, `color`.

    `style` is a matplotlib line style ("-" by default); the legend shows "label (AUC 0.912)".
    """
    if not entries:
        raise VlmError("No ROC curves to plot.")
    fig = _figure(6.4, 5.6)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.75", lw=1, ls=":", label="chance")
    colors = _colors(len(entries))
    for entry, color in zip(entries, colors):
        label = entry["label"] + (f" (AUC {entry['auc']:.3f})" if entry.get("auc") is not None else "")
        ax.plot(_as_np(entry["fpr"]), _as_np(entry["tpr"]), ls=entry.get("style", "-"), lw=entry.get("lw", 1.6),
                color=entry.get("color", color), label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small" if len(entries) < 8 else "x-small")
    return save_figure(fig, out)


def _run_labels(records: Sequence[RunRecord]) -> list[str]:
    from vlm.compare import method_key, method_labels

    identities: dict[str, RunRecord] = {}
    for r in records:
        identities.setdefault(method_key(r), r)
    labels = method_labels(identities)
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
                entries.append({"label": _short(name, 24), "fpr": fpr, "tpr": tpr, "auc": per_class.get(name), "lw": 1.0})
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
    fig = _figure(2 * side + 0.8, side + 0.6)
    fig.suptitle(title)
    font = max(5, min(10, 110 / max(n_rows, n_cols, 1)))
    for ax_i, (values, name, fmt) in enumerate(((counts, "counts", "{:.0f}"), (rates, "row-normalised", "{:.2f}"))):
        ax = fig.add_subplot(1, 2, ax_i + 1)
        image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if ax_i else max(values.max(), 1), aspect="auto")
        fig.colorbar(image, ax=ax, shrink=0.8)
        ax.set_xticks(range(n_cols), [_short(c, 16) for c in cols], rotation=45 if n_cols > 4 else 0, ha="right"
                      if n_cols > 4 else "center", fontsize=font)
        ax.set_yticks(range(n_rows), [_short(r, 20) for r in rows], fontsize=font)
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


# ----------------------------------------------------------------------------- prompt styles
def plot_style_bars(
    entries: Sequence[dict[str, Any]],
    out: str | os.PathLike,
    title: str = "Prompt styles",
) -> Path:
    """Grouped bars of AUC and ACC per prompt style: `entries` hold `style`, `auc`, `acc`, `auc_ci`, `acc_ci`.

    CIs (lo, hi) become asymmetric error bars; a missing value or CI is left out.
    """
    if not entries:
        raise VlmError("No prompt styles to plot.")
    fig = _figure(max(5.0, 1.1 * len(entries) + 2.5), 4.4)
    ax = fig.add_subplot()
    x = np.arange(len(entries))
    width = 0.38
    for offset, metric, color in ((-width / 2, "auc", "C0"), (width / 2, "acc", "C1")):
        values = np.array([np.nan if e.get(metric) is None else e[metric] for e in entries], dtype=float)
        err = np.zeros((2, len(entries)))
        for i, e in enumerate(entries):
            ci = e.get(f"{metric}_ci")
            if ci and e.get(metric) is not None:
                err[:, i] = [max(0.0, e[metric] - ci[0]), max(0.0, ci[1] - e[metric])]
        bars = ax.bar(x + offset, np.nan_to_num(values), width, yerr=err, capsize=3, color=color,
                      label=metric.upper() + " (95% CI)", error_kw={"elinewidth": 1})
        for bar, v in zip(bars, values):
            if np.isfinite(v):
                ax.text(bar.get_x() + bar.get_width() / 2, 0.01, f"{v:.2f}", ha="center", va="bottom", fontsize=7,
                        rotation=90, color="white")
    ax.axhline(0.5, color="0.6", lw=0.8, ls=":")
    ax.set_xticks(x, [_short(str(e["style"]), 18) for e in entries], rotation=30 if len(entries) > 4 else 0,
                  ha="right" if len(entries) > 4 else "center")
    ax.set(ylim=(0, 1.05), ylabel="score", title=title)
    ax.legend(loc="upper right", fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, out)


ZERO_SHOT = "zero-shot"


def styles_figure(
    records: Sequence[RunRecord],
    flag: str,
    out: str | os.PathLike,
    *,
    model: str | None = None,
    split: str = "test",
    size: int | None = None,
) -> Path:
    """AUC and ACC per prompt style from the zero-shot records of one dataset and model.

    Records are filtered to method "zero-shot", `flag`, `split` (and `size`); several models or sizes
    need `model` / `size`. Several records of one style: the newest counts.
    """
    check_out(out)
    task = get_task(flag)
    runs = [r for r in records if r.method == ZERO_SHOT and r.dataset == task.flag and r.split == split
            and (size is None or int(r.size) == size)]
    if not runs:
        raise VlmError(f"No zero-shot runs of {task.flag} ({split} split{'' if size is None else f', {size}px'}) "
                       f"to plot; run `vlm zero-shot {task.flag} ...` first.")
    models = sorted({r.model for r in runs})
    if model is None and len(models) > 1:
        raise VlmError(f"Zero-shot runs of {task.flag} use several models ({', '.join(models)}): pick one with --model.")
    if model is not None:
        runs = [r for r in runs if r.model == model]
        if not runs:
            raise VlmError(f"No zero-shot runs of {task.flag} with model '{model}'; models there: {', '.join(models)}.")
    sizes = sorted({int(r.size) for r in runs})
    if len(sizes) > 1:
        raise VlmError(f"Zero-shot runs of {task.flag} at several sizes ({', '.join(map(str, sizes))}): pick one with --size.")
    by_style: dict[str, RunRecord] = {}
    for r in runs:  # oldest first: the newest record of a style wins
        by_style[str(r.config.get("style") or "default")] = r
    entries = [{"style": s, "auc": r.metrics.get("auc"), "acc": r.metrics.get("acc"), "auc_ci": r.metrics.get("auc_ci"),
                "acc_ci": r.metrics.get("acc_ci")} for s, r in by_style.items()]
    r0 = runs[0]
    return plot_style_bars(entries, out, f"Zero-shot prompt styles · {r0.model} · {task.flag} {sizes[0]}px {split}")


# ----------------------------------------------------------------------------- data exploration
def volume_slices(volume: Any, mode: str = "middle", every: int = 4) -> np.ndarray:
    """One 2D image from a volume (C, D, H, W) or (D, H, W): the middle axial, coronal and sagittal
    slices side by side (`mode="middle"`), or every `every`-th axial slice in a row (`mode="axial"`).

    Channels are averaged; slices are separated by a 1-pixel bright line.
    """
    vol = _as_np(volume).astype(float)
    if vol.ndim == 4:
        vol = vol.mean(axis=0)
    if vol.ndim != 3:
        raise VlmError(f"A volume must be (D, H, W) or (C, D, H, W); got shape {vol.shape}.")
    d, h, w = vol.shape
    if mode == "middle":
        slices = [vol[d // 2], vol[:, h // 2, :], vol[:, :, w // 2]]
    elif mode == "axial":
        slices = [vol[i] for i in range(0, d, max(1, every))]
    else:
        raise VlmError(f"Unknown slice mode '{mode}': use middle or axial.")
    height = max(s.shape[0] for s in slices)
    sep = np.full((height, 1), 255.0)
    parts = []
    for s in slices:
        pad = np.zeros((height, s.shape[1]))
        pad[: s.shape[0]] = s
        parts += [pad, sep]
    return np.concatenate(parts[:-1], axis=1)


def _tile(image: np.ndarray, is_3d: bool) -> np.ndarray:
    """(H, W) grey or (H, W, 3) colour display image of one sample (C, H, W) / (C, D, H, W)."""
    if is_3d:
        return volume_slices(image)
    if image.shape[0] == 1:
        return image[0].astype(float)
    return np.transpose(image, (1, 2, 0)).astype(float) / 255.0


def pick_per_class(task: TaskSpec, labels: np.ndarray, per_class: int, seed: int = 0) -> list[np.ndarray]:
    """Up to `per_class` random sample indices per class (multi-label: per label, among its positives)."""
    rng = np.random.default_rng(seed)
    picks = []
    for c in range(task.num_classes):
        members = np.flatnonzero(labels[:, c] == 1) if task.kind == "multi-label" else np.flatnonzero(labels[:, 0] == c)
        picks.append(np.sort(rng.permutation(members)[:per_class]))
    return picks


def plot_montage(
    images: Any,
    labels: Any,
    task: TaskSpec,
    out: str | os.PathLike,
    *,
    per_class: int = 8,
    counts: dict[str, Sequence[int]] | None = None,
    title: str | None = None,
    seed: int = 0,
) -> Path:
    """A labelled montage: one row of `per_class` random samples per class (3D: middle slices along
    each axis), and, if `counts` ({split: per-class counts}) is given, grouped class-count bars per split.

    `images` (N, C, H, W) or (N, C, D, H, W) uint8, `labels` (N, L).
    """
    images, labels = _as_np(images), _as_np(labels)
    k = task.num_classes
    picks = pick_per_class(task, labels, per_class, seed)
    tiles = [[_tile(images[i], task.is_3d) for i in idx] for idx in picks]
    sample = next((row[0] for row in tiles if row), None)
    if sample is None:
        raise VlmError(f"No samples to show for {task.flag}.")
    th, tw = sample.shape[:2]
    # Samples are separated by a gap (3D: a wider grey one, since a volume's slices have white separators).
    gap_w, gap_value = (4, 128.0) if task.is_3d else (2, 255.0)
    aspect = tw / th
    row_h = 0.75 if not task.is_3d else 0.7
    width = min(18.0, max(7.0, per_class * row_h * aspect + 3.0))
    extra = 3.2 if counts else 0.0
    fig = _figure(width, k * row_h + extra + 0.8)
    grid = fig.add_gridspec(k + (1 if counts else 0), 1, height_ratios=[1] * k + ([extra / row_h] if counts else []))
    for c, row in enumerate(tiles):
        ax = fig.add_subplot(grid[c])
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_ylabel(f"{c}: {_short(task.labels[c], 22)}\n({len(picks[c])} shown)", rotation=0, ha="right",
                      va="center", fontsize=7)
        if not row:
            ax.text(0.5, 0.5, "no samples in this split", ha="center", va="center", fontsize=7, transform=ax.transAxes)
            continue
        gap = np.ones((th, gap_w) + sample.shape[2:]) * (1.0 if sample.ndim == 3 else gap_value)
        strip = np.concatenate([p for t in row for p in (t, gap)][:-1], axis=1)
        grey = strip.ndim == 2
        ax.imshow(strip, cmap="gray" if grey else None, vmin=0 if grey else None, vmax=255 if grey else None,
                  interpolation="nearest", aspect="equal")
        ax.set_xlim(-0.5, per_class * (tw + gap_w) - gap_w - 0.5)
    if counts:
        ax = fig.add_subplot(grid[k])
        splits = [s for s in SPLITS if s in counts] + [s for s in counts if s not in SPLITS]
        x = np.arange(k)
        width_bar = 0.8 / len(splits)
        for i, s in enumerate(splits):
            values = np.asarray(counts[s], dtype=float)
            ax.bar(x + (i - (len(splits) - 1) / 2) * width_bar, values, width_bar, label=f"{s} ({int(values.sum())})")
        ax.set_xticks(x, [_short(n, 16) for n in task.labels], rotation=45 if k > 4 else 0,
                      ha="right" if k > 4 else "center", fontsize=7)
        ax.set_ylabel("positives" if task.kind == "multi-label" else "images")
        ax.set_title("class counts per split", fontsize=9)
        ax.legend(fontsize="x-small")
        ax.grid(axis="y", alpha=0.3)
    what = "middle axial / coronal / sagittal slices" if task.is_3d else "samples"
    fig.suptitle(title or f"{task.flag}: {per_class} random {what} per class", fontsize=10)
    return save_figure(fig, out)


def montage_figure(
    flag: str,
    out: str | os.PathLike,
    *,
    data_root: str | os.PathLike | None = None,
    size: int = 28,
    split: str = "train",
    per_class: int = 8,
    seed: int = 0,
) -> Path:
    """Samples per class from one split plus class counts of all three splits, from the local dataset file."""
    from vlm.data import load_split

    check_out(out)
    if per_class < 1:
        raise VlmError(f"--per-class must be at least 1, got {per_class}.")
    shown = load_split(flag, split, size, data_root)
    counts = {s: (shown if s == split else load_split(shown.task, s, size, data_root)).class_counts() for s in SPLITS}
    title = f"{shown.task.flag} {size}px {split}: {per_class} random " + (
        "volumes per class (middle axial | coronal | sagittal slices)" if shown.task.is_3d else "images per class")
    return plot_montage(shown.images, shown.labels, shown.task, out, per_class=per_class, counts=counts, title=title,
                        seed=seed)


# ----------------------------------------------------------------------------- embeddings
def project_2d(embeddings: Any, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(N, 2) projection of (N, E) embeddings by PCA or t-SNE (scikit-learn)."""
    x = _as_np(embeddings).astype(np.float64)
    if x.ndim != 2:
        raise VlmError(f"Embeddings must be (N, E); got shape {x.shape}.")
    n = x.shape[0]
    if n < 3:
        raise VlmError(f"Need at least 3 embeddings to project, got {n}.")
    if method == "pca":
        from sklearn.decomposition import PCA

        dims = min(2, x.shape[1])
        y = PCA(n_components=dims, random_state=seed).fit_transform(x)
        return y if dims == 2 else np.concatenate([y, np.zeros((n, 1))], axis=1)
    if method == "tsne":
        from sklearn.manifold import TSNE

        from threadpoolctl import threadpool_limits

        perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
        # Small problems gain nothing from OpenMP threads and slow down badly on a busy machine.
        with threadpool_limits(limits=1 if n <= 5000 else None, user_api="openmp"):
            return tsne.fit_transform(x)
    raise VlmError(f"Unknown projection '{method}': use pca or tsne.")


def plot_embeddings(
    embeddings: Any,
    labels: Any,
    class_names: Sequence[str],
    out: str | os.PathLike,
    *,
    method: str = "pca",
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """A 2D PCA or t-SNE scatter of (N, E) embeddings coloured by class.

    `labels` is (N,) / (N, 1) class indices, or (N, L) 0/1 for multi-label data, where a point takes
    the colour of its first positive label (grey "none" if it has no positive label).
    """
    y = _as_np(labels)
    y = y.reshape(len(y), -1)
    x = _as_np(embeddings)
    if len(y) != len(x):
        raise VlmError(f"{len(x)} embeddings but {len(y)} labels.")
    if y.shape[1] > 1:
        has = y.any(axis=1)
        cls = np.where(has, y.argmax(axis=1), -1)
    else:
        cls = y[:, 0].astype(int)
    points = project_2d(x, method, seed)
    fig = _figure(7.2, 5.8)
    ax = fig.add_subplot()
    names = list(class_names)
    colors = _colors(max(len(names), 1))
    if (cls < 0).any():
        ax.scatter(*points[cls < 0].T, s=6, color="0.75", alpha=0.5, label="none", linewidths=0)
    for c, name in enumerate(names):
        mask = cls == c
        if mask.any():
            ax.scatter(*points[mask].T, s=8, color=colors[c], alpha=0.8, linewidths=0,
                       label=f"{_short(name, 24)} ({int(mask.sum())})")
    ax.set(xlabel=f"{method.upper()} 1", ylabel=f"{method.upper()} 2",
           title=title or f"{method.upper()} of {len(x)} embeddings")
    ax.legend(fontsize="x-small", markerscale=2, loc="best", ncols=1 if len(names) <= 12 else 2)
    ax.grid(alpha=0.2)
    return save_figure(fig, out)


def embeddings_figure(
    flag: str,
    encoder_name: str,
    out: str | os.PathLike,
    *,
    weights: str | None = None,
    method: str = "pca",
    split: str = "test",
    size: int = 28,
    data_root: str | os.PathLike | None = None,
    limit: int | None = 2000,
    seed: int = 0,
    device: str = "cpu",
) -> Path:
    """Encode a split with an encoder (`vlm.encoders.load_encoder` + `vlm.embeddings.image_embeddings`,
    which caches embeddings) and plot them by class; `limit` keeps a random subset of that many images
    (0/None: all) before encoding."""
    from vlm.data import Split, load_split

    check_out(out)
    if method not in ("pca", "tsne"):
        raise VlmError(f"Unknown projection '{method}': use pca or tsne.")
    from vlm.embeddings import image_embeddings
    from vlm.encoders import load_encoder

    data = load_split(flag, split, size, data_root)
    if limit and len(data) > limit:
        idx = np.sort(np.random.default_rng(seed).permutation(len(data))[:limit])
        data = Split(data.images[idx], data.labels[idx], data.task, data.split, data.size)
    encoder = load_encoder(encoder_name, weights, device=device)
    emb, _ = image_embeddings(encoder, data)
    return plot_embeddings(emb, data.labels, data.task.labels, out, method=method, seed=seed,
                           title=f"{method.upper()} of {encoder_name} image embeddings · {data.task.flag} {size}px "
                                 f"{split} (n={len(data)})")
