"""Each encoder backend's tensor preprocessing against its library's own PIL pipeline, on real BreastMNIST.

For every backend: the 28 px uint8 test images of ../shared's breastmnist go (a) one by one as
`PIL.Image.fromarray(img)` through the library's own pipeline (open_clip's `preprocess` from
`create_model_and_transforms`, transformers' `CLIPImageProcessor` in both its torchvision and PIL
backends, timm's `create_transform(**resolve_model_data_config(model))`) and (b) as one uint8 batch
through `encoder.preprocess`. Asserted: at most MAX_GREY_LEVELS between the two in un-normalised 0..255
units, and image embeddings (one model on both inputs) with cosine >= MIN_COSINE. Skipped without
../shared. Random-initialised tiny models, built offline.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlm.encoders import load_encoder

from conftest import SHARED_DATA, needs_shared_data
from fixtures.tiny_models import TINY_TEXT, write_tiny_hf_clip

pytestmark = needs_shared_data

MAX_GREY_LEVELS = 2.0
FLOAT_SLACK = 1e-3  # float error of normalising and un-normalising, in grey levels
MIN_COSINE = 0.9999
COSINE_IMAGES = 64  # images whose embeddings are compared (all 156 are compared pixel by pixel)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """BreastMNIST's 156 test images, (N, 28, 28) uint8."""
    return np.load(SHARED_DATA / "breastmnist.npz")["test_images"]


def pil_images(images: np.ndarray, mode: str | None = None) -> list:
    from PIL import Image

    return [Image.fromarray(img) if mode is None else Image.fromarray(img).convert(mode) for img in images]


def grey_levels(ours: torch.Tensor, ref: torch.Tensor, std: tuple[float, ...], rescale: float = 1 / 255) -> float:
    """Max |ours - ref| of two normalised batches, in the library's un-normalised 8-bit units (std / rescale)."""
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    scale = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1) / rescale
    return float(((ours.double() - ref.double()) * scale).abs().max())


def min_cosine(encode, ours: torch.Tensor, ref: torch.Tensor, n: int = COSINE_IMAGES) -> float:
    """Smallest cosine between the embeddings of the first `n` images of the two inputs through one `encode`."""
    with torch.inference_mode():
        a, b = encode(ours[:n]), encode(ref[:n])
    return float(F.cosine_similarity(a.float(), b.float(), dim=-1).min())


def check(name: str, levels: float, cosine: float) -> None:
    print(f"{name}: max {levels:.4f} grey levels, min cosine {cosine:.7f}")
    assert levels <= MAX_GREY_LEVELS + FLOAT_SLACK, f"{name}: {levels:.2f} grey levels from the library's pipeline"
    assert cosine >= MIN_COSINE, f"{name}: embedding cosine {cosine:.6f}"


# ----------------------------------------------------------------------------- open_clip
def write_open_clip_dir(folder: Path, preprocess_cfg: dict) -> Path:
    """A local-dir: folder holding a random ViT-B-32-like CLIP (224 px, 32 px patches, 2 narrow layers)."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    vision = {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32, "head_width": 32}
    model_cfg = {"embed_dim": 16, "vision_cfg": vision, "text_cfg": TINY_TEXT}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg,
                                                               "preprocess_cfg": preprocess_cfg}))
    torch.manual_seed(0)
    torch.save(open_clip.CLIP(**model_cfg).state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


@pytest.mark.parametrize("preprocess_cfg", [
    {},  # CLIP's: shortest side to 224 (bicubic), centre crop, OpenAI mean/std
    {"resize_mode": "squash", "interpolation": "bilinear", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    {"resize_mode": "longest", "interpolation": "bicubic", "fill_color": 255},
], ids=["shortest-bicubic", "squash-bilinear", "longest"])
def test_open_clip_matches_its_preprocess(images, tmp_path, preprocess_cfg):
    import open_clip

    folder = write_open_clip_dir(tmp_path / "oc", preprocess_cfg)
    enc = load_encoder(f"local-dir:{folder}")
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")  # built apart from enc
    ref = torch.stack([preprocess(img) for img in pil_images(images)])
    ours = enc.preprocess(torch.from_numpy(images)[:, None])
    std = tuple(preprocess_cfg.get("std", OPENAI_STD))
    check(f"open_clip {preprocess_cfg}", grey_levels(ours, ref, std), min_cosine(model.eval().encode_image, ours, ref))


# ----------------------------------------------------------------------------- transformers
HF_PROCESSORS = {
    "resize256-crop224": {"size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224}},
    "default": {},  # CLIPImageProcessor's own: shortest edge 224, crop 224, bicubic, OpenAI mean/std
    "resize231-crop224-bilinear": {"size": {"shortest_edge": 231}, "crop_size": {"height": 224, "width": 224},
                                   "resample": 2},  # odd margin: transformers floors the crop offset
    "squash224-half": {"size": {"height": 224, "width": 224}, "do_center_crop": False,
                       "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]},
}


@pytest.mark.parametrize("backend", ["torchvision", "pil"])
@pytest.mark.parametrize("config", list(HF_PROCESSORS))
def test_transformers_matches_its_image_processor(images, tmp_path, config, backend):
    from transformers import CLIPImageProcessor, CLIPModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    folder = write_tiny_hf_clip(tmp_path / "hf", image_size=224, patch_size=32, processor=HF_PROCESSORS[config])
    enc = load_encoder(str(folder))
    processor = (CLIPImageProcessor if backend == "torchvision" else CLIPImageProcessorPil).from_pretrained(folder)
    ref = processor(images=pil_images(images), return_tensors="pt")["pixel_values"]
    ours = enc.preprocess(torch.from_numpy(images)[:, None])
    model = CLIPModel.from_pretrained(folder).eval()
    levels = grey_levels(ours, ref, tuple(processor.image_std), processor.rescale_factor)
    check(f"transformers {config} ({backend})", levels,
          min_cosine(lambda x: model.get_image_features(pixel_values=x).pooler_output, ours, ref))


# ----------------------------------------------------------------------------- timm
@pytest.mark.parametrize("name", ["test_vit", "test_resnet"])  # 160 px, crop_pct 0.95; bicubic / bilinear
def test_timm_matches_its_eval_transform(images, tmp_path, name):
    import timm
    from timm.data import create_transform, resolve_model_data_config

    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=0).eval()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    enc = load_encoder(name, weights=tmp_path / "w.pt")
    cfg = resolve_model_data_config(model)
    assert cfg["crop_pct"] < 1
    transform = create_transform(**cfg)
    ref = torch.stack([transform(img) for img in pil_images(images, "RGB")])  # timm's loaders give RGB images
    ours = enc.preprocess(torch.from_numpy(images)[:, None])
    check(f"timm {name} {cfg}", grey_levels(ours, ref, cfg["std"]), min_cosine(model, ours, ref))


@pytest.mark.parametrize("overrides", [
    {"input_size": (3, 224, 224), "crop_pct": 0.95},  # resize 235, crop 224: odd margin, offset rounds
    {"input_size": (3, 224, 224), "crop_pct": 0.875, "crop_mode": "squash", "interpolation": "bilinear"},
    {"input_size": (3, 160, 160), "crop_pct": 1.1, "crop_mode": "border"},  # resize 145, padded with the mean
    {"input_size": (3, 96, 96), "crop_pct": 0.9, "interpolation": "nearest"},
], ids=["center-235-224", "squash", "border-pad", "nearest"])
def test_timm_data_configs(images, overrides):
    from timm.data import create_transform

    from vlm.encoders.timm import data_config_preprocess

    cfg = {"input_size": (3, 224, 224), "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
           "std": (0.229, 0.224, 0.225), "crop_pct": 0.875, "crop_mode": "center", **overrides}
    transform = create_transform(**cfg)
    ref = torch.stack([transform(img) for img in pil_images(images, "RGB")])
    ours = data_config_preprocess(cfg, "test")(torch.from_numpy(images)[:, None])
    levels = grey_levels(ours, ref, cfg["std"])
    print(f"timm {overrides}: max {levels:.4f} grey levels")
    assert levels <= MAX_GREY_LEVELS + FLOAT_SLACK
