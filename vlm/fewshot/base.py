"""What every few-shot method shares: its inputs (`FewShotData`), its output (`MethodResult`), the
method registry, and the logit conventions of the text-classifier methods.

Logits: single-label tasks use (N, K) logits, scores = softmax over classes; multi-label tasks use
(N, L, 2) logits, one (negative, positive) pair per label, score = softmax over the pair's positive
side. With `class_logits(img, W, logit_scale)` these are exactly `vlm.zeroshot.zero_shot_scores`,
so a method whose learned part is zero reproduces zero-shot.

A method is a function `fit(data, options) -> MethodResult` registered with `@register(...)` and an
options dataclass (its hyper-parameters and their defaults). It selects whatever it selects on
`data.emb["val"]` and scores `data.emb["test"]` once, with the chosen setting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable

import torch
import torch.nn.functional as F

from vlm.errors import VlmError
from vlm.evaluate import evaluate
from vlm.tasks import TaskSpec


@dataclass
class ZeroShotHead:
    """The zero-shot text classifier of one prompt style: W (E, K) or (E, L, 2), and where it came from."""

    weights: torch.Tensor
    style: str
    prompts_file: str
    names: list[str]  # the first name of each class in that style (CoOp's class tokens)


@dataclass
class FewShotData:
    """One (K, seed) problem: L2-normalised embeddings and labels of the train shots, val and test."""

    task: TaskSpec
    emb: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    encoder: Any
    seed: int
    zero_shot: Callable[[], ZeroShotHead] | None = None  # lazy: only text methods build it
    prompts: str | None = None
    style: str | None = None

    def head(self) -> ZeroShotHead:
        """The zero-shot classifier (VlmError when the encoder has no text tower)."""
        if self.zero_shot is None:
            raise VlmError(f"{self.encoder.id} has no text tower: this few-shot method needs a vision-language model.")
        return self.zero_shot()


@dataclass
class MethodResult:
    """Test scores of the chosen setting, the chosen hyper-parameters and how they were chosen."""

    scores: torch.Tensor
    chosen: dict[str, Any]
    val_auc: float | None
    selection: list[dict[str, Any]] = field(default_factory=list)
    logits: dict[str, torch.Tensor] | None = None  # val and test logits of the chosen setting (temperature scaling)


@dataclass(frozen=True)
class MethodSpec:
    """A registered few-shot method."""

    name: str
    fit: Callable[[FewShotData, Any], MethodResult]
    options: type
    needs_text: bool
    convention: str

    def make_options(self, overrides: dict[str, Any] | None = None) -> Any:
        """The method's options with `overrides` applied (VlmError naming unknown keys)."""
        known = {f.name for f in fields(self.options)}
        unknown = sorted(set(overrides or {}) - known)
        if unknown:
            raise VlmError(f"Unknown option(s) {', '.join(unknown)} for few-shot method '{self.name}': it takes "
                           f"{', '.join(sorted(known)) or 'none'}.")
        return self.options(**(overrides or {}))


METHODS: dict[str, MethodSpec] = {}


def register(name: str, options: type, *, needs_text: bool, convention: str) -> Callable:
    """Decorator adding `fit` to `METHODS` under `name`."""
    def wrap(fit: Callable[[FewShotData, Any], MethodResult]) -> Callable:
        METHODS[name] = MethodSpec(name, fit, options, needs_text, convention)
        return fit
    return wrap


def get_method(name: str) -> MethodSpec:
    """The registered method `name` (VlmError listing the known ones)."""
    if name not in METHODS:
        raise VlmError(f"Unknown few-shot method '{name}': choose one of {', '.join(METHODS)}.")
    return METHODS[name]


# ----------------------------------------------------------------------------- logits and selection
def class_logits(img: torch.Tensor, w: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """logit_scale * cos: (N, K) for W (E, K), (N, L, 2) for a multi-label W (E, L, 2) (inputs normalised)."""
    img = img.float()
    w = w.float().to(img.device)
    if w.dim() == 3:
        return logit_scale * torch.einsum("ne,elp->nlp", img, w)
    return logit_scale * img @ w


def split_logits(logits: Callable[[torch.Tensor], torch.Tensor], data: "FewShotData") -> dict[str, torch.Tensor]:
    """`logits(embeddings)` of the val and test splits, as the evaluator's logits: (N, K) for single-label
    tasks, (N, L) for multi-label ones (positive minus negative of each pair, so sigmoid = `to_scores`)."""
    with torch.no_grad():
        out = {s: logits(data.emb[s]).float() for s in ("val", "test")}
    return {s: (v[..., 1] - v[..., 0]) if v.dim() == 3 else v for s, v in out.items()}


def to_scores(logits: torch.Tensor) -> torch.Tensor:
    """Scores of (N, K) logits (softmax) or (N, L, 2) pair logits (positive side of each pair's softmax)."""
    return logits.softmax(dim=-1)[..., 1] if logits.dim() == 3 else logits.softmax(dim=-1)


def logits_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over classes, or over each label's (negative, positive) pair (mean over labels)."""
    if logits.dim() == 3:
        return F.cross_entropy(logits.reshape(-1, 2), labels.reshape(-1).long())
    return F.cross_entropy(logits, labels[:, 0].long())


def label_targets(task: TaskSpec, labels: torch.Tensor) -> torch.Tensor:
    """One-hot (N, K), or per label one-hot over (negative, positive): (N, L, 2); float."""
    if task.kind == "multi-label":
        y = labels.float()
        return torch.stack([1 - y, y], dim=-1)
    return F.one_hot(labels[:, 0].long(), task.num_classes).float()


def val_auc(task: TaskSpec, labels: torch.Tensor, scores: torch.Tensor) -> float:
    """Validation AUC for model selection (-inf where undefined, so any defined value wins)."""
    auc = evaluate(task, labels.to(scores.device), scores, n_bootstrap=0).auc
    return auc if math.isfinite(auc) else -math.inf


def finite(value: float) -> float | None:
    """None for -inf (an AUC that was undefined), else the value."""
    return None if value == -math.inf else value
