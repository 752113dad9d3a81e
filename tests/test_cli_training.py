"""The training commands: `vlm train --json`, its one-line errors, `vlm models`."""

from __future__ import annotations

import json
from pathlib import Path


def test_cli_train_json(data_root, runs_dir):
    from typer.testing import CliRunner

    from cli import app

    res = CliRunner().invoke(app, ["train", "breastmnist", "--model", "small-cnn", "--epochs", "1", "--batch-size",
                                   "16", "--bootstrap", "20", "--device", "cpu", "--data-root", str(data_root),
                                   "--runs-dir", str(runs_dir), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    for key in ("auc", "acc", "auc_ci", "acc_ci", "best_epoch", "epochs_run", "seconds", "run_dir"):
        assert key in out
    assert out["epochs_run"] == 1 and Path(out["run_dir"]).is_dir()
    bad = CliRunner().invoke(app, ["train", "chestmnist", "--model", "small-cnn", "--loss", "ce", "--batch-size", "8",
                                   "--data-root", str(data_root), "--runs-dir", str(runs_dir)])
    assert bad.exit_code == 2 and "--loss bce" in bad.output
    listed = CliRunner().invoke(app, ["models", "--json"])
    assert listed.exit_code == 0 and any(m["name"] == "slices:" for m in json.loads(listed.stdout)["models"])
