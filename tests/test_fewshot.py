"""Few-shot protocol and methods: shots files, the probe against vlm.finetune, Tip-Adapter against zero-shot,
records and curves (cached embeddings of tiny encoders; CoOp's text towers are in test_fewshot_coop.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import write_synthetic
from fixtures.tiny_models import FakeEncoder
from vlm.data import load_split
from vlm.errors import VlmError
from vlm.fewshot import METHODS, curve_rows, curve_summary, draw_indices, prepare_shots, read_shots, run_fewshot
from vlm.fewshot.base import class_logits, label_targets, to_scores
from vlm.fewshot.methods.tip import CacheModel
from vlm.fewshot.run import zero_shot_classifier
from vlm.finetune import finetune
from vlm.results import load_run, load_scores
from vlm.tasks import get_task
from vlm.zeroshot import zero_shot_scores


@pytest.fixture
def breast(tmp_path: Path) -> Path:
    write_synthetic(tmp_path, "breastmnist", n=(60, 20, 24), separable=True)
    return tmp_path


def _splits(root: Path, flag: str):
    return [load_split(flag, s, 28, root) for s in ("train", "val", "test")]


# ----------------------------------------------------------------------------- the K-shot protocol
def test_draws_are_k_per_class_seeded_nested_and_say_which_classes_are_short():
    task = get_task("pathmnist")
    labels = torch.tensor([c for c in range(9) for _ in range(6 if c else 2)])[:, None]
    idx, short = draw_indices(task, labels, 4, seed=3)
    counts = np.bincount(labels[idx, 0].numpy(), minlength=9)
    assert counts.tolist() == [2] + [4] * 8 and short == [task.labels[0]]  # class 0 has only 2: all of them
    assert idx == sorted(idx) and draw_indices(task, labels, 4, seed=3)[0] == idx
    assert draw_indices(task, labels, 4, seed=4)[0] != idx
    assert set(draw_indices(task, labels, 2, seed=3)[0]) <= set(idx)  # nested across K
    assert draw_indices(task, labels, "all", seed=0) == (list(range(len(labels))), [])
    with pytest.raises(VlmError, match="positive number"):
        draw_indices(task, labels, 0, seed=0)


def test_multi_label_draw_has_at_least_k_positives_per_label():
    task = get_task("chestmnist")
    labels = (torch.rand(300, 14, generator=torch.Generator().manual_seed(0)) < 0.15).long()
    labels[:, 13] = 0
    labels[:2, 13] = 1  # hernia: two positives only
    idx, short = draw_indices(task, labels, 5, seed=0)
    per_label = labels[idx].sum(dim=0)
    assert (per_label[:13] >= 5).all() and per_label[13] == 2 and short == ["hernia"]
    assert len(idx) < 14 * 5  # an example drawn for one label counts for the others


def test_shots_file_is_written_reused_and_refused_when_it_does_not_match(breast, tmp_path):
    train, val, _ = _splits(breast, "breastmnist")
    path = tmp_path / "shots" / "b.json"
    shots = prepare_shots(train, val, 4, 7, path, val_shots=2)
    data = json.loads(path.read_text())
    assert data["schema_version"] == 1 and data["dataset"] == "breastmnist" and data["size"] == 28
    assert data["train"]["k"] == 4 and data["seed"] == 7 and data["train"]["per_class"] == [4, 4]
    assert data["val"]["per_class"] == [2, 2] and len(data["train"]["fingerprint"]) == 16
    again = prepare_shots(train, val, 4, 7, path, val_shots=2)
    assert again.sha256 == shots.sha256 and again.data == shots.data
    assert prepare_shots(train, val, None, None, path, val_shots=2).k == 4  # K and seed from the file

    with pytest.raises(VlmError, match=r"b\.json does not match.*K 4 in the file vs 8 here.*seed 7 in the file vs 1"):
        prepare_shots(train, val, 8, 1, path, val_shots=2)
    with pytest.raises(VlmError, match="val shots 2 in the file vs None"):
        prepare_shots(train, val, 4, 7, path)
    other = tmp_path / "other"
    other.mkdir()
    write_synthetic(other, "breastmnist", n=(60, 20, 24), seed=5)  # same shape, other contents
    o_train, o_val, _ = _splits(other, "breastmnist")
    with pytest.raises(VlmError, match=r"b\.json.*train data fingerprint"):
        prepare_shots(o_train, o_val, 4, 7, path, val_shots=2)
    write_synthetic(other, "pathmnist", n=(60, 20, 24))
    p_train, p_val, _ = _splits(other, "pathmnist")
    with pytest.raises(VlmError, match="dataset 'breastmnist' in the file vs 'pathmnist' here"):
        prepare_shots(p_train, p_val, 4, 7, path, val_shots=2)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**data, "schema_version": 2}))
    with pytest.raises(VlmError, match=r"bad\.json does not follow the shots schema v1: schema_version"):
        read_shots(bad)


# ----------------------------------------------------------------------------- methods
def test_linear_probe_with_all_shots_is_the_existing_probe(breast, tmp_path):
    enc = FakeEncoder()
    kw = dict(data_root=breast, cache_dir=tmp_path / "cache", encoder=enc, n_bootstrap=0)
    ours = run_fewshot("breastmnist", "fake", methods=["linear-probe"], shots=["all"], seeds=[0],
                       runs_dir=tmp_path / "runs", **kw)[0]
    theirs = finetune("breastmnist", "fake", mode="linear-probe", data_root=breast, cache_dir=tmp_path / "cache",
                      encoder=enc, runs_dir=tmp_path / "ft")
    assert np.array_equal(load_scores(ours), load_scores(theirs.record))
    assert ours.config["chosen"]["l2"] == theirs.record.config["l2"] and ours.metrics["auc"] == theirs.record.metrics["auc"]
    assert ours.config["n_train"] == 60 and theirs.record.config["images_encoded"] == 0  # one cache


def test_tip_adapter_with_alpha_zero_is_zero_shot(breast):
    enc = FakeEncoder()
    task = get_task("breastmnist")
    emb = F.normalize(torch.randn(30, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    labels = torch.arange(30)[:, None] % 2
    head = zero_shot_classifier(enc, task)
    model = CacheModel(emb[:10], label_targets(task, labels[:10]), head.weights, enc.logit_scale)
    model.alpha, model.beta = 0.0, 5.0
    expected = zero_shot_scores(emb, head.weights, enc.logit_scale, task.kind)
    assert torch.equal(to_scores(model(emb)), expected)
    model.alpha = 1.0
    assert not torch.allclose(to_scores(model(emb)), expected)

    chest = get_task("chestmnist")  # multi-label: (negative, positive) pairs, alpha 0 still zero-shot
    w = zero_shot_classifier(enc, chest).weights
    y = (torch.rand(30, 14, generator=torch.Generator().manual_seed(2)) < 0.3).long()
    model = CacheModel(emb[:10], label_targets(chest, y[:10]), w, enc.logit_scale)
    model.alpha = 0.0
    assert torch.equal(to_scores(model(emb)), zero_shot_scores(emb, w, enc.logit_scale, "multi-label"))
    assert class_logits(emb, w, enc.logit_scale).shape == (30, 14, 2)


def test_methods_share_the_shots_file_and_record_their_choices(breast, tmp_path):
    methods = ["linear-probe", "knn", "zs-init", "tip-adapter", "tip-adapter-f", "clip-adapter"]
    options = {"tip-adapter-f": {"epochs": 3}, "clip-adapter": {"epochs": 3, "ratios": (0.2, 0.6)},
               "tip-adapter": {"search_steps": (5, 4)}}
    records = run_fewshot("breastmnist", "fake", methods=methods, shots=[2, 4], seeds=[0, 1], data_root=breast,
                          runs_dir=tmp_path / "runs", cache_dir=tmp_path / "cache", encoder=FakeEncoder(),
                          options=options, n_bootstrap=20, val_shots=3)
    assert len(records) == len(methods) * 4
    by_draw: dict = {}
    for r in records:
        by_draw.setdefault((r.config["shots"], r.seed), set()).add((r.config["shots_file"], r.config["shots_sha256"]))
        assert r.method == "fewshot-" + r.config["fewshot_method"] and r.split == "test" and r.metrics["n"] == 24
        assert r.config["val"]["shots"] == 3 and r.config["selection"]["val"] == "3-shot"
        assert Path(r.config["shots_file"]).is_file() and load_run(r.path).config["chosen"] == r.config["chosen"]
    assert all(len(v) == 1 for v in by_draw.values()) and len(by_draw) == 4  # one file per (K, seed), all methods
    chosen = {r.config["fewshot_method"]: r.config["chosen"] for r in records if r.config["shots"] == 4}
    assert set(chosen["tip-adapter"]) == {"alpha", "beta"} and 0.1 <= chosen["tip-adapter"]["beta"] < 7
    assert {"alpha", "beta", "epoch"} <= set(chosen["tip-adapter-f"]) and chosen["clip-adapter"]["ratio"] in (0.2, 0.6)
    assert chosen["knn"]["k"] <= 4 and "l2" in chosen["zs-init"] and chosen["zs-init"]["style"] == "clip"
    tip = next(r for r in records if r.config["fewshot_method"] == "tip-adapter")
    assert len(tip.config["selection"]["rows"]) == 20 and tip.config["style"] == "clip"
    assert "exp(-beta" in tip.score_convention

    again = run_fewshot("breastmnist", "fake", methods=["knn"], shots=None, seeds=None, data_root=breast,
                        runs_dir=tmp_path / "runs", encoder=FakeEncoder(), n_bootstrap=0, val_shots=3,
                        shots_file=records[0].config["shots_file"])[0]  # K and seed from the file
    assert (again.config["shots"], again.seed, again.config["shots_sha256"]) == (2, 0, records[0].config["shots_sha256"])

    rows = curve_rows([*records, load_run(records[0].path)])
    assert set(rows[0]) == {"method", "shots", "seed", "auc", "acc", "auc_ci", "acc_ci", "run_dir"}
    summary = curve_summary(rows[:-1])
    assert len(summary) == len(methods) * 2 and all(s["n_seeds"] == 2 for s in summary)


def test_errors_before_any_work(breast, tmp_path):
    kw = dict(data_root=breast, runs_dir=tmp_path / "runs", encoder=FakeEncoder())
    with pytest.raises(VlmError, match="Unknown few-shot method 'tip'"):
        run_fewshot("breastmnist", "fake", methods=["tip"], **kw)
    with pytest.raises(VlmError, match="Unknown option.*'knn': it takes k, weighting"):
        run_fewshot("breastmnist", "fake", methods=["knn"], options={"knn": {"l2": 1}}, **kw)
    with pytest.raises(VlmError, match="One shots file holds one draw"):
        run_fewshot("breastmnist", "fake", shots=[1, 2], seeds=[0], shots_file=tmp_path / "s.json", **kw)
    assert set(METHODS) == {"linear-probe", "knn", "zs-init", "tip-adapter", "tip-adapter-f", "clip-adapter", "coop"}


def test_3d_and_multi_label_run_on_pooled_embeddings(tmp_path):
    write_synthetic(tmp_path, "vesselmnist3d", n=(12, 6, 6))
    write_synthetic(tmp_path, "chestmnist", n=(60, 20, 20))
    kw = dict(data_root=tmp_path, runs_dir=tmp_path / "runs", encoder=FakeEncoder(), n_bootstrap=0, seeds=[0],
              options={"tip-adapter": {"search_steps": (3, 2)}})
    rec = run_fewshot("vesselmnist3d", "fake", methods=["tip-adapter"], shots=[2], slice_axis=1, pool="max", **kw)[0]
    assert rec.config["slice_axis"] == 1 and rec.config["n_train"] == 4 and rec.metrics["n"] == 6
    rec = run_fewshot("chestmnist", "fake", methods=["tip-adapter"], shots=[2], **kw)[0]
    assert rec.metrics["kind"] == "multi-label" and all(c >= 2 or c == 0 for c in rec.config["per_class"])
