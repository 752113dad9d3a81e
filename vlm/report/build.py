"""Gathering a report: the comparison table of a runs folder and, per (dataset, size, split) column, its figures.

Figures come from `vlm.plots` (the same functions as `vlm plot ...`), drawn to a temporary PNG and embedded as
base64. What a column shows:
- ROC curves and confusion matrices of the newest run of each method (few-shot runs are summarised by their
  K-shot curves instead), at most `MAX_FIGURE_RUNS` methods;
- prompt-style bars of its zero-shot runs, one figure per encoder;
- K-shot curves of its few-shot runs (test split), one figure per encoder and input size;
- reliability diagrams of its temperature-scaled runs (`vlm calibrate` / `--calibrate`);
- MedMNIST-C curves of the runs that `vlm robustness` scored (robustness.json), up to three panels a figure.
A figure that cannot be drawn (say, the dataset file for the ROC labels is not in `data_root`) becomes a
one-line note in its section; the report is still written.
"""

from __future__ import annotations

import base64
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from vlm.compare_model import DEFAULT_METRICS, Column, ComparisonTable
from vlm.errors import VlmError
from vlm.results import RunRecord

MAX_FIGURE_RUNS = 12
ROBUSTNESS_PANELS = 3
FEWSHOT_PREFIX = "fewshot-"


@dataclass
class Figure:
    """One embedded figure: its kind (roc, confusion, styles, fewshot, reliability, robustness), caption and
    data URI; a wide one (several panels) takes two cells of the page's grid."""

    kind: str
    caption: str
    src: str
    wide: bool = False


@dataclass
class Section:
    """The figures of one comparison column and the notes on those that were not drawn."""

    column: Column
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return "col-" + self.column.key.replace("/", "-")


@dataclass
class ReportData:
    """Everything the HTML shows."""

    title: str
    runs_dir: str
    table: ComparisonTable
    metrics: tuple[str, ...]
    records: dict[str, RunRecord]  # run id -> record
    sections: list[Section]
    generated: str
    n_runs: int


def draw(kind: str, caption: str, plot: Callable[[Path], Path], wide: bool = False) -> Figure:
    """Run `plot(png_path)` in a temporary folder and embed the PNG it writes."""
    with tempfile.TemporaryDirectory(prefix="vlm-report-") as tmp:
        data = Path(plot(Path(tmp) / f"{kind}.png")).read_bytes()
    return Figure(kind, caption, "data:image/png;base64," + base64.b64encode(data).decode("ascii"), wide)


def _add(section: Section, kind: str, caption: str, plot: Callable[[Path], Path], wide: bool = False) -> None:
    try:
        section.figures.append(draw(kind, caption, plot, wide))
    except VlmError as exc:
        section.notes.append(f"{caption}: not drawn ({exc})")


def _newest_per_method(records: Sequence[RunRecord]) -> list[RunRecord]:
    from vlm.compare import method_key

    newest: dict[str, RunRecord] = {}
    for record in records:  # oldest first
        newest[method_key(record)] = record
    return list(newest.values())


def _models(records: Sequence[RunRecord]) -> list[str]:
    return sorted({r.model for r in records})


def column_section(column: Column, records: Sequence[RunRecord], data_root: str | os.PathLike | None) -> Section:
    """The figures of one column from its runs (oldest first)."""
    from vlm import plots
    from vlm.fewshot import input_size
    from vlm.robustness.report import ROBUSTNESS_FILE

    section = Section(column)
    where = column.label
    methods = _newest_per_method([r for r in records if not r.method.startswith(FEWSHOT_PREFIX)])
    if len(methods) > MAX_FIGURE_RUNS:
        section.notes.append(f"ROC and confusion matrices: the {MAX_FIGURE_RUNS} newest of {len(methods)} methods.")
        methods = sorted(methods, key=lambda r: r.created)[-MAX_FIGURE_RUNS:]
    if methods:
        _add(section, "roc", f"ROC · {where}", lambda out: plots.roc_figure(methods, out, data_root=data_root))
    for record in methods:
        _add(section, "confusion", f"Confusion · {record.label}", lambda out, r=record: plots.confusion_figure(r, out))
    zero_shot = [r for r in records if r.method == plots.ZERO_SHOT]
    for model in _models(zero_shot):
        _add(section, "styles", f"Prompt styles · {model}", lambda out, m=model: plots.styles_figure(
            zero_shot, column.dataset, out, model=m, split=column.split, size=column.size))
    fewshot = [r for r in records if r.method.startswith(FEWSHOT_PREFIX)] if column.split == "test" else []
    encodings = sorted({(r.model, input_size(r) or 0) for r in fewshot})  # one figure per encoder and input size
    for model, encoded in encodings:
        several = sum(m == model for m, _ in encodings) > 1
        runs = [r for r in records if not r.method.startswith(FEWSHOT_PREFIX) or (input_size(r) or 0) == encoded]
        at = (f" at {encoded}px" if encoded else " at its native size") if several else ""
        _add(section, "fewshot", f"Few-shot · {model}{at}",
             lambda out, m=model, rs=runs: plots.fewshot_figure(rs, column.dataset, out, model=m, size=column.size),
             wide=True)
    for record in [r for r in _newest_per_method(records) if r.calibrated]:
        _add(section, "reliability", f"Reliability · {record.label}", lambda out, r=record: plots.reliability_figure(
            r.path, out, data_root=data_root))
    scored = [r for r in records if (Path(r.path) / ROBUSTNESS_FILE).is_file()]
    for i in range(0, len(scored), ROBUSTNESS_PANELS):
        part = scored[i:i + ROBUSTNESS_PANELS]
        _add(section, "robustness", "MedMNIST-C · " + ", ".join(r.label for r in part),
             lambda out, p=part: plots.robustness_figure([r.path for r in p], out), wide=len(part) > 1)
    return section


def gather(
    runs_dir: str | os.PathLike,
    *,
    data_root: str | os.PathLike | None = None,
    datasets: Sequence[str] | None = None,
    baselines: str | None = "medmnist",
    metrics: Sequence[str] = DEFAULT_METRICS,
    title: str | None = None,
) -> ReportData:
    """The table and figures of the finished runs in `runs_dir` (VlmError when there are none)."""
    from vlm.compare import comparison_table
    from vlm.results import load_runs
    from vlm.tasks import get_task

    records = load_runs(runs_dir)
    if datasets:
        flags = [get_task(d).flag for d in datasets]
        records = [r for r in records if r.dataset in flags]
    if not records:
        which = f" of {', '.join(datasets)}" if datasets else ""
        raise VlmError(f"No finished runs{which} found in {runs_dir}.")
    table = comparison_table(records, datasets, baselines=baselines or False)
    sections = []
    for column in table.columns:
        inside = [r for r in records if (r.dataset, int(r.size), r.split) == (column.dataset, column.size, column.split)]
        sections.append(column_section(column, inside, data_root))
    return ReportData(title=title or f"medvlm report · {Path(runs_dir).name or runs_dir}", runs_dir=str(runs_dir),
                      table=table, metrics=tuple(metrics), records={r.run_id: r for r in records}, sections=sections,
                      generated=datetime.now(timezone.utc).isoformat(timespec="seconds"), n_runs=len(records))
