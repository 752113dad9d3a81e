"""The comparison table model of `vlm.compare`: columns (dataset, size, split), method rows, metric cells.

A cell holds every metric of METRICS for one method in one column; `vlm compare --metrics` chooses
which are shown. AUC and ACC are higher-is-better; ECE, Brier and NLL (LOWER_IS_BETTER) lower.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from vlm.errors import VlmError
from vlm.results import jsonable

METRICS = ("auc", "acc", "ece", "brier", "nll")
DEFAULT_METRICS = ("auc", "acc")
LOWER_IS_BETTER = frozenset({"ece", "brier", "nll"})
METRIC_NAMES = {"auc": "AUC", "acc": "ACC", "ece": "ECE", "brier": "Brier", "nll": "NLL"}  # as table headers show them


def parse_metrics(text: str | None) -> tuple[str, ...]:
    """'auc,acc,ece' -> ('auc', 'acc', 'ece'); None -> DEFAULT_METRICS; VlmError naming unknown metrics."""
    if text is None:
        return DEFAULT_METRICS
    names = tuple(dict.fromkeys(m.strip().lower() for m in text.split(",") if m.strip()))
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise VlmError(f"Unknown --metrics {', '.join(unknown) or repr(text)}: choose from {', '.join(METRICS)}.")
    return names


@dataclass(frozen=True)
class Column:
    """A (dataset, size, split) column."""

    dataset: str
    size: int
    split: str

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.size}/{self.split}"

    @property
    def label(self) -> str:
        return f"{self.dataset} {self.size}px {self.split}"


@dataclass
class Row:
    """One method (runs of all seeds), or one published baseline."""

    key: str
    label: str
    method: str
    model: str
    weights_id: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    published: bool = False
    source: str | None = None
    test_selected: bool = False  # one of several prompt styles all scored on test: never marked best


@dataclass
class Cell:
    """The metrics of one method in one column: each of METRICS with its CI (one run) or std (several seeds)."""

    auc: float | None
    acc: float | None
    auc_ci: tuple[float, float] | None = None  # single run: bootstrap CI
    acc_ci: tuple[float, float] | None = None
    auc_std: float | None = None  # several seeds: sample std
    acc_std: float | None = None
    n_seeds: int = 1
    seeds: list[Any] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    n: int | None = None  # test samples (None for published values)
    published: bool = False
    note: str | None = None  # e.g. runs whose AUC is undefined
    best_auc: bool = False
    best_acc: bool = False
    ece: float | None = None  # calibration (lower is better; no published values)
    brier: float | None = None
    nll: float | None = None
    ece_ci: tuple[float, float] | None = None
    brier_ci: tuple[float, float] | None = None
    nll_ci: tuple[float, float] | None = None
    ece_std: float | None = None
    brier_std: float | None = None
    nll_std: float | None = None
    best_ece: bool = False
    best_brier: bool = False
    best_nll: bool = False


@dataclass
class ComparisonTable:
    columns: list[Column]
    rows: list[Row]
    cells: dict[tuple[str, str], Cell]  # (row key, column key) -> cell
    notes: list[str] = field(default_factory=list)

    def cell(self, row: Row | str, column: Column | str) -> Cell | None:
        row_key = row.key if isinstance(row, Row) else row
        col_key = column.key if isinstance(column, Column) else column
        return self.cells.get((row_key, col_key))

    def row(self, label: str) -> Row:
        """The row with this label (VlmError if there is none)."""
        for row in self.rows:
            if row.label == label:
                return row
        raise VlmError(f"No row '{label}' in the table; rows: {', '.join(r.label for r in self.rows)}.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: columns, rows (each with its cells by column label) and notes."""
        rows = []
        for row in self.rows:
            cells = {}
            for col in self.columns:
                cell = self.cell(row, col)
                if cell is not None:
                    cells[col.label] = jsonable(asdict(cell))
            rows.append({**asdict(row), "cells": cells})
        return {
            "columns": [{"dataset": c.dataset, "size": c.size, "split": c.split, "label": c.label} for c in self.columns],
            "rows": rows,
            "notes": list(self.notes),
        }
