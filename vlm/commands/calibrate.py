"""`vlm calibrate RUN`, the `--calibrate` option of the run commands, and the before/after calibration table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from vlm.commands.common import DataRootOpt, RunsDirOpt, command
from vlm.commands.output import Line, Output, Table, columns
from vlm.commands.views import fmt_ci

CalibrateOpt = Annotated[Optional[str], typer.Option(
    "--calibrate", help="temperature: fit one temperature on the val logits by NLL and apply it to test once; the "
                        "record keeps the raw and the calibrated metrics (`vlm calibrate RUN` does it later).",
    show_default=False)]
_METRICS = ("ece", "brier", "nll")
_NAMES = ("run", "T", "ECE raw", "ECE cal.", "Brier raw", "Brier cal.", "NLL raw", "NLL cal.")


def _cells(raw: dict[str, Any], calibrated: dict[str, Any]) -> list[str]:
    cal = calibrated["metrics"]
    return [f"{calibrated['temperature']:.3g}",
            *(fmt_ci(m.get(k), m.get(f"{k}_ci")) for k in _METRICS for m in (raw, cal))]


def calibration_table(rows: list[tuple[str, dict[str, Any], dict[str, Any]]], title: str = "") -> Table:
    """One row per (label, raw metrics, `calibrated` block): T and ECE, Brier, NLL before and after, with CIs."""
    return Table(columns(*_NAMES, right=_NAMES[1:]), [[label, *_cells(raw, cal)] for label, raw, cal in rows],
                 title=title or "temperature scaling (T fitted on val by NLL, applied to test once)")


def add_calibration(output: Output, record: Any) -> Output:
    """A run command's output with the calibration of its record (`calibrated` in the data, the table)."""
    output.data["calibrated"] = record.calibrated
    output.blocks.insert(1, calibration_table([(record.label, record.metrics, record.calibrated)]))
    return output


def calibrate_after(output: Output, run_dir: Any, calibrate: str | None, data_root: Any) -> Output:
    """With `--calibrate`, calibrate the run just recorded in `run_dir` and show it; else `output` as it is."""
    if calibrate is None:
        return output
    from vlm.calibrate import calibrate_run

    return add_calibration(output, calibrate_run(run_dir, data_root=data_root, method=calibrate))


@command
def calibrate_cmd(
    run: Annotated[str, typer.Argument(help="Run id in --runs-dir, or a run folder, that kept its logits.")],
    runs_dir: RunsDirOpt = Path("runs"),
    data_root: DataRootOpt = None,
    method: Annotated[str, typer.Option("--method", help="Calibration method: temperature.")] = "temperature",
) -> Output:
    """Temperature-scale a recorded test run: T fitted on its val logits by NLL, applied to its test logits once.

    The record keeps its raw metrics and gains `calibrated` (temperature, val NLL before/after, the
    calibrated test metrics with CIs), written atomically into its own record.json. Runs without
    saved logits (kNN, `vlm evaluate` records, zero-shot runs made without --calibrate) are refused.

    Example: [bold]vlm calibrate runs/*_breastmnist_train_medmnist-resnet18 --data-root ../shared/data/medmnist[/]
    """
    from vlm.calibrate import calibrate_run

    record = calibrate_run(run, runs_dir=runs_dir, data_root=data_root, method=method)
    data = {"run_id": record.run_id, "run_dir": record.path, "label": record.label, "metrics": record.metrics,
            "calibrated": record.calibrated}
    return Output(data, [calibration_table([(record.label, record.metrics, record.calibrated)],
                                           title=f"{record.dataset} · test · {record.size}px · temperature scaling"),
                         Line(f"recorded in [bold]{escape(record.path)}[/]", soft_wrap=True)])
