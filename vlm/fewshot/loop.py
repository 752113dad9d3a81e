"""The small training loop of the learned few-shot methods (Tip-Adapter-F, CLIP-Adapter, CoOp).

It runs on cached embeddings: mini-batches of the train shots (shuffled with the run's seed), a
cosine learning-rate schedule over all steps, and after every epoch (and before the first) the val
AUC. The state of the best epoch (ties: the earliest) is loaded back at the end, so "0 epochs" is a
candidate too and a method never does worse on val than its initialisation.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn

from vlm.errors import VlmError
from vlm.fewshot.base import FewShotData, finite, logits_loss, to_scores, val_auc

OPTIMIZERS = ("sgd", "adamw")


@dataclass
class TrainOptions:
    """Optimisation of a learned few-shot method (subclasses set their own defaults)."""

    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 32
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    momentum: float = 0.9  # SGD only


def _optimizer(params: list[nn.Parameter], opts: TrainOptions) -> torch.optim.Optimizer:
    if opts.optimizer == "sgd":
        return torch.optim.SGD(params, lr=opts.lr, momentum=opts.momentum, weight_decay=opts.weight_decay)
    if opts.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=opts.lr, eps=1e-4, weight_decay=opts.weight_decay)
    raise VlmError(f"Unknown optimizer '{opts.optimizer}': choose {' or '.join(OPTIMIZERS)}.")


def train_and_select(module: nn.Module, logits: Callable[[torch.Tensor], torch.Tensor], data: FewShotData,
                     opts: TrainOptions) -> tuple[int, float | None, list[dict[str, Any]]]:
    """Train `module`'s trainable parameters so that `logits(train embeddings)` fit the train labels.

    `logits(x)` maps (B, E) image embeddings to class logits (see `vlm.fewshot.base`). Returns the
    chosen epoch, its val AUC and the history [{epoch, loss, val_auc}]; `module` ends in that state.
    """
    if opts.epochs < 0 or opts.batch_size < 1 or opts.lr <= 0:
        raise VlmError(f"Few-shot training needs epochs >= 0, batch_size >= 1 and lr > 0 (got {opts.epochs}, "
                       f"{opts.batch_size}, {opts.lr}).")
    params = [p for p in module.parameters() if p.requires_grad]
    x, y = data.emb["train"], data.labels["train"]
    steps_per_epoch = math.ceil(len(x) / opts.batch_size)
    opt = _optimizer(params, opts)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, opts.epochs * steps_per_epoch))
    gen = torch.Generator().manual_seed(int(data.seed))

    def score_val() -> float:
        with torch.no_grad():
            return val_auc(data.task, data.labels["val"], to_scores(logits(data.emb["val"])))

    best = (score_val(), 0, copy.deepcopy(module.state_dict()))
    history = [{"epoch": 0, "loss": None, "val_auc": finite(best[0])}]
    for epoch in range(1, opts.epochs + 1):
        total = 0.0
        with torch.enable_grad():
            for idx in torch.randperm(len(x), generator=gen).split(opts.batch_size):
                idx = idx.to(x.device)
                loss = logits_loss(logits(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx)
        auc = score_val()
        history.append({"epoch": epoch, "loss": round(total / len(x), 6), "val_auc": finite(auc)})
        if auc > best[0]:
            best = (auc, epoch, copy.deepcopy(module.state_dict()))
    module.load_state_dict(best[2])
    return best[1], finite(best[0]), history
