"""`vlm robustness`: a recorded method on MedMNIST-C's corrupted test splits, and its table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from vlm.commands.common import BootstrapOpt, DataRootOpt, FlagArg, RunsDirOpt, command, seed_opt
from vlm.commands.output import FormatOpt, Line, Output, Table, columns, status_console

CSV_FIELDS = ("corruption", "severity", "auc", "auc_lo", "auc_hi", "acc", "ece", "brier", "balanced_error",
              "ece_calibrated", "brier_calibrated")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _triple(cell: dict[str, Any]) -> str:
    return " / ".join(_num(cell.get(k)) for k in ("auc", "acc", "ece"))


def robustness_tables(report: dict[str, Any]) -> list[Table]:
    """The report as a table (one row per corruption: AUC / ACC / ECE per severity, E_c, BE_c, RBE_c; a clean
    row first) for table and Markdown, and one CSV line per (corruption, severity)."""
    sev = report["severities"]
    names = ("corruption", *(f"s{s} AUC/ACC/ECE" for s in sev), "bal. error", "BE", "RBE")
    clean = report["clean"]
    rows = [["clean", *([_triple(clean)] + [""] * (len(sev) - 1)), _num(clean["balanced_error"]), "", ""]]
    by = {(c["corruption"], c["severity"]): c for c in report["cells"]}
    for p in report["corruptions"]:
        name = p["corruption"]
        rows.append([name, *(_triple(by[(name, s)]) for s in sev), _num(p["balanced_error"]), _num(p["be"]),
                     _num(p["rbe"])])
    s = report["summary"]
    rows.append(["mean", *([""] * len(sev)), "", _num(s["be"]), _num(s["rbe"])])
    title = (f"MedMNIST-C · {report['dataset']} · {report['size']}px · {report['label']} "
             f"(medmnistc {report['medmnistc']}, seed {report['seed']})")
    cells = [[c["corruption"], c["severity"], c["auc"], *(c["auc_ci"] or ("", "")), c["acc"], c["ece"], c["brier"],
              c["balanced_error"], c.get("ece_calibrated", ""), c.get("brier_calibrated", "")]
             for c in [{"corruption": "clean", "severity": 0, **clean}, *report["cells"]]]
    return [Table(columns(*names, right=names[1:]), rows, title=title, formats=("table", "markdown")),
            Table(columns(*CSV_FIELDS), cells, formats=("csv",))]


@command
def robustness_cmd(
    flag: FlagArg,
    run: Annotated[str, typer.Option("--run", help="The run to test: a run id in --runs-dir or a run folder "
                                                   "(train/finetune run folder, linear-probe or zero-shot record).")],
    runs_dir: RunsDirOpt = Path("runs"),
    data_root: DataRootOpt = None,
    cache_dir: Annotated[Optional[Path], typer.Option(
        "--cache-dir", help="Where corrupted splits are cached as uint8 \\[default: DATA_ROOT/medmnistc].",
        show_default=False)] = None,
    corruption: Annotated[Optional[list[str]], typer.Option(
        "--corruption", help="Only this corruption (repeatable) \\[default: every one MedMNIST-C defines for FLAG].",
        show_default=False)] = None,
    severity: Annotated[Optional[list[int]], typer.Option(
        "--severity", help="Only this severity 1-5 (repeatable) \\[default: all five].", show_default=False)] = None,
    seed: seed_opt("the corruptions (each dataset, corruption and severity draws from its own stream) and the bootstrap") = 0,
    bootstrap: BootstrapOpt = 0,
    device: Annotated[str, typer.Option("--device", help="Device: auto, cpu, cuda or cuda:N.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 256,
    fmt: FormatOpt = "table",
) -> Output:
    """Score a run's model on MedMNIST-C: every corruption of FLAG at severities 1-5, made with the medmnistc
    package and cached; AUC/ACC/ECE per cell, MedMNIST-C's balanced error (BE) and relative balanced error (RBE).

    BE and RBE normalise the mean balanced error per corruption by AlexNet's (224 px) as medmnistc does;
    the report is also written to the run folder as robustness.json (`vlm plot robustness RUN`).

    Example: [bold]vlm robustness breastmnist --run runs/*_breastmnist_train_medmnist-resnet18 --data-root ../shared/data/medmnist --severity 3[/]
    """
    from vlm.commands.progress import encode_progress
    from vlm.robustness import SEVERITIES, robustness

    progress, callback = encode_progress(status_console(fmt), f"MedMNIST-C {flag}")
    with progress:
        report = robustness(run, flag=flag, runs_dir=runs_dir, data_root=data_root, cache_dir=cache_dir,
                            names=corruption, severities=tuple(severity) if severity else SEVERITIES, seed=seed,
                            n_bootstrap=bootstrap, device=device, batch_size=batch_size, progress=callback)
    s = report["summary"]
    line = (f"clean balanced error {_num(s['clean_error'])}; BE {_num(s['be'])}, RBE {_num(s['rbe'])} (normalised by "
            f"{report['baseline']}); wrote [bold]{escape(str(Path(report['run_dir']) / 'robustness.json'))}[/]")
    return Output(report, [*robustness_tables(report), Line(line, soft_wrap=True)])
