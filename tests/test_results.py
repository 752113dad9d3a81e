"""Run records: atomic, never overwritten, readable back."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from vlm.errors import VlmError
from vlm.files import atomic_write_text
from vlm.results import RunRecord, load_run, load_runs, load_scores, new_run_dir, save_run


def _record(**kw) -> RunRecord:
    base = dict(method="train", model="small-cnn", dataset="breastmnist", size=28, split="test",
                metrics={"auc": 0.9, "acc": 0.8}, seed=1)
    return RunRecord(**{**base, **kw})


def test_save_and_load_round_trip(tmp_path):
    scores = np.random.default_rng(0).random((5, 2))
    folder = save_run(_record(), scores, tmp_path)
    record = load_run(folder)
    assert record.metrics == {"auc": 0.9, "acc": 0.8} and record.run_id == folder.name
    assert "torch" in record.versions and record.seed == 1
    assert np.array_equal(load_scores(record), scores)


def test_runs_never_overwrite(tmp_path):
    a = save_run(_record(), None, tmp_path)
    b = save_run(_record(), None, tmp_path)
    assert a != b and len(load_runs(tmp_path)) == 2
    assert len({new_run_dir(tmp_path, "x") for _ in range(5)}) == 5


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    atomic_write_text(path, "old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(VlmError, match="Cannot write .*r.json: disk full"):  # a full disk is a one-line error
        atomic_write_text(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_unwritable_runs_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(VlmError, match="Cannot create a run folder"):
        save_run(_record(), None, blocker / "runs")


def test_corrupt_record_is_skipped_by_load_runs(tmp_path):
    save_run(_record(), None, tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "record.json").write_text("{oops")
    assert len(load_runs(tmp_path)) == 1
    with pytest.raises(VlmError, match="not valid JSON"):
        load_run(bad)
    assert json.loads((tmp_path / load_runs(tmp_path)[0].run_id / "record.json").read_text())["status"] == "finished"
