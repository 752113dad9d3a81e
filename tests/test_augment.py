"""Augmentation: the 3D shape transform in the input pipeline, seeded 2D and 3D augmentations."""

from __future__ import annotations

import torch

from vlm.augment import Augment2D, Augment3D
from vlm.preprocess import medmnist_preprocess, to_float
from vlm.tasks import get_task
from vlm.training import InputPipeline, TrainConfig


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
