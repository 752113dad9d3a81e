"""Zero-shot prompt styles: AUC and ACC per style with 95% CI error bars."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlm.errors import VlmError
from vlm.plots.figure import check_out, new_figure, one_model, save_figure, short
from vlm.results import RunRecord
from vlm.tasks import get_task


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
    fig = new_figure(max(5.0, 1.1 * len(entries) + 2.5), 4.4)
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
    ax.set_xticks(x, [short(str(e["style"]), 18) for e in entries], rotation=30 if len(entries) > 4 else 0,
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
    runs, size = one_model(runs, task.flag, "zero-shot", model)
    by_style: dict[str, RunRecord] = {}
    for r in runs:  # oldest first: the newest record of a style wins
        by_style[str(r.config.get("style") or "default")] = r
    entries = [{"style": s, "auc": r.metrics.get("auc"), "acc": r.metrics.get("acc"), "auc_ci": r.metrics.get("auc_ci"),
                "acc_ci": r.metrics.get("acc_ci")} for s, r in by_style.items()]
    r0 = runs[0]
    return plot_style_bars(entries, out, f"Zero-shot prompt styles · {r0.model} · {task.flag} {size}px {split}")
