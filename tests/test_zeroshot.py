"""Zero-shot classification: equality with open_clip / transformers, a tiny trained CLIP, multi-label pairs,
prompt ranking and 3D zero-shot end to end.

Offline: random-initialised models saved to tmp folders, synthetic MedMNIST-format data. The embedding cache
and 3D pooling are in test_embeddings.py, the `vlm zero-shot` / `vlm prompts compare` commands in
test_cli_zeroshot.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlm.data import Split
from vlm.embeddings import image_embeddings
from vlm.encoders import load_encoder
from vlm.errors import VlmError
from vlm.prompts import load_prompt_set
from vlm.results import load_run
from vlm.tasks import get_task
from vlm.zeroshot import (
    SCORE_CONVENTION,
    check_prompt_set,
    compare_prompts,
    run_zero_shot,
    text_classifier,
    zero_shot_scores,
)

from conftest import write_synthetic
from fixtures.inputs import random_split, write_prompts
from fixtures.tiny_models import (
    FakeEncoder,
    TinyClip,
    TinyClipEncoder,
    train_tiny_clip,
    write_quadrant_dataset,
    write_tiny_hf_clip,
)

pytestmark = pytest.mark.usefixtures("offline")


# ----------------------------------------------------------------------------- (a) equality with open_clip
def pil_images(split: Split) -> list:
    """The split's grey uint8 images as PIL images, what the libraries' own pipelines take."""
    from PIL import Image

    return [Image.fromarray(img[0].numpy()) for img in split.images]


def test_open_clip_zero_shot_equals_open_clip_reference(vitb32_weights, tmp_path):
    """Ours against open_clip's own pipeline: a model that `create_model_and_transforms` builds apart from ours
    out of the same weights file, its `preprocess` on PIL images, `build_zero_shot_classifier`. The classifiers
    are equal; the inputs agree to the grey level, so embeddings and scores agree to float precision (1e-5)."""
    import open_clip
    from open_clip import build_zero_shot_classifier

    enc = load_encoder("ViT-B-32", weights=vitb32_weights)
    assert enc.logit_scale == pytest.approx(100.0, rel=1e-6)
    templates = ["a photo of {label}.", "a breast ultrasound image showing {label}."]
    ps = load_prompt_set(write_prompts(tmp_path / "p.yaml", "breastmnist", ["malignant", "normal, benign"],
                                       {"t": {"templates": templates}}), dataset="breastmnist")
    split = random_split("breastmnist", 4)
    emb, encoded = image_embeddings(enc, split, cache_dir=tmp_path / "cache")
    w = text_classifier(enc, ps, "t")
    ours = zero_shot_scores(emb, w, enc.logit_scale, "binary")

    reference, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=str(vitb32_weights))
    reference.eval()
    assert reference is not enc.model
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    x_ref = torch.stack([preprocess(img) for img in pil_images(split)])
    std = torch.tensor(enc.preprocess.std).view(1, 3, 1, 1)
    assert float(((enc.preprocess(split.images) - x_ref) * std * 255).abs().max()) < 1e-3  # the same pixels
    with torch.no_grad():
        w_ref = build_zero_shot_classifier(reference, tokenizer, ps.classes,
                                           [lambda c, t=t: t.format(label=c) for t in templates])
        img_ref = reference.encode_image(x_ref, normalize=True)
        ref = (reference.logit_scale.exp() * img_ref @ w_ref).softmax(dim=-1)
    assert encoded == 4 and w.shape == w_ref.shape == (512, 2)
    assert torch.equal(w, w_ref)
    assert torch.allclose(emb, img_ref, atol=1e-5)
    assert torch.allclose(ours, ref, atol=1e-5)


# ----------------------------------------------------------------------------- (a) equality with transformers
def test_transformers_zero_shot_equals_hand_computation(tmp_path):
    """Ours against the checkpoint's own pipeline: CLIPModel and tokenizer loaded apart from ours, its
    CLIPImageProcessor (PIL backend; torchvision's is <= 2 levels off, see test_preprocessing_reference.py)
    on PIL images, CLIP's ensemble by hand. The same pixels, so scores agree to float precision."""
    from transformers import AutoTokenizer, CLIPModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    folder = write_tiny_hf_clip(tmp_path / "hf-clip", processor={"size": {"shortest_edge": 36},
                                                                  "crop_size": {"height": 32, "width": 32}})
    enc = load_encoder(str(folder))
    ps = load_prompt_set("breastmnist")  # shipped file: unequal prompt counts per class
    split = random_split("breastmnist", 5)
    emb, _ = image_embeddings(enc, split, cache_dir=tmp_path / "cache")
    ours = zero_shot_scores(emb, text_classifier(enc, ps, "clip"), enc.logit_scale, "binary")

    model = CLIPModel.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    processor = CLIPImageProcessorPil.from_pretrained(folder)
    x = processor(images=pil_images(split), return_tensors="pt")["pixel_values"]
    std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
    assert float(((enc.preprocess(split.images) - x) * std * 255).abs().max()) < 1e-3  # the same pixels
    with torch.no_grad():
        columns = []
        for prompts in ps.expand("clip"):
            t = tok(prompts, padding=True, return_tensors="pt")
            feats = model.get_text_features(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).pooler_output
            columns.append(F.normalize(F.normalize(feats, dim=-1).mean(dim=0), dim=-1))
        w_ref = torch.stack(columns, dim=1)
        img = F.normalize(model.get_image_features(pixel_values=x).pooler_output, dim=-1)
        ref = (model.logit_scale.exp() * img @ w_ref).softmax(dim=-1)
    assert torch.allclose(emb, img, atol=1e-5)
    assert torch.allclose(ours, ref, atol=1e-5)


# ----------------------------------------------------------------------------- (b) a tiny CLIP trained here
@pytest.fixture(scope="module")
def tiny_clip() -> TinyClipEncoder:
    return TinyClipEncoder(train_tiny_clip(list(get_task("octmnist").labels)))


def test_tiny_trained_clip_reads_class_names(tiny_clip, tmp_path):
    """Right class names -> far above chance; deranged names -> below chance (every image goes to the class
    whose name it was trained on); unseen names and an untrained model -> chance (4 balanced classes)."""
    write_quadrant_dataset(tmp_path)
    classes = list(get_task("octmnist").labels)
    deranged = {c: [classes[(i + 1) % 4]] for i, c in enumerate(classes)}
    prompts = write_prompts(tmp_path / "oct.yaml", "octmnist", classes, {
        "right": {"templates": ["a photo of {label}."]},
        "shuffled": {"templates": ["a photo of {label}."], "names": deranged},
        "unseen": {"templates": ["a photo of {label}."],
                   "names": {c: [w] for c, w in zip(classes, ["zebra", "violin", "castle", "banana"])}},
    })
    kwargs = dict(prompts=prompts, data_root=tmp_path, runs_dir=tmp_path / "runs", cache_dir=tmp_path / "cache",
                  n_bootstrap=100)
    res = {r["style"]: r for r in run_zero_shot("octmnist", "tiny", encoder=tiny_clip, styles="all", **kwargs)}
    assert res["right"]["n"] == 40 and res["right"]["images_encoded"] == 40
    assert res["right"]["acc"] >= 0.9 and res["right"]["auc"] >= 0.95
    assert res["shuffled"]["acc"] <= 0.25 and res["shuffled"]["auc"] < 0.5  # systematically wrong
    assert abs(res["unseen"]["acc"] - 0.25) <= 0.15  # names it never saw: chance
    torch.manual_seed(123)
    untrained = TinyClipEncoder(TinyClip(), weights_id="tiny-untrained")
    control = run_zero_shot("octmnist", "tiny", encoder=untrained, styles="right", record=False, **kwargs)[0]
    assert abs(control["acc"] - 0.25) <= 0.15
    record = load_run(res["right"]["run_dir"])
    assert record.method == "zero-shot" and record.model == "tiny:clip" and record.score_convention == SCORE_CONVENTION
    assert record.config["style"] == "right" and record.config["prompts_file"] == str(prompts)
    assert len(record.config["prompts_sha256"]) == 64 and record.weights_id == "tiny-trained"
    assert record.metrics["acc"] == res["right"]["acc"]
    saved = np.load(Path(res["right"]["run_dir"]) / "scores.npy")
    assert saved.shape == (40, 4) and np.allclose(saved.sum(axis=1), 1.0, atol=1e-5)


# ----------------------------------------------------------------------------- scores, multi-label, checks
def test_zero_shot_scores_single_and_multi_label():
    img = F.normalize(torch.randn(5, 8), dim=-1)
    w = F.normalize(torch.randn(8, 3), dim=0)
    s = zero_shot_scores(img, w, 10.0, "multi-class")
    assert torch.allclose(s, torch.softmax(10.0 * img @ w, dim=1)) and torch.allclose(s.sum(1), torch.ones(5))
    pairs = F.normalize(torch.randn(8, 4, 2), dim=0)
    p = zero_shot_scores(img, pairs, 10.0, "multi-label")
    expected = torch.sigmoid(10.0 * (img @ pairs[:, :, 1] - img @ pairs[:, :, 0]))
    assert p.shape == (5, 4) and torch.allclose(p, expected, atol=1e-6)
    with pytest.raises(VlmError, match="multi-label task needs"):
        zero_shot_scores(img, w, 10.0, "multi-label")


def test_multi_label_run_uses_prompt_pairs(tmp_path):
    write_synthetic(tmp_path, "chestmnist")
    enc = FakeEncoder()
    ps = load_prompt_set("chestmnist")
    w = text_classifier(enc, ps, "simple")
    assert w.shape == (8, 14, 2)
    pos, neg = ps.expand_pairs("simple")[0]
    expected_pos = F.normalize(F.normalize(enc.encode_texts(pos), dim=-1).mean(0), dim=-1)
    expected_neg = F.normalize(F.normalize(enc.encode_texts(neg), dim=-1).mean(0), dim=-1)
    assert torch.allclose(w[:, 0, 1], expected_pos) and torch.allclose(w[:, 0, 0], expected_neg)
    results = run_zero_shot("chestmnist", "fake", encoder=enc, styles="all", data_root=tmp_path,
                            runs_dir=tmp_path / "runs", cache_dir=tmp_path / "cache", n_bootstrap=0,
                            save_scores=tmp_path / "s.npy")
    assert [r["style"] for r in results] == ps.style_names
    for r in results:
        assert r["n"] == 20 and len(r["per_class"]) == 14 and r["auc_ci"] is None
        assert np.load(r["scores_file"]).shape == (20, 14) and r["scores_file"].endswith(f"s_{r['style']}.npy")
    assert results[0]["images_encoded"] == 20


def test_prompt_file_for_another_dataset(tmp_path):
    write_synthetic(tmp_path, "breastmnist")
    with pytest.raises(VlmError, match="pneumoniamnist.*breastmnist|breastmnist.*pneumoniamnist"):
        run_zero_shot("breastmnist", "fake", encoder=FakeEncoder(), data_root=tmp_path, record=False,
                      prompts=write_prompts(tmp_path / "p.yaml", "pneumoniamnist", ["normal", "pneumonia"],
                                            {"a": {"templates": ["{label}"]}}))


def test_check_prompt_set_names_the_classes():
    ps = load_prompt_set("breastmnist")
    with pytest.raises(VlmError, match=r"2 classes \(malignant, normal, benign\) but pathmnist has 9 \(adipose"):
        check_prompt_set(type("P", (), {"dataset": "pathmnist", "classes": ps.classes, "path": ps.path})(),
                         get_task("pathmnist"))


def test_image_only_encoder_cannot_do_zero_shot(tmp_path):
    write_synthetic(tmp_path, "breastmnist")
    import timm

    with pytest.warns(UserWarning):
        enc = load_encoder("test_vit")
    assert timm.is_model("test_vit")
    with pytest.raises(VlmError, match="image-only"):
        run_zero_shot("breastmnist", "test_vit", encoder=enc, data_root=tmp_path, record=False)


def test_compare_prompts_ranks_styles_on_cached_embeddings(tiny_clip, tmp_path):
    write_quadrant_dataset(tmp_path)
    classes = list(get_task("octmnist").labels)
    good = write_prompts(tmp_path / "good.yaml", "octmnist", classes, {"right": {"templates": ["a photo of {label}."]}})
    bad = write_prompts(tmp_path / "bad.yaml", "octmnist", classes, {
        "shuffled": {"templates": ["a photo of {label}."], "names": {c: [classes[(i + 1) % 4]]
                                                                     for i, c in enumerate(classes)}},
        "unseen": {"templates": ["a photo of {label}."], "names": {c: [w] for c, w in zip(classes, ["zebra", "violin",
                                                                                                  "castle", "banana"])}}})
    rows = compare_prompts("octmnist", "tiny", [bad, good], encoder=tiny_clip, data_root=tmp_path,
                           cache_dir=tmp_path / "cache", n_bootstrap=0)
    assert [r["rank"] for r in rows] == [1, 2, 3] and len({(r["prompts"], r["style"]) for r in rows}) == 3
    assert (rows[0]["prompts"], rows[0]["style"]) == (str(good), "right")
    assert rows[-1]["style"] == "shuffled" and all(r["n"] == 20 for r in rows)  # val split
    aucs = [r["auc"] for r in rows]
    assert aucs == sorted(aucs, reverse=True)


# ----------------------------------------------------------------------------- 3D end to end
def test_3d_zero_shot_end_to_end(tiny_oc_weights, tmp_path):
    write_synthetic(tmp_path, "organmnist3d", n=(4, 4, 6))
    name, weights = tiny_oc_weights
    results = run_zero_shot("organmnist3d", name, weights=weights, styles="all", data_root=tmp_path,
                            runs_dir=tmp_path / "runs", cache_dir=tmp_path / "cache", slice_axis=2, pool="max",
                            n_bootstrap=0)
    assert results and all(r["n"] == 6 and len(r["per_class"]) == 11 for r in results)
    record = load_run(results[0]["run_dir"])
    assert record.config["slice_axis"] == 2 and record.config["pool"] == "max"
    assert record.preprocessing["slice_axis"] == 2 and record.preprocessing["size"] == 32
    again = run_zero_shot("organmnist3d", name, weights=weights, styles=results[0]["style"], data_root=tmp_path,
                          cache_dir=tmp_path / "cache", slice_axis=2, pool="max", n_bootstrap=0, record=False)
    assert again[0]["images_encoded"] == 0 and again[0]["auc"] == results[0]["auc"]
