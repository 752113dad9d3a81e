"""Vision-only fine-tuning: linear probe, kNN, full fine-tuning and the zero-shot-initialised head."""

from __future__ import annotations

import hashlib
import json
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import write_synthetic
from vlm.encoders import Encoder
from vlm.errors import VlmError
from vlm.evaluate import evaluate
from vlm.finetune import (
    TowerClassifier, finetune, finetune_config, knn, knn_scores, linear_probe, zero_shot_head,
)
from vlm.preprocess import Preprocess
from vlm.tasks import get_task


FAST = dict(n_bootstrap=20, device="cpu", eval_batch_size=64)


class FakeVLM(Encoder):
    """A tiny CLIP-like encoder: a conv tower and hashed text embeddings (deterministic)."""

    backend = "test"

    def __init__(self, has_text: bool = True, dim: int = 16):
        torch.manual_seed(0)
        super().__init__(id="fake-vlm", weights_id="random-init", preprocess=Preprocess(size=None), embed_dim=dim,
                         logit_scale=50.0, device=torch.device("cpu"))
        self.has_text = has_text
        self.tower = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                   nn.Linear(8, dim))

    def encode_images(self, x):
        return self.tower(x)

    def encode_texts(self, texts):
        if not self.has_text:
            raise VlmError("image-only")
        rows = []
        for t in texts:
            g = torch.Generator().manual_seed(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16))
            rows.append(torch.randn(self.embed_dim, generator=g))
        return torch.stack(rows) if rows else torch.empty(0, self.embed_dim)

    def image_tower(self):
        return self.tower


def _clusters(k=3, dim=32, n=(90, 30, 60), noise=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, dim, generator=g)
    emb, labels = {}, {}
    for split, count in zip(("train", "val", "test"), n):
        y = torch.arange(count) % k
        x = centers[y] + noise * torch.randn(count, dim, generator=g)
        emb[split], labels[split] = F.normalize(x, dim=1), y[:, None]
    return emb, labels


def test_linear_probe_and_knn_on_separable_features():
    task = get_task("retinamnist")  # 5 ordinal classes: use 5 clusters
    emb, labels = _clusters(k=5)
    out = linear_probe(task, emb, labels)
    m = evaluate(task, labels["test"], out["scores"], n_bootstrap=0)
    assert m.acc > 0.9 and m.auc > 0.95
    assert out["l2"] in [row["l2"] for row in out["grid"]] and len(out["grid"]) == 8
    assert torch.allclose(out["scores"].sum(dim=1), torch.ones(60), atol=1e-5)
    kn = knn(task, emb, labels, k="auto")
    mk = evaluate(task, labels["test"], kn["scores"], n_bootstrap=0)
    assert mk.acc > 0.9 and kn["k"] in (1, 3, 5, 10, 20, 50, 90)
    sim = knn(task, emb, labels, k=5, weighting="similarity")
    assert evaluate(task, labels["test"], sim["scores"], n_bootstrap=0).acc > 0.9


def test_knn_scores_are_vote_fractions():
    train = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), dim=1)
    y = torch.tensor([[0], [1], [1], [1]])
    q = F.normalize(torch.tensor([[1.0, 0.02]]), dim=1)
    s = knn_scores(train, y, q, 2, kind="binary", num_classes=2)
    assert torch.allclose(s, torch.tensor([[0.5, 0.5]]))
    s3 = knn_scores(train, y, q, 3, kind="binary", num_classes=2)
    assert torch.allclose(s3, torch.tensor([[1 / 3, 2 / 3]]))
    with pytest.raises(VlmError, match="larger than the training split"):
        knn(get_task("breastmnist"), {"train": train, "val": q, "test": q}, {"train": y, "val": y[:1], "test": y[:1]},
            k=9)


def test_multi_label_probe_is_per_label_sigmoid():
    task = get_task("chestmnist")
    g = torch.Generator().manual_seed(0)
    emb, labels = {}, {}
    for split, n in (("train", 200), ("val", 80), ("test", 80)):
        y = (torch.rand(n, 14, generator=g) < 0.4).long()
        x = torch.cat([(2 * y - 1).float() + 0.3 * torch.randn(n, 14, generator=g), torch.randn(n, 4, generator=g)], 1)
        emb[split], labels[split] = F.normalize(x, dim=1), y
    out = linear_probe(task, emb, labels, l2_grid=(1e-3, 1e-1))
    s = out["scores"]
    assert s.shape == (80, 14) and ((s >= 0) & (s <= 1)).all()
    assert not torch.allclose(s.sum(dim=1), torch.ones(80))
    assert evaluate(task, labels["test"], s, n_bootstrap=0).auc > 0.9


def test_finetune_linear_probe_and_knn_record_runs(tmp_path):
    write_synthetic(tmp_path, "breastmnist", separable=True)
    enc = FakeVLM(has_text=False)
    lp = finetune("breastmnist", "fake", mode="linear-probe", encoder=enc, config=finetune_config(**FAST),
                  data_root=tmp_path, runs_dir=tmp_path / "runs")
    rec = json.loads((lp.run_dir / "record.json").read_text())
    assert rec["method"] == "linear-probe" and rec["model"] == "fake-vlm" and rec["split"] == "test"
    assert rec["config"]["l2"] > 0 and len(rec["config"]["l2_grid"]) == 8 and lp.metrics.auc > 0.9
    kn = finetune("breastmnist", "fake", mode="knn", k="auto", encoder=enc, config=finetune_config(**FAST),
                  data_root=tmp_path, runs_dir=tmp_path / "runs")
    assert kn.record.method == "knn" and kn.record.config["k"] >= 1 and kn.metrics.auc > 0.9


def test_full_finetune_trains_tower_and_head(tmp_path):
    write_synthetic(tmp_path, "breastmnist", separable=True)
    enc = FakeVLM(has_text=False)
    before = [p.detach().clone() for p in enc.tower.parameters()]
    result = finetune("breastmnist", "fake", mode="full", encoder=enc,
                      config=finetune_config(epochs=2, batch_size=16, **FAST), data_root=tmp_path,
                      runs_dir=tmp_path / "runs")
    assert result.finished and result.record.method == "full" and result.epochs_run == 2
    cfg = result.record.config
    assert cfg["backbone_lr"] == 1e-5 and cfg["lr"] == 1e-3 and cfg["optimizer"] == "adamw"
    assert any(not torch.equal(a, b) for a, b in zip(before, enc.tower.parameters()))  # the tower moved
    assert (result.run_dir / "spec.json").is_file()


@pytest.mark.parametrize("flag", ["breastmnist", "chestmnist"])
def test_zs_init_head_reproduces_zero_shot_scores(flag):
    from vlm.prompts import load_prompt_set
    from vlm.zeroshot import text_classifier, zero_shot_scores

    task = get_task(flag)
    enc = FakeVLM()
    w, style = zero_shot_head(enc, task)
    model = TowerClassifier(enc.image_tower(), enc.embed_dim, task.num_classes, normalize=True)
    with torch.no_grad():
        model.head.weight.copy_(w)
        model.head.bias.zero_()
        x = torch.randn(6, 3, 28, 28)
        logits = model(x)
        ours = torch.sigmoid(logits) if task.kind == "multi-label" else logits.softmax(dim=1)
        zs = zero_shot_scores(F.normalize(enc.encode_images(x), dim=-1),
                              text_classifier(enc, load_prompt_set(flag), style), enc.logit_scale, task.kind)
    assert torch.allclose(ours, zs, atol=1e-5)


def test_zs_init_runs_and_needs_a_text_tower(tmp_path):
    write_synthetic(tmp_path, "breastmnist", separable=True)
    probe = finetune("breastmnist", "fake", mode="zs-init", zs_then="linear-probe", encoder=FakeVLM(),
                     config=finetune_config(**FAST), data_root=tmp_path, runs_dir=tmp_path / "runs")
    assert probe.record.method == "zs-init" and probe.record.config["prior"] == "zero-shot head"
    assert probe.record.config["style"] and probe.record.config["l2_grid"][-1]["l2"] == 1000.0
    full = finetune("breastmnist", "fake", mode="zs-init", encoder=FakeVLM(),
                    config=finetune_config(epochs=1, batch_size=16, **FAST), data_root=tmp_path,
                    runs_dir=tmp_path / "runs")
    assert full.finished and full.record.config["zs_then"] == "full"
    with pytest.raises(VlmError, match="text tower"):
        finetune("breastmnist", "fake", mode="zs-init", encoder=FakeVLM(has_text=False),
                 config=finetune_config(**FAST), data_root=tmp_path, runs_dir=tmp_path / "runs")


def test_3d_probe_uses_pooled_slices_and_full_needs_2d(tmp_path):
    write_synthetic(tmp_path, "vesselmnist3d", n=(24, 8, 12), separable=True)
    result = finetune("vesselmnist3d", "fake", mode="linear-probe", encoder=FakeVLM(has_text=False),
                      config=finetune_config(**FAST), data_root=tmp_path, runs_dir=tmp_path / "runs", slice_axis=1)
    assert result.record.config["slice_axis"] == 1 and result.metrics.n == 12
    with pytest.raises(VlmError, match="linear-probe or knn"):
        finetune("vesselmnist3d", "fake", mode="full", encoder=FakeVLM(), config=finetune_config(**FAST),
                 data_root=tmp_path, runs_dir=tmp_path / "runs")


def test_timm_backbone_probe_and_cli(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    write_synthetic(tmp_path, "breastmnist", separable=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = CliRunner().invoke(app, ["finetune", "breastmnist", "--model", "test_efficientnet", "--mode", "knn",
                                       "--k", "3", "--image-size", "32", "--bootstrap", "10", "--device", "cpu",
                                       "--data-root", str(tmp_path), "--runs-dir", str(tmp_path / "runs"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["method"] == "knn" and out["model"] == "timm:test_efficientnet" and out["auc"] is not None


def test_full_finetune_resumes_identically(tmp_path):
    from safetensors.torch import load_file

    from vlm.methods import resume

    write_synthetic(tmp_path, "breastmnist", separable=True)
    cfg = finetune_config(epochs=3, batch_size=16, image_size=32, **FAST)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = finetune("breastmnist", "test_efficientnet", mode="full", config=cfg, data_root=tmp_path,
                     runs_dir=tmp_path / "a")
        b = finetune("breastmnist", "test_efficientnet", mode="full", config=cfg, data_root=tmp_path,
                     runs_dir=tmp_path / "b", max_epochs_this_call=1)
        with pytest.raises(VlmError, match="--mode knn"):
            resume(b.run_dir, overrides={"mode": "knn"})
        c = resume(b.run_dir, overrides={"mode": "full"})
    x, y = load_file(str(a.run_dir / "best.safetensors")), load_file(str(c.run_dir / "best.safetensors"))
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    assert a.metrics.to_dict() == c.metrics.to_dict() and c.record.method == "full"


def test_image_size_the_tower_cannot_take_is_a_clear_error(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    write_synthetic(tmp_path, "breastmnist", separable=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = CliRunner().invoke(app, ["finetune", "breastmnist", "--model", "test_vit", "--mode", "knn",
                                       "--image-size", "100", "--device", "cpu", "--data-root", str(tmp_path),
                                       "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "test_vit cannot take 100×100 images" in res.output and "its input size is 160" in res.output
    assert not (tmp_path / "runs").exists()
