"""The `vlm zero-shot` and `vlm prompts compare` commands: JSON and table output, saved scores, the embedding
cache, one-line errors.

Offline: random-initialised open_clip models saved to tmp folders, synthetic MedMNIST-format data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fixtures.inputs import write_prompts
from vlm.prompts import load_prompt_set
from vlm.results import load_run

pytestmark = pytest.mark.usefixtures("offline")


def test_cli_zero_shot_vitb32_json(vitb32_weights, data_root, tmp_path):
    from cli import app

    args = ["zero-shot", "breastmnist", "--model", "ViT-B-32", "--weights", str(vitb32_weights), "--style", "clip",
            "--data-root", str(data_root), "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"),
            "--bootstrap", "50", "--device", "cpu", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {k: data[k] for k in ("dataset", "model", "split", "size", "images_encoded")} == {
        "dataset": "breastmnist", "model": "ViT-B-32", "split": "test", "size": 28, "images_encoded": 20}
    assert data["encoder"] == "open_clip:ViT-B-32" and data["weights_id"].startswith("sha256:")
    (r,) = data["results"]
    assert r["style"] == "clip" and r["n"] == 20 and 0.0 <= r["auc"] <= 1.0 and len(r["auc_ci"]) == 2
    assert len(r["per_class"]) == 2 and r["balanced_acc"] is not None
    record = load_run(r["run_dir"])
    assert record.model == "open_clip:ViT-B-32" and record.config["style"] == "clip"
    assert record.preprocessing["size"] == 224 and record.preprocessing["interpolation"] == "bicubic"


def test_cli_table_save_scores_and_cache(tiny_oc_weights, data_root, tmp_path):
    from cli import app

    name, weights = tiny_oc_weights
    base = ["zero-shot", "breastmnist", "--model", name, "--weights", str(weights), "--data-root", str(data_root),
            "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"), "--bootstrap", "20",
            "--device", "cpu"]
    result = CliRunner().invoke(app, base + ["--style", "all", "--save-scores", str(tmp_path / "scores.npy")],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "AUC [95% CI]" in result.stdout and "per-class ACC" in result.stdout and "descriptive" in result.stdout
    assert "encoded 20 images" in result.stdout
    for style in ("clip", "descriptive"):
        assert np.load(tmp_path / f"scores_{style}.npy").shape == (20, 2)
    again = CliRunner().invoke(app, base + ["--json", "--style", "descriptive"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["images_encoded"] == 0  # embeddings from the cache
    assert len(list((tmp_path / "runs").iterdir())) == 3


def test_cli_errors_are_one_line(data_root, tmp_path):
    from cli import app

    result = CliRunner().invoke(app, ["zero-shot", "breastmnist", "--model", "biomedclp", "--data-root",
                                      str(data_root), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "Unknown model 'biomedclp'" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["zero-shot", "vesselmnist3d", "--model", "fake", "--slice-axis", "5",
                                      "--data-root", str(data_root), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "--slice-axis must be a whole number between 0 and 2, got 5" in result.output


def test_cli_prompts_compare(tiny_oc_weights, data_root, tmp_path):
    from cli import app

    name, weights = tiny_oc_weights
    other = write_prompts(tmp_path / "mine.yaml", "breastmnist", ["malignant", "normal, benign"],
                          {"plain": {"templates": ["{label}"]}})
    shipped = str(load_prompt_set("breastmnist").path)
    result = CliRunner().invoke(app, ["prompts", "compare", "breastmnist", "--model", name, "--weights", str(weights),
                                      "--prompts", shipped, str(other), "--data-root", str(data_root),
                                      "--cache-dir", str(tmp_path / "cache"), "--bootstrap", "0", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["split"] == "val" and [r["rank"] for r in data["ranking"]] == [1, 2, 3]
    assert {(Path(r["prompts"]).name, r["style"]) for r in data["ranking"]} == {
        ("breastmnist.yaml", "clip"), ("breastmnist.yaml", "descriptive"), ("mine.yaml", "plain")}
    table = CliRunner().invoke(app, ["prompts", "compare", "breastmnist", "--model", name, "--weights", str(weights),
                                     "--data-root", str(data_root), "--cache-dir", str(tmp_path / "cache")],
                               env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "ranked by AUC" in table.stdout and "descriptive" in table.stdout
