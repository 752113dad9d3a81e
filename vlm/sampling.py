"""Epoch orders for a resident split: shuffled, class-balanced or oversampled, by index only.

No DataLoader: an `EpochSampler` returns, for each epoch, a LongTensor of training-row indices;
batches are `split.images[idx[i:i + B]]`. Every draw uses the sampler's own `torch.Generator`
(CPU), whose state is saved in `last.pt` so that a resumed run draws the same orders.

- `none`: a random permutation of all rows (shuffle, as MedMNIST's DataLoader);
- `balanced`: n rows drawn with replacement with probability proportional to 1 / count(class)
  (torch's `WeightedRandomSampler` with inverse class frequency): classes come out about uniform;
- `oversample`: every class repeated up to the majority count (whole copies plus a random subset
  without replacement for the remainder), then shuffled: K * max_k n_k rows per epoch.

Balanced and oversample need one label per image; on a multi-label task they raise a VlmError.

Example:
    >>> sampler = EpochSampler("balanced", task, train.labels, seed=0)   # doctest: +SKIP
    >>> order = sampler.epoch_indices()                                  # doctest: +SKIP
"""

from __future__ import annotations

import torch

from vlm.errors import VlmError
from vlm.tasks import TaskSpec

SAMPLERS = ("none", "balanced", "oversample")


def inverse_frequency_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-row weight 1 / count(class of the row), for (N, 1) or (N,) single-label labels."""
    y = labels.reshape(len(labels), -1)[:, 0].long().cpu()
    counts = torch.bincount(y, minlength=num_classes).double()
    return 1.0 / counts[y]


def balanced_indices(labels: torch.Tensor, num_classes: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """`n` row indices drawn with replacement, each class about equally often."""
    weights = inverse_frequency_weights(labels, num_classes)
    return torch.multinomial(weights, n, replacement=True, generator=generator)


def oversample_indices(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Every present class repeated to the majority count, then shuffled (K_present * max count rows)."""
    y = labels.reshape(len(labels), -1)[:, 0].long().cpu()
    counts = torch.bincount(y, minlength=num_classes)
    target = int(counts.max())
    parts = []
    for c in range(num_classes):
        rows = torch.nonzero(y == c).flatten()
        if len(rows) == 0:
            continue
        whole, rest = divmod(target, len(rows))
        parts.append(rows.repeat(whole))
        if rest:
            parts.append(rows[torch.randperm(len(rows), generator=generator)[:rest]])
    out = torch.cat(parts)
    return out[torch.randperm(len(out), generator=generator)]


class EpochSampler:
    """Draws the training order of each epoch with its own generator (state saved for resuming)."""

    def __init__(self, kind: str, task: TaskSpec, labels: torch.Tensor, seed: int = 0) -> None:
        if kind not in SAMPLERS:
            raise VlmError(f"Unknown sampler '{kind}': choose one of {', '.join(SAMPLERS)}.")
        if kind != "none" and task.kind == "multi-label":
            raise VlmError(f"--sampler {kind} balances exclusive classes; {task.flag} is multi-label. "
                           f"Use --sampler none (and, for imbalance, --loss focal).")
        self.kind = kind
        self.num_classes = task.num_classes
        self.labels = labels.detach().cpu()
        self.generator = torch.Generator().manual_seed(int(seed))

    def __len__(self) -> int:
        """Rows per epoch."""
        if self.kind == "oversample":
            counts = torch.bincount(self.labels[:, 0].long(), minlength=self.num_classes)
            return int(counts.max()) * int((counts > 0).sum())
        return len(self.labels)

    def epoch_indices(self) -> torch.Tensor:
        """The row order of the next epoch (CPU LongTensor)."""
        if self.kind == "balanced":
            return balanced_indices(self.labels, self.num_classes, len(self.labels), self.generator)
        if self.kind == "oversample":
            return oversample_indices(self.labels, self.num_classes, self.generator)
        return torch.randperm(len(self.labels), generator=self.generator)

    def state_dict(self) -> dict:
        return {"kind": self.kind, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
