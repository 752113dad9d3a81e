"""CLIP-Adapter (Gao et al., IJCV 2023) on cached image embeddings.

A bottleneck MLP (E -> E/`reduction` -> E, ReLU after each layer, no biases; reduction 4 as in the
paper) on the image embedding, mixed back with the residual ratio r:

    f' = r · A(f) + (1 − r) · f,    logits = logit_scale * cos(f', class text)

against the frozen zero-shot text classifier. For each r in `ratios` an adapter is trained (AdamW +
cosine, the epoch picked on val AUC); the (r, epoch) with the best val AUC scores the test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from vlm.fewshot.base import FewShotData, MethodResult, class_logits, register, split_logits, to_scores
from vlm.fewshot.loop import TrainOptions, train_and_select


@dataclass
class ClipAdapterOptions(TrainOptions):
    ratios: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
    reduction: int = 4
    epochs: int = 50
    lr: float = 1e-3
    batch_size: int = 32
    weight_decay: float = 0.01


class ClipAdapter(nn.Module):
    """Residual bottleneck adapter on image features, then the zero-shot text classifier."""

    def __init__(self, dim: int, reduction: int, ratio: float, head: torch.Tensor, logit_scale: float) -> None:
        super().__init__()
        hidden = max(1, dim // reduction)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden, bias=False), nn.ReLU(),
                                 nn.Linear(hidden, dim, bias=False), nn.ReLU())
        self.ratio = ratio
        self.head = head
        self.logit_scale = logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        mixed = self.ratio * self.mlp(x) + (1 - self.ratio) * x
        return class_logits(F.normalize(mixed, dim=-1), self.head, self.logit_scale)


@register("clip-adapter", ClipAdapterOptions, needs_text=True,
          convention="softmax of logit_scale * cos(r * adapter(image) + (1 - r) * image, class text); "
                     "r and the epoch chosen on val AUC; multi-label: per (negative, positive) pair")
def fit_clip_adapter(data: FewShotData, opts: ClipAdapterOptions) -> MethodResult:
    """One adapter per residual ratio; the best (ratio, epoch) on val scores test."""
    head = data.head().weights.to(data.emb["train"].device)
    best, rows = None, []
    for ratio in opts.ratios:
        torch.manual_seed(data.seed)
        model = ClipAdapter(data.emb["train"].shape[1], opts.reduction, float(ratio), head,
                            data.encoder.logit_scale).to(head.device)
        epoch, auc, history = train_and_select(model, model, data, opts)
        rows.append({"ratio": ratio, "epoch": epoch, "val_auc": auc, "history": history})
        score = float("-inf") if auc is None else auc
        if best is None or score > best[0]:
            best = (score, ratio, epoch, auc, model)
    _, ratio, epoch, auc, model = best  # type: ignore[misc]
    with torch.no_grad():
        scores = to_scores(model(data.emb["test"]))
    return MethodResult(scores, {"ratio": ratio, "epoch": epoch}, auc, rows, split_logits(model, data))
