"""`--log tensorboard|mlflow`: a tiny training run logged to the real packages and read back with their own readers
(TensorBoard's EventAccumulator, MLflow's MlflowClient). Skipped where the `trackers` extra is not installed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from conftest import write_synthetic
from vlm.errors import VlmError
from vlm.methods import resume
from vlm.training import TrainConfig, train
from vlm.training.loggers import check_log, final_metrics, flat_config

runner = CliRunner()
EPOCHS = 3


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_synthetic(tmp_path, "breastmnist", separable=True)
    return tmp_path


@pytest.fixture
def mlflow_env(monkeypatch):
    """No tracking URI or experiment from the environment; MLFLOW_ALLOW_FILE_STORE unset (restored afterwards)."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def cli_train(root: Path, *log: str) -> tuple[Path, dict]:
    args = ["train", "breastmnist", "--model", "small-cnn", "--epochs", str(EPOCHS), "--batch-size", "16",
            "--bootstrap", "50", "--device", "cpu", "--data-root", str(root), "--runs-dir", str(root / "runs"), "--json"]
    for name in log:
        args += ["--log", name]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run_dir = Path(json.loads(result.stdout)["run_dir"])
    return run_dir, json.loads((run_dir / "record.json").read_text())


def epochs_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "epochs.jsonl").read_text().splitlines()]


def test_flat_config_and_final_metrics():
    flat = flat_config({"lr": 0.1, "model": "small-cnn", "milestones": [1, 2], "dist": {"world": 1, "x": None}})
    assert flat == {"lr": "0.1", "model": "small-cnn", "milestones": "[1, 2]", "dist.world": "1", "dist.x": "null"}
    final = final_metrics({"auc": 0.9, "auc_ci": [0.8, 0.95], "acc_ci": None, "n": 20, "seed": 0, "threshold": 0.5,
                           "per_class": [{"auc": 0.9}], "kind": "binary", "ece": None})
    assert final == {"test_auc": 0.9, "test_auc_ci_lo": 0.8, "test_auc_ci_hi": 0.95, "test_n": 20.0}


def test_unknown_or_missing_tracker_is_a_one_line_error(monkeypatch, root):
    import importlib.util

    with pytest.raises(VlmError, match="Unknown logger 'neptune'"):
        check_log(["neptune"])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(VlmError, match=r'--log mlflow needs the mlflow package: pip install "medvlm\[trackers\]"'):
        check_log(["mlflow"])
    result = runner.invoke(app, ["train", "breastmnist", "--model", "small-cnn", "--data-root", str(root),
                                 "--runs-dir", str(root / "runs"), "--log", "mlflow"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "--log mlflow needs" in result.stderr
    assert not (root / "runs").exists()


def test_tensorboard_events_hold_each_epoch_the_config_and_the_test_metrics(root):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, record = cli_train(root, "tensorboard")
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    rows = epochs_rows(run_dir)
    for key in ("train_loss", "val_auc", "val_acc", "lr"):
        logged = events.Scalars(key)
        assert [e.step for e in logged] == list(range(1, EPOCHS + 1))
        assert [e.value for e in logged] == pytest.approx([r[key] for r in rows], rel=1e-6)
    metrics = record["metrics"]
    final = {key: events.Scalars(key)[0] for key in ("test_auc", "test_auc_ci_lo", "test_auc_ci_hi", "test_acc",
                                                      "test_acc_ci_lo", "test_ece", "test_brier")}
    assert {e.step for e in final.values()} == {EPOCHS}
    assert final["test_auc"].value == pytest.approx(metrics["auc"], rel=1e-6)
    assert (final["test_auc_ci_lo"].value, final["test_auc_ci_hi"].value) == pytest.approx(metrics["auc_ci"], rel=1e-6)
    assert final["test_acc_ci_lo"].value == pytest.approx(metrics["acc_ci"][0], rel=1e-6)
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert f"| epochs | {EPOCHS} |" in text and "| model | small-cnn |" in text


def test_mlflow_file_store_holds_params_each_epoch_and_the_test_metrics(root, mlflow_env):
    pytest.importorskip("mlflow")
    import os

    from mlflow.tracking import MlflowClient

    run_dir, record = cli_train(root, "mlflow", "tensorboard")
    store = root / "runs" / "mlruns"
    assert store.is_dir() and os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true"
    client = MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("medvlm")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["vlm.run_id"] == run_dir.name
    assert run.info.run_name == run_dir.name
    rows = epochs_rows(run_dir)
    for key in ("train_loss", "val_auc"):
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(1, EPOCHS + 1))
        assert [m.value for m in history] == pytest.approx([r[key] for r in rows])
    params = run.data.params
    assert params["epochs"] == str(EPOCHS) and params["batch_size"] == "16" and params["model"] == "small-cnn"
    assert params["n_bootstrap"] == "50" and params["dataset"] == "breastmnist" and "distributed.world_size" in params
    metrics = record["metrics"]
    final = run.data.metrics
    assert final["test_auc"] == pytest.approx(metrics["auc"])
    assert (final["test_auc_ci_lo"], final["test_auc_ci_hi"]) == pytest.approx(metrics["auc_ci"])
    assert (final["test_acc_ci_lo"], final["test_acc_ci_hi"]) == pytest.approx(metrics["acc_ci"])
    assert final["test_brier"] == pytest.approx(metrics["brier"]) and final["test_n"] == metrics["n"]
    assert (run_dir / "tensorboard").is_dir()  # both trackers in one run


def test_mlflow_sqlite_run_is_continued_by_resume(root, mlflow_env, monkeypatch):
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("alembic")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "resumed")
    config = TrainConfig(epochs=EPOCHS, batch_size=16, n_bootstrap=20, device="cpu")
    part = train("breastmnist", "small-cnn", config=config, data_root=root, runs_dir=root / "runs", log=["mlflow"],
                 max_epochs_this_call=1)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("resumed").experiment_id
    (paused,) = client.search_runs([experiment])
    assert paused.info.status == "KILLED" and paused.data.metrics["train_loss"] is not None
    assert "test_auc" not in paused.data.metrics
    done = resume(part.run_dir, log=["mlflow"])
    (run,) = client.search_runs([experiment])
    assert run.info.run_id == paused.info.run_id and run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "val_auc")
    assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))
    assert run.data.metrics["test_auc"] == pytest.approx(done.metrics.auc)
    assert not (root / "runs" / "mlruns").exists()  # the URI from the environment, not the default store


def test_linear_probe_sends_its_config_and_test_metrics_without_epochs(root, mlflow_env, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from fixtures.tiny_models import FakeEncoder
    from vlm.finetune import finetune

    result = finetune("breastmnist", "fake", mode="linear-probe", data_root=root, runs_dir=root / "runs",
                      encoder=FakeEncoder(), cache_dir=tmp_path / "cache", log=["mlflow"],
                      config=TrainConfig(n_bootstrap=20, device="cpu"))
    client = MlflowClient(tracking_uri=(root / "runs" / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("medvlm").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["vlm.run_id"] == result.run_dir.name
    assert run.data.params["method"] == "linear-probe" and run.data.params["mode"] == "linear-probe"
    assert float(run.data.params["l2"]) == result.record.config["l2"]  # the L2 strength chosen on val
    assert run.data.metrics["test_auc"] == pytest.approx(result.metrics.auc)
    assert run.data.metrics["test_auc_ci_hi"] == pytest.approx(result.metrics.auc_ci[1])
    assert "train_loss" not in run.data.metrics
