"""The text-embedding cache and lazy open_clip encoders: a fully cached `compare_prompts` builds no tower,
new prompts build only the text tower and encode only themselves, a tampered entry is re-encoded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vlm.encoders import load_encoder
from vlm.text_cache import TextCache, text_key
from vlm.zeroshot import compare_prompts, text_classifier

from conftest import write_synthetic
from fixtures.tiny_models import FakeEncoder, write_tiny_hf_clip, write_tiny_open_clip_dir


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return write_tiny_open_clip_dir(tmp_path_factory.mktemp("oc") / "tiny", preprocess_cfg={"mean": [0.5] * 3})


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    return write_tiny_open_clip_dir(tmp_path_factory.mktemp("oc") / "tiny-bert", hf_text=True,
                                    preprocess_cfg={"interpolation": "bilinear", "resize_mode": "squash"})


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    return write_tiny_hf_clip(tmp_path_factory.mktemp("hf") / "tiny-clip")


@pytest.fixture
def towers(monkeypatch) -> dict[str, int]:
    """Counts of open_clip's tower builders (every image or text tower open_clip builds goes through them)."""
    import open_clip.model as oc_model

    counts = {"vision": 0, "text": 0}
    for kind, name in (("vision", "_build_vision_tower"), ("text", "_build_text_tower")):
        real = getattr(oc_model, name)

        def spy(*args, _real=real, _kind=kind, **kwargs):
            counts[_kind] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(oc_model, name, spy)
    return counts


def write_prompts(path: Path, templates: list[str]) -> Path:
    path.write_text(json.dumps({"dataset": "breastmnist", "classes": ["malignant", "normal, benign"],
                                "styles": {"plain": {"templates": templates}}}))
    return path


@pytest.mark.parametrize("which", ["tiny_dir", "bert_dir", "hf_dir"])
def test_lazy_encoder_matches_the_built_model(which, request):
    folder = request.getfixturevalue(which)
    name = str(folder) if which == "hf_dir" else f"local-dir:{folder}"
    eager = load_encoder(name)
    lazy = load_encoder(name, lazy=True)
    assert lazy._model is None
    assert (lazy.id, lazy.weights_id, lazy.embed_dim, lazy.text_id, lazy.context_length) == \
        (eager.id, eager.weights_id, eager.embed_dim, eager.text_id, eager.context_length)
    assert lazy.preprocess == eager.preprocess and lazy.logit_scale == pytest.approx(eager.logit_scale, rel=1e-7)
    texts = ["a photo of a malignant tumor.", "normal breast tissue", "x"]
    assert torch.allclose(lazy.encode_texts(texts), eager.encode_texts(texts), atol=1e-6)
    assert lazy._model is None and (lazy._text_model if which == "hf_dir" else lazy._text_tower) is not None
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(lazy.encode_images(x), eager.encode_images(x), atol=1e-6)
    assert torch.allclose(lazy.encode_texts(texts), eager.encode_texts(texts), atol=1e-6)


def test_fully_cached_compare_builds_no_tower_and_new_prompts_only_the_text_tower(tiny_dir, towers, tmp_path):
    write_synthetic(tmp_path, "breastmnist")
    a = write_prompts(tmp_path / "a.yaml", ["a photo of {label}.", "{label}"])
    opts = {"data_root": tmp_path, "cache_dir": tmp_path / "cache", "n_bootstrap": 0}
    model = f"local-dir:{tiny_dir}"
    first = compare_prompts("breastmnist", model, [a], **opts)
    assert towers == {"vision": 1, "text": 1}  # images encoded: the whole model

    towers.update(vision=0, text=0)
    texts = TextCache(tmp_path / "cache")
    again = compare_prompts("breastmnist", model, [a], text_cache=texts, **opts)
    assert towers == {"vision": 0, "text": 0} and texts.encoded == 0
    assert [(r["style"], r["auc"], r["acc"]) for r in again] == [(r["style"], r["auc"], r["acc"]) for r in first]

    b = write_prompts(tmp_path / "b.yaml", ["{label}", "an ultrasound of {label}."])  # 2 new prompts of 4
    texts = TextCache(tmp_path / "cache")
    rows = compare_prompts("breastmnist", model, [a, b], text_cache=texts, **opts)
    assert towers == {"vision": 0, "text": 1} and texts.encoded == 2 and len(rows) == 2


def test_tampered_entry_is_discarded_and_re_encoded(tiny_dir, tmp_path):
    enc = load_encoder(f"local-dir:{tiny_dir}", lazy=True)
    prompts = ["a photo of a cat.", "a photo of a dog."]
    expected = TextCache(tmp_path).encode(enc, prompts)
    (shard,) = (tmp_path / "text").glob("*/*.safetensors")
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0x01  # one flipped bit in the last embedding value
    shard.write_bytes(bytes(data))
    cache = TextCache(tmp_path)
    with pytest.warns(UserWarning, match="discarded: its digest does not match"):
        got = cache.encode(enc, prompts)
    assert cache.encoded == 2 and torch.equal(got, expected)
    assert TextCache(tmp_path).encode(enc, prompts) is not None  # rewritten: read back without a warning


def test_entry_under_another_key_is_discarded(tiny_dir, tmp_path):
    from safetensors.torch import load, save

    enc = load_encoder(f"local-dir:{tiny_dir}", lazy=True)
    TextCache(tmp_path).encode(enc, ["a photo of a cat."])
    (shard,) = (tmp_path / "text").glob("*/*.safetensors")
    from safetensors import safe_open

    with safe_open(str(shard), framework="pt") as f:
        meta = f.metadata()
    meta["key"] = meta["key"].replace(enc.weights_id, "sha256:0000000000000000")
    shard.write_bytes(save(load(shard.read_bytes()), metadata=meta))
    cache = TextCache(tmp_path)
    with pytest.warns(UserWarning, match="stored key differs"):
        cache.encode(enc, ["a photo of a cat."])
    assert cache.encoded == 1


def test_key_fields_and_what_is_not_cached(tiny_dir, tmp_path):
    enc = load_encoder(f"local-dir:{tiny_dir}", lazy=True)
    key = text_key(enc)
    assert key["encoder"] == enc.id and key["weights_id"] == enc.weights_id and key["context_length"] == 16
    assert "SimpleTokenizer" in key["text_id"]
    fake = FakeEncoder()  # no text_id: passed through, every time
    cache = TextCache(tmp_path)
    cache.encode(fake, ["a", "b"])
    cache.encode(fake, ["a", "b"])
    assert cache.encoded == 4 and not (tmp_path / "text").exists()


def test_many_writes_are_merged_into_one_shard(tiny_dir, tmp_path, monkeypatch):
    import vlm.text_cache as text_cache

    monkeypatch.setattr(text_cache, "MAX_SHARDS", 3)
    enc = load_encoder(f"local-dir:{tiny_dir}", lazy=True)
    cache = TextCache(tmp_path)
    for i in range(5):
        cache.encode(enc, [f"prompt {i}"])
    assert len(list((tmp_path / "text").glob("*/*.safetensors"))) <= 3
    fresh = TextCache(tmp_path)
    fresh.encode(enc, [f"prompt {i}" for i in range(5)])
    assert fresh.encoded == 0


def test_text_classifier_with_cache_equals_without(tiny_dir, tmp_path):
    from vlm.prompts import load_prompt_set

    enc = load_encoder(f"local-dir:{tiny_dir}")
    ps = load_prompt_set("breastmnist")
    plain = text_classifier(enc, ps, "clip")
    cache = TextCache(tmp_path)
    assert torch.allclose(text_classifier(enc, ps, "clip", texts=cache), plain, atol=1e-6)
    assert torch.allclose(text_classifier(enc, ps, "clip", texts=TextCache(tmp_path)), plain, atol=1e-6)
