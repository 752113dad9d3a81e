"""The CLI's one output layer: a command returns an `Output` (its JSON data plus the tables and lines
that show it) and `emit` prints it as a rich table, JSON, Markdown or CSV (`--format`, `--json`).

Tables are plain specs (`Table`: title, columns with alignment, rows, caption). A block can be
limited to some formats, e.g. a long-format CSV of numbers beside the table shown on screen. For a
format that no block serves, the data itself is shown as a one-row table.

On screen a table never cuts or wraps a number: right-aligned (number) columns keep their width, the
first column (the row names) folds long names onto a second line, and a table too wide for the console
is shown as several tables, one under the other, each with the row names and a group of columns.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable
from rich.text import Text

from vlm.errors import VlmError

out = Console()
err = Console(stderr=True)

FORMATS = ("table", "markdown", "csv", "json")
TEXT_FORMATS = ("table", "markdown", "csv")

FormatOpt = Annotated[str, typer.Option("--format", help="Output format: table (rich), markdown, csv or json.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout and nothing else.")]


@dataclass(frozen=True)
class Column:
    """A table column: header (a line break shows as a space in Markdown and CSV) and alignment."""

    name: str
    justify: Literal["left", "right"] = "left"
    overflow: Literal["ellipsis", "fold"] = "ellipsis"
    group: str = ""  # columns of one group (e.g. a dataset's AUC and ACC) stay together when a table is split


@dataclass(frozen=True)
class Styled:
    """A cell with a rich style or rich markup, or the best value of its column (table: 'x *' in bold
    green, visible without colour too; Markdown: **x**)."""

    text: str
    style: str = ""
    best: bool = False
    markup: bool = False

    @property
    def plain(self) -> str:
        return Text.from_markup(self.text).plain if self.markup else self.text


Cell = Union[str, int, float, bool, None, Styled]


@dataclass
class Table:
    """A table spec; cells are literal text (no rich markup) unless `Styled(markup=True)`."""

    columns: list[Column]
    rows: list[list[Cell]]
    title: str = ""
    caption: str = ""
    show_lines: bool = False
    formats: tuple[str, ...] = TEXT_FORMATS


@dataclass
class Line:
    """A line of rich markup (user text escaped) shown by the table and Markdown formats."""

    markup: str
    stderr: bool = False
    highlight: bool = False
    soft_wrap: bool = False
    formats: tuple[str, ...] = ("table", "markdown")


Block = Union[Table, Line]


@dataclass
class Output:
    """What a command returns: `data` (the --json object) and the blocks that show it; a non-zero
    `exit_code` ends the command with that code after printing."""

    data: Any
    blocks: list[Block] = field(default_factory=list)
    exit_code: int = 0


def columns(*names: str, right: tuple[str, ...] = ()) -> list[Column]:
    """Left-aligned columns, those named in `right` right-aligned."""
    return [Column(n, "right" if n in right else "left") for n in names]


def resolve_format(fmt: str, as_json: bool = False) -> str:
    """The output format (`--json` wins), or a VlmError naming the choices."""
    fmt = "json" if as_json else fmt.lower()
    if fmt not in FORMATS:
        raise VlmError(f"Unknown --format '{fmt}': choose one of {', '.join(FORMATS)}.")
    return fmt


def status_console(fmt: str) -> Console:
    """Where progress and status go: stdout for tables, stderr when stdout carries JSON/Markdown/CSV."""
    return out if fmt == "table" else err


def print_json(obj: Any) -> None:
    """One JSON object on stdout (plain print: no rich markup or wrapping)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def emit(output: Output | None, fmt: str) -> None:
    """Print `output` in `fmt` (one of FORMATS), then exit with its exit code if that is not 0."""
    if output is None:
        return
    if fmt == "json":
        print_json(output.data)
    elif fmt == "table":
        for block in _shown(output, fmt):
            if isinstance(block, Line):
                (err if block.stderr else out).print(block.markup, highlight=block.highlight, soft_wrap=block.soft_wrap)
            else:
                for part in rich_tables(block, out.width):
                    out.print(part)
    else:
        sys.stdout.write(render_text(output, fmt))
    if output.exit_code:
        raise typer.Exit(output.exit_code)


def render_text(output: Output, fmt: str) -> str:
    """The Markdown or CSV text of `output` (stderr lines are written to stderr on the way)."""
    chunks: list[str] = []
    previous: Block | None = None
    for block in _shown(output, fmt):
        if isinstance(block, Line):
            text = Text.from_markup(block.markup).plain
            if block.stderr:
                sys.stderr.write(text + "\n")
                continue
            if isinstance(previous, Line):
                chunks[-1] += "\n" + text
            else:
                chunks.append(text)
        else:
            chunks.append(to_markdown(block) if fmt == "markdown" else to_csv(block).rstrip("\n"))
        previous = block
    return "\n\n".join(chunks) + "\n"


def _shown(output: Output, fmt: str) -> list[Block]:
    blocks = [b for b in output.blocks if fmt in b.formats]
    if fmt != "table" and all(isinstance(b, Line) and b.stderr for b in blocks):
        blocks.append(data_table(output.data))
    return blocks


def data_table(data: Any) -> Table:
    """A JSON object as a one-row table (lists of objects: a row each; nested values as JSON)."""
    rows = data if isinstance(data, list) and all(isinstance(r, dict) for r in data) else [data]
    if not all(isinstance(r, dict) for r in rows):
        rows = [{"value": data}]
    names = list(dict.fromkeys(k for r in rows for k in r))
    cell = lambda v: v if v is None or isinstance(v, (str, int, float)) else json.dumps(v, default=str)  # noqa: E731
    return Table(columns(*names), [[cell(r.get(n)) for n in names] for r in rows])


# ----------------------------------------------------------------------------- the three text forms
def rich_table(table: Table, key_width: int | None = None, title: bool = True, caption: bool = True) -> RichTable:
    """A rich Table (titles and captions left-aligned, as every `vlm` table); number columns never wrap,
    the first column folds at `key_width`."""
    rich = RichTable(title=escape(table.title) if table.title and title else None, title_justify="left",
                     caption=escape(table.caption) if table.caption and caption else None, caption_justify="left",
                     show_lines=table.show_lines)
    for i, col in enumerate(table.columns):
        rich.add_column(escape(col.name), justify=col.justify, overflow="fold" if i == 0 else col.overflow,
                        no_wrap=col.justify == "right", max_width=key_width if i == 0 else None)
    for row in table.rows:
        rich.add_row(*(_rich_cell(value) for value in row))
    return rich


_CELL_PAD = 3  # a column's padding and its border
MIN_KEY_WIDTH = 24


def _widths(table: Table) -> list[int]:
    """Each column's natural width: its longest header or cell line (best cells with their ' *')."""
    widths = [max(cell_len(line) for line in col.name.split("\n")) for col in table.columns]
    for row in table.rows:
        for i, value in enumerate(row):
            text = _rich_cell(value).plain
            widths[i] = max(widths[i], *(cell_len(line) for line in text.split("\n")))
    return widths


def _groups(columns: list[Column]) -> list[list[int]]:
    """The indices of the value columns (all but the first), in runs of one group each."""
    groups: list[list[int]] = []
    for i, col in enumerate(columns[1:], start=1):
        if groups and col.group and columns[groups[-1][-1]].group == col.group:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def rich_tables(table: Table, width: int) -> list[RichTable]:
    """`table` for a console `width` cells wide: one rich table when it fits with its first column folded to
    at least 24 cells, else several, each with the first column and as many column groups as fit."""
    if len(table.columns) < 2:
        return [rich_table(table)]
    widths = _widths(table)
    values = [w + _CELL_PAD for w in widths[1:]]
    key = min(widths[0], MIN_KEY_WIDTH)
    if key + _CELL_PAD + sum(values) + 1 <= width:
        return [rich_table(table, key_width=max(key, width - sum(values) - _CELL_PAD - 1))]
    need = lambda cols: sum(values[c - 1] for c in cols)  # noqa: E731
    groups = _groups(table.columns)
    key = min(widths[0], max(MIN_KEY_WIDTH, width // 3))
    if max(need(g) for g in groups) > width - key - _CELL_PAD - 1:  # narrower names keep a group whole
        key = min(widths[0], MIN_KEY_WIDTH)
    room = width - key - _CELL_PAD - 1
    units = [u for group in groups for u in ([group] if need(group) <= room else [[c] for c in group])]
    parts: list[list[int]] = [[]]
    for unit in units:
        if parts[-1] and need(parts[-1]) + need(unit) > room:
            parts.append([])
        parts[-1] += unit
    key = max(key, min(widths[0], width - _CELL_PAD - 1 - max(need(p) for p in parts)))
    out = []
    for n, cols in enumerate(parts):
        rows = [row for row in table.rows if any(_filled(row[c]) for c in cols)] or table.rows  # its rows only
        part = Table([table.columns[0]] + [table.columns[c] for c in cols], [[row[0]] + [row[c] for c in cols]
                     for row in rows], title=table.title, caption=table.caption, show_lines=table.show_lines)
        out.append(rich_table(part, key_width=key, title=n == 0, caption=n == len(parts) - 1))
    return out


def _filled(value: Cell) -> bool:
    """Whether a cell shows anything (a method not run on a dataset leaves that dataset's cells empty)."""
    return str(_plain(value)).strip() not in ("", "None")


def _rich_cell(value: Cell) -> Text:
    if not isinstance(value, Styled):
        return Text("" if value is None else str(value))
    if value.best:
        return Text(value.plain + " *", style="bold green")
    return Text.from_markup(value.text, style=value.style) if value.markup else Text(value.text, style=value.style)


def _plain(value: Cell) -> Any:
    return value.plain if isinstance(value, Styled) else value


def _md_cell(value: Cell) -> str:
    text = str(_plain(value) if value is not None else "").replace("|", "\\|").replace("\n", "<br>")
    return f"**{text}**" if isinstance(value, Styled) and value.best else text


def to_markdown(table: Table) -> str:
    """A Markdown table: the title and a blank line above it, the caption below after a blank line."""
    lines = [table.title, ""] if table.title else []
    lines.append("| " + " | ".join(_md_cell(c.name.replace("\n", " ")) for c in table.columns) + " |")
    lines.append("|" + "|".join("---:" if c.justify == "right" else "---" for c in table.columns) + "|")
    lines += ["| " + " | ".join(_md_cell(value) for value in row) + " |" for row in table.rows]
    if table.caption:
        lines += ["", table.caption]
    return "\n".join(lines)


def to_csv(table: Table) -> str:
    """CSV text: a header line, then one line per row (None as an empty field)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([c.name.replace("\n", " ") for c in table.columns])
    for row in table.rows:
        writer.writerow(["" if value is None else _plain(value) for value in row])
    return buf.getvalue()
