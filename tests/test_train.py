"""The training loop: LR schedules, checkpoints, resume, precision, errors and a real run.

Losses, samplers, augmentation and the `vlm train` command have their own files (test_losses.py,
test_sampling.py, test_augment.py, test_cli_training.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file

from conftest import SHARED_DATA, needs_shared_data
from vlm.data import load_split
from vlm.errors import VlmError
from vlm.evaluate import evaluate
from vlm.methods import resume
from vlm.preprocess import medmnist_preprocess
from vlm.tasks import get_task
from vlm.training.checkpoint import read_last
from vlm.training import (
    BEST_FILE, EPOCHS_FILE, LAST_FILE, InputPipeline, TrainConfig, TrainingInterrupted, batch_starts, fit, lr_factor,
    predict, train,
)


TINY = dict(batch_size=16, eval_batch_size=64, n_bootstrap=50, device="cpu")


# ----------------------------------------------------------------------------- schedules
def test_multistep_matches_medmnist_milestones():
    c = TrainConfig(epochs=100).resolved(get_task("breastmnist"))
    assert [lr_factor(c, e * 10, 10) for e in (0, 49, 50, 74, 75, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cos = TrainConfig(epochs=4, scheduler="cosine", warmup_epochs=1).resolved(get_task("breastmnist"))
    assert lr_factor(cos, 0, 10) == pytest.approx(0.1) and lr_factor(cos, 9, 10) == pytest.approx(1.0)
    assert lr_factor(cos, 39, 10) < 0.01
    assert batch_starts(33, 16) == [0, 16]  # a trailing batch of one is dropped
    assert batch_starts(34, 16) == [0, 16, 32]


# ----------------------------------------------------------------------------- the loop
def _files(run_dir: Path):
    return load_file(str(run_dir / BEST_FILE)), read_last(run_dir / LAST_FILE)


def test_resumed_run_ends_identical(data_root, runs_dir):
    config = TrainConfig(epochs=3, augment=True, sampler="balanced", **TINY)
    full = train("breastmnist", "small-cnn", config=config, data_root=data_root, runs_dir=runs_dir / "a")
    part = train("breastmnist", "small-cnn", config=config, data_root=data_root, runs_dir=runs_dir / "b",
                 max_epochs_this_call=1)
    assert not part.finished and part.epochs_run == 1 and part.record is None
    assert not (part.run_dir / "record.json").exists()
    with pytest.raises(VlmError, match="--lr 0.5"):
        resume(part.run_dir, overrides={"lr": 0.5})
    done = resume(part.run_dir, overrides={"epochs": 3, "device": "cpu"})
    assert done.finished and done.epochs_run == 3 and done.run_dir == part.run_dir
    best_a, last_a = _files(full.run_dir)
    best_b, last_b = _files(done.run_dir)
    assert best_a.keys() == best_b.keys() and all(torch.equal(best_a[k], best_b[k]) for k in best_a)
    assert all(torch.equal(last_a["model"][k], last_b["model"][k]) for k in last_a["model"])
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(full.history) == strip(done.history)
    assert full.metrics.to_dict() == done.metrics.to_dict()
    assert len((done.run_dir / EPOCHS_FILE).read_text().splitlines()) == 3
    with pytest.raises(VlmError, match="already finished"):
        resume(done.run_dir)


def test_best_checkpoint_is_best_val_epoch_and_test_scored_once(data_root, runs_dir, monkeypatch):
    import vlm.scoring

    calls = []
    real = vlm.scoring.score_split
    monkeypatch.setattr(vlm.scoring, "score_split", lambda split, scores, **kw: calls.append(split.split) or real(split, scores, **kw))
    result = train("pathmnist", "small-cnn", config=TrainConfig(epochs=3, lr=3e-3, **TINY), data_root=data_root,
                   runs_dir=runs_dir)
    assert calls == ["test"]
    aucs = [r["val_auc"] for r in result.history]
    assert result.best_epoch == aucs.index(max(aucs)) + 1
    assert [r["best"] for r in result.history][result.best_epoch - 1]
    # the saved best weights reproduce the best epoch's val AUC and the recorded test scores
    from models import create_model

    net = create_model("small-cnn", 9)
    net.load_state_dict(load_file(str(result.run_dir / BEST_FILE)))
    pipe = InputPipeline(medmnist_preprocess(), is_3d=False, config=TrainConfig().resolved(get_task("pathmnist")))
    val = load_split("pathmnist", "val", 28, data_root)
    auc = evaluate(val.task, val.labels, predict(net, val, pipe), n_bootstrap=0).auc
    assert auc == pytest.approx(max(aucs), abs=1e-6)
    import numpy as np

    test = load_split("pathmnist", "test", 28, data_root)
    assert np.allclose(np.load(result.run_dir / "scores.npy"), predict(net, test, pipe).numpy(), atol=1e-6)
    record = json.loads((result.run_dir / "record.json").read_text())
    assert record["method"] == "train" and record["split"] == "test"
    assert record["config"]["best_epoch"] == result.best_epoch and record["config"]["epochs_run"] == 3
    assert record["timings"]["seconds_per_epoch"] > 0 and record["seed"] == 0


class _Explodes(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 28 * 28, 2)
        self.nan = False

    def forward(self, x):
        out = self.fc(x.flatten(1))
        return out * float("nan") if self.nan else out


def test_non_finite_loss_stops_with_a_clear_message(data_root, runs_dir):
    task = get_task("breastmnist")
    splits = [load_split(task, s, 28, data_root) for s in ("train", "val", "test")]
    net = _Explodes()

    def arm(event):
        if event.stage == "epoch" and event.epoch == 1:
            net.nan = True

    with pytest.raises(VlmError, match=r"non-finite .* epoch 2, batch 1") as info:
        fit(net, *splits, TrainConfig(epochs=3, **TINY), model_name="explodes", runs_dir=runs_dir, progress=arm)
    run_dir = next(runs_dir.iterdir())
    assert "last.pt (epoch 1)" in str(info.value)
    assert read_last(run_dir / LAST_FILE)["state"]["epoch"] == 1
    assert (run_dir / BEST_FILE).is_file() and not (run_dir / "record.json").exists()


class _DtypeSpy(nn.Module):
    """A linear classifier that remembers the dtype its layer computed in (train and eval passes)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 28 * 28, 2)
        self.seen: set[torch.dtype] = set()

    def forward(self, x):
        out = self.fc(x.flatten(1))
        self.seen.add(out.dtype)
        return out


@pytest.mark.parametrize("amp, dtype, precision", [(None, torch.float32, "fp32"), (False, torch.float32, "fp32"),
                                                   (True, torch.bfloat16, "bf16-autocast")])
def test_amp_on_cpu_runs_bf16_only_when_asked(data_root, runs_dir, amp, dtype, precision):
    """Default: fp32 on the CPU (bf16 is CUDA's default); --amp turns bf16 autocast on for the CPU too."""
    splits = [load_split("breastmnist", s, 28, data_root) for s in ("train", "val", "test")]
    net = _DtypeSpy()
    result = fit(net, *splits, TrainConfig(epochs=1, amp=amp, **TINY), model_name="spy", runs_dir=runs_dir)
    assert net.seen == {dtype}
    assert result.record.config["precision"] == precision
    assert next(net.parameters()).dtype == torch.float32  # the weights stay fp32
    assert math.isfinite(result.history[0]["train_loss"])


def test_ctrl_c_keeps_last_epoch_and_says_how_to_resume(data_root, runs_dir):
    def interrupt(event):
        if event.stage == "batch" and event.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match=r"--resume .*") as info:
        train("breastmnist", "small-cnn", config=TrainConfig(epochs=2, **TINY), data_root=data_root,
              runs_dir=runs_dir, progress=interrupt)
    assert info.value.exit_code == 130 and "last.pt holds epoch 1" in str(info.value)
    run_dir = next(runs_dir.iterdir())
    done = resume(run_dir)
    assert done.finished and done.epochs_run == 2


def test_user_errors(data_root, runs_dir):
    with pytest.raises(VlmError, match="--batch-size 128 is larger"):
        train("breastmnist", "small-cnn", config=TrainConfig(epochs=1), data_root=data_root, runs_dir=runs_dir)
    with pytest.raises(VlmError, match="Use --loss bce"):
        train("chestmnist", "small-cnn", config=TrainConfig(epochs=1, loss="ce", **TINY), data_root=data_root,
              runs_dir=runs_dir)
    with pytest.raises(VlmError, match="slices:small-cnn"):
        train("vesselmnist3d", "small-cnn", config=TrainConfig(**TINY), data_root=data_root, runs_dir=runs_dir)
    with pytest.raises(VlmError, match="3D model"):
        train("breastmnist", "vit3d", config=TrainConfig(**TINY), data_root=data_root, runs_dir=runs_dir)
    with pytest.raises(VlmError, match="breastmnist_64.npz not found"):
        train("breastmnist", "small-cnn", size=64, config=TrainConfig(**TINY), data_root=data_root, runs_dir=runs_dir)
    vit = {"img_size": 32, "depth": 1, "embed_dim": 32, "num_heads": 2}
    with pytest.raises(VlmError, match=r"takes 32×32 images only, not --image-size 40.*--model-opt img_size=40"):
        train("breastmnist", "vit_tiny_patch16_224", config=TrainConfig(image_size=40, **TINY), data_root=data_root,
              runs_dir=runs_dir, model_opts=vit)
    if not _installed("tensorboard"):
        with pytest.raises(VlmError, match="pip install tensorboard"):
            train("breastmnist", "small-cnn", config=TrainConfig(**TINY), data_root=data_root, runs_dir=runs_dir,
                  log=["tensorboard"])
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_multi_label_trains_with_bce(data_root, runs_dir):
    result = train("chestmnist", "small-cnn", config=TrainConfig(epochs=1, **TINY), data_root=data_root,
                   runs_dir=runs_dir)
    assert result.record.config["loss"] == "bce" and result.metrics.kind == "multi-label"


def test_3d_model_trains_on_vesselmnist3d(data_root, runs_dir):
    result = train("vesselmnist3d", "vit3d", config=TrainConfig(epochs=1, **TINY), data_root=data_root,
                   runs_dir=runs_dir, model_opts={"in_chans": 1, "embed_dim": 32, "num_layers": 1, "num_heads": 2})
    assert result.finished and result.epochs_run == 1
    assert result.record.config["shape_transform"] is True
    assert result.record.preprocessing["shape_transform"].startswith("x*U(0,1)")


# ----------------------------------------------------------------------------- real data
@needs_shared_data
def test_real_breastmnist_beats_chance(runs_dir):
    if not (SHARED_DATA / "breastmnist.npz").is_file():
        pytest.skip("breastmnist.npz not in ../shared/data/medmnist")
    result = train("breastmnist", "small-cnn", config=TrainConfig(epochs=4, batch_size=64, lr=3e-3, n_bootstrap=100,
                                                                 device="cpu"),
                   data_root=SHARED_DATA, runs_dir=runs_dir)
    assert result.metrics.auc > 0.6, result.history


def test_image_size_of_a_slices_model_upsamples_slices_not_the_volume(data_root, runs_dir):
    """`--image-size` for slices:<2D> is the per-slice size inside the model: the volume keeps its 28 slices."""
    result = train("vesselmnist3d", "slices:test_efficientnet", config=TrainConfig(epochs=1, image_size=32, **TINY),
                   data_root=data_root, runs_dir=runs_dir, model_opts={"in_chans": 1})
    assert result.finished and result.record.config["model_opts"]["image_size"] == 32
    assert result.record.preprocessing["size"] is None  # no trilinear 28³ -> 32³ resize of the volume
    with pytest.raises(VlmError, match="disagree"):
        train("vesselmnist3d", "slices:test_efficientnet", config=TrainConfig(epochs=1, image_size=32, **TINY),
              data_root=data_root, runs_dir=runs_dir, model_opts={"in_chans": 1, "image_size": 48})
