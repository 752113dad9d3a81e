"""The training options: `TrainConfig`, its validation against a task (filling in its recipe), the option
choices, and option parsing.

Options left unset (`None`) take the values of the run's recipe (`vlm.training.recipes`: `medmnist`,
`slices-study`, `timm-finetune`, `medvit`), then their task-dependent defaults.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Iterable

from vlm.augment import AUGMENTS, OPS_3D, shape_transform_default
from vlm.data import Split
from vlm.errors import VlmError
from vlm.losses import check_loss, default_loss
from vlm.preprocess import INTERPOLATIONS
from vlm.ranges import check_option, check_options
from vlm.runtime import check_device_name
from vlm.sampling import SAMPLERS
from vlm.tasks import TaskSpec
from vlm.training.recipes import FALLBACK, RECIPE_FIELDS, get_recipe

TEXT_OPTIONS = ("optimizer", "scheduler", "sampler", "device", "interpolation", "loss", "augment_3d", "recipe")  # names, lower-cased when resolved
OPTIMIZERS = ("adam", "adamw", "radam", "nadam", "sgd")
SCHEDULERS = ("none", "multistep", "exponential", "cosine")
# What a run folder written before recipes existed trained with, where its spec.json has no entry.
_BEFORE_RECIPES = {"recipe": FALLBACK, "interpolation": "bilinear", "normalize": True}


@dataclass
class TrainConfig:
    """Every option that shapes a training run; recorded (resolved) in the RunRecord's config.

    `None` means "the recipe's value", filled in by `resolved()`, and then "the default for this
    task/optimizer/scheduler": loss -> ce (bce for multi-label); weight_decay -> 0.01 for adamw, else 0;
    lr_gamma -> 0.1 for multistep (MedMNIST), 0.95 per epoch for exponential; lr_milestones ->
    [0.5 x epochs, 0.75 x epochs] (MedMNIST's); shape_transform -> on for adrenalmnist3d and
    vesselmnist3d; eval_batch_size -> 2 x batch_size. `recipe` None: `timm-finetune` (`vlm train`
    picks the model's default recipe first); `recipe_overrides` lists the recipe options given
    explicitly (filled in by `resolved()`).
    """

    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    backbone_lr: float | None = None  # own LR for everything but the head (fine-tuning); None: lr for all
    optimizer: str | None = None
    weight_decay: float | None = None
    scheduler: str | None = None
    lr_gamma: float | None = None
    lr_milestones: list[float] | None = None  # multistep: epochs (MultiStepLR's; fractional ones never fire)
    warmup_epochs: float | None = None  # cosine: linear warm-up, in epochs (fractions allowed)
    loss: str | None = None
    gamma: float | None = None  # focal loss exponent
    sampler: str | None = None
    augment: str | bool | None = None  # off, affine (2D flip + affine + crop; 3D see augment_3d), augmix (2D)
    augment_3d: str = "flip"  # 3D augmentations when augment is affine: comma list of flip, rot90
    shape_transform: bool | None = None
    image_size: int | None = None  # None: native size, or the model's fixed input size
    interpolation: str | None = None  # how images are resized to image_size
    normalize: bool | None = None  # mean = std = 0.5 (to [-1, 1]); False: [0, 1] as MedMNIST3D
    seed: int = 0
    patience: int | None = None  # early stopping: epochs without a better val AUC (None/0: off)
    device: str = "auto"
    amp: bool | None = None  # bf16 autocast: None = on CUDA only; True = on any device (CPU too); False = off
    eval_batch_size: int | None = None  # per process under torchrun (it changes no result)
    sync_bn: bool = True  # under torchrun: BatchNorm statistics over the global batch (vlm.training.distributed)
    n_bootstrap: int = 1000  # bootstrap rounds for the test CIs
    recipe: str | None = None
    recipe_overrides: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The options as a plain dict (`dataclasses.asdict`), as spec.json and records store them."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """A config from a stored dict; keys that are not options are ignored. A config stored before
        recipes existed keeps what it trained with (bilinear, normalised input; `augment` True -> affine)."""
        names = option_names()
        if "recipe" not in data:
            data = {**_BEFORE_RECIPES, **data}
        config = cls(**{k: v for k, v in data.items() if k in names})
        config.augment = augment_mode(config.augment)
        return config

    def resolved(self, task: TaskSpec) -> "TrainConfig":
        """Fill in the recipe's values and the task-dependent defaults, and check every option."""
        for name in TEXT_OPTIONS:  # names: text (recipes' values are)
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise VlmError(f"--{name.replace('_', '-')} takes a name, got {getattr(self, name)!r}.")
        c = replace(self, recipe=(self.recipe or FALLBACK).lower())
        if c.recipe_overrides is None:
            c.recipe_overrides = [name for name in RECIPE_FIELDS if getattr(c, name) is not None]
        for name, value in get_recipe(c.recipe).values(task.is_3d).items():
            if getattr(c, name) is None:
                setattr(c, name, list(value) if isinstance(value, list) else value)
        check_options(asdict(c))  # every numeric option in its range (vlm.ranges), before any arithmetic
        c.optimizer, c.scheduler, c.sampler = c.optimizer.lower(), c.scheduler.lower(), c.sampler.lower()
        c.device, c.interpolation, c.augment = c.device.lower(), c.interpolation.lower(), augment_mode(c.augment)
        check_choice("optimizer", c.optimizer, OPTIMIZERS)
        check_choice("scheduler", c.scheduler, SCHEDULERS)
        check_choice("sampler", c.sampler, SAMPLERS)
        check_choice("interpolation", c.interpolation, INTERPOLATIONS)
        check_choice("augment", c.augment, AUGMENTS)
        check_device_name(c.device)
        c.loss = (c.loss or default_loss(task)).lower()
        check_loss(c.loss, task)
        if c.weight_decay is None:
            c.weight_decay = 0.01 if c.optimizer == "adamw" else 0.0
        if c.lr_gamma is None:
            c.lr_gamma = {"multistep": 0.1, "exponential": 0.95}.get(c.scheduler)
        if c.lr_milestones is None and c.scheduler == "multistep":
            c.lr_milestones = [0.5 * c.epochs, 0.75 * c.epochs]  # MedMNIST's, fired as MultiStepLR fires them
        if c.lr_milestones is not None:
            c.lr_milestones = [float(m) for m in check_option("lr_milestones", list(c.lr_milestones))]
        if c.shape_transform is None:
            c.shape_transform = shape_transform_default(task.flag)
        if c.shape_transform and not task.is_3d:
            raise VlmError(f"The shape transform is MedMNIST's for 3D shape datasets; {task.flag} is 2D.")
        if c.augment == "augmix" and task.is_3d:
            raise VlmError(f"AugMix is a 2D augmentation and {task.flag} is 3D: use --augment affine (flips, rot90).")
        ops = tuple(op.strip() for op in str(c.augment_3d).split(",") if op.strip())
        bad = [op for op in ops if op not in OPS_3D]
        if bad:
            raise VlmError(f"Unknown 3D augmentation {', '.join(bad)}: choose from {', '.join(OPS_3D)}.")
        c.augment_3d = ",".join(ops)
        if c.eval_batch_size is None:
            c.eval_batch_size = 2 * c.batch_size
        if c.scheduler == "cosine" and c.warmup_epochs >= c.epochs:
            raise VlmError(f"--warmup-epochs must be below --epochs ({c.epochs}) with the cosine schedule, got "
                           f"{c.warmup_epochs}.")
        return c


def augment_mode(value: str | bool | None) -> str | None:
    """The augmentation mode: booleans of older run folders map to affine (True) and off (False)."""
    if isinstance(value, bool):
        return "affine" if value else "off"
    return value.lower() if isinstance(value, str) else value


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
