"""`vlm compare`: the comparison table, baselines and the paired bootstrap."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from vlm.commands.common import (
    BootstrapOpt,
    DataRootOpt,
    JsonOpt,
    SeedOpt,
    out,
    print_json,
)
from vlm.errors import VlmError

FormatOpt = Annotated[str, typer.Option("--format", help="Output format: table (rich), markdown, csv or json.")]


def _emit_text(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def compare_cmd(
    runs_dir: Annotated[Path, typer.Argument(help="Folder that holds run records (one sub-folder per run).")] = Path("runs"),
    dataset: Annotated[Optional[list[str]], typer.Option(
        "--dataset", "-d", help="Only runs of this dataset flag (repeatable).", show_default=False)] = None,
    fmt: FormatOpt = "table",
    baselines: Annotated[Optional[str], typer.Option(
        "--baselines", help="Append published results to test columns: medmnist (MedMNIST v2 paper, Tables 3-4).",
        show_default=False)] = None,
    pair: Annotated[Optional[tuple[str, str]], typer.Option(
        "--pair", metavar="RUN_A RUN_B", show_default=False,
        help="Paired bootstrap of two runs (run ids in RUNS_DIR, or run folders) on the same test set: "
             "AUC/ACC differences with 95% CIs and p-values.")] = None,
    bootstrap: BootstrapOpt = 1000,
    seed: SeedOpt = 0,
    threshold: Annotated[Optional[float], typer.Option(
        "--threshold", help="With --pair: decision threshold for binary/multi-label ACC \\[default: the runs' own].",
        show_default=False)] = None,
    data_root: DataRootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare runs head to head: one row per method, one column per dataset/size/split.

    Cells show AUC and ACC with 95% bootstrap CIs (one run) or mean ± std over seeds; the best per
    column is marked. Runs of different sizes or splits are never merged.

    Example: [bold]vlm compare runs --dataset breastmnist --baselines medmnist --format markdown[/]
    Example: [bold]vlm compare runs --pair RUN_A RUN_B --bootstrap 2000 --data-root ../shared/data/medmnist[/]
    """
    from vlm import compare
    from vlm.results import load_runs

    fmt = "json" if as_json else fmt.lower()
    if fmt not in compare.FORMATS:
        raise VlmError(f"Unknown --format '{fmt}': choose one of {', '.join(compare.FORMATS)}.")
    if pair:
        result = compare.pair_compare(pair[0], pair[1], bootstrap, seed, data_root=data_root, runs_dir=runs_dir,
                                      threshold=threshold)
        if fmt == "json":
            print_json(result)
        elif fmt == "markdown":
            _emit_text(compare.pair_markdown(result))
        elif fmt == "csv":
            _emit_text(compare.pair_csv(result))
        else:
            out.print(compare.pair_rich(result))
        return
    if baselines is not None:
        from vlm.baselines import BASELINE_SETS

        if baselines not in BASELINE_SETS:
            raise VlmError(f"Unknown --baselines '{baselines}': choose one of {', '.join(BASELINE_SETS)}.")
    records = load_runs(runs_dir)
    if not records:
        raise VlmError(f"No finished runs found in {runs_dir}.")
    if dataset:
        from vlm.tasks import get_task

        flags = [get_task(d).flag for d in dataset]
        if not any(r.dataset in flags for r in records):
            present = sorted({r.dataset for r in records})
            raise VlmError(f"No runs of {', '.join(flags)} in {runs_dir}; runs there are on {', '.join(present)}.")
    table = compare.comparison_table(records, dataset, baselines=baselines or False)
    if fmt == "json":
        print_json(table.to_dict())
    elif fmt == "markdown":
        _emit_text(compare.to_markdown(table))
    elif fmt == "csv":
        _emit_text(compare.to_csv(table))
    else:
        out.print(compare.render_rich(table, title=f"Comparison of runs in {runs_dir}"))
