"""Few-shot linear probe, kNN and the zero-shot-initialised probe: `vlm.finetune`'s own code on the shots.

With K = "all" the linear probe is exactly `vlm finetune --mode linear-probe` (same embeddings, grid
and solver); the zs-init probe is `--mode zs-init --zs-then linear-probe` (L2 pulling the weights
toward the zero-shot head, so a large L2 returns zero-shot).
"""

from __future__ import annotations

from dataclasses import dataclass

from vlm.fewshot.base import FewShotData, MethodResult, register
from vlm.finetune import zero_shot_head
from vlm.finetune.probe import L2_GRID, ZS_L2_EXTRA, knn, linear_probe

PROBE = ("logistic regression on standardised embeddings (full-batch L-BFGS, L2 chosen on val AUC); "
         "softmax probabilities, multi-label: per-label sigmoid")


@dataclass
class ProbeOptions:
    l2_grid: tuple[float, ...] = L2_GRID
    max_iter: int = 300


@dataclass
class ZsInitOptions:
    l2_grid: tuple[float, ...] = L2_GRID + ZS_L2_EXTRA
    max_iter: int = 300


@dataclass
class KnnOptions:
    k: int | str = "auto"
    weighting: str = "uniform"


@register("linear-probe", ProbeOptions, needs_text=False, convention=PROBE)
def fit_linear_probe(data: FewShotData, opts: ProbeOptions) -> MethodResult:
    """`vlm.finetune.linear_probe` on the train shots."""
    out = linear_probe(data.task, data.emb, data.labels, l2_grid=opts.l2_grid, max_iter=opts.max_iter)
    return MethodResult(out["scores"], {"l2": out["l2"]}, out["val_auc"], out["grid"], out["logits"])


@register("zs-init", ZsInitOptions, needs_text=True,
          convention=PROBE + "; L2 penalises the distance to logit_scale * the zero-shot classifier")
def fit_zs_init(data: FewShotData, opts: ZsInitOptions) -> MethodResult:
    """`vlm.finetune.linear_probe` with the zero-shot head of `vlm.finetune.zero_shot_head` as its prior."""
    prior, style = zero_shot_head(data.encoder, data.task, style=data.style, prompts=data.prompts)
    out = linear_probe(data.task, data.emb, data.labels, l2_grid=opts.l2_grid, prior=prior, max_iter=opts.max_iter)
    return MethodResult(out["scores"], {"l2": out["l2"], "style": style}, out["val_auc"], out["grid"], out["logits"])


@register("knn", KnnOptions, needs_text=False,
          convention="cosine kNN vote fractions against the train shots (k chosen on val AUC)")
def fit_knn(data: FewShotData, opts: KnnOptions) -> MethodResult:
    """`vlm.finetune.knn` against the train shots (k capped at their number)."""
    out = knn(data.task, data.emb, data.labels, k=opts.k, weighting=opts.weighting)
    return MethodResult(out["scores"], {"k": out["k"], "weighting": opts.weighting}, out["val_auc"], out["grid"])
