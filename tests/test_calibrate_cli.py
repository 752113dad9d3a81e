"""Calibration in the CLI and the records: logits saved beside scores, `--calibrate temperature`, `vlm calibrate`,
ECE/Brier in `vlm evaluate` and `vlm compare --metrics`, the reliability diagram."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli import app
from conftest import write_synthetic
from fixtures.tiny_models import FakeEncoder
from vlm.calibrate import temperature_scaling
from vlm.errors import VlmError
from vlm.results import load_run
from vlm.tasks import get_task
from vlm.zeroshot import run_zero_shot, zero_shot_logits, zero_shot_scores

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`vlm train --calibrate temperature --json` of a small-cnn for one epoch on synthetic breastmnist."""
    root = tmp_path_factory.mktemp("calib")
    write_synthetic(root, "breastmnist")
    result = invoke("train", "breastmnist", "--model", "small-cnn", "--epochs", "1", "--batch-size", "16",
                    "--bootstrap", "50", "--data-root", root, "--runs-dir", root / "runs", "--calibrate",
                    "temperature", "--json")
    assert result.exit_code == 0, result.output
    return root, json.loads(result.stdout)


def test_train_keeps_logits_and_records_raw_and_calibrated_metrics(trained):
    root, data = trained
    run = Path(data["run_dir"])
    scores, logits, val = (np.load(run / f) for f in ("scores.npy", "logits.npy", "val_logits.npy"))
    assert logits.shape == scores.shape == (20, 2) and val.shape == (12, 2)
    assert np.allclose(torch.from_numpy(logits).softmax(1).numpy(), scores, atol=1e-6)
    record = load_run(run)
    cal = record.calibrated
    assert cal == data["calibrated"] and cal["method"] == "temperature" and cal["fit_split"] == "val"
    assert 1e-3 <= cal["temperature"] <= 1e3 and cal["val_nll"][1] <= cal["val_nll"][0] + 1e-12
    assert cal["metrics"]["acc"] == record.metrics["acc"]  # T > 0 keeps every prediction
    assert cal["metrics"]["ece_ci"] is not None and cal["metrics"]["n_bootstrap"] == 50
    assert record.metrics["ece"] is not None  # the raw metrics stay


def test_calibrate_command_is_deterministic_and_refuses_runs_without_logits(trained, tmp_path):
    root, data = trained
    again = invoke("calibrate", data["run_dir"], "--data-root", root, "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["calibrated"] == data["calibrated"]
    table = invoke("calibrate", Path(data["run_dir"]).name, "--runs-dir", root / "runs", "--data-root", root)
    assert table.exit_code == 0 and "ECE raw" in table.stdout and "temperature scaling" in table.stdout
    scores = tmp_path / "s.npy"
    np.save(scores, np.load(Path(data["run_dir"]) / "scores.npy"))
    scored = invoke("evaluate", "breastmnist", "--scores", scores, "--data-root", root, "--record", "--runs-dir",
                    tmp_path / "runs", "--json")
    assert scored.exit_code == 0 and {"ece", "brier", "ece_ci"} <= set(json.loads(scored.stdout))
    refused = invoke("calibrate", json.loads(scored.stdout)["run_dir"], "--data-root", root)
    assert refused.exit_code == 2 and "no logits.npy or val_logits.npy" in refused.output
    assert "`vlm evaluate`" in refused.output and len(refused.output.strip().splitlines()) <= 3
    bad = invoke("calibrate", data["run_dir"], "--method", "platt")
    assert bad.exit_code == 2 and "Unknown calibration 'platt'" in bad.output
    shown = invoke("evaluate", "breastmnist", "--scores", scores, "--data-root", root)
    assert shown.exit_code == 0 and "ECE" in shown.stdout and "Brier" in shown.stdout


def test_zero_shot_calibrate_fits_on_val_and_logits_match_scores(tmp_path):
    write_synthetic(tmp_path, "breastmnist", separable=True)
    kw = dict(data_root=tmp_path, runs_dir=tmp_path / "runs", cache_dir=tmp_path / "emb", n_bootstrap=20)
    result = run_zero_shot("breastmnist", "fake", styles="clip", encoder=FakeEncoder(), calibrate="temperature",
                           **kw)[0]
    run = Path(result["run_dir"])
    assert np.load(run / "val_logits.npy").shape == (12, 2) and load_run(run).calibrated == result["calibrated"]
    logits = torch.from_numpy(np.load(run / "logits.npy"))
    assert np.allclose(logits.softmax(1).numpy(), np.load(run / "scores.npy"), atol=1e-6)
    with pytest.raises(VlmError, match="--split val cannot be calibrated"):
        run_zero_shot("breastmnist", "fake", split="val", encoder=FakeEncoder(), calibrate="temperature", **kw)
    plain = run_zero_shot("breastmnist", "fake", styles="clip", encoder=FakeEncoder(), **kw)[0]
    refused = invoke("calibrate", plain["run_dir"], "--data-root", tmp_path)
    assert refused.exit_code == 2 and "--calibrate temperature" in refused.output


def test_multi_label_zero_shot_logits_are_the_pair_difference():
    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(7, 5), dim=-1)
    pairs = torch.nn.functional.normalize(torch.randn(5, 3, 2), dim=0)
    assert torch.allclose(zero_shot_logits(emb, pairs, 30.0, "multi-label").sigmoid(),
                          zero_shot_scores(emb, pairs, 30.0, "multi-label"), atol=1e-6)
    w = pairs[:, :, 0]
    assert torch.allclose(zero_shot_logits(emb, w, 30.0).softmax(1), zero_shot_scores(emb, w, 30.0), atol=1e-6)


def test_temperature_scaling_cools_over_confident_logits():
    task = get_task("pathmnist")
    rng = np.random.default_rng(0)
    z = torch.from_numpy(rng.normal(size=(4000, task.num_classes)) * 1.5)
    y = torch.multinomial(z.softmax(1), 1)
    block = temperature_scaling(task, 3 * z[:2000], y[:2000], 3 * z[2000:], y[2000:], n_bootstrap=0)
    assert block["temperature"] == pytest.approx(3.0, rel=0.15)
    raw = temperature_scaling(task, z[:2000], y[:2000], 3 * z[2000:], y[2000:], n_bootstrap=0)["metrics"]
    assert block["metrics"]["ece"] < 0.05 < 0.15 < raw["ece"]


def test_compare_metrics_star_the_lowest_calibration_error(trained, tmp_path):
    root, data = trained
    result = invoke("compare", root / "runs", "--metrics", "auc,ece,brier", "--format", "csv")
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0].split(",")
    assert {"ece", "ece_lo", "brier_std", "best_ece", "best_brier"} <= set(header)
    md = invoke("compare", root / "runs", "--metrics", "ece,brier", "--format", "markdown")
    assert "test ECE" in md.stdout and "lowest ECE/Brier" in md.stdout
    from vlm.compare import comparison_table
    from vlm.results import RunRecord

    def rec(run_id: str, ece: float) -> RunRecord:
        return RunRecord(method="scores", model=run_id, dataset="breastmnist", size=28, split="test", run_id=run_id,
                         metrics={"auc": 0.8, "acc": 0.7, "ece": ece, "brier": ece, "nll": ece, "n": 20})
    table = comparison_table([rec("a", 0.1), rec("b", 0.3)])
    best = {r.model: table.cell(r, table.columns[0]).best_ece for r in table.rows}
    assert best == {"a": True, "b": False}
    bad = invoke("compare", root / "runs", "--metrics", "auc,f1")
    assert bad.exit_code == 2 and "Unknown --metrics f1" in bad.output


def test_plot_reliability_of_a_run_and_of_a_scores_file(trained, tmp_path):
    root, data = trained
    for suffix in ("png", "svg"):
        out = tmp_path / f"rel.{suffix}"
        result = invoke("plot", "reliability", data["run_dir"], "--data-root", root, "--out", out)
        assert result.exit_code == 0, result.output
        assert out.stat().st_size > 1000
    scores = Path(data["run_dir"]) / "scores.npy"
    ok = invoke("plot", "reliability", scores, "--dataset", "breastmnist", "--data-root", root, "--out",
                tmp_path / "s.png")
    assert ok.exit_code == 0, ok.output
    missing = invoke("plot", "reliability", scores, "--data-root", root, "--out", tmp_path / "t.png")
    assert missing.exit_code == 2 and "pass --dataset" in missing.output
