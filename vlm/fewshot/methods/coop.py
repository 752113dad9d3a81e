"""CoOp (Zhou et al., IJCV 2022): learned context vectors in front of the class name, through the frozen text tower.

Prompts are "<context> <class name><suffix>" (class token at the end); the class name is the first
name of each class in the prompt style used for zero-shot (`ZeroShotHead.names`). Multi-label:
per label a (negative, positive) pair, "<context> <negative> <name><suffix>" and "<context> <name><suffix>",
sharing the context. The M context vectors replace the token embeddings of `ctx_init` ("a photo of
a" by default, M = its token count) and start from them, so with 0 epochs CoOp is zero-shot with the
template "a photo of a {label}."; `ctx_init=None` starts `n_ctx` vectors from N(0, 0.02²) instead.
`csc=True` learns one context per class (CoOp's class-specific variant) instead of one shared one.

Training: SGD (momentum 0.9, weight decay 5e-4, cosine schedule, lr 2e-3) on the cached image
embeddings of the train shots; a step costs one text-tower pass over the K (or 2L) prompts, cut to
their own tokens (`PromptTower.trim`), never an image. The epoch (0 included) is picked on val AUC; scores are softmax(logit_scale * cos), as zero-shot.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from vlm.errors import VlmError
from vlm.fewshot.base import FewShotData, MethodResult, class_logits, register, split_logits, to_scores
from vlm.fewshot.loop import TrainOptions, train_and_select
from vlm.fewshot.towers import PromptTower, Tokens, prompt_tower


@dataclass
class CoOpOptions(TrainOptions):
    ctx_init: str | None = "a photo of a"
    n_ctx: int = 16  # only with ctx_init=None
    csc: bool = False
    suffix: str = "."
    negative: str = "no"
    epochs: int = 50
    lr: float = 2e-3
    batch_size: int = 32
    weight_decay: float = 5e-4
    optimizer: str = "sgd"


def coop_prompts(names: list[str], prefix: str, opts: CoOpOptions, multi_label: bool) -> tuple[list[str], list[int]]:
    """The prompt texts and the class each belongs to (multi-label: negative then positive per label)."""
    texts, owner = [], []
    for c, name in enumerate(names):
        sides = [f"{prefix} {opts.negative} {name}{opts.suffix}", f"{prefix} {name}{opts.suffix}"] if multi_label \
            else [f"{prefix} {name}{opts.suffix}"]
        texts += sides
        owner += [c] * len(sides)
    return texts, owner


def _context_length(tower: PromptTower, tokens: Tokens, prefix: str) -> int:
    """How many tokens the context prefix takes in every prompt (VlmError when they do not all start with it)."""
    ids = tokens["ids"]
    alone = tower.tokenize([prefix])["ids"][0]
    n = min(len(alone), ids.shape[1])
    same = (alone[:n] == ids[0, :n]).long().cumprod(0).sum().item()
    m = int(same) - tower.lead
    if m < 1 or not bool((ids[:, :tower.lead + m] == ids[:1, :tower.lead + m]).all()):
        raise VlmError(f"CoOp's prompts do not all start with the context '{prefix}' token for token; "
                       f"choose another ctx_init.")
    return m


class PromptLearner(nn.Module):
    """Context vectors (M, D) or per class (C, M, D) spliced into the prompts' token embeddings."""

    def __init__(self, tower: PromptTower, texts: list[str], owner: list[int], prefix: str, *, csc: bool,
                 random_init: bool, seed: int) -> None:
        super().__init__()
        self.tower = tower
        self.tokens = tower.trim(tower.tokenize(texts))
        self.m = _context_length(tower, self.tokens, prefix)
        base = tower.token_embeddings(self.tokens)
        self.register_buffer("base", base)
        lead, m = tower.lead, self.m
        ctx = base[0, lead:lead + m].clone()
        if random_init:
            g = torch.Generator().manual_seed(int(seed))
            ctx = (torch.randn(ctx.shape, generator=g) * 0.02).to(base.device)
        n_classes = max(owner) + 1
        self.ctx = nn.Parameter(ctx.expand(n_classes, m, -1).clone() if csc else ctx)
        self.register_buffer("owner", torch.tensor(owner, device=base.device))
        self.multi = len(owner) > n_classes

    def forward(self) -> torch.Tensor:
        """The text classifier W (E, K), or (E, L, 2) for multi-label pairs."""
        lead, m = self.tower.lead, self.m
        g = self.base.shape[0]
        ctx = self.ctx[self.owner] if self.ctx.dim() == 3 else self.ctx.expand(g, -1, -1)
        embeds = torch.cat([self.base[:, :lead], ctx, self.base[:, lead + m:]], dim=1)
        w = F.normalize(self.tower.encode(self.tokens, embeds), dim=-1).T
        return w.reshape(w.shape[0], -1, 2) if self.multi else w


def build_learner(data: FewShotData, opts: CoOpOptions) -> PromptLearner:
    """The prompt learner of a problem: its class names, prompts and context initialisation."""
    tower = prompt_tower(data.encoder)
    prefix = opts.ctx_init if opts.ctx_init is not None else " ".join(["X"] * opts.n_ctx)
    texts, owner = coop_prompts(data.head().names, prefix, opts, data.task.kind == "multi-label")
    return PromptLearner(tower, texts, owner, prefix, csc=opts.csc, random_init=opts.ctx_init is None,
                         seed=data.seed)


@register("coop", CoOpOptions, needs_text=True,
          convention="softmax of logit_scale * cos(image, text of '<learned context> <class name>.'); context "
                     "epoch chosen on val AUC; multi-label: per (negative, positive) prompt pair")
def fit_coop(data: FewShotData, opts: CoOpOptions) -> MethodResult:
    """Learn the context on the train shots; score test once with the best epoch's context."""
    learner = build_learner(data, opts)
    scale = data.encoder.logit_scale
    with learner.tower.frozen():
        epoch, auc, history = train_and_select(learner, lambda x: class_logits(x, learner(), scale), data, opts)
        with torch.no_grad():
            weights = learner()
        logits = split_logits(lambda x: class_logits(x, weights, scale), data)
        scores = to_scores(class_logits(data.emb["test"], weights, scale))
    chosen = {"epoch": epoch, "n_ctx": learner.m, "csc": opts.csc, "ctx_init": opts.ctx_init}
    return MethodResult(scores, chosen, auc, history, logits)
