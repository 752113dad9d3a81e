"""`vlm prompts compare --watch`: re-ranking on every save, one error line for a bad edit, Ctrl-C exits 0.

The watch loop takes its change events as an iterable, so the tests drive it with a generator that edits
the file and yields; one test runs the real watchfiles iterator, stopped by an event (no sleeps to tune).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vlm.watch import prompt_changes, watch_rankings
from vlm.zeroshot import prompt_ranker

from conftest import write_synthetic
from fixtures.tiny_models import FakeEncoder, write_tiny_open_clip_dir


def write_prompts(path: Path, templates: list[str]) -> Path:
    path.write_text(json.dumps({"dataset": "breastmnist", "classes": ["malignant", "normal, benign"],
                                "styles": {"plain": {"templates": templates}}}))
    return path


BAD = "dataset: breastmnist\nclasses: [malignant, 'normal, benign']\nstyles: {plain: {templates: ['no label']}}\n"


def edits(path: Path):
    """A good edit (2 templates), a bad one (a template without {label}), a good one again."""
    write_prompts(path, ["{label}", "an ultrasound of {label}."])
    yield {path}
    path.write_text(BAD)
    yield {path}
    write_prompts(path, ["{label}", "a scan of {label}.", "a sonogram of {label}."])
    yield {path}


def test_watch_ranks_again_after_each_save_and_reports_a_bad_edit(tmp_path):
    write_synthetic(tmp_path, "breastmnist")
    a = write_prompts(tmp_path / "A.yaml", ["a photo of {label}."])
    ranker = prompt_ranker("breastmnist", "fake", data_root=tmp_path, cache_dir=tmp_path / "cache", n_bootstrap=0,
                           encoder=FakeEncoder())
    rankings, errors = [], []
    shown = watch_rankings(ranker, [a], rankings.append, errors.append, changes=edits(a))
    assert shown == 3 and [r[0]["n_prompts"] for r in rankings] == [2, 4, 6]
    assert len(errors) == 1 and "A.yaml" in str(errors[0]) and "{label}" in str(errors[0])
    assert "\n" not in str(errors[0])


def test_ctrl_c_ends_the_watch_quietly(tmp_path):
    write_synthetic(tmp_path, "breastmnist")
    a = write_prompts(tmp_path / "A.yaml", ["a photo of {label}."])
    ranker = prompt_ranker("breastmnist", "fake", data_root=tmp_path, n_bootstrap=0, encoder=FakeEncoder())

    def interrupted():
        yield {a}
        raise KeyboardInterrupt

    assert watch_rankings(ranker, [a], lambda rows: None, pytest.fail, changes=interrupted()) == 2


def test_cli_watch_prints_two_rankings_and_one_error_line_then_exits_0(tmp_path, monkeypatch):
    import vlm.watch
    from cli import app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_synthetic(tmp_path, "breastmnist")
    model = write_tiny_open_clip_dir(tmp_path / "tiny")
    a = write_prompts(tmp_path / "A.yaml", ["a photo of {label}."])

    def changes(files, stop_event=None):
        write_prompts(a, ["{label}", "an ultrasound of {label}."])
        yield {a}
        a.write_text(BAD)
        yield {a}
        raise KeyboardInterrupt

    monkeypatch.setattr(vlm.watch, "prompt_changes", changes)
    result = CliRunner().invoke(app, ["prompts", "compare", "breastmnist", "--model", f"local-dir:{model}",
                                      "--prompts", str(a), "--watch", "--data-root", str(tmp_path), "--cache-dir",
                                      str(tmp_path / "cache"), "--bootstrap", "0"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert result.stdout.count("ranked by AUC") == 2 and "watching A.yaml" in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "A.yaml" in errors[0]


def test_prompt_changes_sees_a_rename_save_and_stops_on_its_event(tmp_path):
    a = write_prompts(tmp_path / "A.yaml", ["{label}"])
    write_prompts(tmp_path / "other.yaml", ["{label}"])
    stop, seen = threading.Event(), threading.Event()

    def editor() -> None:  # saves like sed -i (new file renamed over the old), until the watcher saw it
        for i in range(200):
            if seen.wait(0.1):
                break
            (tmp_path / "other.yaml").write_text(f"# {i}\n")
            tmp = tmp_path / ".A.yaml.tmp"
            write_prompts(tmp, ["{label}", f"edit {i} of {{label}}"])
            tmp.replace(a)
        stop.set()

    thread = threading.Thread(target=editor, daemon=True)
    thread.start()
    got = []
    for changed in prompt_changes([a], stop_event=stop):
        got.append(changed)
        seen.set()
    thread.join(timeout=30)
    assert got and all(changed == {a.resolve()} for changed in got)
