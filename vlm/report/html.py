"""The report as one HTML page: `template.html` (inline CSS and the table-sorting script) filled with the
comparison table and the sections' embedded figures. Nothing is fetched when the page is viewed."""

from __future__ import annotations

import os
from html import escape
from importlib import resources
from pathlib import Path
from string import Template
from urllib.parse import quote

from vlm.compare_model import LOWER_IS_BETTER, METRIC_NAMES, Cell, Row
from vlm.report.build import ReportData, Section

TEMPLATE = "template.html"


def record_href(run_path: str, out_dir: Path) -> str:
    """The run's record.json relative to the report's folder, URL-quoted."""
    rel = os.path.relpath(Path(run_path).resolve() / "record.json", out_dir.resolve())
    return quote(Path(rel).as_posix())


def _cell_html(cell: Cell | None, metric: str) -> str:
    from vlm.compare import format_value

    if cell is None:
        return '<td class="num empty" data-sort=""></td>'
    value = getattr(cell, metric)
    classes = ["num"] + (["best"] if getattr(cell, f"best_{metric}") else []) + (["pub"] if cell.published else [])
    sort = "" if value is None else repr(float(value))
    title = ' title="best in this column"' if getattr(cell, f"best_{metric}") else ""
    return f'<td class="{" ".join(classes)}" data-sort="{sort}"{title}>{escape(format_value(cell, metric))}</td>'


def _links(data: ReportData, row: Row, out_dir: Path) -> str:
    """Links to the records of a row's runs (every column), labelled by dataset and seed."""
    cols = [c for c in data.table.columns if data.table.cell(row, c) is not None]
    links = []
    for col in cols:
        for run_id in data.table.cell(row, col).run_ids:
            record = data.records.get(run_id)
            if record is None:
                continue
            text = (f"{col.dataset} " if len(cols) > 1 else "") + ("run" if record.seed is None else f"seed {record.seed}")
            links.append(f'<a href="{record_href(record.path, out_dir)}" title="{escape(run_id)}">{escape(text)}</a>')
    return " ".join(links)


def table_html(data: ReportData, out_dir: Path) -> str:
    """The comparison table: a sortable header per (column, metric), best cells marked, links to the records."""
    table = data.table
    heads = ['<th data-type="text" data-first="ascending" scope="col">method</th>']
    for col in table.columns:
        for metric in data.metrics:
            first = "ascending" if metric in LOWER_IS_BETTER else "descending"
            heads.append(f'<th data-type="num" data-first="{first}" scope="col">{escape(col.label)}<br>'
                         f'{METRIC_NAMES[metric]}</th>')
    heads.append('<th scope="col">records</th>')
    body = []
    for row in table.rows:
        title = f' title="{escape(row.source)}"' if row.source else ""
        cells = [f'<th scope="row" class="method" data-sort="{escape(row.label)}"{title}>{escape(row.label)}</th>']
        cells += [_cell_html(table.cell(row, col), m) for col in table.columns for m in data.metrics]
        cells.append(f'<td class="links">{_links(data, row, out_dir)}</td>')
        body.append(f'<tr class="{"published" if row.published else "run"}">' + "".join(cells) + "</tr>")
    return (f'<table id="comparison"><thead><tr>{"".join(heads)}</tr></thead>\n<tbody>\n' + "\n".join(body)
            + "\n</tbody></table>")


def section_html(section: Section) -> str:
    """A column's heading, its figures and the notes on figures not drawn."""
    figures = "\n".join(
        f'<figure class="{f.kind}{" wide" if f.wide else ""}"><img src="{f.src}" alt="{escape(f.caption)}">'
        f"<figcaption>{escape(f.caption)}</figcaption></figure>" for f in section.figures)
    notes = "".join(f"<li>{escape(n)}</li>" for n in section.notes)
    return (f'<section id="{section.anchor}"><h2>{escape(section.column.label)}</h2>\n<div class="grid">{figures}</div>'
            + (f'<ul class="notes">{notes}</ul>' if notes else "") + "</section>")


def render(data: ReportData, out_dir: Path) -> str:
    """The whole page; record links are relative to `out_dir`, the folder the page is written to."""
    from vlm import __version__
    from vlm.compare import legend

    lower = [METRIC_NAMES[m] for m in data.metrics if m in LOWER_IS_BETTER]
    best = "marked ★" + (f" (lowest {'/'.join(lower)})" if lower else "")
    notes = "".join(f"<li>{escape(n)}</li>" for n in data.table.notes)
    toc = "".join(f'<a href="#{s.anchor}">{escape(s.column.label)}</a>' for s in data.sections)
    n_figures = sum(len(s.figures) for s in data.sections)
    summary = (f"{data.n_runs} runs in <code>{escape(data.runs_dir)}</code> · {len(data.table.columns)} columns · "
               f"{n_figures} figures · generated {escape(data.generated)} by medvlm {escape(__version__)}")
    text = resources.files("vlm.report").joinpath(TEMPLATE).read_text(encoding="utf-8")
    return Template(text).substitute(
        title=escape(data.title), summary=summary, toc=toc, table=table_html(data, out_dir),
        legend=escape(legend(data.table, best_mark=best) + " Click a header to sort; click again to reverse."),
        notes=f'<ul class="notes">{notes}</ul>' if notes else "",
        sections="\n".join(section_html(s) for s in data.sections))
