"""Every numeric option is checked against its range (`vlm.ranges`) before any work: one stderr line, exit 2,
no run folder; usage errors (a word where a number goes, an unknown option) are one line too."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli import app
from vlm.errors import VlmError
from vlm.ranges import RANGES, check_option
from vlm.tasks import get_task
from vlm.training import TrainConfig

TRAIN = ["train", "breastmnist", "--model", "small-cnn", "--device", "cpu"]


@pytest.mark.parametrize("args,needle", [
    (TRAIN + ["--epochs", "0"], "--epochs must be a whole number of at least 1, got 0"),
    (TRAIN + ["--batch-size", "0"], "--batch-size must be a whole number of at least 1"),
    (TRAIN + ["--lr", "0"], "--lr must be a finite number above 0"),
    (TRAIN + ["--lr", "nan"], "--lr must be a finite number above 0, got nan"),
    (TRAIN + ["--weight-decay", "-1"], "--weight-decay must be a finite number of at least 0, got -1.0"),
    (TRAIN + ["--gamma", "-0.5"], "--gamma must be a finite number of at least 0"),
    (TRAIN + ["--seed", "-1"], "--seed must be a whole number between 0 and 4294967295"),
    (TRAIN + ["--image-size", "4"], "--image-size must be a whole number between 8 and 1024"),
    (TRAIN + ["--lr-milestones", "5,-1"], "--lr-milestones must be a finite number of at least 0"),
    (TRAIN + ["--epochs", "ten"], "Invalid value for '--epochs'"),
    (TRAIN + ["--no-such-option"], "No such option: --no-such-option"),
    (["evaluate", "breastmnist", "--scores", "s.npy", "--threshold", "2"], "--threshold must be a finite number "
                                                                          "between 0 and 1, got 2.0"),
    (["evaluate", "breastmnist", "--scores", "s.npy", "--threshold", "nan"], "--threshold must be"),
    (["evaluate", "breastmnist", "--scores", "s.npy", "--bootstrap", "-5"], "--bootstrap must be"),
    (["compare", "runs", "--pair", "a", "b", "--threshold", "-0.1"], "--threshold must be"),
    (["finetune", "breastmnist", "--model", "x", "--mode", "knn", "--k", "0"], "--k must be a whole number of at "
                                                                              "least 1"),
    (["zero-shot", "breastmnist", "--model", "x", "--batch-size", "0"], "--batch-size must be"),
    (["zero-shot", "breastmnist", "--model", "x", "--slice-axis", "3"], "--slice-axis must be a whole number "
                                                                         "between 0 and 2"),
])
def test_out_of_range_options_stop_before_any_work(tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [*args, "--runs-dir", str(tmp_path / "runs")] if args[0] != "compare" else args)
    assert result.exit_code == 2, result.output
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("options,needle", [
    ({"epochs": "ten"}, "--epochs must be a whole number of at least 1, got 'ten'"),
    ({"lr": "fast"}, "--lr must be a finite number above 0, got 'fast'"),
    ({"n_bootstrap": -1}, "--bootstrap must be"),
    ({"optimizer": 3}, "--optimizer takes a name, got 3"),
    ({"patience": -2}, "--patience must be"),
    ({"warmup_epochs": 12, "scheduler": "cosine"}, "below --epochs"),
])
def test_train_config_checks_every_option_once(options, needle):
    with pytest.raises(VlmError, match=needle):
        TrainConfig(**options).resolved(get_task("breastmnist"))


def test_ranges_refuse_bools_and_infinities_and_describe_themselves():
    assert check_option("threshold", 0.0) == 0.0 and check_option("threshold", 1) == 1
    for bad in (True, float("inf"), "1", None, 1.5):
        with pytest.raises(VlmError):
            check_option("epochs", bad)
    assert RANGES["threshold"].describe() == "a finite number between 0 and 1"
    assert RANGES["lr"].describe() == "a finite number above 0"
