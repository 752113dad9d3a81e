"""The training recipe: `TrainConfig`, its validation against a task, the option choices, and option parsing.

Defaults follow MedMNIST's recipe (Adam, lr 1e-3, batch 128, LR x0.1 at 50 % and 75 % of the epochs,
cross-entropy / BCE for multi-label, no augmentation) with 10 epochs instead of 100.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Iterable

from vlm.augment import OPS_3D, shape_transform_default
from vlm.data import Split
from vlm.errors import VlmError
from vlm.losses import check_loss, default_loss
from vlm.runtime import check_device_name
from vlm.sampling import SAMPLERS
from vlm.tasks import TaskSpec

OPTIMIZERS = ("adam", "adamw", "radam", "nadam", "sgd")
SCHEDULERS = ("none", "multistep", "exponential", "cosine")


@dataclass
class TrainConfig:
    """Every option that shapes a training run; recorded (resolved) in the RunRecord's config.

    `None` means "the default for this task/optimizer/scheduler", filled in by `resolved()`:
    loss -> ce (bce for multi-label); weight_decay -> 0.01 for adamw, else 0; lr_gamma -> 0.1 for
    multistep (MedMNIST), 0.95 per epoch for exponential; shape_transform -> on for adrenalmnist3d and
    vesselmnist3d; eval_batch_size -> 2 x batch_size.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    backbone_lr: float | None = None  # own LR for everything but the head (fine-tuning); None: lr for all
    optimizer: str = "adam"
    weight_decay: float | None = None
    scheduler: str = "multistep"
    lr_gamma: float | None = None
    warmup_epochs: float = 0.0  # cosine: linear warm-up, in epochs (fractions allowed)
    loss: str | None = None
    gamma: float = 2.0  # focal loss exponent
    sampler: str = "none"
    augment: bool = False
    augment_3d: str = "flip"  # 3D augmentations when augment is on: comma list of flip, rot90
    shape_transform: bool | None = None
    image_size: int | None = None  # None: native size, or the model's fixed input size
    seed: int = 0
    patience: int | None = None  # early stopping: epochs without a better val AUC (None/0: off)
    device: str = "auto"
    amp: bool | None = None  # bf16 autocast: None = on CUDA only; True = on any device (CPU too); False = off
    eval_batch_size: int | None = None  # per process under torchrun (it changes no result)
    sync_bn: bool = True  # under torchrun: BatchNorm statistics over the global batch (vlm.training.distributed)
    n_bootstrap: int = 1000  # bootstrap rounds for the test CIs

    def to_dict(self) -> dict[str, Any]:
        """The options as a plain dict (`dataclasses.asdict`), as spec.json and records store them."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """A config from a stored dict; keys that are not options are ignored."""
        names = option_names()
        return cls(**{k: v for k, v in data.items() if k in names})

    def resolved(self, task: TaskSpec) -> "TrainConfig":
        """Check every option against the task and fill in the task-dependent defaults."""
        c = replace(self)
        if c.epochs < 1:
            raise VlmError(f"--epochs must be at least 1, got {c.epochs}.")
        if c.batch_size < 1:
            raise VlmError(f"--batch-size must be at least 1, got {c.batch_size}.")
        for name in ("lr", "backbone_lr"):
            value = getattr(c, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise VlmError(f"--{name.replace('_', '-')} must be a positive number, got {value}.")
        c.optimizer, c.scheduler, c.sampler = c.optimizer.lower(), c.scheduler.lower(), c.sampler.lower()
        c.device = c.device.lower()
        check_choice("optimizer", c.optimizer, OPTIMIZERS)
        check_choice("scheduler", c.scheduler, SCHEDULERS)
        check_choice("sampler", c.sampler, SAMPLERS)
        check_device_name(c.device)
        c.loss = (c.loss or default_loss(task)).lower()
        check_loss(c.loss, task)
        if c.weight_decay is None:
            c.weight_decay = 0.01 if c.optimizer == "adamw" else 0.0
        if c.lr_gamma is None:
            c.lr_gamma = {"multistep": 0.1, "exponential": 0.95}.get(c.scheduler)
        if c.shape_transform is None:
            c.shape_transform = shape_transform_default(task.flag)
        if c.shape_transform and not task.is_3d:
            raise VlmError(f"The shape transform is MedMNIST's for 3D shape datasets; {task.flag} is 2D.")
        ops = tuple(op.strip() for op in str(c.augment_3d).split(",") if op.strip())
        bad = [op for op in ops if op not in OPS_3D]
        if bad:
            raise VlmError(f"Unknown 3D augmentation {', '.join(bad)}: choose from {', '.join(OPS_3D)}.")
        c.augment_3d = ",".join(ops)
        if c.eval_batch_size is None:
            c.eval_batch_size = 2 * c.batch_size
        if c.patience is not None and c.patience < 0:
            raise VlmError(f"--patience must be 0 (off) or more, got {c.patience}.")
        if c.image_size is not None and c.image_size < 8:
            raise VlmError(f"--image-size must be at least 8 pixels, got {c.image_size}.")
        if c.warmup_epochs < 0 or (c.scheduler == "cosine" and c.warmup_epochs >= c.epochs):
            raise VlmError(f"--warmup-epochs must be between 0 and --epochs ({c.epochs}), got {c.warmup_epochs}.")
        if c.n_bootstrap < 0:
            raise VlmError(f"--bootstrap must be 0 or more, got {c.n_bootstrap}.")
        return c


def option_names() -> set[str]:
    """The names of every `TrainConfig` option."""
    return {f.name for f in fields(TrainConfig)}


def check_choice(name: str, value: str, allowed: Iterable[str]) -> None:
    """A VlmError unless `value` is one of `allowed` (the message lists them)."""
    if value not in allowed:
        raise VlmError(f"Unknown {name} '{value}': choose one of {', '.join(allowed)}.")


def check_batch_size(batch_size: int, train: Split) -> None:
    """A VlmError when the training batch is larger than the training split, or (under torchrun) does
    not split evenly over the processes."""
    from vlm.training.distributed import check_global_batch, launched_world_size

    if batch_size > len(train):
        raise VlmError(f"--batch-size {batch_size} is larger than {train.task.flag}'s training split "
                       f"({len(train)} images): use --batch-size {len(train)} or less.")
    check_global_batch(batch_size, launched_world_size())


def parse_model_opts(items: Iterable[str] | None) -> dict[str, Any]:
    """`["slice_axis=1", "head=mean"]` -> `{"slice_axis": 1, "head": "mean"}` (ints, floats, booleans, none)."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise VlmError(f"--model-opt takes KEY=VALUE (e.g. slice_axis=1), got '{item}'.")
        out[key] = _parse_value(raw.strip())
    return out


def _parse_value(raw: str) -> Any:
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw
