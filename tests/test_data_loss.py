"""Damaged run folders never cost a user data (issue 13): `--resume` refuses a missing, truncated, changed
or misplaced last.pt, a missing best.safetensors and an incomplete spec.json, naming the file and what to do,
and leaves the folder as it was; SIGTERM keeps a resumable state and the resumed run ends identical; failed
runs leave no folders; stale temp files are cleaned; files get the user's umask."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from vlm.errors import VlmError
from vlm.experiments import JOB_KEY, finished_jobs
from vlm.files import atomic_write_text, clean_stale_temp, file_mode
from vlm.methods import resume
from vlm.scoring import record_tags
from vlm.training import BEST_FILE, EPOCHS_FILE, LAST_FILE, SPEC_FILE, TrainConfig, fit, train
from vlm.training.checkpoint import read_last

REPO = Path(__file__).resolve().parents[1]
TINY = dict(batch_size=16, eval_batch_size=64, n_bootstrap=20, device="cpu")


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def paused(data_root, runs_dir) -> Path:
    """A small-cnn run paused after epoch 1 of 3 (spec.json, best.safetensors, last.pt, epochs.jsonl)."""
    part = train("breastmnist", "small-cnn", config=TrainConfig(epochs=3, **TINY), data_root=data_root,
                 runs_dir=runs_dir, max_epochs_this_call=1)
    return part.run_dir


def _flip_byte(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x40
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("damage,needle", [
    (lambda d: (d / LAST_FILE).unlink(), r"last.pt is missing, but .* holds epochs.jsonl and best.safetensors"),
    (lambda d: _flip_byte(d / LAST_FILE), "last.pt is corrupt: its checksum does not match"),
    (lambda d: (d / LAST_FILE).write_bytes((d / LAST_FILE).read_bytes()[:5000]), "last.pt is corrupt"),
    (lambda d: (d / LAST_FILE).write_bytes(b""), r"last.pt is not a last.pt of this tool \(empty\)"),
    (lambda d: ((d / LAST_FILE).unlink(), (d / LAST_FILE).mkdir()), "last.pt is a folder, not a checkpoint file"),
    (lambda d: (d / BEST_FILE).unlink(), r"best.safetensors \(the weights of best epoch 1\) is missing"),
    (lambda d: (d / SPEC_FILE).write_text(json.dumps({k: v for k, v in json.loads((d / SPEC_FILE).read_text())
                                                      .items() if k != "model"})), r"spec.json: model: is required"),
])
def test_resume_of_a_damaged_folder_stops_and_changes_nothing(paused, damage, needle):
    damage(paused)
    before = _digests(paused)
    with pytest.raises(VlmError, match=needle) as info:
        resume(paused)
    assert "without --resume" in str(info.value) or "put it back" in str(info.value)
    assert _digests(paused) == before  # nothing overwritten, nothing started over
    result = CliRunner().invoke(app, ["train", "--resume", str(paused)])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert _digests(paused) == before


def test_a_changed_best_checkpoint_is_refused_when_the_test_split_is_scored(paused):
    _flip_byte(paused / BEST_FILE)
    with pytest.raises(VlmError, match="best.safetensors is corrupt: its checksum does not match"):
        resume(paused)


def test_checkpoints_carry_checksums(paused):
    blob = (paused / LAST_FILE).read_bytes()
    assert blob.startswith(b"VLMCKPT1") and hashlib.sha256(blob[40:]).digest() == blob[8:40]
    assert read_last(paused / LAST_FILE)["state"]["epoch"] == 1
    from safetensors import safe_open

    with safe_open(str(paused / BEST_FILE), "pt") as f:
        assert len(f.metadata()["vlm_sha256"]) == 64


class _Nan(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(28 * 28 * 3, 2)

    def forward(self, x):
        return self.fc(x.flatten(1)) * float("nan")


def test_a_run_that_fails_before_its_first_epoch_leaves_no_folder(data_root, runs_dir):
    from vlm.data import load_splits
    from vlm.tasks import get_task

    splits = load_splits(get_task("breastmnist"), 28, data_root)
    with pytest.raises(VlmError, match="non-finite"):
        fit(_Nan(), *splits, TrainConfig(epochs=2, **TINY), model_name="nan", runs_dir=runs_dir,
            spec={"entry": "train"})
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


_SIGTERM_SCRIPT = """
import sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from vlm.training import TrainConfig, TrainingInterrupted, train
marker = Path(sys.argv[3])

def slow(event):
    if event.stage == "batch":
        if event.epoch == 2:
            marker.touch()
        time.sleep(0.2)

try:
    train("breastmnist", "small-cnn", config=TrainConfig(epochs=3, batch_size=16, eval_batch_size=64,
          n_bootstrap=20, device="cpu"), data_root=sys.argv[1], runs_dir=sys.argv[2], progress=slow)
except TrainingInterrupted as exc:
    print(exc)
    sys.exit(exc.exit_code)
"""


def test_sigterm_mid_epoch_keeps_a_resumable_state_and_the_resumed_run_ends_identical(data_root, tmp_path):
    marker = tmp_path / "in-epoch-2"
    proc = subprocess.Popen([sys.executable, "-c", _SIGTERM_SCRIPT, str(data_root), str(tmp_path / "b"),
                             str(marker)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, errors = proc.communicate(timeout=120)
    assert proc.returncode == 143, errors
    (folder,) = (tmp_path / "b").iterdir()
    assert f"Interrupted during epoch 2 of 3 (last.pt holds epoch 1). Continue with: vlm train --resume {folder}" in out
    assert read_last(folder / LAST_FILE)["state"]["epoch"] == 1 and not list(folder.glob(".*.tmp"))
    done = resume(folder)
    full = train("breastmnist", "small-cnn", config=TrainConfig(epochs=3, **TINY), data_root=data_root,
                 runs_dir=tmp_path / "a")
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert done.finished and strip(done.history) == strip(full.history)
    assert done.metrics.to_dict() == full.metrics.to_dict()
    assert len((folder / EPOCHS_FILE).read_text().splitlines()) == 3


def test_a_job_resumed_by_hand_counts_as_its_job(data_root, runs_dir):
    with record_tags(**{JOB_KEY: "job-1", "experiment_method": "cnn"}):
        part = train("breastmnist", "small-cnn", config=TrainConfig(epochs=2, **TINY), data_root=data_root,
                     runs_dir=runs_dir, max_epochs_this_call=1)
    assert json.loads((part.run_dir / SPEC_FILE).read_text())["tags"][JOB_KEY] == "job-1"
    resume(part.run_dir)  # by hand: `vlm train --resume FOLDER`, no experiment around it
    assert set(finished_jobs(runs_dir)) == {"job-1"}


def test_stale_temp_files_are_cleaned_on_the_next_write(tmp_path):
    live = tmp_path / f".last.pt.{_host()}-{os.getpid()}.abcd.tmp"
    dead = tmp_path / f".last.pt.{_host()}-999999999.abcd.tmp"
    old = tmp_path / ".best.safetensors.k2j3h4.tmp"  # written before temp names carried their writer
    for p in (live, dead, old):
        p.write_bytes(b"x" * 100)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    atomic_write_text(tmp_path / "epochs.jsonl", "{}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["epochs.jsonl", live.name])
    assert clean_stale_temp(tmp_path) == []


def _host() -> str:
    from vlm.files import _HOST_TAG

    return _HOST_TAG


def test_files_get_the_users_umask(tmp_path):
    path = atomic_write_text(tmp_path / "r.json", "{}")
    assert path.stat().st_mode & 0o777 == file_mode() == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_compare_skips_bad_records_with_one_warning_line_each(tmp_path):
    from vlm.results import RunRecord, save_run

    good = RunRecord("train", "small-cnn", "breastmnist", 28, "test", {"auc": 0.9, "acc": 0.8, "n": 10})
    save_run(good, None, tmp_path)
    bad = {"missing": {"method": "x", "dataset": "breastmnist"},
           "types": {**good.to_dict(), "size": "big"},
           "future": {**good.to_dict(), "schema_version": 7},
           "foreign": {"colour": "red"}}
    for name, data in bad.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "record.json").write_text(json.dumps(data))
    result = CliRunner().invoke(app, ["compare", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("warning: skipped ") for line in lines)
    assert any("size: input should be a valid integer (got 'big')" in line for line in lines)
    assert any("schema version 7" in line for line in lines) and any("not a medvlm run record" in line
                                                                     for line in lines)
    assert len(json.loads(result.stdout)["rows"]) == 1


def test_pair_over_pickled_scores_is_a_one_line_error(tmp_path):
    import numpy as np

    from vlm.results import RunRecord, save_run

    runs = [save_run(RunRecord("train", m, "breastmnist", 28, "test", {"auc": 0.9, "acc": 0.8}),
                     np.full((20, 2), 0.5, dtype=np.float32), tmp_path) for m in ("a", "b")]
    np.save(runs[1] / "scores.npy", np.array([{"x": 1}] * 20, dtype=object), allow_pickle=True)
    result = CliRunner().invoke(app, ["compare", str(tmp_path), "--pair", runs[0].name, runs[1].name])
    assert result.exit_code == 2 and "pickled Python objects" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_ctrl_c_in_an_experiment_then_run_again_resumes_its_folder(data_root, tmp_path, monkeypatch):
    """Claims keep the interrupted job's run folder: `vlm run` continues it rather than starting anew."""
    exp = tmp_path / "exp.yaml"
    exp.write_text(textwrap.dedent(f"""\
        name: t
        datasets: [breastmnist]
        device: cpu
        data_root: {data_root}
        methods:
          - {{name: cnn, kind: train, model: small-cnn, options: {{epochs: 2, batch_size: 16, n_bootstrap: 0}}}}
        """))
    from vlm.experiments import load_experiment
    from vlm.worker import Session, work

    job = load_experiment(exp).jobs()[0]
    session = Session(runs_dir=str(tmp_path / "runs"), jobs=[job], data_root=str(data_root), device="cpu")
    import vlm.training.loop as loop

    original = loop._run_epoch

    def interrupt_second(t, loggers):
        if t.state.epoch == 1:
            raise KeyboardInterrupt
        original(t, loggers)

    monkeypatch.setattr(loop, "_run_epoch", interrupt_second)
    with pytest.raises(VlmError, match="Interrupted during epoch 2 of 2"):
        work(session, capture=False)
    monkeypatch.setattr(loop, "_run_epoch", original)
    (folder,) = [p for p in (tmp_path / "runs").iterdir() if p.name[0].isdigit()]
    result = CliRunner().invoke(app, ["run", str(exp), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert [p for p in (tmp_path / "runs").iterdir() if p.name[0].isdigit()] == [folder]
    assert (folder / "record.json").is_file() and set(finished_jobs(tmp_path / "runs")) == {job.key}


# ----------------------------------------------------------------------------- verified caches, --save-scores
def _rewrite_entry(path: Path, change) -> None:
    """Rewrite a cache entry's embeddings with `change(tensor)`, keeping its metadata (key and checksum)."""
    from safetensors.torch import save

    from vlm.embeddings import read_entry

    emb, meta = read_entry(path)
    path.write_bytes(save({"embeddings": change(emb).contiguous()}, metadata=meta))


def test_a_tampered_image_cache_entry_is_detected_and_encoded_again(tmp_path):
    from fixtures.inputs import random_split
    from fixtures.tiny_models import FakeEncoder
    from vlm.embeddings import image_embeddings

    split, enc = random_split("breastmnist", 12), FakeEncoder()
    first, _ = image_embeddings(enc, split, cache_dir=tmp_path)
    entry = next(tmp_path.glob("*.safetensors"))
    _rewrite_entry(entry, lambda e: e.flip(0))  # the test embeddings' rows reversed on disk
    with pytest.warns(UserWarning, match="discarded: its checksum does not match its contents"):
        again, encoded = image_embeddings(enc, split, cache_dir=tmp_path)
    assert encoded == 12 and torch.allclose(again, first)
    hit, encoded = image_embeddings(enc, split, cache_dir=tmp_path)  # the re-encoded entry is trusted
    assert encoded == 0 and torch.allclose(hit, first)


def test_an_entry_under_another_key_is_refused(tmp_path):
    from fixtures.inputs import random_split
    from fixtures.tiny_models import FakeEncoder
    from vlm.embeddings import cache_key, cache_path, image_embeddings

    enc, a, b = FakeEncoder(), random_split("breastmnist", 12, seed=0), random_split("breastmnist", 12, seed=1)
    image_embeddings(enc, a, cache_dir=tmp_path)
    cache_path(cache_key(enc, a), tmp_path).rename(cache_path(cache_key(enc, b), tmp_path))  # b's name, a's rows
    with pytest.warns(UserWarning, match="its stored key differs"):
        _, encoded = image_embeddings(enc, b, cache_dir=tmp_path)
    assert encoded == 12


def test_save_scores_refuses_an_existing_file_unless_forced(tiny_oc_weights, data_root, tmp_path):
    import numpy as np

    name, weights = tiny_oc_weights
    kept = tmp_path / "scores.npy"
    np.save(kept, np.arange(3.0))
    base = ["zero-shot", "breastmnist", "--model", name, "--weights", str(weights), "--style", "clip",
            "--data-root", str(data_root), "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "c"),
            "--bootstrap", "0", "--device", "cpu", "--save-scores", str(kept)]
    refused = CliRunner().invoke(app, base)
    assert refused.exit_code == 2 and "exists: pass --force to overwrite it" in refused.stderr
    assert np.array_equal(np.load(kept), np.arange(3.0)) and not (tmp_path / "runs").exists()
    under_a_file = CliRunner().invoke(app, base[:-1] + [str(kept / "s.npy")])
    assert under_a_file.exit_code == 2 and "is a file, not a folder" in under_a_file.stderr
    forced = CliRunner().invoke(app, base + ["--force"])
    assert forced.exit_code == 0, forced.output
    assert np.load(kept).shape == (20, 2)
