"""The one training loop, `fit`: transfer models (2D and 3D) and fine-tuned encoder towers.

`fit(model, train, val, test, config, ...)` trains on a resident split (uint8 on the device, batches
by indexing, preprocessing as tensor ops), scores VAL after every epoch with `vlm.evaluate`, keeps
the checkpoint with the best validation AUC, and at the end scores TEST once with that checkpoint
through `vlm.scoring` (one RunRecord in the run folder; files: `vlm.training.checkpoint`).

Determinism: `seed` seeds Python, NumPy and torch; the epoch order, augmentation and shape transform
draw from their own CPU generators, and the global RNG state (dropout, drop-path) is saved with every
`last.pt`. On the CPU a run interrupted and resumed ends identical to an uninterrupted one.

Under torchrun the same `fit` trains data-parallel (`vlm.training.distributed`): each rank trains on
its part of every global batch, val/test scores are gathered in order, rank 0 writes the run folder.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from vlm.data import Split
from vlm.errors import VlmError
from vlm.evaluate import Metrics, evaluate
from vlm.files import finite_or_none
from vlm.losses import make_loss
from vlm.preprocess import Preprocess, medmnist_preprocess
from vlm.interrupts import Terminated, deferred_interrupts, terminate_as_interrupt
from vlm.results import RunRecord
from vlm.runtime import seed_everything
from vlm.sampling import EpochSampler
from vlm.training.checkpoint import (
    BEST_FILE, EPOCHS_FILE, LAST_FILE, TrainingInterrupted, create_run_dir, discard_unstarted, interrupted_error,
    load_best, non_finite_error, restore_last, resume_point, rng_state, save_best, save_last, spec_entry,
    write_epochs,
)
from vlm.training.config import TrainConfig, check_batch_size
from vlm.training.distributed import (
    RANK_SEED_STRIDE, Distributed, check_global_batch, setup_distributed, sync_batchnorm,
)
from vlm.training.loggers import Loggers, check_log, run_params
from vlm.training.optim import build_optimizer, build_scheduler
from vlm.training.pipeline import (
    InputPipeline, autocast, batch_starts, predict_logits, scores_from_logits, uses_bf16,
)


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


TrainProgress = Callable[[TrainEvent], None]


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


@dataclass
class _State:
    """The loop's progress, saved in last.pt."""

    epoch: int = 0  # completed epochs
    best_auc: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    stop_reason: str = ""


@dataclass
class _Trainer:
    """What one `fit` call trains with (the splits already on the device)."""

    model: nn.Module  # the model itself: evaluation, checkpoints
    net: nn.Module  # what training steps call: the model, in DistributedDataParallel under torchrun
    dist: Distributed
    train: Split
    val: Split
    config: TrainConfig
    device: torch.device
    run_dir: Path
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    sampler: EpochSampler
    pipeline: InputPipeline
    starts: list[int]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    emit: TrainProgress
    state: _State
    saved_epoch: int = 0  # the epoch last.pt holds
    sync_bn: bool = False  # BatchNorm synchronised across ranks

    def event(self, stage: str, epoch: int, **values: Any) -> None:
        """Send a TrainEvent that carries the best epoch so far."""
        self.emit(TrainEvent(stage, epoch, self.config.epochs, best_auc=finite_or_none(self.state.best_auc),
                             best_epoch=self.state.best_epoch, **values))


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
    spec: dict[str, Any] | None = None,
    method: str = "train",
    weights_id: str | None = None,
    extra_config: dict[str, Any] | None = None,
    log: Iterable[str] = (),
    progress: TrainProgress | None = None,
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
        run_dir: an existing run folder to continue from its verified `last.pt` (`checkpoint.resume_point`:
            a damaged or missing one stops with a VlmError, never a restart over completed epochs). Default:
            a new folder under `runs_dir`, made once every check has passed, holding `spec` as spec.json
            (what `--resume` rebuilds the run from), and removed again when the run fails before its first
            epoch is saved.
        method: the RunRecord's method ("train", or a fine-tuning mode).
        extra_config: more entries for the record's config (model options, mode, ...).
        log: trackers, any of "tensorboard", "mlflow", "wandb" (`vlm.training.loggers`; VlmError when asked and
            not installed).
        progress: called with a `TrainEvent` per batch and per epoch (nothing is printed here).
        max_epochs_this_call: stop (resumably) after this many epochs in this call; for tests and
            time-sliced jobs. The result then has `finished=False` and no test metrics.
        resume_hint: the command that resumes this run, for the Ctrl-C/SIGTERM message (default: `vlm ENTRY
            --resume RUN_DIR`, ENTRY from the spec).

    Returns:
        A TrainResult; finished runs carry the test Metrics and the RunRecord (method, model, config,
        seed, timings, best_epoch, epochs_run, preprocessing).

    Example:
        >>> net = create_model("small-cnn", num_classes=2)                          # doctest: +SKIP
        >>> fit(net, train, val, test, TrainConfig(epochs=3), model_name="small-cnn")  # doctest: +SKIP
    """
    task = train.task
    config = config.resolved(task)
    check_batch_size(config.batch_size, train)
    ctx, device = setup_distributed(config.device)
    _check_world(ctx, config, (train, val, test))
    check_log(log)
    created = run_dir is None
    if created:
        run_dir = create_run_dir(runs_dir, f"{task.flag}_{method}_{model_name}", spec)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise VlmError(f"Run folder {run_dir} does not exist.")
    entry = (spec or {}).get("entry") or spec_entry(run_dir)
    resume_hint = resume_hint or f"vlm {entry} --resume {run_dir}"
    preprocess = preprocess or medmnist_preprocess(config.image_size, interpolation=config.interpolation,
                                                   normalize=config.normalize)
    emit = (progress or (lambda event: None)) if ctx.is_main else (lambda event: None)
    try:
        trainer = _setup(model, train, val, config, ctx, device, run_dir, preprocess, emit)
        with terminate_as_interrupt():
            return _train_and_score(trainer, test, config, ctx, device, run_dir, log, method=method,
                                    model_name=model_name, weights_id=weights_id, extra_config=extra_config,
                                    max_epochs_this_call=max_epochs_this_call, resume_hint=resume_hint)
    except BaseException as exc:
        if created and ctx.is_main and not isinstance(exc, (KeyboardInterrupt, TrainingInterrupted)):
            discard_unstarted(run_dir)
        raise


def _train_and_score(trainer: "_Trainer", test: Split, config: TrainConfig, ctx: Distributed, device: torch.device,
                     run_dir: Path, log: Iterable[str], *, method: str, model_name: str, weights_id: str | None,
                     extra_config: dict[str, Any] | None, max_epochs_this_call: int | None,
                     resume_hint: str) -> TrainResult:
    """The epochs still to run, then the test split once; Ctrl-C or SIGTERM raise TrainingInterrupted."""
    record_config = {**config.to_dict(), **(extra_config or {}), "device_used": str(device),
                     "precision": "bf16-autocast" if uses_bf16(device, config.amp) else "fp32",
                     "distributed": ctx.describe(trainer.sync_bn)}
    loggers = Loggers(log if ctx.is_main else (), run_dir,
                      run_params(method, model_name, trainer.train.task.flag, weights_id, record_config))
    state = trainer.state
    try:
        trainer.emit(TrainEvent("start", state.epoch, config.epochs, batches=len(trainer.starts),
                                best_auc=state.best_auc, best_epoch=state.best_epoch))
        epochs_this_call = 0
        while state.epoch < config.epochs and not state.stop_reason:
            if max_epochs_this_call is not None and epochs_this_call >= max_epochs_this_call:
                return _result(run_dir, state, finished=False)
            _run_epoch(trainer, loggers)
            epochs_this_call += 1
        state.stop_reason = state.stop_reason or "completed"
        return _score_test(trainer, test, record_config, loggers, method=method, model_name=model_name,
                           weights_id=weights_id)
    except KeyboardInterrupt as exc:
        raise interrupted_error(trainer.run_dir, trainer.saved_epoch, config.epochs, resume_hint,
                                143 if isinstance(exc, Terminated) else 130) from None
    finally:
        loggers.close()


def _check_world(ctx: Distributed, config: TrainConfig, splits: tuple[Split, ...]) -> None:
    """Under torchrun: the global batch splits evenly, and every split has a row for every rank."""
    check_global_batch(config.batch_size, ctx.world_size)
    for split in splits:
        if len(split) < ctx.world_size:
            raise VlmError(f"The {split.split} split has {len(split)} rows, fewer than the {ctx.world_size} processes.")


def _setup(model: nn.Module, train: Split, val: Split, config: TrainConfig, ctx: Distributed, device: torch.device,
           run_dir: Path, preprocess: Preprocess, emit: TrainProgress) -> _Trainer:
    """Seed, move model and splits to the device, build loss, sampler, pipeline, optimizer and schedule,
    restore last.pt when the run folder has one (in this order: it fixes what the seed draws), and
    under torchrun synchronise BatchNorm and wrap the model in DistributedDataParallel."""
    seed_everything(config.seed)
    if ctx.rank:
        torch.manual_seed(config.seed + RANK_SEED_STRIDE * ctx.rank)  # dropout masks of its own
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model.to(device)
    sync_bn = False
    if ctx.active and config.sync_bn:
        model, layers = sync_batchnorm(model, device)
        sync_bn = layers > 0
    task = train.task
    train_d, val_d = train.to(device), val.to(device)
    loss_fn = make_loss(config.loss, task, gamma=config.gamma, class_counts=train.class_counts(), device=device)
    sampler = EpochSampler(config.sampler, task, train.labels, seed=config.seed)
    pipeline = InputPipeline(preprocess, is_3d=task.is_3d, config=config)
    starts = batch_starts(len(sampler), config.batch_size, ctx.world_size)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, len(starts))
    state = _State()
    saved = resume_point(run_dir)  # None: no epoch completed yet
    if saved is not None:
        state = _State(**restore_last(saved, model=model, optimizer=optimizer, scheduler=scheduler, sampler=sampler,
                                      pipeline=pipeline, rank=ctx.rank, path=run_dir / LAST_FILE))
    return _Trainer(model=model, net=ctx.wrap(model, device), dist=ctx, train=train_d, val=val_d, config=config,
                    device=device, run_dir=run_dir, loss_fn=loss_fn, sampler=sampler, pipeline=pipeline, starts=starts,
                    optimizer=optimizer, scheduler=scheduler, emit=emit, state=state, saved_epoch=state.epoch,
                    sync_bn=sync_bn)


def _run_epoch(t: _Trainer, loggers: Loggers) -> None:
    """Train one epoch, score val, keep the best weights, write epochs.jsonl and last.pt, log, report."""
    state, config = t.state, t.config
    epoch = state.epoch + 1
    t0 = time.perf_counter()
    lr_used = t.optimizer.param_groups[-1]["lr"]  # the head's (or only) LR at the epoch's first step
    train_loss = _train_epoch(t, epoch)
    val_scores = scores_from_logits(t.val.task.kind, _predict_logits(t, t.val))
    if not bool(torch.isfinite(val_scores).all()):
        raise non_finite_error(epoch, None, t.run_dir, state.epoch, state.best_epoch)
    val_metrics = evaluate(t.train.task, t.val.labels, val_scores, n_bootstrap=0)
    val_auc, val_acc = t.dist.broadcast((val_metrics.auc, val_metrics.acc))  # one decision for every rank
    seconds = time.perf_counter() - t0
    better = _is_better(val_auc, state)
    if better:
        state.best_auc, state.best_epoch, state.bad_epochs = val_auc, epoch, 0
    else:
        state.bad_epochs += 1
    row = {"epoch": epoch, "train_loss": train_loss, "val_auc": finite_or_none(val_auc),
           "val_acc": finite_or_none(val_acc), "lr": lr_used, "seconds": round(seconds, 4), "best": better}
    state.history.append(row)
    state.epoch = epoch
    state.train_seconds += seconds
    if config.patience and state.bad_epochs >= config.patience and epoch < config.epochs:
        state.stop_reason = "early-stopping"
    rng_ranks = t.dist.all_objects(rng_state()) if t.dist.active else None
    if t.dist.is_main:
        with deferred_interrupts():  # the epoch's files are written together: an interrupt waits for them
            if better:
                save_best(t.model, t.run_dir / BEST_FILE, {"epoch": str(epoch), "val_auc": str(val_auc)})
            write_epochs(t.run_dir / EPOCHS_FILE, state.history)
            save_last(t.run_dir / LAST_FILE, model=t.model, optimizer=t.optimizer, scheduler=t.scheduler,
                      sampler=t.sampler, pipeline=t.pipeline, state=asdict(state), config=config.to_dict(),
                      rng_ranks=rng_ranks)
    t.saved_epoch = epoch
    loggers.epoch(row)
    t.event("epoch", epoch, batches=len(t.starts), loss=train_loss, val_auc=row["val_auc"], val_acc=row["val_acc"],
            seconds=seconds)


def _train_epoch(t: _Trainer, epoch: int) -> float:
    """One pass over the sampler's epoch order; returns the mean training loss.

    Under torchrun each rank takes its contiguous part of every global batch; its loss is weighted by
    its share of the batch so that the all-reduced gradient is the global batch's mean gradient.
    """
    t.net.train()
    order = t.sampler.epoch_indices().to(t.device)
    batch_size, ctx = t.config.batch_size, t.dist
    total, count = 0.0, 0
    for i, start in enumerate(t.starts):
        batch = order[start:start + batch_size]
        lo, hi = ctx.shard(len(batch))
        idx = batch[lo:hi]
        x = t.pipeline(t.train.images[idx], True, (lo, len(batch)) if ctx.active else None)
        y = t.train.labels[idx]
        with autocast(t.device, t.config.amp):
            logits = t.net(x)
        loss = t.loss_fn(logits.float(), y)
        if ctx.active:  # the batch's mean loss on every rank, and every rank's gradient weighted by its share
            value = ctx.all_sum(loss.detach() * len(idx)).item() / len(batch)
            loss = loss * (len(idx) * ctx.world_size / len(batch))
        else:
            value = loss.item()
        if not math.isfinite(value):
            raise non_finite_error(epoch, i + 1, t.run_dir, t.state.epoch, t.state.best_epoch)
        t.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t.optimizer.step()
        t.scheduler.step()
        total += value * len(batch)
        count += len(batch)
        t.event("batch", epoch, batch=i + 1, batches=len(t.starts), loss=total / count)
    return total / max(count, 1)


def _predict_logits(t: _Trainer, split: Split) -> torch.Tensor:
    """Logits of every row of `split`, in order; under torchrun each rank scores a contiguous range."""
    lo, hi = t.dist.shard(len(split))
    part = Split(split.images[lo:hi], split.labels[lo:hi], split.task, split.split, split.size)
    logits = predict_logits(t.model, part, t.pipeline, batch_size=t.config.eval_batch_size, device=t.device,
                            amp=t.config.amp)
    return t.dist.gather_rows(logits, len(split))


def _score_test(t: _Trainer, test: Split, record_config: dict[str, Any], loggers: Loggers, *, method: str,
                model_name: str, weights_id: str | None) -> TrainResult:
    """Score the test split once with the best checkpoint and write the RunRecord (with the test logits and
    the best checkpoint's val logits, for temperature scaling)."""
    from vlm.scoring import record_run, score_split

    state, config = t.state, t.config
    t.event("test", state.epoch)
    t0 = time.perf_counter()
    t.dist.barrier()  # rank 0 has written best.safetensors
    load_best(t.model, t.run_dir / BEST_FILE)
    test_d = test.to(t.device)
    val_logits, logits = (_predict_logits(t, s) for s in (t.val, test_d))
    scores = scores_from_logits(test.task.kind, logits)
    result = _result(t.run_dir, state, finished=True)
    record_config.update(best_epoch=state.best_epoch, best_val_auc=finite_or_none(state.best_auc),
                         epochs_run=state.epoch, stop_reason=state.stop_reason)
    metrics = record = None
    test_seconds = 0.0
    if t.dist.is_main:
        metrics = score_split(test_d, scores, n_bootstrap=config.n_bootstrap, seed=config.seed)
        test_seconds = time.perf_counter() - t0
        record = record_run(
            test_d, scores, metrics, method=method, model=model_name, runs_dir=t.run_dir.parent, run_dir=t.run_dir,
            logits=logits, val_logits=val_logits, weights_id=weights_id, seed=config.seed, config=record_config,
            timings={"seconds": round(state.train_seconds + test_seconds, 4),
                     "train_seconds": round(state.train_seconds, 4),
                     "seconds_per_epoch": round(result.seconds_per_epoch, 4),
                     "test_seconds": round(test_seconds, 4)},
            preprocessing=t.pipeline.describe(),
        )
    result.metrics, result.record, test_seconds = t.dist.broadcast((metrics, record, test_seconds))
    result.seconds = state.train_seconds + test_seconds
    loggers.test(result.metrics.to_dict())
    t.event("done", state.epoch, val_auc=finite_or_none(state.best_auc))
    return result


def _is_better(auc: float, state: _State) -> bool:
    if state.best_epoch == 0:
        return True
    if not math.isfinite(auc):
        return False
    return state.best_auc is None or not math.isfinite(state.best_auc) or auc > state.best_auc


def _result(run_dir: Path, state: _State, finished: bool) -> TrainResult:
    n = len(state.history)
    return TrainResult(run_dir=run_dir, finished=finished, epochs_run=state.epoch, best_epoch=state.best_epoch,
                       best_val_auc=finite_or_none(state.best_auc), history=list(state.history),
                       seconds=state.train_seconds, seconds_per_epoch=state.train_seconds / n if n else 0.0,
                       stop_reason=state.stop_reason or "paused")
