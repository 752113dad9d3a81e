"""The options `vlm train` and `vlm finetune` share, declared once as three option groups, and
what both do with them: the TrainConfig entries the user gave, new run or --resume, the report."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.markup import escape

from vlm.commands.common import DataRootOpt, DownloadOpt, given
from vlm.commands.output import Line, Output, status_console
from vlm.commands.views import metrics_table
from vlm.errors import VlmError

TrainFlagArg = Annotated[Optional[str], typer.Argument(
    help="Dataset flag, e.g. breastmnist or vesselmnist3d (optional with --resume).", show_default=False)]
TrainSizeOpt = Annotated[Optional[int], typer.Option(
    "--size", help="Image size of the dataset file: 28/64/128/224 (2D), 28/64 (3D) \\[default: 28].",
    show_default=False)]
ImageSizeOpt = Annotated[Optional[int], typer.Option(
    "--image-size", help="Resize images to this many pixels on the device \\[default: the native size, or the "
                         "model's fixed input size (e.g. 224 for ViT); finetune: the encoder's own size].",
    show_default=False)]
TrainWeightsOpt = Annotated[Optional[Path], typer.Option(
    "--weights", help="Local checkpoint (.safetensors/.pt/.pth) loaded into the backbone; the head is re-initialised.",
    show_default=False)]


def _epochs(value: str | None) -> list[float] | None:
    """`--lr-milestones 10,15` -> [10.0, 15.0]."""
    if value is None:
        return None
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"takes epochs separated by commas (e.g. 10,15), got '{value}'.") from None


@dataclass(frozen=True)
class Recipe:
    """The optimisation options (unset: the recipe's values, `vlm train --recipe`; finetune: its defaults)."""

    epochs: Annotated[Optional[int], typer.Option(
        "--epochs", help="Training epochs \\[default: the recipe's (medmnist 100, others 10); finetune 10].",
        show_default=False)] = None
    batch_size: Annotated[Optional[int], typer.Option(
        "--batch-size", help="Training batch size \\[default: the recipe's (e.g. 128; medmnist 3D 32); finetune "
                            "128]; evaluation uses twice this. Under torchrun it is the global batch, split evenly "
                            "over the processes (it must be divisible by their number).",
        show_default=False)] = None
    lr: Annotated[Optional[float], typer.Option(
        "--lr", help="Learning rate (of the head when --backbone-lr is set) \\[default: the recipe's, e.g. 1e-3].",
        show_default=False)] = None
    backbone_lr: Annotated[Optional[float], typer.Option(
        "--backbone-lr", help="Own, lower learning rate for everything but the head \\[default: train: none (all at "
                              "--lr); finetune: 1e-5].", show_default=False)] = None
    optimizer: Annotated[Optional[str], typer.Option(
        "--optimizer", help="adam, adamw, radam, nadam or sgd (momentum 0.9) \\[default: the recipe's, e.g. adam; "
                            "finetune adamw].",
        show_default=False)] = None
    weight_decay: Annotated[Optional[float], typer.Option(
        "--weight-decay", help="Weight decay \\[default: 0.01 for adamw, else 0].", show_default=False)] = None
    scheduler: Annotated[Optional[str], typer.Option(
        "--scheduler", help="none, multistep (MultiStepLR: x0.1 at --lr-milestones), exponential (x gamma per "
                            "epoch) or cosine (with --warmup-epochs) \\[default: train multistep, finetune cosine].",
        show_default=False)] = None
    lr_gamma: Annotated[Optional[float], typer.Option(
        "--lr-gamma", help="LR factor: multistep's step [0.1] or exponential's per-epoch decay [0.95].",
        show_default=False)] = None
    lr_milestones: Annotated[Optional[str], typer.Option(
        "--lr-milestones", help="multistep: epochs at which the LR drops, comma-separated; fractional ones never "
                                "fire, as in MultiStepLR \\[default: 0.5 and 0.75 x --epochs (MedMNIST's); medvit "
                                "10,15].", callback=_epochs, show_default=False)] = None
    warmup_epochs: Annotated[Optional[float], typer.Option(
        "--warmup-epochs", help="Cosine schedule: linear warm-up epochs \\[default: train 0, finetune 1].",
        show_default=False)] = None
    loss: Annotated[Optional[str], typer.Option(
        "--loss", help="ce, bce (multi-label), focal (multi-label: focal BCE) or weighted (class-weighted CE) "
                       "\\[default: the recipe's, else ce; bce for multi-label].", show_default=False)] = None
    gamma: Annotated[Optional[float], typer.Option(
        "--gamma", help="Focal loss exponent \\[default: 2.0; slices-study 0.7].", show_default=False)] = None
    sampler: Annotated[Optional[str], typer.Option(
        "--sampler", help="none (shuffle), balanced (inverse class frequency, with replacement) or oversample "
                          "(minority classes repeated to the majority count) \\[default: the recipe's, e.g. "
                          "none].",
        show_default=False)] = None
    augment: Annotated[Optional[str], typer.Option(
        "--augment", help="Training augmentation on the device: off, affine (2D flip + small affine + resized crop; "
                          "3D: --augment-3d) or augmix (2D, on 8-bit images after resizing, as MedViT) \\[default: "
                          "the recipe's: off; medvit augmix].", show_default=False)] = None


@dataclass(frozen=True)
class RunControl:
    """Seed, early stopping, device and precision, bootstrap rounds."""

    seed: Annotated[Optional[int], typer.Option(
        "--seed", help="Seed of everything (init, order, augmentation, bootstrap) \\[default: 0].",
        show_default=False)] = None
    patience: Annotated[Optional[int], typer.Option(
        "--patience", help="Early stopping: stop after this many epochs without a better val AUC \\[default: off].",
        show_default=False)] = None
    device: Annotated[Optional[str], typer.Option(
        "--device", help="auto (cuda if available), cpu or cuda; see --amp for bf16 \\[default: auto].",
        show_default=False)] = None
    amp: Annotated[Optional[bool], typer.Option(
        "--amp/--no-amp", help="bf16 autocast of the forward pass (weights and optimizer stay fp32). --amp turns it on "
                               "for the CPU too: worth trying for dense 3D convolutions (acs:resnet18 steps 2x faster "
                               "on this project's AVX2-only AMD EPYC, EfficientNet slices 2.3x slower), less exact "
                               "\\[default: on for CUDA, off for CPU].",
        show_default=False)] = None
    bootstrap: Annotated[Optional[int], typer.Option(
        "--bootstrap", help="Bootstrap rounds for the test 95% CIs (0: none) \\[default: 1000].",
        show_default=False)] = None
    sync_bn: Annotated[Optional[bool], typer.Option(
        "--sync-bn/--no-sync-bn", help="Under torchrun: BatchNorm statistics over the global batch (synchronised "
                                       "across processes) or per process \\[default: synchronised].",
        show_default=False)] = None


@dataclass(frozen=True)
class RunPlace:
    """Where the run goes (or which one --resume continues), its data and its loggers."""

    resume: Annotated[Optional[Path], typer.Option(
        "--resume", help="Continue an interrupted run folder from its last.pt with its saved settings (options given "
                         "again must match).", show_default=False)] = None
    runs_dir: Annotated[Path, typer.Option(
        "--runs-dir", help="Folder that holds run folders (checkpoints, epochs.jsonl, record.json).")] = Path("runs")
    data_root: DataRootOpt = None
    download: DownloadOpt = False
    log: Annotated[Optional[list[str]], typer.Option(
        "--log", help="Also log to a tracker: tensorboard, mlflow or wandb (repeatable; pip install "
                      "\"medvlm\\[trackers]\" for the first two; MLflow: $MLFLOW_TRACKING_URI, default RUNS_DIR/mlruns).",
        show_default=False)] = None


def config_options(recipe: Recipe, control: RunControl, **more: Any) -> dict[str, Any]:
    """The TrainConfig entries the user gave: the recipe, `more` (e.g. image_size), then the run control."""
    return given(**asdict(recipe), **more, seed=control.seed, patience=control.patience, device=control.device,
                 amp=control.amp, n_bootstrap=control.bootstrap, sync_bn=control.sync_bn)


def run_training(place: RunPlace, flag: str | None, model: str | None, overrides: dict[str, Any],
                 start: Callable[[Any], Any], usage: str, fmt: str) -> Any:
    """Continue `place.resume` with `overrides` (the options given again), or `start(progress)` a new run."""
    from vlm.commands.progress import TrainProgress
    from vlm.methods import resume

    console = status_console(fmt)
    if place.resume is not None:
        with TrainProgress(console, "resumed") as bar:
            return resume(place.resume, overrides=overrides, data_root=place.data_root, download=place.download,
                          log=place.log or (), progress=bar)
    if flag is None or model is None:
        raise VlmError(usage)
    with TrainProgress(console, f"{flag} {model}") as bar:
        return start(bar)


def training_output(result: Any, title: str) -> Output | None:
    """A training result: its summary (JSON), the test metrics, the best epoch (or the choice made on val);
    under torchrun on rank 0 only."""
    from vlm.training.distributed import is_main_process

    if not is_main_process():
        return None
    best = "-" if result.best_val_auc is None else f"{result.best_val_auc:.4f}"
    if result.epochs_run:
        what = (f"best epoch {result.best_epoch} of {result.epochs_run} (val AUC {best}, {result.stop_reason}); "
                f"{result.seconds:.1f}s, {result.seconds_per_epoch:.2f}s/epoch")
    else:
        chosen = ", ".join(f"{k} {result.record.config[k]}" for k in ("l2", "k") if k in result.record.config)
        what = f"chosen on val: {chosen} (val AUC {best}); {result.seconds:.1f}s"
    return Output(result.summary(), [metrics_table([result.metrics.to_dict()], title=title), Line(escape(what)),
                                     Line(f"run folder [bold]{escape(str(result.run_dir))}[/]", soft_wrap=True)])
