"""Image embeddings: the on-disk cache (hits, keys, corrupt entries, random weights) and 3D volumes encoded
slice by slice and pooled.

Offline: `FakeEncoder` and random splits in memory.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from fixtures.inputs import random_split
from fixtures.tiny_models import FakeEncoder
from vlm.embeddings import cache_key, cache_path, image_embeddings
from vlm.errors import VlmError

pytestmark = pytest.mark.usefixtures("offline")


def test_cache_hit_encodes_no_image(tmp_path):
    split = random_split("pathmnist", 10)
    enc = FakeEncoder(size=32)
    first, n1 = image_embeddings(enc, split, batch_size=4, cache_dir=tmp_path)
    assert n1 == 10 and enc.calls == 3 and first.shape == (10, 8) and first.dtype == torch.float32
    assert torch.allclose(first.norm(dim=1), torch.ones(10))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".safetensors")
    sidecar = json.loads((tmp_path / files[0]).read_text())
    assert sidecar["encoder"] == "fake:encoder" and sidecar["split"] == "test" and sidecar["shape"] == [10, 8]

    def boom(x):
        raise AssertionError("encode_images called on a cache hit")

    enc.encode_images = boom
    ticks = []
    second, n2 = image_embeddings(enc, split, batch_size=4, cache_dir=tmp_path, progress=ticks.append)
    assert n2 == 0 and ticks == [] and torch.equal(first, second)


def test_cache_key_separates_what_matters(tmp_path):
    split = random_split("pathmnist", 6)
    base = cache_path(cache_key(FakeEncoder(), split), tmp_path)
    assert cache_path(cache_key(FakeEncoder(size=32), split), tmp_path) != base  # preprocessing
    assert cache_path(cache_key(FakeEncoder(weights_id="other"), split), tmp_path) != base  # weights
    other = random_split("pathmnist", 6, seed=1)  # same dataset/split/size, other pixels
    assert cache_path(cache_key(FakeEncoder(), other), tmp_path) != base
    vol = random_split("vesselmnist3d", 2)
    assert cache_key(FakeEncoder(), vol, 0, "mean")["volume_policy"] == "slices=D;pool=mean"
    assert cache_path(cache_key(FakeEncoder(), vol, 1, "mean"), tmp_path) != cache_path(
        cache_key(FakeEncoder(), vol, 0, "mean"), tmp_path)


def test_corrupt_cache_entry_is_recomputed_and_random_init_is_not_cached(tmp_path):
    split = random_split("breastmnist", 5)
    enc = FakeEncoder()
    emb, _ = image_embeddings(enc, split, cache_dir=tmp_path)
    entry = next(tmp_path.glob("*.safetensors"))
    entry.write_bytes(b"garbage")
    again, n = image_embeddings(enc, split, cache_dir=tmp_path)
    assert n == 5 and torch.allclose(emb, again)
    fresh = tmp_path / "random"
    _, n = image_embeddings(FakeEncoder(weights_id="random-init"), split, cache_dir=fresh)
    _, n2 = image_embeddings(FakeEncoder(weights_id="random-init"), split, cache_dir=fresh)
    assert n == n2 == 5 and not fresh.exists()


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("pool", ["mean", "max"])
def test_3d_volumes_are_encoded_slice_by_slice_and_pooled(axis, pool):
    shape = (1, 6, 8, 10)  # (C, D, H, W): a different slice count per axis
    split = random_split("vesselmnist3d", 3, shape=shape)
    enc = FakeEncoder()
    emb, n = image_embeddings(enc, split, batch_size=16, slice_axis=axis, pool=pool, use_cache=False)
    n_slices = shape[1 + axis]
    assert n == 3 and emb.shape == (3, 8) and torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-6)
    assert sum(s[0] for s in enc.shapes) == 3 * n_slices  # every slice of every volume, once
    assert all(s[1] == 3 for s in enc.shapes)  # grey slices replicated to RGB
    vol = split.images[1]  # by hand: slices of volume 1 along the axis
    slices = vol.movedim(1 + axis, 0)  # (S, C, h, w)
    f = F.normalize(FakeEncoder().encode_images(enc.preprocess(slices)), dim=-1)
    pooled = F.normalize(f.mean(0) if pool == "mean" else f.amax(0), dim=-1)
    assert torch.allclose(emb[1], pooled, atol=1e-6)


@pytest.mark.parametrize("axis", [3, -1])
def test_slice_axis_out_of_range(axis):
    with pytest.raises(VlmError, match=f"--slice-axis must be a whole number between 0 and 2, got {axis}"):
        image_embeddings(FakeEncoder(), random_split("vesselmnist3d", 1), slice_axis=axis)


def test_unknown_pool():
    with pytest.raises(VlmError, match="Unknown pooling 'median'"):
        image_embeddings(FakeEncoder(), random_split("vesselmnist3d", 1), pool="median")
