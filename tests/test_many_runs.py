"""Many run records: `load_runs` reads what is there and skips the rest; `vlm compare` needs no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from vlm.results import RunRecord, load_runs, save_run


def test_load_runs_skips_folders_without_a_readable_record(tmp_path):
    first = save_run(RunRecord("train", "small-cnn", "breastmnist", 28, "test", {"auc": 0.9}), None, tmp_path)
    for name, text in (("not-json", "{"), ("a-list", "[1]"), ("no-fields", '{"colour": "red"}'),
                       ("running", json.dumps({**RunRecord("train", "m", "breastmnist", 28, "test", {}).to_dict(),
                                               "status": "running"}))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "record.json").write_text(text)
    (tmp_path / "empty").mkdir()
    (tmp_path / "loose.json").write_text("{}")
    skipped: list[str] = []
    records = load_runs(tmp_path, skipped=skipped)
    assert [r.path for r in records] == [str(first)]
    assert [note.split(" ")[0].rstrip(":") for note in skipped] == [str(tmp_path / n / "record.json")
                                                                    for n in ("a-list", "no-fields", "not-json")]
    assert [r.path for r in load_runs(tmp_path, status="running")] == [str(tmp_path / "running")]


def test_compare_path_does_not_import_torch():
    """`medmnist.INFO` is read without medmnist's datasets and evaluator (torch, scikit-learn): seconds
    of start-up that `vlm compare` over thousands of runs cannot afford."""
    code = ("import sys; from vlm.compare import comparison_table; from vlm.tasks import all_tasks; "
            "assert len(all_tasks()) == 18; print(sorted({'torch', 'sklearn'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"
