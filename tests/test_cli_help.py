"""Command help: paragraphs reflowed to the terminal, examples kept on their own lines."""

from __future__ import annotations

from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def test_help_paragraphs_are_reflowed_and_examples_kept_on_their_own_lines():
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}, terminal_width=200)
    assert result.exit_code == 0
    text = result.stdout
    assert "lists the recipes); the record names the recipe" in text  # a hard break in the docstring
    examples = [line.strip() for line in text.splitlines() if line.strip().startswith("Example:")]
    assert len(examples) == 4 and examples[3].startswith("Example: vlm train --resume")
