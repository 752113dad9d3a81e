"""`vlm compare`: the comparison table, baselines and the paired bootstrap, and their views."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.markup import escape

from vlm.commands.common import BootstrapOpt, DataRootOpt, command, seed_opt
from vlm.commands.output import Cell, Column, FormatOpt, Output, Styled, Table, columns, err, render_text
from vlm.errors import VlmError

if TYPE_CHECKING:
    from vlm.compare import ComparisonTable

CSV_FIELDS = ("method", "published", "dataset", "size", "split", "column", "auc", "auc_lo", "auc_hi", "auc_std",
              "acc", "acc_lo", "acc_hi", "acc_std", "n_seeds", "n", "best_auc", "best_acc", "note", "run_ids")
PAIR_CSV_FIELDS = ("metric", "a", "b", "diff", "ci_lo", "ci_hi", "p_value", "rounds")


def csv_fields(metrics: tuple[str, ...] = ("auc", "acc")) -> tuple[str, ...]:
    """CSV_FIELDS, with the value, CI, std and best flag of each further metric shown (ece, brier, nll)."""
    extra = [m for m in metrics if m not in ("auc", "acc")]
    return CSV_FIELDS + tuple(f"{m}{part}" for m in extra for part in ("", "_lo", "_hi", "_std")) + tuple(
        f"best_{m}" for m in extra)


def _csv_rows(table: ComparisonTable, metrics: tuple[str, ...]) -> list[list[Any]]:
    """Long format: one row per (method, column) with the numbers in separate fields."""
    fields = csv_fields(metrics)
    rows = []
    for row in table.rows:
        for col in table.columns:
            cell = table.cell(row, col)
            if cell is None:
                continue
            line: dict[str, Any] = {"method": row.label, "published": row.published, "dataset": col.dataset,
                                    "size": col.size, "split": col.split, "column": col.label,
                                    "n_seeds": cell.n_seeds, "n": cell.n, "best_auc": cell.best_auc,
                                    "best_acc": cell.best_acc, "note": cell.note or "",
                                    "run_ids": " ".join(cell.run_ids)}
            for metric in ("auc", "acc", *metrics):
                ci = getattr(cell, f"{metric}_ci")
                line[metric] = getattr(cell, metric)
                line[f"{metric}_lo"], line[f"{metric}_hi"] = ci if ci else ("", "")
                line[f"{metric}_std"] = getattr(cell, f"{metric}_std")
                line[f"best_{metric}"] = getattr(cell, f"best_{metric}")
            rows.append([line[k] for k in fields])
    return rows


def comparison_output(table: ComparisonTable, title: str = "Comparison",
                      metrics: tuple[str, ...] = ("auc", "acc")) -> Output:
    """The comparison as data (`to_dict`), a rich table of `metrics` (best values starred, published rows dim
    italic, the legend as caption), a Markdown table (best values bold) and a long-format CSV."""
    from vlm.compare import format_value, legend
    from vlm.compare_model import METRIC_NAMES as _NAMES

    cols = [Column("method", overflow="fold")] + [Column(f"{c.label}\n{_NAMES[m]}", "right", group=c.label)
                                                  for c in table.columns for m in metrics]
    rows: list[list[Cell]] = []
    for row in table.rows:
        values: list[Cell] = [Styled(row.label, style="italic" if row.published else "")]
        for col in table.columns:
            cell = table.cell(row, col)
            values += ["" if cell is None else Styled(format_value(cell, m), style="dim" if cell.published else "",
                                                      best=getattr(cell, f"best_{m}")) for m in metrics]
        rows.append(values)
    lower = [_NAMES[m] for m in metrics if m in ("ece", "brier", "nll")]
    lowest = f" (lowest {'/'.join(lower)})" if lower else ""
    caption = legend(table, best_mark="starred *" + lowest) + "".join(f"\n{n}" for n in table.notes)
    notes = "\n".join([legend(table, best_mark="in bold" + lowest), *(f"- {n}" for n in table.notes)])
    return Output(table.to_dict(), [Table(cols, rows, title=title, caption=caption, formats=("table",)),
                                    Table(cols, rows, caption=notes, formats=("markdown",)),
                                    Table(columns(*csv_fields(metrics)), _csv_rows(table, metrics), formats=("csv",))])


def to_markdown(table: ComparisonTable) -> str:
    """The comparison as a Markdown table (best values in bold), then the legend and notes."""
    return render_text(comparison_output(table), "markdown")


def to_csv(table: ComparisonTable) -> str:
    """The comparison in long CSV format: one line per (method, column), numbers in separate fields."""
    return render_text(comparison_output(table), "csv")


def pair_output(result: dict[str, Any]) -> Output:
    """A `pair_compare` result: a table of a, b, a - b with its CI and p per metric (CSV: raw numbers)."""
    from vlm.compare import pair_rows

    a, b = result["a"], result["b"]
    rows = [[r["metric"], f"{r['a']:.4f}", f"{r['b']:.4f}", f"{r['diff']:+.4f}",
             "-" if r["ci_lo"] is None else f"[{r['ci_lo']:.4f}, {r['ci_hi']:.4f}]", f"{r['p_value']:.4f}"]
            for r in pair_rows(result)]
    cols = columns("metric", "a", "b", "a - b", "95% CI", "p", right=("a", "b", "a - b", "95% CI", "p"))
    title = (f"a = {a['label']} ({a['run_id']})\nb = {b['label']} ({b['run_id']})\n{result['dataset']} "
             f"{result['size']}px {result['split']}, n={result['n']}, paired bootstrap ({result['n_bootstrap']} rounds)")
    head = (f"**a** = {a['label']} ({a['run_id']}), **b** = {b['label']} ({b['run_id']}) on {result['dataset']} "
            f"{result['size']}px {result['split']} (n={result['n']}), paired bootstrap, {result['n_bootstrap']} "
            f"rounds, seed {result['seed']}")
    numbers = [[r[k] for k in PAIR_CSV_FIELDS] for r in pair_rows(result)]
    return Output(result, [Table(cols, rows, title=title, formats=("table",)),
                           Table(cols, rows, title=head, formats=("markdown",)),
                           Table(columns(*PAIR_CSV_FIELDS), numbers, formats=("csv",))])


@command
def compare_cmd(
    runs_dir: Annotated[Path, typer.Argument(help="Folder that holds run records (one sub-folder per run).")] = Path("runs"),
    dataset: Annotated[Optional[list[str]], typer.Option(
        "--dataset", "-d", help="Only runs of this dataset flag (repeatable).", show_default=False)] = None,
    fmt: FormatOpt = "table",  # rendered by `command`; declared here for its place in --help
    baselines: Annotated[Optional[str], typer.Option(
        "--baselines", help="Append published results to test columns: medmnist (MedMNIST v2 paper, Tables 3-4).",
        show_default=False)] = None,
    pair: Annotated[Optional[tuple[str, str]], typer.Option(
        "--pair", metavar="RUN_A RUN_B", show_default=False,
        help="Paired bootstrap of two runs (run ids in RUNS_DIR, or run folders) on the same test set: "
             "AUC/ACC differences with 95% CIs and p-values.")] = None,
    bootstrap: BootstrapOpt = 1000,
    seed: seed_opt("the paired bootstrap (--pair)") = 0,
    threshold: Annotated[Optional[float], typer.Option(
        "--threshold", help="With --pair: decision threshold for binary/multi-label ACC \\[default: the runs' own].",
        show_default=False)] = None,
    data_root: DataRootOpt = None,
    metrics: Annotated[Optional[str], typer.Option(
        "--metrics", help="Comma list of the metrics shown: auc, acc, ece, brier, nll (lower is better for the last "
                          "three) \\[default: auc,acc].", show_default=False)] = None,
) -> Output:
    """Compare runs head to head: one row per method, one column per dataset/size/split.

    Cells show AUC and ACC (or the --metrics chosen) with 95% bootstrap CIs (one run) or mean ± std over
    seeds; the best per column is marked. Runs of different sizes or splits are never merged.

    Example: [bold]vlm compare runs --dataset breastmnist --baselines medmnist --format markdown[/]
    Example: [bold]vlm compare runs --metrics auc,acc,ece,brier[/]
    Example: [bold]vlm compare runs --pair runs/*_breastmnist_train_medmnist-resnet18 runs/*_breastmnist_linear-probe_timm-tf_efficientnet_lite0 --bootstrap 2000 --data-root ../shared/data/medmnist[/]
    """
    from vlm import compare
    from vlm.compare_model import parse_metrics
    from vlm.results import load_runs

    shown = parse_metrics(metrics)
    if pair:
        return pair_output(compare.pair_compare(pair[0], pair[1], bootstrap, seed, data_root=data_root,
                                                runs_dir=runs_dir, threshold=threshold))
    if baselines is not None:
        from vlm.baselines import BASELINE_SETS

        if baselines not in BASELINE_SETS:
            raise VlmError(f"Unknown --baselines '{baselines}': choose one of {', '.join(BASELINE_SETS)}.")
    flags = None
    if dataset:
        from vlm.tasks import get_task

        flags = [get_task(d).flag for d in dataset]
    skipped: list[str] = []
    records = load_runs(runs_dir, skipped=skipped)
    if not records and not baselines:
        raise VlmError(f"No finished runs found in {runs_dir}" + (
            f"; {len(skipped)} record(s) skipped, the first: {skipped[0]}" if skipped else
            "; with --baselines medmnist the published table is shown alone."))
    if flags and records and not any(r.dataset in flags for r in records):
        present = sorted({r.dataset for r in records})
        raise VlmError(f"No runs of {', '.join(flags)} in {runs_dir}; runs there are on {', '.join(present)}.")
    for note in skipped:  # the command goes on: one warning line per record left out
        err.print(f"[yellow]warning:[/] skipped {escape(note)}", highlight=False, soft_wrap=True)
    table = compare.comparison_table(records, dataset, baselines=baselines or False)
    title = f"Comparison of runs in {runs_dir}" if records else f"Published {baselines} results (no runs in {runs_dir})"
    return comparison_output(table, title=title, metrics=shown)
