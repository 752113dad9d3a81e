"""Training losses, and the rule that a loss must fit the task.

All losses take logits (B, K) and MedMNIST labels (B, L) int64 (L = 1 for single-label tasks,
L = K for multi-label) and return a scalar mean over the batch.

- `ce`: cross-entropy (binary, multi-class, ordinal: MedMNIST treats ordinal as multi-class);
- `weighted`: class-weighted cross-entropy, weights n / (K * n_k) from the training labels
  (scikit-learn's "balanced"); absent classes get weight 0;
- `focal`: focal loss (Lin et al. 2017) `-(1 - p_t)^gamma * log p_t`; equals `ce` at gamma = 0.
  On a multi-label task it is the per-label focal binary cross-entropy;
- `bce`: per-label binary cross-entropy with logits (multi-label tasks only; MedMNIST's choice).

Example:
    >>> loss_fn = make_loss("focal", get_task("pathmnist"), gamma=2.0)   # doctest: +SKIP
    >>> loss_fn(logits, labels)                                          # doctest: +SKIP
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from vlm.errors import VlmError
from vlm.tasks import TaskSpec

LOSSES = ("ce", "bce", "focal", "weighted")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def default_loss(task: TaskSpec) -> str:
    """MedMNIST's choice: BCE-with-logits for multi-label, cross-entropy otherwise."""
    return "bce" if task.kind == "multi-label" else "ce"


def check_loss(name: str, task: TaskSpec) -> None:
    """Raise a VlmError when a loss does not fit the task kind."""
    if name not in LOSSES:
        raise VlmError(f"Unknown loss '{name}': choose one of {', '.join(LOSSES)}.")
    if task.kind == "multi-label" and name in ("ce", "weighted"):
        raise VlmError(
            f"{task.flag} is multi-label ({task.num_classes} independent labels): '{name}' treats the labels as "
            f"exclusive classes. Use --loss bce (or --loss focal for focal binary cross-entropy)."
        )
    if task.kind != "multi-label" and name == "bce":
        raise VlmError(
            f"{task.flag} is {task.kind}: each image has exactly one class, and its scores are softmax "
            f"probabilities. Use --loss ce, weighted or focal; bce is for multi-label tasks."
        )


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-class focal loss, mean over the batch: `-w_t (1 - p_t)^gamma log p_t` (target: (B,) int64)."""
    logp = F.log_softmax(logits.float(), dim=1)
    logp_t = logp.gather(1, target[:, None]).squeeze(1)
    loss = -((1.0 - logp_t.exp()).clamp_min(0.0) ** gamma) * logp_t if gamma else -logp_t
    if weight is not None:
        w = weight[target]
        return (loss * w).sum() / w.sum().clamp_min(1e-12)  # normalised like F.cross_entropy(weight=...)
    return loss.mean()


def focal_bce(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Per-label focal binary cross-entropy, mean over batch and labels (target: (B, L) in {0, 1})."""
    x = logits.float()
    y = target.float()
    bce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    if not gamma:
        return bce.mean()
    p_t = torch.exp(-bce)  # probability given to the true value of each label
    return (((1.0 - p_t).clamp_min(0.0) ** gamma) * bce).mean()


def balanced_class_weights(counts: Sequence[int]) -> torch.Tensor:
    """scikit-learn's 'balanced' weights n / (K * n_k); 0 for classes absent from the training labels."""
    c = torch.tensor(list(counts), dtype=torch.float32)
    n, k = c.sum(), len(c)
    return torch.where(c > 0, n / (k * c.clamp_min(1.0)), torch.zeros_like(c))


def make_loss(name: str, task: TaskSpec, *, gamma: float = 2.0, class_counts: Sequence[int] | None = None,
              device: torch.device | str = "cpu") -> LossFn:
    """The loss function `f(logits (B, K), labels (B, L) int64) -> scalar` for a task.

    `class_counts` (training images per class) are needed by `weighted`.
    """
    check_loss(name, task)
    if task.kind == "multi-label":
        if name == "focal":
            return lambda logits, y: focal_bce(logits, y, gamma)
        return lambda logits, y: F.binary_cross_entropy_with_logits(logits.float(), y.float())
    if name == "ce":
        return lambda logits, y: F.cross_entropy(logits.float(), y[:, 0])
    if name == "focal":
        return lambda logits, y: focal_loss(logits, y[:, 0], gamma)
    if class_counts is None:
        raise VlmError("The weighted loss needs the training class counts.")
    weight = balanced_class_weights(class_counts).to(device)
    return lambda logits, y: F.cross_entropy(logits.float(), y[:, 0], weight=weight)
