"""`vlm report`: the runs of a folder as one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from vlm.commands.common import DataRootOpt, command
from vlm.commands.output import Line, Output
from vlm.errors import VlmError


@command
def report_cmd(
    runs_dir: Annotated[Path, typer.Argument(help="Folder that holds run records (one sub-folder per run).")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write (atomically).")] = Path("report.html"),
    data_root: DataRootOpt = None,
    dataset: Annotated[Optional[list[str]], typer.Option(
        "--dataset", "-d", help="Only runs of this dataset flag (repeatable).", show_default=False)] = None,
    baselines: Annotated[str, typer.Option(
        "--baselines", help="Published rows in the table: medmnist (MedMNIST v2 paper, Tables 3-4) or none.")] = "medmnist",
    metrics: Annotated[Optional[str], typer.Option(
        "--metrics", help="Comma list of the table's metrics: auc, acc, ece, brier, nll \\[default: auc,acc].",
        show_default=False)] = None,
    title: Annotated[Optional[str], typer.Option("--title", help="Page title \\[default: from RUNS_DIR].",
                                                 show_default=False)] = None,
) -> Output:
    """One HTML page of a runs folder: the comparison table (sortable by a header click, 95% CIs, best marked,
    published baselines, links to each run's record.json) and, per dataset column, ROC curves, confusion matrices,
    prompt-style bars and the few-shot, reliability and MedMNIST-C figures of the runs that have them.

    The page is self-contained (inline CSS and script, figures as embedded PNG): open it offline or send it.
    ROC curves and reliability diagrams read the test labels from --data-root.

    Example: [bold]vlm report runs --out report.html --data-root ../shared/data/medmnist[/]
    Example: [bold]vlm report runs -d breastmnist --metrics auc,acc,ece --out breast.html[/]
    """
    from vlm.baselines import BASELINE_SETS
    from vlm.compare_model import parse_metrics
    from vlm.report import write_report

    if baselines != "none" and baselines not in BASELINE_SETS:
        raise VlmError(f"Unknown --baselines '{baselines}': choose one of {', '.join(BASELINE_SETS)} or none.")
    report = write_report(runs_dir, out_file, data_root=data_root, datasets=dataset, metrics=parse_metrics(metrics),
                          baselines=None if baselines == "none" else baselines, title=title)
    lines = [Line(f"wrote [bold]{escape(report.file)}[/] ({report.bytes / 1e6:.1f} MB): {report.runs} runs, "
                  f"{len(report.columns)} columns, {report.figures} figures", highlight=True, soft_wrap=True)]
    lines += [Line(f"[yellow]note:[/] {escape(n)}", stderr=True, soft_wrap=True) for n in report.notes]
    return Output(report.__dict__, lines)
