"""K-shot curves: test AUC and ACC against K (log2 axis), mean ± std bands over seeds, zero-shot lines
and full-data points."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlm.errors import VlmError
from vlm.plots.figure import check_out, new_figure, one_model, save_figure, short
from vlm.plots.styles import ZERO_SHOT
from vlm.results import RunRecord
from vlm.tasks import get_task

FULL_LABEL = "full"
METRICS = ("auc", "acc")


def _band(entries: Sequence[dict[str, Any]], metric: str) -> tuple[np.ndarray, np.ndarray]:
    mean = np.array([np.nan if e.get(metric) is None else e[metric] for e in entries], dtype=float)
    std = np.array([0.0 if e.get(f"{metric}_std") is None else e[f"{metric}_std"] for e in entries], dtype=float)
    return mean, std


def plot_fewshot(
    curves: dict[str, Sequence[dict[str, Any]]],
    out: str | os.PathLike,
    *,
    zero_shot: Sequence[dict[str, Any]] = (),
    title: str = "Few-shot",
) -> Path:
    """Two panels (AUC, ACC) against K: `curves` maps a legend label to `curve_summary` entries (shots,
    auc, auc_std, acc, acc_std); entries with shots "all" become points at the right, labelled "full".
    `zero_shot` entries (label, auc, acc) are horizontal dashed lines.

    SVG elements carry ids: fewshot-curve-LABEL, fewshot-band-LABEL, fewshot-full-LABEL, zero-shot-N.
    """
    if not curves:
        raise VlmError("No few-shot results to plot.")
    ks = sorted({int(e["shots"]) for entries in curves.values() for e in entries if e["shots"] != "all"})
    has_full = any(e["shots"] == "all" for entries in curves.values() for e in entries)
    x_full = float(2 * ks[-1]) if ks else 1.0
    fig = new_figure(11.0, 4.4)
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, METRICS):
        for i, (label, entries) in enumerate(curves.items()):
            color = f"C{i % 10}"
            points = sorted((e for e in entries if e["shots"] != "all"), key=lambda e: int(e["shots"]))
            if points:
                x = np.array([int(e["shots"]) for e in points], dtype=float)
                mean, std = _band(points, metric)
                line, = ax.plot(x, mean, marker="o", ms=4, lw=1.6, color=color, label=short(label, 24))
                line.set_gid(f"fewshot-curve-{label}")
                band = ax.fill_between(x, np.clip(mean - std, 0, 1), np.clip(mean + std, 0, 1), color=color,
                                       alpha=0.18, lw=0)
                band.set_gid(f"fewshot-band-{label}")
            full = [e for e in entries if e["shots"] == "all"]
            if full:
                mean, std = _band(full, metric)
                nudge = 2 ** (0.1 * (i - (len(curves) - 1) / 2))  # side by side when their values coincide
                bars = ax.errorbar([x_full * nudge], mean[:1], yerr=std[:1], fmt="D", ms=6, color=color, capsize=3,
                                   label=None if points else short(label, 24))
                bars[0].set_gid(f"fewshot-full-{label}")
        for j, zs in enumerate(zero_shot):
            if zs.get(metric) is not None:
                ax.axhline(zs[metric], color="0.35", ls=("--", ":", "-.")[j % 3], lw=1.2,
                           label=short(zs["label"], 24)).set_gid(f"zero-shot-{j}")
        if has_full and ks:
            ax.axvline(x_full / 2 ** 0.5, color="0.8", lw=0.8)
        ax.set_xscale("log", base=2)
        ticks = [float(k) for k in ks] + ([x_full] if has_full else [])
        ax.set_xticks(ticks, [str(k) for k in ks] + ([FULL_LABEL] if has_full else []))
        ax.minorticks_off()
        if ticks:
            ax.set_xlim(ticks[0] / 1.4, ticks[-1] * 1.4)
        ax.set(xlabel="K (examples per class)", ylabel=f"test {metric.upper()}", title=metric.upper())
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize="small")
    fig.suptitle(title)
    return save_figure(fig, out)


def _latest(records: Sequence[RunRecord], key) -> list[RunRecord]:
    """One record per key: the newest (records are in creation order)."""
    by_key: dict[Any, RunRecord] = {}
    for r in sorted(records, key=lambda r: r.created):
        by_key[key(r)] = r
    return list(by_key.values())


def _curve_label(record: RunRecord) -> str:
    val = record.config.get("val", "full")
    method = record.method[len("fewshot-"):]
    return method if val == "full" else f"{method} (val {val['shots']}-shot)"


def fewshot_figure(
    records: Sequence[RunRecord],
    flag: str,
    out: str | os.PathLike,
    *,
    model: str | None = None,
    size: int | None = None,
    image_size: int | None = None,
) -> Path:
    """The K-shot curves of one dataset and encoder from its few-shot records (test split), with the
    encoder's zero-shot records at the same sizes as lines (one per prompt style). Several encoders, data
    sizes or encoder input sizes need `model` / `size` / `image_size`; of several records of one (method,
    K, seed) the newest counts. Curves are in the order of their labels (the same colours on every dataset).
    """
    from vlm.fewshot import curve_rows, curve_summary, input_size, size_note

    check_out(out)
    task = get_task(flag)
    runs = [r for r in records if r.method.startswith("fewshot-") and r.dataset == task.flag and r.split == "test"
            and (size is None or int(r.size) == size)]
    if not runs:
        raise VlmError(f"No few-shot runs of {task.flag}{'' if size is None else f' ({size}px)'} to plot; run "
                       f"`vlm fewshot {task.flag} ...` first.")
    runs, size = one_model(runs, task.flag, "few-shot", model)
    if image_size is not None:
        runs = [r for r in runs if input_size(r) == image_size]
        if not runs:
            raise VlmError(f"No few-shot runs of {task.flag} encoded at {image_size}px.")
    inputs = sorted({input_size(r) or 0 for r in runs})
    if len(inputs) > 1:
        raise VlmError(f"Few-shot runs of {task.flag} encoded at several input sizes "
                       f"({', '.join(str(i) if i else 'native' for i in inputs)}): pick one with --image-size.")
    runs = _latest(runs, lambda r: (_curve_label(r), str(r.config.get("shots")), r.seed))
    curves: dict[str, list[dict[str, Any]]] = {}
    for label in sorted({_curve_label(r) for r in runs}):
        curves[label] = curve_summary(curve_rows([r for r in runs if _curve_label(r) == label]))
    encoder = runs[0].model
    zs = _latest([r for r in records if r.method == ZERO_SHOT and r.dataset == task.flag and r.model == encoder
                  and r.split == "test" and int(r.size) == size
                  and input_size(r) in (None, input_size(runs[0]))],
                 lambda r: r.config.get("style"))
    lines = [{"label": ZERO_SHOT if len(zs) == 1 else f"{ZERO_SHOT} [{r.config.get('style')}]",
              "auc": r.metrics.get("auc"), "acc": r.metrics.get("acc")} for r in zs]
    n_seeds = len({r.seed for r in runs})
    over = "one seed" if n_seeds == 1 else f"mean ± std over {n_seeds} seeds"
    return plot_fewshot(curves, out, zero_shot=lines, title=f"Few-shot · {size_note(runs[0])} · {encoder} · {over}")
