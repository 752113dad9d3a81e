"""The CLI output layer: one renderer for table/json/markdown/csv, --json as an alias, option groups."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Annotated

import typer
from typer.testing import CliRunner

from cli import app
from vlm.commands.common import command
from vlm.commands.output import Column, Line, Output, Styled, Table, columns, render_text, to_csv, to_markdown

runner = CliRunner()


def invoke(*args: object, target: typer.Typer = app):
    return runner.invoke(target, [str(a) for a in args])


def test_format_json_is_the_json_alias(data_root):
    plain = invoke("datasets", "--json", "--data-root", data_root)
    fmt = invoke("datasets", "--format", "JSON", "--data-root", data_root)
    assert plain.exit_code == fmt.exit_code == 0 and json.loads(plain.stdout) == json.loads(fmt.stdout)


def test_every_format_of_datasets(data_root):
    md = invoke("datasets", "--format", "markdown", "--data-root", data_root).stdout
    lines = md.splitlines()
    assert lines[0].startswith("MedMNIST datasets (data root: ") and lines[1] == ""
    assert lines[2].startswith("| flag | modality | task | classes |") and lines[3].startswith("|---|---|---|---:|---:|")
    assert len([line for line in lines if line.startswith("| ")]) == 1 + 18
    rows = list(csv.DictReader(io.StringIO(invoke("datasets", "--format", "csv", "--data-root", data_root).stdout)))
    assert len(rows) == 18 and rows[0]["flag"] == "pathmnist" and "train/val/test" in rows[0]


def test_unknown_format_is_one_line_exit_2():
    result = invoke("models", "--format", "xml")
    assert result.exit_code == 2 and "Unknown --format 'xml': choose one of table, markdown, csv, json." in result.output


def test_line_only_outputs_show_their_data_as_csv(tmp_path):
    result = invoke("run", "experiments/breast_vessel.yaml", "--dry-run", "--runs-dir", tmp_path, "--format", "csv")
    assert result.exit_code == 0, result.output
    (row,) = csv.DictReader(io.StringIO(result.stdout))
    assert row["experiment"] == "breast_vessel" and row["jobs"] == "5" and json.loads(row["pending"])[0]


def test_validate_csv_lists_files_and_keeps_exit_code(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [")
    result = invoke("prompts", "validate", "prompts/breastmnist.yaml", bad, "--format", "csv")
    assert result.exit_code == 2
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["ok"] for r in rows] == ["True", "False"] and rows[1]["error"]


def test_markdown_and_csv_of_a_table_spec():
    table = Table([Column("name"), Column("a\nAUC", "right")],
                  [["x|y", Styled("0.9", best=True)], [Styled("[bold]z[/]", markup=True), None]],
                  title="T", caption="legend")
    assert to_markdown(table) == "T\n\n| name | a AUC |\n|---|---:|\n| x\\|y | **0.9** |\n| z |  |\n\nlegend"
    assert to_csv(table) == "name,a AUC\nx|y,0.9\nz,\n"
    out = Output({"k": 1}, [table, Line("first"), Line("second"), Line("only on stderr", stderr=True)])
    assert render_text(out, "markdown").endswith("legend\n\nfirst\nsecond\n")
    assert render_text(out, "csv") == to_csv(table)


@dataclass(frozen=True)
class Pair:
    """Two options that travel together."""

    left: Annotated[int, typer.Option("--left", help="Left.")] = 1
    right: Annotated[str, typer.Option("--right", help="Right.")] = "r"


def test_option_groups_expand_in_place():
    demo = typer.Typer()

    @demo.command()
    @command
    def show(first: Annotated[str, typer.Option("--first")] = "f", *, pair: Pair,
             last: Annotated[int, typer.Option("--last")] = 0) -> Output:
        """Echo the options."""
        return Output({"first": first, "left": pair.left, "right": pair.right, "last": last},
                      [Table(columns("first", "left"), [[first, str(pair.left)]])])

    result = invoke("--left", 5, "--last", 2, "--json", target=demo)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"first": "f", "left": 5, "right": "r", "last": 2}
    helped = invoke("--help", target=demo).stdout
    order = [helped.index(o) for o in ("--first", "--left", "--right", "--last", "--format", "--json")]
    assert order == sorted(order)
