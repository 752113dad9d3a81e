"""Epoch samplers: balanced draws, oversampling, and multi-label refused."""

from __future__ import annotations

import pytest
import torch

from vlm.errors import VlmError
from vlm.sampling import EpochSampler
from vlm.tasks import get_task


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
