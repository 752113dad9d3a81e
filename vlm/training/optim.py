"""Optimisers, parameter groups (head vs backbone learning rates) and per-step LR schedules."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from vlm.errors import VlmError
from vlm.training.config import TrainConfig


def head_module(model: nn.Module) -> nn.Module | None:
    """The classification head of a model: `.head` of fine-tuning wrappers, timm's `get_classifier()`, or
    a final `fc`/`classifier`/`linear` layer."""
    getter = getattr(model, "get_classifier", None)
    if callable(getter):
        try:
            head = getter()
        except Exception:  # noqa: BLE001 - some models implement it partially
            head = None
        if isinstance(head, nn.Module) and any(True for _ in head.parameters()):
            return head
    for name in ("head", "fc", "classifier", "linear"):
        head = getattr(model, name, None)
        if isinstance(head, nn.Module) and any(True for _ in head.parameters()):
            return head
    return None


def param_groups(model: nn.Module, lr: float, backbone_lr: float | None) -> list[dict[str, Any]]:
    """One group at `lr`, or the head at `lr` and everything else at `backbone_lr`."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise VlmError("The model has no trainable parameters.")
    if backbone_lr is None:
        return [{"params": params, "lr": lr, "name": "all"}]
    head = head_module(model)
    if head is None:
        raise VlmError(f"--backbone-lr needs a model with an identifiable head; {type(model).__name__} has none "
                       f"(no get_classifier(), head, fc or classifier). Leave --backbone-lr out.")
    head_ids = {id(p) for p in head.parameters()}
    backbone = [p for p in params if id(p) not in head_ids]
    head_params = [p for p in params if id(p) in head_ids]
    groups = [{"params": head_params, "lr": lr, "name": "head"}]
    if backbone:
        groups.insert(0, {"params": backbone, "lr": backbone_lr, "name": "backbone"})
    return groups


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer `config.optimizer` names over `param_groups` (SGD with momentum 0.9)."""
    groups = param_groups(model, config.lr, config.backbone_lr)
    wd = config.weight_decay or 0.0
    kinds = {
        "adam": lambda: torch.optim.Adam(groups, lr=config.lr, weight_decay=wd),
        "adamw": lambda: torch.optim.AdamW(groups, lr=config.lr, weight_decay=wd),
        "radam": lambda: torch.optim.RAdam(groups, lr=config.lr, weight_decay=wd),
        "nadam": lambda: torch.optim.NAdam(groups, lr=config.lr, weight_decay=wd),
        "sgd": lambda: torch.optim.SGD(groups, lr=config.lr, momentum=0.9, weight_decay=wd),
    }
    return kinds[config.optimizer]()


def multistep_factor(milestones: list[float], gamma: float, epoch: int) -> float:
    """`torch.optim.lr_scheduler.MultiStepLR`'s LR factor in 0-based epoch `epoch` when stepped once per epoch.

    MultiStepLR decays when its integer epoch counter equals a milestone, so a fractional milestone
    (MedMNIST's 0.5 x 5 = 2.5) never fires and a repeated one fires once per repetition.
    """
    return gamma ** sum(1 for m in milestones if float(m).is_integer() and epoch >= m)


def lr_factor(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The LR multiplier at optimisation step `step` (0-based); constant within an epoch except cosine."""
    epoch = step // steps_per_epoch
    if config.scheduler == "multistep":
        return multistep_factor(config.lr_milestones, config.lr_gamma, epoch)
    if config.scheduler == "exponential":
        return config.lr_gamma ** epoch
    if config.scheduler == "cosine":
        total = config.epochs * steps_per_epoch
        warm = int(round(config.warmup_epochs * steps_per_epoch))
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR implementing `lr_factor` (multistep: MultiStepLR's values at every epoch)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(config, step, steps_per_epoch))
