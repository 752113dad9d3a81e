"""The training loop: losses, samplers, augmentation, checkpoints, resume, errors, CLI and a real run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

from conftest import SHARED_DATA, needs_shared_data
from vlm.augment import Augment2D, Augment3D
from vlm.data import load_split
from vlm.errors import VlmError
from vlm.evaluate import evaluate
from vlm.losses import balanced_class_weights, focal_bce, focal_loss, make_loss
from vlm.methods import resume
from vlm.preprocess import medmnist_preprocess, to_float
from vlm.sampling import EpochSampler
from vlm.tasks import get_task
from vlm.training import (
    BEST_FILE, EPOCHS_FILE, LAST_FILE, InputPipeline, TrainConfig, TrainingInterrupted, batch_starts, fit, lr_factor,
    predict, train,
)


TINY = dict(batch_size=16, eval_batch_size=64, n_bootstrap=50, device="cpu")


# ----------------------------------------------------------------------------- losses
def test_focal_equals_ce_at_gamma_0():
    torch.manual_seed(0)
    logits, y = torch.randn(8, 4), torch.randint(0, 4, (8,))
    assert torch.allclose(focal_loss(logits, y, gamma=0.0), F.cross_entropy(logits, y), atol=1e-6)
    w = balanced_class_weights([5, 1, 2, 0])
    assert torch.allclose(focal_loss(logits, y, gamma=0.0, weight=w), F.cross_entropy(logits, y, weight=w), atol=1e-6)
    y2 = torch.randint(0, 2, (8, 4))
    assert torch.allclose(focal_bce(logits, y2, gamma=0.0), F.binary_cross_entropy_with_logits(logits, y2.float()))


def test_focal_matches_hand_computation_at_gamma_2():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 0])
    p = [math.exp(2) / (math.exp(2) + 1), 1 / (1 + math.e)]  # probability of the true class
    expected = sum(-((1 - pt) ** 2) * math.log(pt) for pt in p) / 2
    assert focal_loss(logits, y, gamma=2.0).item() == pytest.approx(expected, rel=1e-5)
    # focal BCE of one logit 1.0 with label 1: -(1 - s)^2 log s
    s = 1 / (1 + math.exp(-1.0))
    assert focal_bce(torch.tensor([[1.0]]), torch.tensor([[1]]), 2.0).item() == pytest.approx(-(1 - s) ** 2 * math.log(s), rel=1e-5)


def test_loss_must_fit_the_task():
    chest, breast = get_task("chestmnist"), get_task("breastmnist")
    for name in ("ce", "weighted"):
        with pytest.raises(VlmError, match="--loss bce"):
            TrainConfig(loss=name).resolved(chest)
    with pytest.raises(VlmError, match="multi-label"):
        TrainConfig(loss="bce").resolved(breast)
    assert TrainConfig().resolved(chest).loss == "bce" and TrainConfig().resolved(breast).loss == "ce"
    fn = make_loss("focal", chest, gamma=2.0)  # focal BCE on multi-label
    assert fn(torch.zeros(3, 14), torch.ones(3, 14, dtype=torch.long)).item() > 0


# ----------------------------------------------------------------------------- samplers
def _imbalanced(n_per_class=(90, 9, 1)):
    return torch.cat([torch.full((n, 1), c) for c, n in enumerate(n_per_class)])


def test_balanced_sampler_is_about_uniform():
    labels = _imbalanced()
    sampler = EpochSampler("balanced", get_task("breastmnist"), labels.clamp(max=1), seed=0)  # 99 vs 1
    counts = torch.zeros(2)
    for _ in range(50):
        counts += torch.bincount(labels.clamp(max=1)[sampler.epoch_indices(), 0], minlength=2)
    share = counts / counts.sum()
    assert torch.allclose(share, torch.full((2,), 0.5), atol=0.03)
    # three classes, 90/9/1: each about a third
    task3 = get_task("retinamnist")  # 5 classes; classes 3, 4 absent here
    s3 = EpochSampler("balanced", task3, labels, seed=1)
    c3 = torch.zeros(5)
    for _ in range(50):
        c3 += torch.bincount(labels[s3.epoch_indices(), 0], minlength=5)
    assert torch.allclose(c3[:3] / c3.sum(), torch.full((3,), 1 / 3), atol=0.03) and c3[3:].sum() == 0
    # same seed -> same draws
    a, b = EpochSampler("balanced", task3, labels, seed=5), EpochSampler("balanced", task3, labels, seed=5)
    assert torch.equal(a.epoch_indices(), b.epoch_indices())


def test_oversample_equalises_counts():
    labels = _imbalanced()
    sampler = EpochSampler("oversample", get_task("retinamnist"), labels, seed=0)
    idx = sampler.epoch_indices()
    assert len(idx) == len(sampler) == 270
    assert torch.bincount(labels[idx, 0]).tolist() == [90, 90, 90]
    assert torch.equal(torch.sort(idx[labels[idx, 0] == 0]).values, torch.arange(90))  # majority: each once


def test_sampler_rejects_multi_label():
    with pytest.raises(VlmError, match="multi-label"):
        EpochSampler("balanced", get_task("chestmnist"), torch.zeros(4, 14, dtype=torch.long))


# ----------------------------------------------------------------------------- inputs
def test_shape_transform_half_at_eval_and_uniform_in_training():
    x = torch.randint(0, 256, (4, 1, 6, 6, 6), dtype=torch.uint8)
    config = TrainConfig(shape_transform=True).resolved(get_task("vesselmnist3d"))
    pipe = InputPipeline(medmnist_preprocess(), is_3d=True, config=config)
    pre = medmnist_preprocess()
    assert torch.allclose(pipe(x, train=False), pre(to_float(x) * 0.5))
    trained = (pipe(x, train=True) * 0.5 + 0.5)[:, 0]  # undo normalisation -> x * u
    ratio = trained / to_float(x)[:, 0].clamp_min(1e-6)
    u = ratio.flatten(1)[:, 0]
    assert ((u >= 0) & (u <= 1)).all()
    mask = to_float(x)[:, 0] > 0.05
    assert torch.allclose(ratio[mask], u[:, None, None, None].expand_as(ratio)[mask], atol=1e-4)
    assert TrainConfig().resolved(get_task("vesselmnist3d")).shape_transform
    assert TrainConfig().resolved(get_task("adrenalmnist3d")).shape_transform
    assert not TrainConfig().resolved(get_task("organmnist3d")).shape_transform


def test_augmentations_keep_shape_and_are_seeded():
    x = torch.rand(5, 3, 28, 28)
    a, b = Augment2D(seed=3)(x), Augment2D(seed=3)(x)
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
    v = torch.rand(4, 1, 8, 8, 8)
    out = Augment3D(("flip", "rot90"), seed=0)(v)
    assert out.shape == v.shape
    assert torch.allclose(torch.sort(out.flatten(1)).values, torch.sort(v.flatten(1)).values)  # a permutation


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
    return load_file(str(run_dir / BEST_FILE)), torch.load(run_dir / LAST_FILE, weights_only=True)


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
    assert torch.load(run_dir / LAST_FILE, weights_only=True)["state"]["epoch"] == 1
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


# ----------------------------------------------------------------------------- CLI
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
