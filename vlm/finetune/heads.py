"""The trainable classifier of `full`/`zs-init` fine-tuning, and the zero-shot head that initialises zs-init."""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from vlm.errors import VlmError
from vlm.tasks import TaskSpec


class TowerClassifier(nn.Module):
    """An image tower plus a linear head; `normalize` L2-normalises the features first (zs-init)."""

    def __init__(self, tower: nn.Module, embed_dim: int, num_classes: int, normalize: bool = False) -> None:
        super().__init__()
        self.tower = tower
        self.head = nn.Linear(embed_dim, num_classes)
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.tower(x)
        if isinstance(feats, (tuple, list)):
            feats = feats[0]
        if self.normalize:
            feats = F.normalize(feats.float(), dim=-1)
        return self.head(feats)


def zero_shot_head(encoder, task: TaskSpec, *, style: str | None = None,
                   prompts: str | os.PathLike | None = None) -> tuple[torch.Tensor, str]:
    """Head weights (K, E) = logit_scale * the zero-shot classifier of one style, and the style used.

    Multi-label: (L, E) with row l = logit_scale * (t_pos_l - t_neg_l). Default style: 'clip' when the
    prompt set has it, else its first style.
    """
    from vlm.zeroshot import one_style_classifier

    if not encoder.has_text:
        raise VlmError(f"--mode zs-init needs a vision-language encoder with a text tower; {encoder.id} is "
                       f"image-only. Use --mode full or linear-probe.")
    w, used, _ = one_style_classifier(encoder, task, prompts=prompts, style=style,
                                      refusal="--style takes one prompt style for zs-init")
    head = w[:, :, 1] - w[:, :, 0] if w.dim() == 3 else w  # (E, K)
    return (encoder.logit_scale * head).T.contiguous(), used
