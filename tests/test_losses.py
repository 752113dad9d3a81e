"""Losses: focal loss and focal BCE against cross-entropy and hand computation, losses that must fit the task."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vlm.errors import VlmError
from vlm.losses import balanced_class_weights, focal_bce, focal_loss, make_loss
from vlm.tasks import get_task
from vlm.training import TrainConfig


def test_focal_equals_ce_at_gamma_0():
    torch.manual_seed(0)
    logits, y = torch.randn(8, 4), torch.randint(0, 4, (8,))
    assert torch.allclose(focal_loss(logits, y, gamma=0.0), F.cross_entropy(logits, y), atol=1e-6)
    w = balanced_class_weights([5, 1, 2, 0])
    assert torch.allclose(focal_loss(logits, y, gamma=0.0, weight=w), F.cross_entropy(logits, y, weight=w), atol=1e-6)
    y2 = torch.randint(0, 2, (8, 4))
    assert torch.allclose(focal_bce(logits, y2, gamma=0.0), F.binary_cross_entropy_with_logits(logits, y2.float()))


def test_focal_matches_hand_computation_at_gamma_2():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 0])
    p = [math.exp(2) / (math.exp(2) + 1), 1 / (1 + math.e)]  # probability of the true class
    expected = sum(-((1 - pt) ** 2) * math.log(pt) for pt in p) / 2
    assert focal_loss(logits, y, gamma=2.0).item() == pytest.approx(expected, rel=1e-5)
    # focal BCE of one logit 1.0 with label 1: -(1 - s)^2 log s
    s = 1 / (1 + math.exp(-1.0))
    assert focal_bce(torch.tensor([[1.0]]), torch.tensor([[1]]), 2.0).item() == pytest.approx(-(1 - s) ** 2 * math.log(s), rel=1e-5)


def test_loss_must_fit_the_task():
    chest, breast = get_task("chestmnist"), get_task("breastmnist")
    for name in ("ce", "weighted"):
        with pytest.raises(VlmError, match="--loss bce"):
            TrainConfig(loss=name).resolved(chest)
    with pytest.raises(VlmError, match="multi-label"):
        TrainConfig(loss="bce").resolved(breast)
    assert TrainConfig().resolved(chest).loss == "bce" and TrainConfig().resolved(breast).loss == "ce"
    fn = make_loss("focal", chest, gamma=2.0)  # focal BCE on multi-label
    assert fn(torch.zeros(3, 14), torch.ones(3, 14, dtype=torch.long)).item() > 0
