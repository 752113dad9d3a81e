"""vlm.preprocess on synthetic images: the PIL resampler bit for bit against PIL, crops and pads against
torchvision, ids that name every setting, and the transformers processor flags against the processor.

Offline and model-free; the real-image comparisons per backend are in test_preprocessing_reference.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vlm.data import Split
from vlm.embeddings import cache_key
from vlm.errors import VlmError
from vlm.preprocess import Preprocess, center_crop, pil_resize, resize, resized_shape
from vlm.tasks import get_task

from fixtures.tiny_models import FakeEncoder

PIL_CODES = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "area": 4, "hamming": 5}


def noise(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w), dtype=np.uint8)


def pil_reference(images: np.ndarray, size: tuple[int, int], code: int) -> torch.Tensor:
    from PIL import Image

    out = [np.asarray(Image.fromarray(img).resize(size[::-1], code)) for img in images]
    return torch.from_numpy(np.stack(out))[:, None].float()


@pytest.mark.parametrize("interpolation", list(PIL_CODES))
@pytest.mark.parametrize("n, m", [(28, 224), (28, 235), (28, 168), (28, 13), (97, 40), (224, 28)])
def test_pil_resize_is_bit_exact(interpolation, n, m):
    x = noise(3, n, n)
    ours = pil_resize(torch.from_numpy(x)[:, None], (m, m), interpolation) * 255
    assert torch.equal(ours, pil_reference(x, (m, m), PIL_CODES[interpolation]))


def test_pil_resize_of_one_axis_and_of_float_input():
    x = noise(2, 28, 28)
    ref = pil_reference(x, (28, 50), PIL_CODES["bicubic"])
    assert torch.equal(pil_resize(torch.from_numpy(x)[:, None], (28, 50), "bicubic") * 255, ref)
    as_float = torch.from_numpy(x)[:, None].float() / 255
    assert torch.equal(resize(as_float, (28, 50), "bicubic", resampler="pil") * 255, ref)
    with pytest.raises(VlmError, match="interpolation 'lanczos'"):
        resize(as_float, 64, "lanczos")  # the torch resampler has no lanczos
    with pytest.raises(VlmError, match="resampler"):
        resize(as_float, 64, "bicubic", resampler="cv2")


@pytest.mark.parametrize("h, w, size", [(32, 32, 28), (35, 35, 28), (31, 40, 28), (20, 20, 28), (21, 30, 28)])
def test_center_crop_matches_torchvision(h, w, size):
    from torchvision.transforms.functional import center_crop as tv_center_crop

    x = torch.rand(2, 3, h, w)
    assert torch.equal(center_crop(x, size), tv_center_crop(x, [size, size]))  # round offset, zero padding
    floored = center_crop(x, size, offset="floor")
    if h >= size and w >= size:
        top, left = (h - size) // 2, (w - size) // 2
        assert torch.equal(floored, x[..., top:top + size, left:left + size])
    padded = center_crop(torch.zeros(1, 3, 20, 20), 28, fill=(255, 0, 128))
    assert padded[0, :, 0, 0].tolist() == pytest.approx([1.0, 0.0, 128 / 255])


def test_resized_shape_follows_torchvision_and_open_clip():
    assert resized_shape(28, 28, 256, "shortest") == (256, 256)
    assert resized_shape(30, 45, 224, "shortest") == (224, 336)  # int(224 * 45 / 30)
    assert resized_shape(45, 30, 224, "longest") == (224, round(30 * 224 / 45))
    assert resized_shape(30, 45, 224, "squash") == (224, 224)
    assert resized_shape(30, 45, 224, "none") == (30, 45)
    with pytest.raises(VlmError, match="resize mode"):
        resized_shape(28, 28, 32, "fit")


def test_preprocess_id_names_every_pixel_setting_and_keys_the_cache():
    base = Preprocess(size=224, resize=256, resize_mode="shortest", interpolation="bicubic", resampler="pil")
    variants = {"size": 192, "mean": (0.4, 0.5, 0.5), "std": (0.3, 0.5, 0.5), "interpolation": "bilinear",
                "rgb": False, "resize": 240, "resize_mode": "squash", "crop_offset": "floor", "fill": (128,),
                "resampler": "torch", "rescale": 1.0}
    ids = {base.id} | {dataclasses.replace(base, **{k: v}).id for k, v in variants.items()}
    assert len(ids) == len(variants) + 1
    assert dataclasses.replace(base, source="elsewhere").id == base.id  # the record's label, not a pixel setting
    enc, other = FakeEncoder(), FakeEncoder()
    other.preprocess = dataclasses.replace(enc.preprocess, resampler="pil")
    split = Split(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), torch.zeros(2, 1, dtype=torch.long),
                  get_task("breastmnist"), "test", 28)
    assert cache_key(enc, split)["preprocess"] != cache_key(other, split)["preprocess"]


def test_with_size_scales_the_pre_crop_resize():
    pp = Preprocess(size=224, resize=256, resize_mode="shortest")
    assert (pp.with_size(112).size, pp.with_size(112).resize) == (112, 128)
    assert Preprocess(size=224).with_size(64) == Preprocess(size=64)
    assert pp.with_size(112)(torch.zeros(2, 1, 28, 28, dtype=torch.uint8)).shape == (2, 3, 112, 112)


@pytest.mark.parametrize("flags", [
    {"do_rescale": False, "image_mean": [100.0, 110.0, 120.0], "image_std": [50.0, 60.0, 70.0]},
    {"do_normalize": False, "rescale_factor": 0.5},
    {"do_resize": False},  # the 28 px image is padded to the 32 px crop
    {"do_center_crop": False, "size": {"shortest_edge": 40}},
    {"do_resize": False, "do_center_crop": False},
])
def test_transformers_processor_flags(flags):
    from PIL import Image
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from vlm.encoders.transformers import processor_preprocess

    proc = CLIPImageProcessorPil(**{"size": {"shortest_edge": 36}, "crop_size": {"height": 32, "width": 32}, **flags})
    x = noise(4, 28, 28)
    ref = proc(images=[Image.fromarray(img) for img in x], return_tensors="pt")["pixel_values"]
    ours = processor_preprocess(proc, "test")(torch.from_numpy(x)[:, None])
    assert ours.shape == ref.shape and torch.allclose(ours, ref, atol=1e-4, rtol=1e-5)
