"""MedMNIST-C robustness curves: AUC against corruption severity, one line per corruption, one panel per run."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlm.errors import VlmError
from vlm.plots.figure import check_out, class_colors, new_figure, save_figure, short


def plot_robustness(reports: Sequence[dict[str, Any]], out: str | os.PathLike, metric: str = "auc") -> Path:
    """`metric` (auc, acc or ece) against severity (0 = clean) per corruption, from `vlm.robustness` reports.

    One panel per report, sharing the y axis; the clean value is a dashed line; BE/RBE in each panel title.
    """
    if not reports:
        raise VlmError("No robustness reports to plot.")
    if metric not in ("auc", "acc", "ece"):
        raise VlmError(f"Unknown metric '{metric}' for a robustness plot: choose auc, acc or ece.")
    fig = new_figure(5.2 * len(reports) + 1.8, 4.6)
    axes = fig.subplots(1, len(reports), sharey=True, squeeze=False)[0]
    for ax, report in zip(axes, reports):
        names = [p["corruption"] for p in report["corruptions"]]
        clean = report["clean"][metric]
        for name, color in zip(names, class_colors(len(names))):
            cells = sorted((c for c in report["cells"] if c["corruption"] == name), key=lambda c: c["severity"])
            xs = [0] + [c["severity"] for c in cells]
            ys = [clean] + [c[metric] for c in cells]
            ax.plot(xs, [float("nan") if y is None else y for y in ys], "o-", color=color, lw=1.5, ms=3.5,
                    label=name.replace("_", " "))
        if clean is not None:
            ax.axhline(clean, color="0.4", ls="--", lw=1, label="clean")
        s = report["summary"]
        be = "-" if s.get("be") is None else f"{s['be']:.3f}"
        rbe = "-" if s.get("rbe") is None else f"{s['rbe']:.3f}"
        ax.set(xticks=range(0, 6), xticklabels=["clean", "1", "2", "3", "4", "5"], xlabel="severity",
               title=f"{short(report['label'], 40)}\n{report['dataset']} {report['size']}px · BE {be} · RBE {rbe}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(metric.upper() + (" (lower is better)" if metric == "ece" else ""))
    if metric == "auc":
        axes[0].axhline(0.5, color="0.75", lw=0.8, ls=":")
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
    return save_figure(fig, out)


def robustness_figure(runs: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                      runs_dir: str | os.PathLike | None = None, metric: str = "auc") -> Path:
    """The robustness curves of runs that `vlm robustness` scored (run ids, folders or robustness.json files)."""
    from vlm.robustness import load_report

    check_out(out)
    return plot_robustness([load_report(r, runs_dir) for r in runs], out, metric)
