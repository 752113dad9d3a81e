"""The one training loop: transfer models (2D and 3D) and fine-tuned encoder towers.

`fit(model, train, val, test, config, ...)` trains on a resident split (uint8 on the device, batches
by indexing, preprocessing as tensor ops), scores VAL after every epoch with `vlm.evaluate`, keeps
the checkpoint with the best validation AUC, and at the end scores TEST once with that checkpoint
through `vlm.scoring` (one RunRecord in the run folder).

A run folder (`vlm.results.new_run_dir`) holds:

    spec.json        what `train`/`finetune` built (dataset, model, weights, options): `--resume` reads it
    best.safetensors the weights of the best validation epoch (atomic)
    last.pt          model, optimizer, scheduler, sampler/augmentation RNGs, epoch, best, history (atomic,
                     every epoch): the resume point
    epochs.jsonl     one JSON line per epoch (loss, val AUC/ACC, LR, seconds)
    record.json, scores.npy   the test-split RunRecord (written once, at the end)

Defaults follow MedMNIST's recipe (Adam, lr 1e-3, batch 128, LR x0.1 at 50 % and 75 % of the epochs,
cross-entropy / BCE for multi-label, no augmentation) with 10 epochs instead of 100.

Determinism: `seed` seeds Python, NumPy and torch; the epoch order, augmentation and shape transform
draw from their own CPU generators, and the global RNG state (dropout, drop-path) is saved with every
`last.pt`. On the CPU a run interrupted and resumed ends identical to an uninterrupted one.

Example:
    >>> result = train("breastmnist", "small-cnn", config=TrainConfig(epochs=3),
    ...                data_root="../shared/data/medmnist")                   # doctest: +SKIP
    >>> result.metrics.auc, result.run_dir                                     # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn as nn

from vlm.augment import OPS_3D, Augment2D, Augment3D, ShapeTransform, shape_transform_default
from vlm.data import Split, load_split
from vlm.errors import VlmError
from vlm.evaluate import Metrics, evaluate
from vlm.losses import check_loss, default_loss, make_loss
from vlm.preprocess import Preprocess, channels_last, medmnist_preprocess, to_float
from vlm.files import atomic_write_bytes, atomic_write_text, finite_or_none
from vlm.results import RunRecord, new_run_dir
from vlm.runtime import check_device_name, resolve_device, seed_everything
from vlm.sampling import SAMPLERS, EpochSampler
from vlm.tasks import TaskSpec, get_task

OPTIMIZERS = ("adam", "adamw", "radam", "nadam", "sgd")
SCHEDULERS = ("none", "multistep", "exponential", "cosine")
LOGGERS = ("tensorboard", "wandb")

SPEC_FILE = "spec.json"
BEST_FILE = "best.safetensors"
LAST_FILE = "last.pt"
EPOCHS_FILE = "epochs.jsonl"

# Options that may change when a run is resumed (they do not change what is computed on the CPU).
RESUME_FREE = ("device",)


# ----------------------------------------------------------------------------- configuration
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
    eval_batch_size: int | None = None
    n_bootstrap: int = 1000  # bootstrap rounds for the test CIs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
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
        _choice("optimizer", c.optimizer, OPTIMIZERS)
        _choice("scheduler", c.scheduler, SCHEDULERS)
        _choice("sampler", c.sampler, SAMPLERS)
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


def _choice(name: str, value: str, allowed: Iterable[str]) -> None:
    if value not in allowed:
        raise VlmError(f"Unknown {name} '{value}': choose one of {', '.join(allowed)}.")


@dataclass
class TrainEvent:
    """What the `progress` callback receives: stage 'start', 'batch', 'epoch', 'test' or 'done'."""

    stage: str
    epoch: int  # 1-based epoch being trained (0 before the first)
    epochs: int
    batch: int = 0
    batches: int = 0
    loss: float | None = None  # running mean training loss of the epoch
    val_auc: float | None = None
    val_acc: float | None = None
    best_auc: float | None = None
    best_epoch: int = 0
    seconds: float = 0.0


Progress = Callable[[TrainEvent], None]


@dataclass
class TrainResult:
    """The outcome of `fit`: finished runs carry the test metrics and the RunRecord."""

    run_dir: Path
    finished: bool
    epochs_run: int
    best_epoch: int
    best_val_auc: float | None
    history: list[dict[str, Any]]
    seconds: float
    seconds_per_epoch: float
    stop_reason: str
    metrics: Metrics | None = None
    record: RunRecord | None = None

    def summary(self) -> dict[str, Any]:
        """The `--json` object of `vlm train` / `vlm finetune`."""
        m = self.metrics.to_dict() if self.metrics is not None else {}
        return {
            "auc": m.get("auc"), "acc": m.get("acc"), "auc_ci": m.get("auc_ci"), "acc_ci": m.get("acc_ci"),
            "balanced_acc": m.get("balanced_acc"), "n": m.get("n"),
            "best_epoch": self.best_epoch, "best_val_auc": self.best_val_auc, "epochs_run": self.epochs_run,
            "stop_reason": self.stop_reason, "seconds": round(self.seconds, 3),
            "seconds_per_epoch": round(self.seconds_per_epoch, 3), "finished": self.finished,
            "run_dir": str(self.run_dir),
            "method": self.record.method if self.record else None, "model": self.record.model if self.record else None,
            "dataset": self.record.dataset if self.record else None,
        }


class TrainingInterrupted(VlmError):
    """Ctrl-C during training: `last.pt` holds the last completed epoch; the message says how to resume."""

    exit_code = 130


# ----------------------------------------------------------------------------- helpers
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


def head_module(model: nn.Module) -> nn.Module | None:
    """The classification head of a model: `.head` of fine-tuning wrappers, timm's `get_classifier()`, or
    a final `fc`/`classifier`/`linear` layer."""
    getter = getattr(model, "get_classifier", None)
    if callable(getter):
        try:
            head = getter()
        except Exception:  # noqa: BLE001 - some models implement it partially
            head = None
        if isinstance(head, nn.Module) and any(True for _ in head.parameters()):
            return head
    for name in ("head", "fc", "classifier", "linear"):
        head = getattr(model, name, None)
        if isinstance(head, nn.Module) and any(True for _ in head.parameters()):
            return head
    return None


def param_groups(model: nn.Module, lr: float, backbone_lr: float | None) -> list[dict[str, Any]]:
    """One group at `lr`, or the head at `lr` and everything else at `backbone_lr`."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise VlmError("The model has no trainable parameters.")
    if backbone_lr is None:
        return [{"params": params, "lr": lr, "name": "all"}]
    head = head_module(model)
    if head is None:
        raise VlmError(f"--backbone-lr needs a model with an identifiable head; {type(model).__name__} has none "
                       f"(no get_classifier(), head, fc or classifier). Leave --backbone-lr out.")
    head_ids = {id(p) for p in head.parameters()}
    backbone = [p for p in params if id(p) not in head_ids]
    head_params = [p for p in params if id(p) in head_ids]
    groups = [{"params": head_params, "lr": lr, "name": "head"}]
    if backbone:
        groups.insert(0, {"params": backbone, "lr": backbone_lr, "name": "backbone"})
    return groups


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, config.lr, config.backbone_lr)
    wd = config.weight_decay or 0.0
    kinds = {
        "adam": lambda: torch.optim.Adam(groups, lr=config.lr, weight_decay=wd),
        "adamw": lambda: torch.optim.AdamW(groups, lr=config.lr, weight_decay=wd),
        "radam": lambda: torch.optim.RAdam(groups, lr=config.lr, weight_decay=wd),
        "nadam": lambda: torch.optim.NAdam(groups, lr=config.lr, weight_decay=wd),
        "sgd": lambda: torch.optim.SGD(groups, lr=config.lr, momentum=0.9, weight_decay=wd),
    }
    return kinds[config.optimizer]()


def multistep_milestones(epochs: int) -> tuple[int, int]:
    """MedMNIST's milestones at 50 % and 75 % of the epochs (0-based epoch from which the LR is lower)."""
    return math.ceil(0.5 * epochs), math.ceil(0.75 * epochs)


def lr_factor(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The LR multiplier at optimisation step `step` (0-based); constant within an epoch except cosine."""
    epoch = step // steps_per_epoch
    if config.scheduler == "multistep":
        return config.lr_gamma ** sum(epoch >= m for m in multistep_milestones(config.epochs))
    if config.scheduler == "exponential":
        return config.lr_gamma ** epoch
    if config.scheduler == "cosine":
        total = config.epochs * steps_per_epoch
        warm = int(round(config.warmup_epochs * steps_per_epoch))
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """A per-step LambdaLR implementing `lr_factor` (equals MedMNIST's per-epoch MultiStepLR)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(config, step, steps_per_epoch))


def batch_starts(n_rows: int, batch_size: int) -> list[int]:
    """Start rows of the batches of an epoch; a trailing batch of one row is dropped (BatchNorm needs 2)."""
    starts = list(range(0, n_rows, batch_size))
    if len(starts) > 1 and n_rows - starts[-1] == 1:
        starts.pop()
    return starts


class InputPipeline:
    """uint8 batch -> model input: to float, shape transform, augmentation (training), then `preprocess`."""

    def __init__(self, preprocess: Preprocess, *, is_3d: bool, config: TrainConfig) -> None:
        self.preprocess = preprocess
        self.augment: Augment2D | Augment3D | None = None
        if config.augment:
            ops = tuple(op for op in config.augment_3d.split(",") if op)
            self.augment = Augment3D(ops, seed=config.seed + 1) if is_3d else Augment2D(seed=config.seed + 1)
        self.shape = ShapeTransform(seed=config.seed + 2) if config.shape_transform else None

    def __call__(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        x = to_float(images)
        if self.shape is not None:
            x = self.shape.train(x) if train else self.shape.eval(x)
        if train and self.augment is not None:
            x = self.augment(x)
        return channels_last(self.preprocess(x))

    def state_dict(self) -> dict:
        return {"augment": self.augment.state_dict() if self.augment else None,
                "shape": self.shape.state_dict() if self.shape else None}

    def load_state_dict(self, state: dict) -> None:
        if self.augment is not None and state.get("augment"):
            self.augment.load_state_dict(state["augment"])
        if self.shape is not None and state.get("shape"):
            self.shape.load_state_dict(state["shape"])

    def describe(self) -> dict[str, Any]:
        out = {**self.preprocess.to_dict(), "id": self.preprocess.id,
               "shape_transform": "x*U(0,1) train, x*0.5 eval" if self.shape else None,
               "augment": None}
        if isinstance(self.augment, Augment2D):
            out["augment"] = {"2d": asdict(self.augment.spec)}
        elif isinstance(self.augment, Augment3D):
            out["augment"] = {"3d": list(self.augment.ops)}
        return out


def uses_bf16(device: torch.device, amp: bool | None) -> bool:
    """Whether forward passes run under bf16 autocast: `amp` None means on CUDA only."""
    return device.type == "cuda" if amp is None else bool(amp)


def autocast(device: torch.device, amp: bool | None):
    """The context `fit` runs forward passes in: bf16 autocast when `uses_bf16`, else a no-op."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(device, amp))


@torch.no_grad()
def predict(model: nn.Module, split: Split, pipeline: Callable[[torch.Tensor, bool], torch.Tensor], *,
            batch_size: int = 256, device: torch.device | str = "cpu", amp: bool | None = None) -> torch.Tensor:
    """Scores (N, K) float32 on `device`: softmax probabilities, per-label sigmoid for multi-label."""
    device = torch.device(device)
    model.eval()
    images = split.images.to(device)
    outs = []
    for start in range(0, len(images), batch_size):
        x = pipeline(images[start:start + batch_size], False)
        with autocast(device, amp):
            logits = model(x)
        outs.append(logits.float())
    logits = torch.cat(outs)
    return torch.sigmoid(logits) if split.task.kind == "multi-label" else torch.softmax(logits, dim=1)


def _state_dict_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def save_best(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """The model weights as safetensors, written atomically."""
    from safetensors.torch import save

    atomic_write_bytes(path, save(_state_dict_cpu(model), metadata=metadata))


def load_best(model: nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(path))
    model.load_state_dict(state, strict=True)


def _torch_save_atomic(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                             "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except (RuntimeError, IndexError):  # another GPU count: the CPU-only guarantee still holds
            pass


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


class _Loggers:
    """Optional TensorBoard / Weights & Biases logging (only when installed and asked)."""

    def __init__(self, names: Iterable[str], run_dir: Path, config: dict[str, Any]) -> None:
        import importlib.util

        self.tb = self.wandb = None
        for name in names:
            _choice("logger", name, LOGGERS)
        names = set(names)
        if "tensorboard" in names:
            if importlib.util.find_spec("tensorboard") is None:
                raise VlmError("--log tensorboard needs the tensorboard package: pip install tensorboard.")
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        if "wandb" in names:
            if importlib.util.find_spec("wandb") is None:
                raise VlmError("--log wandb needs the wandb package: pip install wandb (then `wandb login`, "
                               "or WANDB_MODE=offline).")
            import wandb

            self.wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "medvlm"), name=run_dir.name,
                                    id=run_dir.name.replace(":", "-")[:64], resume="allow", dir=str(run_dir),
                                    config=config)

    def epoch(self, row: dict[str, Any]) -> None:
        step = row["epoch"]
        scalars = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "epoch" and v is not None}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def test(self, metrics: dict[str, Any]) -> None:
        if self.tb is not None:
            for k in ("auc", "acc"):
                if metrics.get(k) is not None:
                    self.tb.add_scalar(f"test_{k}", metrics[k], 0)
        if self.wandb is not None:
            self.wandb.summary.update({f"test_{k}": metrics.get(k) for k in ("auc", "acc")})

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def check_log(names: Iterable[str]) -> None:
    """Fail early when a logger is asked for but not installed."""
    import importlib.util

    for name in names:
        _choice("logger", name, LOGGERS)
        if importlib.util.find_spec(name) is None:
            extra = " (then `wandb login`, or WANDB_MODE=offline)" if name == "wandb" else ""
            raise VlmError(f"--log {name} needs the {name} package: pip install {name}{extra}.")


# ----------------------------------------------------------------------------- the loop
@dataclass
class _State:
    epoch: int = 0  # completed epochs
    best_auc: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    stop_reason: str = ""


def _is_better(auc: float, state: _State) -> bool:
    if state.best_epoch == 0:
        return True
    if not math.isfinite(auc):
        return False
    return state.best_auc is None or not math.isfinite(state.best_auc) or auc > state.best_auc


def fit(
    model: nn.Module,
    train: Split,
    val: Split,
    test: Split,
    config: TrainConfig,
    *,
    model_name: str,
    preprocess: Preprocess | None = None,
    run_dir: str | os.PathLike | None = None,
    runs_dir: str | os.PathLike = "runs",
    method: str = "train",
    weights_id: str | None = None,
    extra_config: dict[str, Any] | None = None,
    log: Iterable[str] = (),
    progress: Progress | None = None,
    max_epochs_this_call: int | None = None,
    resume_hint: str | None = None,
) -> TrainResult:
    """Train `model` on `train`, select on `val` AUC, score `test` once with the best checkpoint.

    Args:
        model: maps a preprocessed batch to (B, K) logits (K = classes, or labels for multi-label).
        train, val, test: resident splits of one dataset (moved to the device here).
        config: the options (resolved against the task here).
        model_name: recorded as the RunRecord's model (a model name or an encoder id).
        preprocess: uint8 batch -> model input; default MedMNIST's (mean = std = 0.5, grey -> RGB,
            resized to `config.image_size` when set).
        run_dir: the run folder; when it holds a `last.pt` the run resumes from it. Default: a new
            folder under `runs_dir`.
        method: the RunRecord's method ("train", or a fine-tuning mode).
        extra_config: more entries for the record's config (model options, mode, ...).
        log: "tensorboard" and/or "wandb" (VlmError when asked and not installed).
        progress: called with a `TrainEvent` per batch and per epoch (nothing is printed here).
        max_epochs_this_call: stop (resumably) after this many epochs in this call; for tests and
            time-sliced jobs. The result then has `finished=False` and no test metrics.
        resume_hint: the command that resumes this run, for the Ctrl-C message.

    Returns:
        A TrainResult; finished runs carry the test Metrics and the RunRecord (method, model, config,
        seed, timings, best_epoch, epochs_run, preprocessing).

    Example:
        >>> net = create_model("small-cnn", num_classes=2)                          # doctest: +SKIP
        >>> fit(net, train, val, test, TrainConfig(epochs=3), model_name="small-cnn")  # doctest: +SKIP
    """
    from vlm.scoring import record_run, score_split

    task = train.task
    config = config.resolved(task)
    if config.batch_size > len(train):
        raise VlmError(f"--batch-size {config.batch_size} is larger than {task.flag}'s training split "
                       f"({len(train)} images): use --batch-size {len(train)} or less.")
    device = resolve_device(config.device)
    check_log(log)
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(runs_dir, f"{task.flag}_{method}_{model_name}")
    run_dir.mkdir(parents=True, exist_ok=True)
    resume_hint = resume_hint or f"vlm train --resume {run_dir}"
    preprocess = preprocess or medmnist_preprocess(config.image_size)

    seed_everything(config.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model.to(device)
    train_d, val_d = train.to(device), val.to(device)
    loss_fn = make_loss(config.loss, task, gamma=config.gamma, class_counts=train.class_counts(), device=device)
    sampler = EpochSampler(config.sampler, task, train.labels, seed=config.seed)
    pipeline = InputPipeline(preprocess, is_3d=task.is_3d, config=config)
    starts = batch_starts(len(sampler), config.batch_size)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, len(starts))

    state = _State()
    last_path = run_dir / LAST_FILE
    if last_path.is_file():
        saved = torch.load(last_path, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        sampler.load_state_dict(saved["sampler"])
        pipeline.load_state_dict(saved["pipeline"])
        _set_rng_state(saved["rng"])
        state = _State(**saved["state"])

    record_config = {**config.to_dict(), **(extra_config or {}), "device_used": str(device),
                     "precision": "bf16-autocast" if uses_bf16(device, config.amp) else "fp32"}
    loggers = _Loggers(log, run_dir, record_config)
    emit = progress or (lambda event: None)
    epochs_this_call = 0
    saved_epoch = state.epoch  # the epoch last.pt holds
    try:
        emit(TrainEvent("start", state.epoch, config.epochs, batches=len(starts), best_auc=state.best_auc,
                        best_epoch=state.best_epoch))
        while state.epoch < config.epochs and not state.stop_reason:
            if max_epochs_this_call is not None and epochs_this_call >= max_epochs_this_call:
                return _result(run_dir, state, finished=False)
            epoch = state.epoch + 1
            t0 = time.perf_counter()
            lr_used = optimizer.param_groups[-1]["lr"]  # the head's (or only) LR at the epoch's first step
            train_loss = _train_epoch(model, train_d, sampler, pipeline, loss_fn, optimizer, scheduler, starts,
                                      config, device, epoch, emit, run_dir, state)
            val_scores = predict(model, val_d, pipeline, batch_size=config.eval_batch_size, device=device,
                                 amp=config.amp)
            if not bool(torch.isfinite(val_scores).all()):
                raise _non_finite(epoch, None, run_dir, state)
            val_metrics = evaluate(task, val_d.labels, val_scores, n_bootstrap=0)
            seconds = time.perf_counter() - t0
            better = _is_better(val_metrics.auc, state)
            if better:
                save_best(model, run_dir / BEST_FILE, {"epoch": str(epoch), "val_auc": str(val_metrics.auc)})
                state.best_auc, state.best_epoch, state.bad_epochs = val_metrics.auc, epoch, 0
            else:
                state.bad_epochs += 1
            row = {"epoch": epoch, "train_loss": train_loss, "val_auc": finite_or_none(val_metrics.auc),
                   "val_acc": finite_or_none(val_metrics.acc), "lr": lr_used,
                   "seconds": round(seconds, 4), "best": better}
            state.history.append(row)
            state.epoch = epoch
            state.train_seconds += seconds
            if config.patience and state.bad_epochs >= config.patience and epoch < config.epochs:
                state.stop_reason = "early-stopping"
            atomic_write_text(run_dir / EPOCHS_FILE, "".join(json.dumps(r) + "\n" for r in state.history))
            _torch_save_atomic({
                "model": _state_dict_cpu(model), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "sampler": sampler.state_dict(),
                "pipeline": pipeline.state_dict(), "rng": _rng_state(), "state": asdict(state),
                "config": config.to_dict(),
            }, last_path)
            saved_epoch = epoch
            loggers.epoch(row)
            epochs_this_call += 1
            emit(TrainEvent("epoch", epoch, config.epochs, batches=len(starts), loss=train_loss,
                            val_auc=row["val_auc"], val_acc=row["val_acc"], best_auc=finite_or_none(state.best_auc),
                            best_epoch=state.best_epoch, seconds=seconds))
        state.stop_reason = state.stop_reason or "completed"

        emit(TrainEvent("test", state.epoch, config.epochs, best_auc=finite_or_none(state.best_auc),
                        best_epoch=state.best_epoch))
        t0 = time.perf_counter()
        load_best(model, run_dir / BEST_FILE)
        test_d = test.to(device)
        scores = predict(model, test_d, pipeline, batch_size=config.eval_batch_size, device=device, amp=config.amp)
        metrics = score_split(test_d, scores, n_bootstrap=config.n_bootstrap, seed=config.seed)
        test_seconds = time.perf_counter() - t0
        result = _result(run_dir, state, finished=True)
        record_config.update(best_epoch=state.best_epoch, best_val_auc=finite_or_none(state.best_auc),
                             epochs_run=state.epoch, stop_reason=state.stop_reason)
        result.metrics = metrics
        result.record = record_run(
            test_d, scores, metrics, method=method, model=model_name, runs_dir=run_dir.parent, run_dir=run_dir,
            weights_id=weights_id, seed=config.seed, config=record_config,
            timings={"seconds": round(state.train_seconds + test_seconds, 4),
                     "train_seconds": round(state.train_seconds, 4),
                     "seconds_per_epoch": round(result.seconds_per_epoch, 4),
                     "test_seconds": round(test_seconds, 4)},
            preprocessing=pipeline.describe(),
        )
        result.seconds = state.train_seconds + test_seconds
        loggers.test(metrics.to_dict())
        emit(TrainEvent("done", state.epoch, config.epochs, val_auc=finite_or_none(state.best_auc),
                        best_auc=finite_or_none(state.best_auc), best_epoch=state.best_epoch))
        return result
    except KeyboardInterrupt:
        done = f"last.pt holds epoch {saved_epoch}" if last_path.is_file() else "no epoch was completed"
        where = (f"during epoch {saved_epoch + 1} of {config.epochs}" if saved_epoch < config.epochs
                 else "while scoring the test split")
        raise TrainingInterrupted(
            f"Interrupted {where} ({done}). "
            f"Continue with: {resume_hint}"
        ) from None
    finally:
        loggers.close()


def _result(run_dir: Path, state: _State, finished: bool) -> TrainResult:
    n = len(state.history)
    return TrainResult(run_dir=run_dir, finished=finished, epochs_run=state.epoch, best_epoch=state.best_epoch,
                       best_val_auc=finite_or_none(state.best_auc), history=list(state.history), seconds=state.train_seconds,
                       seconds_per_epoch=state.train_seconds / n if n else 0.0,
                       stop_reason=state.stop_reason or "paused")


def _non_finite(epoch: int, batch: int | None, run_dir: Path, state: _State) -> VlmError:
    where = f"epoch {epoch}" + (f", batch {batch}" if batch is not None else " (validation scores)")
    kept = (f"The last good checkpoint is {run_dir / LAST_FILE} (epoch {state.epoch}) and the best is "
            f"{run_dir / BEST_FILE} (epoch {state.best_epoch})." if state.epoch else "No epoch completed.")
    return VlmError(f"Training stopped: the loss became non-finite (NaN/inf) in {where}. {kept} "
                    f"Try a lower --lr, --loss ce, or --device cpu without bf16.")


def _train_epoch(model, train, sampler, pipeline, loss_fn, optimizer, scheduler, starts, config, device, epoch,
                 emit, run_dir, state) -> float:
    model.train()
    order = sampler.epoch_indices().to(device)
    total, count = 0.0, 0
    for i, start in enumerate(starts):
        idx = order[start:start + config.batch_size]
        x = pipeline(train.images[idx], True)
        y = train.labels[idx]
        with autocast(device, config.amp):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        value = loss.item()
        if not math.isfinite(value):
            raise _non_finite(epoch, i + 1, run_dir, state)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += value * len(idx)
        count += len(idx)
        emit(TrainEvent("batch", epoch, config.epochs, batch=i + 1, batches=len(starts), loss=total / count,
                        best_auc=finite_or_none(state.best_auc), best_epoch=state.best_epoch))
    return total / max(count, 1)


# ----------------------------------------------------------------------------- vlm train
def write_spec(run_dir: Path, spec: dict[str, Any]) -> None:
    atomic_write_text(run_dir / SPEC_FILE, json.dumps(spec, indent=2, default=str))


def read_spec(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir) / SPEC_FILE
    if not path.is_file():
        raise VlmError(f"{run_dir} is not a resumable run folder (no {SPEC_FILE}); pass the folder that "
                       f"`vlm train`/`vlm finetune` created.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise VlmError(f"{path} is not valid JSON ({exc.msg}).") from None


def check_model_dims(model_name: str, task: TaskSpec) -> None:
    """A 2D model on a 3D dataset (or the reverse) -> a VlmError naming the prefix to use."""
    from models import list_models, model_dims

    dims = model_dims(model_name)
    if dims == "3d" and not task.is_3d:
        prefix, _, base = model_name.partition(":")
        base = base if base and "+" not in base and prefix in {e.name for e in list_models()} else None
        hint = f" Use the 2D model '{base}' itself" if base else " Use a 2D model (any timm name, medmnist-resnet18, small-cnn)"
        raise VlmError(f"{model_name} is a 3D model and {task.flag} is 2D.{hint}.")
    if dims == "2d" and task.is_3d:
        raise VlmError(f"{model_name} is a 2D model and {task.flag} is 3D: use slices:{model_name} (the 2D model "
                       f"applied slice by slice, its 2D weights kept), or a 3D model: acs:resnet18, 2.5d:resnet18, "
                       f"3d:resnet18 (also resnet50), vit3d or acs:resnet18+vit3d (see `vlm models`).")


def fixed_input_size(model: nn.Module) -> int | None:
    """The input size a 2D model requires (e.g. 224 for a ViT-224 without dynamic size), when it has one.

    Models that take any size (CNNs, even with a 224 px pretrained config) return None: they train at
    the dataset's native size unless --image-size says otherwise.
    """
    try:
        from models import fixed_input_size as is_fixed
        from models import input_size
    except ImportError:
        return None
    try:
        return input_size(model) if is_fixed(model) else None
    except Exception:  # noqa: BLE001 - not a timm model
        return None


def load_splits(task: TaskSpec, size: int, data_root: str | os.PathLike | None, download: bool) -> tuple[Split, Split, Split]:
    return tuple(load_split(task, s, size, data_root, download=download) for s in ("train", "val", "test"))  # type: ignore[return-value]


def train(
    flag: str,
    model_name: str,
    *,
    config: TrainConfig | None = None,
    size: int = 28,
    weights: str | os.PathLike | None = None,
    pretrained: bool | None = None,
    model_opts: dict[str, Any] | None = None,
    data_root: str | os.PathLike | None = None,
    download: bool = False,
    runs_dir: str | os.PathLike = "runs",
    run_dir: str | os.PathLike | None = None,
    log: Iterable[str] = (),
    progress: Progress | None = None,
    max_epochs_this_call: int | None = None,
) -> TrainResult:
    """`vlm train`: build a transfer model from the registry for a dataset and `fit` it.

    Args:
        flag: dataset flag (2D or 3D).
        model_name: a registered name, `PREFIX:BASE` (3D: slices:, acs:, 2.5d:, 3d:), or any timm 2D name.
        config: training options (defaults: MedMNIST's recipe with 10 epochs).
        size: the dataset file's image size (28/64/128/224; 3D 28/64).
        weights: a local checkpoint loaded into the backbone (the head is re-initialised).
        pretrained: start from pretrained weights; default: True when `weights` is given, else from scratch.
        model_opts: architecture keyword arguments (e.g. `{"slice_axis": 1}`); `in_chans=1` feeds grey
            images as one channel (default: 3, grey replicated to RGB as MedMNIST's as_rgb).
        run_dir: an existing run folder to continue (use `resume`), else a new one under `runs_dir`.

    Example:
        >>> train("vesselmnist3d", "acs:resnet18", config=TrainConfig(epochs=5))   # doctest: +SKIP
    """
    from models import create_model

    config = config or TrainConfig()
    task = get_task(flag)
    task.check_size(size)
    check_model_dims(model_name, task)
    config = config.resolved(task)
    check_log(log)
    model_opts = dict(model_opts or {})
    in_chans = int(model_opts.pop("in_chans", 3))
    if in_chans not in (1, 3) or (in_chans == 1 and task.n_channels == 3):
        raise VlmError(f"in_chans={in_chans} does not fit {task.flag} ({task.n_channels} channel(s)); use 3.")
    weights = str(weights) if weights is not None else None
    if weights is not None and not Path(weights).is_file():
        raise VlmError(f"Weights file {weights} not found.")
    pretrained = weights is not None if pretrained is None else pretrained
    train_s, val_s, test_s = load_splits(task, size, data_root, download)
    if config.batch_size > len(train_s):
        raise VlmError(f"--batch-size {config.batch_size} is larger than {task.flag}'s training split "
                       f"({len(train_s)} images): use --batch-size {len(train_s)} or less.")

    resize = config.image_size  # the size the input pipeline resizes images or volumes to
    if model_name.partition(":")[0] == "slices" and config.image_size is not None:
        # The slices model upsamples each slice itself; resizing the volume would change its slice count.
        if model_opts.setdefault("image_size", config.image_size) != config.image_size:
            raise VlmError(f"--image-size {config.image_size} and --model-opt image_size={model_opts['image_size']} "
                           "disagree: give one of them.")
        resize = None

    seed_everything(config.seed)
    model = create_model(model_name, task.num_classes, in_chans=in_chans, pretrained=pretrained, weights=weights,
                         **model_opts)
    if not task.is_3d:
        model = model.to(memory_format=torch.channels_last)  # see vlm.preprocess.channels_last
    fixed = None if task.is_3d else fixed_input_size(model)
    if fixed is not None and config.image_size not in (None, fixed):
        raise VlmError(f"{model_name} takes {fixed}×{fixed} images only, not --image-size {config.image_size}: leave "
                       f"--image-size out (images are then resized to {fixed}), or build the model for that size "
                       f"with --model-opt img_size={config.image_size}.")
    if fixed is not None and config.image_size is None and fixed != size:
        resize = fixed
        config = replace(config, image_size=fixed)
    preprocess = medmnist_preprocess(resize, rgb=in_chans == 3)

    spec = {"entry": "train", "flag": task.flag, "model": model_name, "size": size, "weights": weights,
            "pretrained": pretrained, "model_opts": {**model_opts, "in_chans": in_chans},
            "data_root": str(data_root) if data_root is not None else None, "config": config.to_dict()}
    if run_dir is None:
        run_dir = new_run_dir(runs_dir, f"{task.flag}_train_{model_name}")
        write_spec(Path(run_dir), spec)
    return fit(model, train_s, val_s, test_s, config, model_name=model_name, preprocess=preprocess, run_dir=run_dir,
               method="train", weights_id=_weights_id(weights, pretrained),
               extra_config={"model_opts": spec["model_opts"], "pretrained": pretrained, "weights": weights,
                             "size": size},
               log=log, progress=progress, max_epochs_this_call=max_epochs_this_call,
               resume_hint=f"vlm train --resume {run_dir}")


def _weights_id(weights: str | None, pretrained: bool) -> str | None:
    if weights is not None:
        return Path(weights).name
    return "pretrained" if pretrained else "scratch"


def resume(
    run_dir: str | os.PathLike,
    *,
    overrides: dict[str, Any] | None = None,
    data_root: str | os.PathLike | None = None,
    download: bool = False,
    log: Iterable[str] = (),
    progress: Progress | None = None,
    max_epochs_this_call: int | None = None,
) -> TrainResult:
    """Continue an interrupted `vlm train`/`vlm finetune` run from its `last.pt`, with its saved settings.

    `overrides` are the options the user gave again; any that differ from the saved ones (except
    `device`) raise a VlmError that lists them. `data_root` may point elsewhere.

    Example:
        >>> resume("runs/20250101-120000_breastmnist_train_small-cnn")   # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    spec = read_spec(run_dir)
    if (run_dir / "record.json").is_file():
        raise VlmError(f"{run_dir} already finished (it has a record.json); start a new run instead.")
    config = TrainConfig.from_dict(spec["config"])
    config = _apply_overrides(spec, config, overrides or {}, run_dir)
    root = data_root if data_root is not None else spec.get("data_root")
    if spec["entry"] == "finetune":
        from vlm.finetune import finetune

        return finetune(spec["flag"], spec["model"], mode=spec["mode"], config=config, size=spec["size"],
                        weights=spec.get("weights"), data_root=root, download=download, run_dir=run_dir,
                        log=log, progress=progress, max_epochs_this_call=max_epochs_this_call,
                        **spec.get("options", {}))
    return train(spec["flag"], spec["model"], config=config, size=spec["size"], weights=spec.get("weights"),
                 pretrained=spec.get("pretrained"), model_opts=spec.get("model_opts"), data_root=root,
                 download=download, run_dir=run_dir, log=log, progress=progress,
                 max_epochs_this_call=max_epochs_this_call)


def _apply_overrides(spec: dict[str, Any], config: TrainConfig, overrides: dict[str, Any], run_dir: Path) -> TrainConfig:
    conflicts = []
    config_names = {f.name for f in fields(TrainConfig)}
    top = {**spec, **spec.get("options", {})}
    for key, value in overrides.items():
        if value is None:
            continue
        if key in config_names:
            saved = getattr(config, key)
            if key in RESUME_FREE:
                config = replace(config, **{key: value})
                continue
        elif key in top:
            saved = top[key]
        else:
            continue
        if not _same(value, saved):
            conflicts.append(f"--{key.replace('_', '-')} {value} (saved: {saved})")
    if conflicts:
        raise VlmError(f"--resume continues {run_dir.name} with its saved settings, and these options differ: "
                       f"{'; '.join(conflicts)}. Drop them, or start a new run without --resume.")
    return config


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Path) or isinstance(b, Path):
        return str(a) == str(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    if isinstance(a, dict) and isinstance(b, dict):
        return all(_same(v, b.get(k)) for k, v in a.items())
    return a == b
