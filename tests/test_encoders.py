"""vlm.encoders: name resolution, offline errors, weights checks, and the three backends with tiny models.

Nothing here touches the network: hub lookups run with HF_HUB_OFFLINE=1 and every model is tiny and
random-initialised, written to tmp folders (open_clip configs, transformers save_pretrained, timm).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vlm.encoders import (
    ALIASES,
    RANDOM_INIT,
    OpenClipEncoder,
    TimmEncoder,
    TransformersEncoder,
    list_aliases,
    load_encoder,
    localize_text_config,
    resolve_name,
    weights_file_id,
)
from vlm.errors import VlmError

from conftest import SHARED_WEIGHTS, needs_shared_weights
from fixtures.tiny_models import TINY_TEXT, TINY_VIT, tiny_open_clip_config, write_tiny_bert, write_tiny_hf_clip

BIOMED_TEXT = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_arch(tmp_path_factory) -> str:
    return tiny_open_clip_config(tmp_path_factory.mktemp("oc_configs"))


@pytest.fixture(scope="session")
def tiny_weights(tiny_arch, tmp_path_factory) -> Path:
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model(tiny_arch, pretrained=None)
    path = tmp_path_factory.mktemp("oc_weights") / "tiny.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def hf_clip_dir(tmp_path_factory) -> Path:
    return write_tiny_hf_clip(tmp_path_factory.mktemp("hf_clip") / "tiny-clip")


# ----------------------------------------------------------------------------- names and errors
def test_alias_table_has_the_required_aliases():
    for name in ("biomedclip", "clip-vit-b-32", "clip-vit-b-16", "plip", "pubmedclip", "quiltnet"):
        assert name in ALIASES and ALIASES[name].description
    assert ALIASES["biomedclip"].target == "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
    assert ALIASES["quiltnet"].target == "hf-hub:wisdomik/QuiltNet-B-32"
    assert ALIASES["plip"].backend == "transformers" and ALIASES["plip"].target == "vinid/plip"
    assert {r["name"] for r in list_aliases()} == set(ALIASES)


@pytest.mark.parametrize("name, backend, target", [
    ("BiomedCLIP", "open_clip", "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"),
    ("ViT-B-32", "open_clip", "ViT-B-32"),
    ("ViT-B-32:laion2b_s34b_b79k", "open_clip", "ViT-B-32:laion2b_s34b_b79k"),
    ("hf-hub:org/repo", "open_clip", "hf-hub:org/repo"),
    ("local-dir:/some/where", "open_clip", "local-dir:/some/where"),
    ("vinid/plip", "transformers", "vinid/plip"),
    ("resnet18", "timm", "resnet18"),
    ("timm:test_vit", "timm", "test_vit"),
])
def test_resolve_name(name, backend, target):
    r = resolve_name(name)
    assert (r.backend, r.target) == (backend, target)


def test_resolve_local_folders(tmp_path, hf_clip_dir):
    oc = tmp_path / "oc"
    oc.mkdir()
    (oc / "open_clip_config.json").write_text("{}")
    assert resolve_name(str(oc)) == resolve_name(f"local-dir:{oc}")
    assert resolve_name(str(hf_clip_dir)).backend == "transformers"
    with pytest.raises(VlmError, match="not found"):
        resolve_name(str(tmp_path / "missing" / "model"))


def test_unknown_alias_lists_known_ones_closest_first():
    with pytest.raises(VlmError) as exc:
        load_encoder("biomedclp")
    msg = str(exc.value)
    assert "Unknown model 'biomedclp'" in msg
    listed = msg.split("closest first): ")[1].split(".")[0].split(", ")
    assert listed[0] == "biomedclip" and set(listed) == set(ALIASES)
    assert "local-dir:" in msg and "timm" in msg


def test_missing_weights_file(tmp_path):
    with pytest.raises(VlmError, match="Weights file .*nope.pt not found"):
        load_encoder("ViT-B-32", weights=tmp_path / "nope.pt")


def test_weights_that_do_not_fit_name_missing_and_unexpected_keys(tiny_arch, tiny_weights, tmp_path):
    state = torch.load(tiny_weights, weights_only=True)
    state["visual.extra_head.weight"] = state.pop("visual.proj")
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(VlmError) as exc:
        load_encoder(tiny_arch, weights=bad)
    msg = str(exc.value)
    assert "do not fit" in msg and "1 missing key(s), e.g. visual.proj" in msg
    assert "1 unexpected key(s), e.g. visual.extra_head.weight" in msg


def test_weights_of_another_architecture(tiny_weights, tmp_path):
    wide = tiny_open_clip_config(tmp_path, "medvlm-tiny-vit-wide", width=48)
    with pytest.raises(VlmError, match=r"do not fit medvlm-tiny-vit-wide\. .*shape mismatch\(es\), e\.g\. "
                                       r"visual\.\S+: checkpoint \(.*32.*\) vs model \(.*48.*\)"):
        load_encoder(wide, weights=tiny_weights)


def test_unreadable_weights_file(tiny_arch, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(VlmError, match="Cannot read weights"):
        load_encoder(tiny_arch, weights=junk)


def test_hub_ids_offline_give_one_clear_message():
    start = time.perf_counter()
    with pytest.raises(VlmError) as exc:
        load_encoder("biomedclip")
    msg = str(exc.value)
    assert "HF_HUB_OFFLINE" in msg and "open_clip_config.json" in msg and "open_clip_pytorch_model.bin" in msg
    assert "local-dir:FOLDER" in msg and f"{BIOMED_TEXT} into FOLDER/text/" in msg
    with pytest.raises(VlmError, match=r"huggingface-cli download vinid/plip --local-dir DIR.*--model DIR"):
        load_encoder("plip")
    with pytest.raises(VlmError, match=r"'openai' weights of ViT-B-32.*--model ViT-B-32 --weights FILE"):
        load_encoder("clip-vit-b-32")
    with pytest.raises(VlmError, match="'openai' weights of ViT-B-32"):  # a tag given as --weights
        load_encoder("ViT-B-32", weights="openai")
    assert time.perf_counter() - start < 10  # no network retries


def test_unknown_pretrained_tag_lists_tags():
    with pytest.raises(VlmError, match="Unknown pretrained tag 'nosuch' for ViT-B-32. Known tags: openai"):
        load_encoder("ViT-B-32:nosuch")


# ----------------------------------------------------------------------------- open_clip
def test_open_clip_with_weights_file(tiny_arch, tiny_weights):
    enc = load_encoder(tiny_arch, weights=tiny_weights)
    assert isinstance(enc, OpenClipEncoder) and enc.has_text
    assert enc.id == f"open_clip:{tiny_arch}"
    assert enc.weights_id == weights_file_id(tiny_weights) and enc.weights_id.startswith("sha256:")
    assert enc.embed_dim == 16 and enc.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)
    assert (enc.preprocess.size, enc.preprocess.interpolation) == (32, "bicubic")
    assert enc.preprocess.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert enc.encode_images(x).shape == (2, 16)
        assert torch.allclose(enc.image_tower()(x), enc.encode_images(x))
    assert enc.encode_texts(["a photo of a cat", "x"]).shape == (2, 16)
    assert not any(m.training for m in enc.model.modules())


def test_open_clip_random_init_is_marked(tiny_arch):
    with pytest.warns(UserWarning, match="random-initialised"):
        enc = load_encoder(tiny_arch)
    assert enc.weights_id == RANDOM_INIT


def test_open_clip_safetensors_weights(tiny_arch, tiny_weights, tmp_path):
    from safetensors.torch import save_file

    state = torch.load(tiny_weights, weights_only=True)
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    a = load_encoder(tiny_arch, weights=tiny_weights)
    b = load_encoder(tiny_arch, weights=path)
    t = ["a photo of a dog"]
    assert torch.allclose(a.encode_texts(t), b.encode_texts(t))


def test_localize_text_config_rewrites_to_local_folder(tmp_path):
    cfg = {"hf_model_name": BIOMED_TEXT, "hf_tokenizer_name": BIOMED_TEXT, "hf_proj_type": "mlp",
           "context_length": 256}
    with pytest.raises(VlmError, match=r"config.json and tokenizer files .* in .*/text/"):
        localize_text_config(cfg, tmp_path)
    assert localize_text_config(cfg, tmp_path, required=False) == cfg
    write_tiny_bert(tmp_path / "text")
    out = localize_text_config(cfg, tmp_path)
    assert out["hf_model_name"] == out["hf_tokenizer_name"] == str(tmp_path / "text")
    assert out["hf_model_pretrained"] is False and out["hf_proj_type"] == "mlp"
    assert cfg["hf_model_name"] == BIOMED_TEXT  # input untouched
    # the sub-folder may also be named like the model
    other = tmp_path / "other"
    write_tiny_bert(other / BIOMED_TEXT.split("/")[-1])
    assert localize_text_config(cfg, other)["hf_model_name"].endswith(BIOMED_TEXT.split("/")[-1])
    assert localize_text_config({"context_length": 77}, tmp_path) == {"context_length": 77}


def test_biomedclip_layout_loads_offline_from_local_dir(tmp_path):
    """A BiomedCLIP-style config (hf_model_name text tower) loads from local-dir:FOLDER with FOLDER/text/."""
    import open_clip
    from open_clip.tokenizer import HFTokenizer

    folder = tmp_path / "biomedclip-tiny"
    text_dir = write_tiny_bert(folder / "text")
    text_cfg = {"hf_model_name": BIOMED_TEXT, "hf_tokenizer_name": BIOMED_TEXT, "hf_proj_type": "mlp",
                "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 16}
    config = {"model_cfg": {"embed_dim": 16, "vision_cfg": TINY_VIT, "text_cfg": text_cfg},
              "preprocess_cfg": {"mean": [0.1, 0.2, 0.3], "std": [0.3, 0.2, 0.1], "interpolation": "bilinear"}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    reference = open_clip.CustomTextCLIP(
        embed_dim=16, vision_cfg=TINY_VIT,
        text_cfg=dict(text_cfg, hf_model_name=str(text_dir), hf_tokenizer_name=str(text_dir),
                      hf_model_pretrained=False)).eval()
    torch.save(reference.state_dict(), folder / "open_clip_pytorch_model.bin")

    enc = load_encoder(f"local-dir:{folder}")
    assert enc.id == "open_clip:local-dir:biomedclip-tiny"
    assert enc.weights_id == weights_file_id(folder / "open_clip_pytorch_model.bin")
    assert enc.preprocess.mean == (0.1, 0.2, 0.3) and enc.preprocess.interpolation == "bilinear"
    texts = ["a photo of malignant tumor.", "a photo of normal breast."]
    tokens = HFTokenizer(str(text_dir), context_length=16)(texts)
    with torch.inference_mode():
        expected = reference.encode_text(tokens)
    assert torch.allclose(enc.encode_texts(texts), expected, atol=1e-6)
    assert load_encoder(str(folder)).weights_id == enc.weights_id  # a plain folder path works too

    # without FOLDER/text/ the error says where to put the text model
    import shutil

    shutil.rmtree(text_dir)
    with pytest.raises(VlmError, match=f"'{BIOMED_TEXT}'.*{folder / 'text'}"):
        load_encoder(f"local-dir:{folder}")


def test_local_dir_without_weights(tmp_path):
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"embed_dim": 16, "vision_cfg": TINY_VIT,
                                                                              "text_cfg": TINY_TEXT}}))
    with pytest.raises(VlmError, match="No weights in .*open_clip_pytorch_model.bin"):
        load_encoder(f"local-dir:{tmp_path}")


# ----------------------------------------------------------------------------- transformers
def test_transformers_local_folder(hf_clip_dir, tmp_path):
    enc = load_encoder(str(hf_clip_dir))
    assert isinstance(enc, TransformersEncoder)
    assert enc.id == "transformers:tiny-clip" and enc.weights_id == weights_file_id(hf_clip_dir / "model.safetensors")
    assert (enc.preprocess.size, enc.preprocess.mean, enc.preprocess.std) == (32, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    assert enc.preprocess.interpolation == "bicubic" and enc.embed_dim == 16
    assert enc.logit_scale == pytest.approx(float(enc.model.logit_scale.detach().exp()))
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(enc.image_tower()(x), enc.encode_images(x), atol=1e-6)
    assert enc.encode_texts(["a", "a longer caption here"]).shape == (2, 16)

    # weights=FILE: the same state dict loads; one from a bigger projection does not fit
    good = tmp_path / "good.pt"
    torch.save(enc.model.state_dict(), good)
    assert load_encoder(str(hf_clip_dir), weights=good).weights_id == weights_file_id(good)
    other = write_tiny_hf_clip(tmp_path / "wide", projection_dim=24)
    wide = tmp_path / "wide.pt"
    from transformers import CLIPModel

    torch.save(CLIPModel.from_pretrained(other).state_dict(), wide)
    with pytest.raises(VlmError, match=r"do not fit .*shape mismatch"):
        load_encoder(str(hf_clip_dir), weights=wide)


# ----------------------------------------------------------------------------- timm
def test_timm_image_only(tmp_path):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_vit", num_classes=7)
    path = tmp_path / "test_vit.pt"
    torch.save(model.state_dict(), path)
    enc = load_encoder("test_vit", weights=path)
    assert isinstance(enc, TimmEncoder) and not enc.has_text
    assert enc.id == "timm:test_vit" and enc.weights_id == weights_file_id(path)
    size = timm.data.resolve_data_config({}, model=model)["input_size"][-1]
    assert enc.preprocess.size == size
    x = torch.randn(2, 3, size, size)
    model.reset_classifier(0)
    with torch.inference_mode():
        assert torch.allclose(enc.encode_images(x), model.eval()(x), atol=1e-6)
    assert enc.image_tower() is enc.model
    with pytest.raises(VlmError, match="image-only"):
        enc.encode_texts(["a photo"])
    # weights of another architecture
    other = tmp_path / "resnet.pt"
    torch.save(timm.create_model("test_resnet").state_dict(), other)
    with pytest.raises(VlmError, match="do not fit test_vit"):
        load_encoder("test_vit", weights=other)


@needs_shared_weights
def test_timm_with_shared_imagenet_weights():
    path = SHARED_WEIGHTS / "tf_efficientnet_lite0.safetensors"
    enc = load_encoder("tf_efficientnet_lite0", weights=path)
    assert enc.weights_id == "sha256:2b4a5f7e9a1870e2"  # README's sha256, first 16 digits
    assert (enc.preprocess.size, enc.preprocess.mean, enc.preprocess.interpolation) == (224, (0.5, 0.5, 0.5), "bicubic")
    assert enc.embed_dim == 1280


def test_device_auto_and_bad_device():
    from vlm.runtime import resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(VlmError, match="Unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(VlmError, match="no GPU"):
            resolve_device("cuda")


def test_open_clip_text_embeddings_are_deterministic(tiny_arch, tiny_weights):
    enc = load_encoder(tiny_arch, weights=tiny_weights)
    a = F.normalize(enc.encode_texts(["a photo of malignant"] * 3), dim=-1)
    assert torch.allclose(a[0], a[2])
