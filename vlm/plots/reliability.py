"""Reliability diagrams: accuracy against confidence of the top label over the equal-width bins of ECE."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlm.errors import VlmError
from vlm.plots.figure import check_out, class_colors, new_figure, save_figure


def plot_reliability(entries: Sequence[dict[str, Any]], out: str | os.PathLike, title: str = "Reliability") -> Path:
    """A reliability diagram: `entries` are dicts with `label`, `bins` (`vlm.evaluate.reliability_bins`) and `ece`.

    The first entry is drawn as accuracy bars with its gap to the mean confidence shaded; further entries
    (e.g. after temperature scaling) as lines through (mean confidence, accuracy). Below: samples per bin.
    """
    if not entries:
        raise VlmError("No reliability data to plot.")
    fig = new_figure(5.6, 6.4)
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 1))
    ax, hist = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls=":", label="perfect calibration")
    colors = class_colors(max(len(entries), 2))
    for i, (entry, color) in enumerate(zip(entries, colors)):
        b = entry["bins"]
        edges = np.asarray(b["edges"])
        width, centers = np.diff(edges), (edges[:-1] + edges[1:]) / 2
        acc = np.asarray(b["accuracy"], dtype=float)
        conf = np.asarray(b["confidence"], dtype=float)
        full = np.isfinite(acc)
        label = f"{entry['label']} (ECE {entry['ece']:.3f})"
        if i == 0:
            ax.bar(centers[full], acc[full], width[full], color=color, alpha=0.75, edgecolor="white", label=label)
            ax.bar(centers[full], conf[full] - acc[full], width[full], bottom=acc[full], color="tab:red", alpha=0.25,
                   edgecolor="tab:red", hatch="//", lw=0.5, label="gap to confidence")
        else:
            ax.plot(conf[full], acc[full], "o-", color=color, lw=1.6, ms=4, label=label)
        hist.step(edges, np.r_[b["count"], b["count"][-1]], where="post", color=color, lw=1.4)
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy of the top label", title=title)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    hist.set(xlim=(0, 1), xlabel="confidence of the top label", ylabel="samples")
    hist.grid(alpha=0.3)
    return save_figure(fig, out)


def reliability_figure(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    runs_dir: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    dataset: str | None = None,
    split: str = "test",
    size: int = 28,
) -> Path:
    """The reliability diagram of a run (id or folder; calibrated runs also after temperature scaling) or of a
    scores .npy file (then `dataset`, `split` and `size` name its labels). ECE in the legend and the title."""
    from vlm.calibrate import calibrated_scores
    from vlm.compare import resolve_run
    from vlm.data import load_split
    from vlm.evaluate import calibration_metrics, reliability_bins
    from vlm.results import load_scores
    from vlm.scoring import load_scores_file

    check_out(out)
    path = Path(source)
    if path.suffix == ".npy" and path.is_file():
        if dataset is None:
            raise VlmError(f"{path.name} is a scores file: pass --dataset (and --split/--size) to name its labels.")
        scores = {"scores": load_scores_file(path).numpy()}
        name, labels = path.stem, load_split(dataset, split, size, data_root)
    else:
        record = resolve_run(source, runs_dir)
        scores = {"raw": load_scores(record)}
        if (cal := calibrated_scores(record)) is not None:
            scores[f"T = {record.calibrated['temperature']:.3g}"] = cal
        name, labels = record.label, load_split(record.dataset, record.split, int(record.size), data_root)
    task = labels.task
    entries = []
    for label, s in scores.items():
        if s.shape[0] != len(labels):
            raise VlmError(f"{name} has {s.shape[0]} rows of scores; the {task.flag} {labels.split} split has "
                           f"{len(labels)} samples.")
        entries.append({"label": label, "bins": reliability_bins(task, labels.labels, s),
                        "ece": calibration_metrics(task, labels.labels, s)["ece"]})
    eces = ", ".join(f"{e['ece']:.3f}" for e in entries)
    title = f"{name}\n{task.flag} {labels.size}px {labels.split} · ECE {eces}"
    return plot_reliability(entries, out, title)
