"""Tip-Adapter and Tip-Adapter-F (Zhang et al., ECCV 2022) on cached embeddings.

Cache model: keys F = the train shots' normalised embeddings, values L = their one-hot labels
(multi-label: per label one-hot over (negative, positive)). For a query f,

    logits = logit_scale * f Wᵀ  +  α · exp(−β (1 − f Fᵀ)) L

with W the zero-shot text classifier, so α = 0 is zero-shot exactly. α and β are chosen on val AUC
over the paper's grid: β in [0.1, 7), α in [0.1, 3), `search_steps` = (β steps, α steps); the paper
uses (200, 20), the default here is (20, 10). Tip-Adapter-F makes F a parameter (initialised with
the shots), trains it with AdamW (eps 1e-4) and a cosine schedule at the α, β of the training-free
search, picks the epoch on val, then searches α, β again with the trained keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from vlm.fewshot.base import (
    FewShotData, MethodResult, class_logits, finite, label_targets, register, split_logits, to_scores, val_auc,
)
from vlm.fewshot.loop import TrainOptions, train_and_select

TIP = ("softmax of logit_scale * cos(image, class text) + alpha * exp(-beta * (1 - cos(image, train shots))) @ "
       "one-hot shot labels; multi-label: per (negative, positive) pair")


@dataclass
class TipOptions:
    beta_range: tuple[float, float] = (0.1, 7.0)
    alpha_range: tuple[float, float] = (0.1, 3.0)
    search_steps: tuple[int, int] = (20, 10)


@dataclass
class TipFOptions(TrainOptions, TipOptions):
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 256
    weight_decay: float = 0.01
    optimizer: str = "adamw"


def _grid(lo_hi: tuple[float, float], steps: int) -> list[float]:
    """The paper's grid: `steps` values from lo, spaced (hi - lo) / steps."""
    lo, hi = lo_hi
    return [lo + i * (hi - lo) / steps for i in range(steps)]


class CacheModel(nn.Module):
    """zs logits + α · exp(−β (1 − f Fᵀ)) L; the keys F are a parameter (trained by Tip-Adapter-F)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, head: torch.Tensor, logit_scale: float) -> None:
        super().__init__()
        self.keys = nn.Parameter(keys.float().clone())
        self.register_buffer("values", values.flatten(1))
        self.head = head
        self.logit_scale = logit_scale
        self.shape = values.shape[1:]
        self.alpha, self.beta = 1.0, 1.0

    def cache_logits(self, x: torch.Tensor, beta: float) -> torch.Tensor:
        affinity = x.float() @ self.keys.T
        return (torch.exp(-beta * (1 - affinity)) @ self.values).view(len(x), *self.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return class_logits(x, self.head, self.logit_scale) + self.alpha * self.cache_logits(x, self.beta)


def search(model: CacheModel, data: FewShotData, opts: TipOptions) -> tuple[float, float, float, list[dict]]:
    """Grid search of (α, β) on val AUC; returns α, β, the val AUC and the grid rows (ties: the first)."""
    x = data.emb["val"]
    with torch.no_grad():
        zs = class_logits(x, model.head, model.logit_scale)
        best, rows = None, []
        for beta in _grid(opts.beta_range, opts.search_steps[0]):
            cache = model.cache_logits(x, beta)
            for alpha in _grid(opts.alpha_range, opts.search_steps[1]):
                auc = val_auc(data.task, data.labels["val"], to_scores(zs + alpha * cache))
                rows.append({"alpha": round(alpha, 6), "beta": round(beta, 6), "val_auc": finite(auc)})
                if best is None or auc > best[0]:
                    best = (auc, alpha, beta)
    auc, alpha, beta = best  # type: ignore[misc]
    return alpha, beta, auc, rows


def cache_model(data: FewShotData) -> CacheModel:
    """The training-free cache model of the train shots with the zero-shot head."""
    head = data.head().weights.to(data.emb["train"].device)
    values = label_targets(data.task, data.labels["train"]).to(head.device)
    return CacheModel(data.emb["train"], values, head, data.encoder.logit_scale)


def _test_scores(model: CacheModel, data: FewShotData, alpha: float, beta: float) -> torch.Tensor:
    model.alpha, model.beta = alpha, beta
    with torch.no_grad():
        return to_scores(model(data.emb["test"]))


@register("tip-adapter", TipOptions, needs_text=True, convention=TIP + "; alpha, beta chosen on val AUC")
def fit_tip(data: FewShotData, opts: TipOptions) -> MethodResult:
    """Training-free Tip-Adapter: (α, β) by grid search on val."""
    model = cache_model(data)
    alpha, beta, auc, rows = search(model, data, opts)
    scores = _test_scores(model, data, alpha, beta)
    return MethodResult(scores, {"alpha": alpha, "beta": beta}, finite(auc), rows, split_logits(model, data))


@register("tip-adapter-f", TipFOptions, needs_text=True,
          convention=TIP + "; cache keys fine-tuned, epoch and then alpha, beta chosen on val AUC")
def fit_tip_f(data: FewShotData, opts: TipFOptions) -> MethodResult:
    """Tip-Adapter-F: train the cache keys at the training-free (α, β), choose the epoch, search again."""
    model = cache_model(data)
    model.alpha, model.beta, _, _ = search(model, data, opts)
    init = {"alpha": model.alpha, "beta": model.beta}
    epoch, _, history = train_and_select(model, model, data, opts)
    alpha, beta, auc, rows = search(model, data, opts)
    chosen = {"alpha": alpha, "beta": beta, "epoch": epoch, "train_alpha": init["alpha"], "train_beta": init["beta"]}
    scores = _test_scores(model, data, alpha, beta)
    return MethodResult(scores, chosen, finite(auc), [{"stage": "epochs", "history": history},
                                                      {"stage": "search", "grid": rows}], split_logits(model, data))
