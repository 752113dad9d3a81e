"""From a resident uint8 split to model input and scores: batches, the input pipeline, bf16 autocast, predict
(probabilities) and predict_logits."""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn

from vlm.augment import Augmenter, Part, ShapeTransform, build_augment
from vlm.data import Split
from vlm.preprocess import Preprocess, channels_last, to_float
from vlm.training.config import TrainConfig


def batch_starts(n_rows: int, batch_size: int, world_size: int = 1) -> list[int]:
    """Start rows of the (global) batches of an epoch; a trailing batch of fewer than two rows per
    process is dropped (BatchNorm needs 2; one process: a trailing batch of one row)."""
    starts = list(range(0, n_rows, batch_size))
    if len(starts) > 1 and n_rows - starts[-1] < 2 * world_size:
        starts.pop()
    return starts


class InputPipeline:
    """uint8 batch -> model input: to float, shape transform, augmentation (training), then `preprocess`.

    `part=(offset, total)`: the batch is a rank's rows of a global batch (see `vlm.augment`).
    """

    def __init__(self, preprocess: Preprocess, *, is_3d: bool, config: TrainConfig) -> None:
        self.preprocess = preprocess
        self.augment: Augmenter | None = build_augment(config.augment, is_3d=is_3d, ops_3d=config.augment_3d,
                                                       seed=config.seed + 1, resize=preprocess.resize_2d)
        self.shape = ShapeTransform(seed=config.seed + 2) if config.shape_transform else None

    def __call__(self, images: torch.Tensor, train: bool, part: Part | None = None) -> torch.Tensor:
        x = to_float(images)
        if self.shape is not None:
            x = self.shape.train(x, part) if train else self.shape.eval(x)
        if train and self.augment is not None:
            x = self.augment(x, part)
        return channels_last(self.preprocess(x))

    def state_dict(self) -> dict:
        """The augmentation and shape-transform RNG states (saved in last.pt)."""
        return {"augment": self.augment.state_dict() if self.augment else None,
                "shape": self.shape.state_dict() if self.shape else None}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` saved."""
        if self.augment is not None and state.get("augment"):
            self.augment.load_state_dict(state["augment"])
        if self.shape is not None and state.get("shape"):
            self.shape.load_state_dict(state["shape"])

    def describe(self) -> dict[str, Any]:
        """The preprocessing, shape transform and augmentation, as a RunRecord stores them."""
        return {**self.preprocess.to_dict(), "id": self.preprocess.id,
                "shape_transform": "x*U(0,1) train, x*0.5 eval" if self.shape else None,
                "augment": self.augment.describe() if self.augment else None}


def uses_bf16(device: torch.device, amp: bool | None) -> bool:
    """Whether forward passes run under bf16 autocast: `amp` None means on CUDA only."""
    return device.type == "cuda" if amp is None else bool(amp)


def autocast(device: torch.device, amp: bool | None) -> torch.autocast:
    """The context `fit` runs forward passes in: bf16 autocast when `uses_bf16`, else a no-op."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(device, amp))


@torch.no_grad()
def predict_logits(model: nn.Module, split: Split, pipeline: Callable[[torch.Tensor, bool], torch.Tensor], *,
                   batch_size: int = 256, device: torch.device | str = "cpu", amp: bool | None = None) -> torch.Tensor:
    """The model's logits (N, K) float32 on `device`, batch by batch in eval mode."""
    device = torch.device(device)
    model.eval()
    images = split.images.to(device)
    outs = []
    for start in range(0, len(images), batch_size):
        x = pipeline(images[start:start + batch_size], False)
        with autocast(device, amp):
            logits = model(x)
        outs.append(logits.float())
    return torch.cat(outs)


def scores_from_logits(kind: str, logits: torch.Tensor) -> torch.Tensor:
    """Probabilities from logits: softmax over classes, per-label sigmoid for multi-label."""
    return torch.sigmoid(logits) if kind == "multi-label" else torch.softmax(logits, dim=1)


def predict(model: nn.Module, split: Split, pipeline: Callable[[torch.Tensor, bool], torch.Tensor], *,
            batch_size: int = 256, device: torch.device | str = "cpu", amp: bool | None = None) -> torch.Tensor:
    """Scores (N, K) float32 on `device`: softmax probabilities, per-label sigmoid for multi-label."""
    logits = predict_logits(model, split, pipeline, batch_size=batch_size, device=device, amp=amp)
    return scores_from_logits(split.task.kind, logits)
