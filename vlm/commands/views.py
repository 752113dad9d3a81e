"""Table specs that several commands show: AUC/ACC and ECE/Brier with their 95% CIs."""

from __future__ import annotations

from typing import Any, Iterable

from vlm.commands.output import Table, columns

METRIC_COLUMNS = ("AUC [95% CI]", "ACC [95% CI]", "bal. ACC")
CALIBRATION_COLUMNS = ("ECE [95% CI]", "Brier [95% CI]")


def fmt_ci(value: float | None, ci: Iterable[float] | None) -> str:
    """'0.901 [0.853, 0.944]', '0.901' without a CI, '-' without a value."""
    if value is None:
        return "-"
    if not ci:
        return f"{value:.3f}"
    lo, hi = ci
    return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def metric_cells(result: dict[str, Any]) -> list[str]:
    """AUC and ACC with CIs and the balanced ACC of a `Metrics.to_dict()`-like result."""
    balanced = result.get("balanced_acc")
    return [fmt_ci(result["auc"], result.get("auc_ci")), fmt_ci(result["acc"], result.get("acc_ci")),
            "-" if balanced is None else f"{balanced:.3f}"]


def calibration_cells(result: dict[str, Any]) -> list[str]:
    """ECE and Brier score with CIs of a `Metrics.to_dict()`-like result ('-' where absent)."""
    return [fmt_ci(result.get(m), result.get(f"{m}_ci")) for m in ("ece", "brier")]


def metrics_table(results: list[dict[str, Any]], title: str = "") -> Table:
    """One row per result (Metrics.to_dict()): AUC/ACC with CIs, balanced ACC, ECE/Brier with CIs, n."""
    names = (*METRIC_COLUMNS, *CALIBRATION_COLUMNS, "n")
    return Table(columns(*names, right=names),
                 [[*metric_cells(r), *calibration_cells(r), str(r["n"])] for r in results], title=title)
