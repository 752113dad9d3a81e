"""`vlm report`: one self-contained HTML page of a runs folder, to look at or send to a colleague.

- `build`     gathers the comparison table (`vlm.compare`, with the published MedMNIST baselines) and, per
              (dataset, size, split) column, figures drawn by `vlm.plots` and embedded as base64 PNG
- `html`      renders them into `template.html` (inline CSS and the script that sorts the table by a
              header click); each table row links to its runs' record.json, relative to the page

Example:
    >>> write_report("runs", "report.html", data_root="../shared/data/medmnist")   # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm.errors import VlmError


@dataclass(frozen=True)
class Report:
    """What was written: the page, its size, the runs, columns and figures in it, and the figures left out."""

    file: str
    bytes: int
    runs: int
    columns: list[str]
    figures: int
    notes: list[str]


def write_report(runs_dir: str | os.PathLike, out: str | os.PathLike, **options: Any) -> Report:
    """Write the HTML report of the finished runs in `runs_dir` to `out` (atomically).

    `options` are `vlm.report.build.gather`'s: `data_root` (the dataset files whose labels the ROC curves and
    reliability diagrams need), `datasets` (keep only these flags), `baselines` ("medmnist", the default, or
    None), `metrics` (the table's, from `vlm.compare_model.METRICS`) and `title`.
    """
    from vlm.files import atomic_write_text
    from vlm.report.build import gather
    from vlm.report.html import render

    path = Path(out)
    if path.suffix.lower() not in (".html", ".htm"):
        raise VlmError(f"The report is an HTML page: name it with .html, not '{path.name}'.")
    if not path.parent.is_dir():
        raise VlmError(f"Folder {path.parent} does not exist: create it or choose another --out.")
    data = gather(runs_dir, **options)
    text = render(data, path.parent)
    atomic_write_text(path, text)
    return Report(file=str(path), bytes=len(text.encode("utf-8")), runs=data.n_runs,
                  columns=[c.label for c in data.table.columns], figures=sum(len(s.figures) for s in data.sections),
                  notes=[n for s in data.sections for n in s.notes])


__all__ = ["Report", "write_report"]
