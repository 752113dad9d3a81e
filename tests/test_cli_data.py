"""The data commands: datasets, datasets info, evaluate, their one-line errors (typer's CliRunner, no
subprocess)."""

from __future__ import annotations

import json

import medmnist
import numpy as np
import pytest
from medmnist.evaluator import getACC, getAUC
from typer.testing import CliRunner

from cli import app
from conftest import SHARED_DATA, needs_shared_data
from vlm.data import load_split

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_datasets_json_lists_all_18_with_info_task_kinds(data_root):
    result = invoke("datasets", "--json", "--data-root", data_root)
    assert result.exit_code == 0
    rows = json.loads(result.stdout)["datasets"]
    assert [r["flag"] for r in rows] == list(medmnist.INFO)
    kind = {"binary-class": "binary", "multi-class": "multi-class", "multi-label, binary-class": "multi-label",
            "ordinal-regression": "ordinal"}
    assert all(r["task"] == kind[medmnist.INFO[r["flag"]]["task"]] for r in rows)
    present = {r["flag"]: r["present_sizes"] for r in rows}
    assert present["breastmnist"] == [28] and present["dermamnist"] == []


def test_datasets_info_counts(data_root):
    result = invoke("datasets", "info", "retinamnist", "--data-root", data_root, "--json")
    info = json.loads(result.stdout)
    assert info["counts"]["train"] == {"n": 40, "per_class": [8, 8, 8, 8, 8]}
    assert info["labels"][0] == medmnist.INFO["retinamnist"]["label"]["0"]
    table = invoke("datasets", "info", "retinamnist", "--data-root", data_root)
    assert table.exit_code == 0 and "train (40)" in table.stdout


@needs_shared_data
def test_datasets_info_real_breastmnist():
    info = json.loads(invoke("datasets", "info", "breastmnist", "--data-root", SHARED_DATA, "--json").stdout)
    assert {s: c["n"] for s, c in info["counts"].items()} == {"train": 546, "val": 78, "test": 156}


def _evaluate_matches_medmnist(root, flag, tmp_path, k):
    labels = load_split(flag, "test", 28, root).labels.numpy()
    rng = np.random.default_rng(0)
    scores = np.round(rng.random((len(labels), k)), 1)  # rounding makes ties
    if flag != "chestmnist":
        scores = scores / scores.sum(1, keepdims=True).clip(1e-9)
    path = tmp_path / f"{flag}.npy"
    np.save(path, scores)
    result = invoke("evaluate", flag, "--scores", path, "--data-root", root, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    task = medmnist.INFO[flag]["task"]
    assert abs(out["auc"] - getAUC(labels, scores, task)) < 1e-9
    assert abs(out["acc"] - getACC(labels, scores, task)) < 1e-9
    assert out["n"] == len(labels) and len(out["per_class"]) == k
    assert out["auc_ci"][0] <= out["auc"] <= out["auc_ci"][1]


@pytest.mark.parametrize("flag,k", [("breastmnist", 2), ("retinamnist", 5), ("chestmnist", 14),
                                    ("pathmnist", 9), ("vesselmnist3d", 2)])
def test_evaluate_matches_medmnist_synthetic(data_root, tmp_path, flag, k):
    _evaluate_matches_medmnist(data_root, flag, tmp_path, k)


@needs_shared_data
@pytest.mark.parametrize("flag,k", [("breastmnist", 2), ("retinamnist", 5), ("vesselmnist3d", 2)])
def test_evaluate_matches_medmnist_real(tmp_path, flag, k):
    _evaluate_matches_medmnist(SHARED_DATA, flag, tmp_path, k)


def test_evaluate_record_writes_a_run(data_root, tmp_path, runs_dir):
    np.save(tmp_path / "s.npy", np.full((20, 2), 0.5))
    result = invoke("evaluate", "breastmnist", "--scores", tmp_path / "s.npy", "--data-root", data_root,
                    "--record", "--runs-dir", runs_dir, "--json")
    run_dir = json.loads(result.stdout)["run_dir"]
    assert (runs_dir / run_dir.split("/")[-1] / "record.json").is_file()


@pytest.mark.parametrize("scores,needle", [
    (np.full((19, 2), 0.5), "20"),              # wrong N
    (np.full((20, 3), 0.3), "malignant"),       # wrong K names the classes
    (np.array([[np.nan, 1.0]] * 20), "NaN"),
])
def test_evaluate_bad_scores_one_line_exit_2(data_root, tmp_path, scores, needle):
    np.save(tmp_path / "bad.npy", scores)
    result = invoke("evaluate", "breastmnist", "--scores", tmp_path / "bad.npy", "--data-root", data_root)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) <= 2


@pytest.mark.parametrize("args,needle", [
    (["datasets", "info", "breastmnst"], "Did you mean breastmnist"),
    (["datasets", "info", "vesselmnist3d", "--size", "224"], "28, 64"),
    (["evaluate", "breastmnist", "--scores", "nope.npy"], "not found"),
])
def test_bad_input_exit_2(data_root, args, needle):
    result = invoke(*args, "--data-root", data_root)
    assert result.exit_code == 2 and needle in result.stderr and "Traceback" not in result.output


def test_unwritable_runs_dir(data_root, tmp_path):
    np.save(tmp_path / "s.npy", np.full((20, 2), 0.5))
    (tmp_path / "blocker").write_text("x")
    result = invoke("evaluate", "breastmnist", "--scores", tmp_path / "s.npy", "--data-root", data_root,
                    "--record", "--runs-dir", tmp_path / "blocker" / "runs")
    assert result.exit_code == 2 and "cannot be made:" in result.stderr and "is a file, not a folder" in result.stderr
