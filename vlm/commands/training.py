"""`vlm train`, `vlm finetune` and `vlm models`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from vlm.commands.common import (
    DataRootOpt,
    DownloadOpt,
    EncodeProgress,
    JsonOpt,
    err,
    out,
    print_json,
)
from vlm.errors import VlmError

TrainFlagArg = Annotated[Optional[str], typer.Argument(
    help="Dataset flag, e.g. breastmnist or vesselmnist3d (optional with --resume).", show_default=False)]
TrainSizeOpt = Annotated[Optional[int], typer.Option(
    "--size", help="Image size of the dataset file: 28/64/128/224 (2D), 28/64 (3D) \\[default: 28].", show_default=False)]
ImageSizeOpt = Annotated[Optional[int], typer.Option(
    "--image-size", help="Resize images to this many pixels on the device \\[default: the native size, or the "
                         "model's fixed input size (e.g. 224 for ViT); finetune: the encoder's own size].",
    show_default=False)]
TrainWeightsOpt = Annotated[Optional[Path], typer.Option(
    "--weights", help="Local checkpoint (.safetensors/.pt/.pth) loaded into the backbone; the head is re-initialised.",
    show_default=False)]
EpochsOpt = Annotated[Optional[int], typer.Option(
    "--epochs", help="Training epochs \\[default: 10; MedMNIST's baselines used 100].", show_default=False)]
TrainBatchOpt = Annotated[Optional[int], typer.Option(
    "--batch-size", help="Training batch size \\[default: 128]; evaluation uses twice this. Under torchrun it is the "
                         "global batch, split evenly over the processes (it must be divisible by their number).",
    show_default=False)]
LrOpt = Annotated[Optional[float], typer.Option(
    "--lr", help="Learning rate (of the head when --backbone-lr is set) \\[default: 1e-3].", show_default=False)]
BackboneLrOpt = Annotated[Optional[float], typer.Option(
    "--backbone-lr", help="Own, lower learning rate for everything but the head \\[default: train: none (all at "
                          "--lr); finetune: 1e-5].", show_default=False)]
OptimizerOpt = Annotated[Optional[str], typer.Option(
    "--optimizer", help="adam, adamw, radam, nadam or sgd (momentum 0.9) \\[default: train adam, finetune adamw].",
    show_default=False)]
WeightDecayOpt = Annotated[Optional[float], typer.Option(
    "--weight-decay", help="Weight decay \\[default: 0.01 for adamw, else 0].", show_default=False)]
SchedulerOpt = Annotated[Optional[str], typer.Option(
    "--scheduler", help="none, multistep (x0.1 at 50% and 75% of the epochs, MedMNIST), exponential (x gamma per "
                        "epoch) or cosine (with --warmup-epochs) \\[default: train multistep, finetune cosine].",
    show_default=False)]
LrGammaOpt = Annotated[Optional[float], typer.Option(
    "--lr-gamma", help="LR factor: multistep's step [0.1] or exponential's per-epoch decay [0.95].", show_default=False)]
WarmupOpt = Annotated[Optional[float], typer.Option(
    "--warmup-epochs", help="Cosine schedule: linear warm-up epochs \\[default: train 0, finetune 1].", show_default=False)]
LossOpt = Annotated[Optional[str], typer.Option(
    "--loss", help="ce, bce (multi-label), focal (multi-label: focal BCE) or weighted (class-weighted CE) "
                   "\\[default: ce; bce for multi-label].", show_default=False)]
GammaOpt = Annotated[Optional[float], typer.Option(
    "--gamma", help="Focal loss exponent \\[default: 2.0].", show_default=False)]
SamplerOpt = Annotated[Optional[str], typer.Option(
    "--sampler", help="none (shuffle), balanced (inverse class frequency, with replacement) or oversample "
                      "(minority classes repeated to the majority count) \\[default: none].", show_default=False)]
AugmentOpt = Annotated[Optional[bool], typer.Option(
    "--augment/--no-augment", help="Training augmentation on the device: 2D flip + small affine + resized crop; "
                                   "3D see --augment-3d \\[default: off, as MedMNIST].", show_default=False)]
Augment3dOpt = Annotated[Optional[str], typer.Option(
    "--augment-3d", help="3D augmentations used with --augment: comma list of flip, rot90 \\[default: flip].",
    show_default=False)]
ShapeTransformOpt = Annotated[Optional[bool], typer.Option(
    "--shape-transform/--no-shape-transform",
    help="MedMNIST's shape-dataset transform: voxels x U(0,1) in training, x 0.5 at evaluation \\[default: on for "
         "adrenalmnist3d and vesselmnist3d only].", show_default=False)]
TrainSeedOpt = Annotated[Optional[int], typer.Option(
    "--seed", help="Seed of everything (init, order, augmentation, bootstrap) \\[default: 0].", show_default=False)]
PatienceOpt = Annotated[Optional[int], typer.Option(
    "--patience", help="Early stopping: stop after this many epochs without a better val AUC \\[default: off].",
    show_default=False)]
TrainDeviceOpt = Annotated[Optional[str], typer.Option(
    "--device", help="auto (cuda if available), cpu or cuda; see --amp for bf16 \\[default: auto].",
    show_default=False)]
AmpOpt = Annotated[Optional[bool], typer.Option(
    "--amp/--no-amp", help="bf16 autocast of the forward pass (weights and optimizer stay fp32). --amp turns it on "
                           "for the CPU too: worth it for dense 3D convolutions on CPUs with AVX-512 BF16 or AMX "
                           "(acs:resnet18 steps 2x faster on an AMD EPYC, EfficientNet slices 2.3x slower), less exact "
                           "\\[default: on for CUDA, off for CPU].",
    show_default=False)]
SyncBnOpt = Annotated[Optional[bool], typer.Option(
    "--sync-bn/--no-sync-bn", help="Under torchrun: BatchNorm statistics over the global batch (synchronised "
                                   "across processes) or per process \\[default: synchronised].", show_default=False)]
TrainBootstrapOpt = Annotated[Optional[int], typer.Option(
    "--bootstrap", help="Bootstrap rounds for the test 95% CIs (0: none) \\[default: 1000].", show_default=False)]
ResumeOpt = Annotated[Optional[Path], typer.Option(
    "--resume", help="Continue an interrupted run folder from its last.pt with its saved settings (options given "
                     "again must match).", show_default=False)]
TrainRunsDirOpt = Annotated[Path, typer.Option(
    "--runs-dir", help="Folder that holds run folders (checkpoints, epochs.jsonl, record.json).")]
LogOpt = Annotated[Optional[list[str]], typer.Option(
    "--log", help="Also log to tensorboard and/or wandb (repeat the option; the package must be installed).",
    show_default=False)]


def _given(**options: Any) -> dict[str, Any]:
    """The options the user gave (typer passes None for the others)."""
    return {k: v for k, v in options.items() if v is not None}


class _TrainProgress:
    """A rich progress bar per epoch (live loss, last val AUC) driven by `vlm.training` events."""

    def __init__(self, console: Console, label: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from vlm.training.distributed import is_main_process

        self.label = label
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), console=console,
                                 transient=False, disable=not is_main_process())
        self.task: Any = None
        self.last = ""
        self.embed = EncodeProgress(self.progress, f"{label} encoding", stats="")

    def __enter__(self) -> "_TrainProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def _stats(self, loss: float | None) -> str:
        return " · ".join(s for s in (f"loss {loss:.4f}" if loss is not None else "", self.last) if s)

    def __call__(self, event: Any) -> None:
        if event.stage == "batch":
            if self.task is None or event.batch == 1:
                self.task = self.progress.add_task(f"{self.label} epoch {event.epoch}/{event.epochs}",
                                                   total=event.batches, stats="")
            self.progress.update(self.task, completed=event.batch, stats=self._stats(event.loss))
        elif event.stage == "epoch":
            auc = "-" if event.val_auc is None else f"{event.val_auc:.4f}"
            best = "-" if event.best_auc is None else f"{event.best_auc:.4f}"
            self.last = f"val AUC {auc} (best {best} @ {event.best_epoch})"
            if self.task is not None:
                self.progress.update(self.task, stats=self._stats(event.loss))
        elif event.stage == "test":
            self.progress.add_task(f"{self.label} scoring test with epoch {event.best_epoch}", total=None, stats="")


def _report_training(result: Any, as_json: bool, title: str) -> None:
    from vlm import render
    from vlm.training.distributed import is_main_process

    if not is_main_process():  # torchrun: rank 0 reports
        return
    summary = result.summary()
    if as_json:
        print_json(summary)
        return
    out.print(render.metrics_table([result.metrics.to_dict()], title=title))
    if result.epochs_run:
        best = "-" if result.best_val_auc is None else f"{result.best_val_auc:.4f}"
        out.print(f"best epoch {result.best_epoch} of {result.epochs_run} (val AUC {best}, {result.stop_reason}); "
                  f"{result.seconds:.1f}s, {result.seconds_per_epoch:.2f}s/epoch", highlight=False)
    else:
        chosen = ", ".join(f"{k} {rec_cfg[k]}" for k in ("l2", "k") if k in (rec_cfg := result.record.config))
        best = "-" if result.best_val_auc is None else f"{result.best_val_auc:.4f}"
        out.print(f"chosen on val: {chosen} (val AUC {best}); {result.seconds:.1f}s", highlight=False)
    out.print(f"run folder [bold]{escape(str(result.run_dir))}[/]", highlight=False, soft_wrap=True)


def train_cmd(
    flag: TrainFlagArg = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Transfer model: a registered name (medmnist-resnet18, small-cnn, ...; see `vlm models`), "
                              "a 3D prefix (slices:NAME, acs:resnet18, 2.5d:resnet50, 3d:resnet18), vit3d, or any "
                              "timm 2D name.", show_default=False)] = None,
    size: TrainSizeOpt = None,
    image_size: ImageSizeOpt = None,
    weights: TrainWeightsOpt = None,
    pretrained: Annotated[Optional[bool], typer.Option(
        "--pretrained/--scratch", help="Start from pretrained weights or from scratch \\[default: pretrained when "
                                       "--weights is given, else scratch].", show_default=False)] = None,
    epochs: EpochsOpt = None,
    batch_size: TrainBatchOpt = None,
    lr: LrOpt = None,
    backbone_lr: BackboneLrOpt = None,
    optimizer: OptimizerOpt = None,
    weight_decay: WeightDecayOpt = None,
    scheduler: SchedulerOpt = None,
    lr_gamma: LrGammaOpt = None,
    warmup_epochs: WarmupOpt = None,
    loss: LossOpt = None,
    gamma: GammaOpt = None,
    sampler: SamplerOpt = None,
    augment: AugmentOpt = None,
    augment_3d: Augment3dOpt = None,
    shape_transform: ShapeTransformOpt = None,
    seed: TrainSeedOpt = None,
    patience: PatienceOpt = None,
    device: TrainDeviceOpt = None,
    amp: AmpOpt = None,
    sync_bn: SyncBnOpt = None,
    bootstrap: TrainBootstrapOpt = None,
    model_opt: Annotated[Optional[list[str]], typer.Option(
        "--model-opt", help="Architecture option KEY=VALUE, repeatable (e.g. slice_axis=1, head=mean, in_chans=1).",
        show_default=False)] = None,
    resume: ResumeOpt = None,
    runs_dir: TrainRunsDirOpt = Path("runs"),
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    log: LogOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train a transfer model (2D or 3D) on a dataset: best epoch by val AUC, test scored once.

    Defaults are MedMNIST's recipe (Adam, lr 1e-3, batch 128, LR x0.1 at 50% and 75% of the epochs,
    no augmentation) with 10 epochs instead of 100. The run folder keeps best.safetensors, a resumable
    last.pt, epochs.jsonl and the test record. Ctrl-C keeps the last completed epoch: continue with
    --resume RUN_DIR.

    Example: [bold]vlm train breastmnist --model medmnist-resnet18 --epochs 20 --data-root ../shared/data/medmnist[/]
    Example: [bold]vlm train vesselmnist3d --model acs:resnet18 --augment --json[/]
    Example: [bold]vlm train --resume runs/20250101-120000_breastmnist_train_small-cnn[/]
    """
    from vlm.methods import resume as resume_run
    from vlm.training import TrainConfig, parse_model_opts, train

    opts = _given(epochs=epochs, batch_size=batch_size, lr=lr, backbone_lr=backbone_lr, optimizer=optimizer,
                  weight_decay=weight_decay, scheduler=scheduler, lr_gamma=lr_gamma, warmup_epochs=warmup_epochs,
                  loss=loss, gamma=gamma, sampler=sampler, augment=augment, augment_3d=augment_3d,
                  shape_transform=shape_transform, image_size=image_size, seed=seed, patience=patience,
                  device=device, amp=amp, sync_bn=sync_bn, n_bootstrap=bootstrap)
    model_opts = parse_model_opts(model_opt) if model_opt else None
    console = err if as_json else out
    if resume is not None:
        overrides = {**opts, **_given(flag=flag.lower() if flag else None, model=model, size=size,
                                      weights=str(weights) if weights else None, pretrained=pretrained,
                                      model_opts=model_opts)}
        with _TrainProgress(console, "resumed") as bar:
            result = resume_run(resume, overrides=overrides, data_root=data_root, download=download, log=log or (),
                                progress=bar)
    else:
        if flag is None or model is None:
            raise VlmError("vlm train needs a dataset flag and --model NAME (or --resume RUN_DIR).")
        with _TrainProgress(console, f"{flag} {model}") as bar:
            result = train(flag, model, config=TrainConfig(**opts), size=size or 28, weights=weights,
                           pretrained=pretrained, model_opts=model_opts, data_root=data_root, download=download,
                           runs_dir=runs_dir, log=log or (), progress=bar)
    rec = result.record
    _report_training(result, as_json, f"{rec.dataset} · test · {rec.size}px · {rec.model} (trained)")


def finetune_cmd(
    flag: TrainFlagArg = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Encoder: a VLM alias (biomedclip, clip-vit-b-32, plip, ...), an open_clip/transformers "
                              "name, or any timm name (image-only backbone).", show_default=False)] = None,
    weights: TrainWeightsOpt = None,
    mode: Annotated[Optional[str], typer.Option(
        "--mode", help="linear-probe (frozen, cached embeddings, L2 chosen on val), knn, full (tower + head) or "
                       "zs-init (head from the zero-shot classifier, then --zs-then) \\[default: linear-probe].",
        show_default=False)] = None,
    style: Annotated[Optional[str], typer.Option(
        "--style", help="zs-init: the prompt style that initialises the head \\[default: clip, else the first].",
        show_default=False)] = None,
    prompts: Annotated[Optional[Path], typer.Option(
        "--prompts", help="zs-init: a prompt-set YAML file \\[default: the shipped prompts/<flag>.yaml].",
        show_default=False)] = None,
    zs_then: Annotated[Optional[str], typer.Option(
        "--zs-then", help="zs-init: then full (fine-tune tower + head) or linear-probe (frozen; L2 pulls toward the "
                          "zero-shot head) \\[default: full].", show_default=False)] = None,
    k: Annotated[Optional[str], typer.Option(
        "--k", help="knn: neighbours, a number or auto (chosen on val AUC) \\[default: auto].", show_default=False)] = None,
    knn_weighting: Annotated[Optional[str], typer.Option(
        "--knn-weighting", help="knn: uniform votes or similarity (exp(cos/0.07)) weights \\[default: uniform].",
        show_default=False)] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(
        "--cache-dir", help="Image-embedding cache (linear-probe/knn) \\[default: $VLM_CACHE_DIR, else "
                            "~/.cache/medvlm/embeddings].", show_default=False)] = None,
    slice_axis: Annotated[Optional[int], typer.Option(
        "--slice-axis", help="3D (linear-probe/knn): slice axis 0/1/2 = D/H/W \\[default: 0].", show_default=False)] = None,
    pool: Annotated[Optional[str], typer.Option(
        "--pool", help="3D (linear-probe/knn): pool slice embeddings by mean or max \\[default: mean].",
        show_default=False)] = None,
    size: TrainSizeOpt = None,
    image_size: ImageSizeOpt = None,
    epochs: EpochsOpt = None,
    batch_size: TrainBatchOpt = None,
    lr: LrOpt = None,
    backbone_lr: BackboneLrOpt = None,
    optimizer: OptimizerOpt = None,
    weight_decay: WeightDecayOpt = None,
    scheduler: SchedulerOpt = None,
    lr_gamma: LrGammaOpt = None,
    warmup_epochs: WarmupOpt = None,
    loss: LossOpt = None,
    gamma: GammaOpt = None,
    sampler: SamplerOpt = None,
    augment: AugmentOpt = None,
    seed: TrainSeedOpt = None,
    patience: PatienceOpt = None,
    device: TrainDeviceOpt = None,
    amp: AmpOpt = None,
    sync_bn: SyncBnOpt = None,
    bootstrap: TrainBootstrapOpt = None,
    resume: ResumeOpt = None,
    runs_dir: TrainRunsDirOpt = Path("runs"),
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    log: LogOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Vision-only fine-tuning of an image encoder with a linear head: linear-probe, knn, full or zs-init.

    linear-probe and knn run on cached embeddings (seconds after the first encoding; 3D via pooled
    slice embeddings). full and zs-init train with the `vlm train` loop (AdamW, cosine, tower at
    --backbone-lr 1e-5, head at --lr 1e-3, 10 epochs by default) and resume with --resume RUN_DIR.

    Example: [bold]vlm finetune breastmnist --model tf_efficientnet_lite0 --weights ../shared/weights/tf_efficientnet_lite0.safetensors --mode linear-probe[/]
    Example: [bold]vlm finetune breastmnist --model biomedclip --mode zs-init --style clip --epochs 5[/]
    """
    from vlm.finetune import finetune, finetune_config
    from vlm.methods import resume as resume_run

    opts = _given(epochs=epochs, batch_size=batch_size, lr=lr, backbone_lr=backbone_lr, optimizer=optimizer,
                  weight_decay=weight_decay, scheduler=scheduler, lr_gamma=lr_gamma, warmup_epochs=warmup_epochs,
                  loss=loss, gamma=gamma, sampler=sampler, augment=augment, image_size=image_size, seed=seed,
                  patience=patience, device=device, amp=amp, sync_bn=sync_bn, n_bootstrap=bootstrap)
    k_value: Any = None if k is None else (k if k == "auto" else _int_or_error("--k", k))
    extra = _given(k=k_value, knn_weighting=knn_weighting, style=style, prompts=str(prompts) if prompts else None,
                   zs_then=zs_then, cache_dir=str(cache_dir) if cache_dir else None, slice_axis=slice_axis, pool=pool)
    console = err if as_json else out
    if resume is not None:
        overrides = {**opts, **extra, **_given(flag=flag.lower() if flag else None, model=model, mode=mode,
                                               size=size, weights=str(weights) if weights else None)}
        with _TrainProgress(console, "resumed") as bar:
            result = resume_run(resume, overrides=overrides, data_root=data_root, download=download, log=log or (),
                                progress=bar)
    else:
        if flag is None or model is None:
            raise VlmError("vlm finetune needs a dataset flag and --model ENCODER (or --resume RUN_DIR).")
        with _TrainProgress(console, f"{flag} {model}") as bar:
            result = finetune(flag, model, mode=mode or "linear-probe", config=finetune_config(**opts), size=size or 28,
                              weights=weights, data_root=data_root, download=download, runs_dir=runs_dir,
                              log=log or (), progress=bar, embed_progress=bar.embed, **extra)
    rec = result.record
    _report_training(result, as_json, f"{rec.dataset} · test · {rec.size}px · {rec.model} ({rec.method})")


def _int_or_error(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise VlmError(f"{name} takes a number or 'auto', got '{value}'.") from None


def models_cmd(as_json: JsonOpt = False) -> None:
    """List the registered transfer models and 3D prefixes (any timm 2D name works too) and the encoder aliases.

    Example: [bold]vlm models --json[/]
    """
    from models import list_models
    from vlm.encoders import list_aliases

    rows = [{"name": e.name + (":" if e.is_prefix else ""), "dims": e.dims, "description": e.description}
            for e in list_models()]
    aliases = list_aliases()
    if as_json:
        print_json({"models": rows, "timm_fallback": "any timm 2D model name (e.g. resnet50, tf_efficientnet_lite0)",
                    "encoders": aliases})
        return
    from rich.table import Table

    table = Table(title="transfer models (`vlm train --model`; any timm 2D name works too)", title_justify="left")
    for col in ("name", "dims", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(escape(r["name"]), r["dims"], escape(r["description"]))
    out.print(table)
    enc = Table(title="encoder aliases (`vlm zero-shot/finetune --model`; also open_clip, transformers and timm names)",
                title_justify="left")
    for col in ("name", "backend", "target", "description"):
        enc.add_column(col)
    for a in aliases:
        enc.add_row(escape(a["name"]), a["backend"], escape(a["target"]), escape(a["description"]))
    out.print(enc)
