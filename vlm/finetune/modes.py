"""`finetune`: one entry point for the four fine-tuning modes (see `vlm.finetune`), and their defaults."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import torch

from vlm.data import Split, load_splits
from vlm.embeddings import EmbeddingPolicy, EmbedProgress
from vlm.errors import VlmError, exception_summary
from vlm.files import check_writable_folder
from vlm.finetune.heads import TowerClassifier, zero_shot_head
from vlm.finetune.probe import KNN_WEIGHTINGS, L2_GRID, PROBE_FILE, ZS_L2_EXTRA, knn, linear_probe, save_probe
from vlm.results import new_run_dir
from vlm.runtime import seed_everything
from vlm.tasks import TaskSpec, get_task
from vlm.training import TrainConfig, TrainProgress, TrainResult, check_batch_size, fit
from vlm.training.distributed import setup_distributed
from vlm.training.loggers import check_log, log_record

if TYPE_CHECKING:
    from vlm.encoders import Encoder

MODES = ("linear-probe", "knn", "full", "zs-init")
ZS_THEN = ("full", "linear-probe")
# The options an experiment's finetune method may set beside TrainConfig's (`vlm run`).
EXTRA_OPTIONS = ("k", "knn_weighting", "style", "zs_then", "slice_axis", "pool")


@dataclass
class FinetuneOptions:
    """The mode options of a fine-tuning run: spec.json's `options` (`dataclasses.asdict`), which
    `--resume` passes back to `finetune` as keyword arguments."""

    k: int | str = "auto"
    knn_weighting: str = "uniform"
    style: str | None = None
    prompts: str | None = None
    zs_then: str = "full"
    l2_grid: list[float] | None = None
    cache_dir: str | None = None
    slice_axis: int = 0
    pool: str = "mean"


def finetune_config(**overrides: Any) -> TrainConfig:
    """Defaults for `full`/`zs-init` fine-tuning: 10 epochs, batch 128, head lr 1e-3, tower lr 1e-5,
    AdamW (weight decay 0.01), cosine schedule with 1 warm-up epoch (none below 3 epochs)."""
    base: dict[str, Any] = dict(epochs=10, batch_size=128, lr=1e-3, backbone_lr=1e-5, optimizer="adamw",
                                scheduler="cosine")
    base.update({k: v for k, v in overrides.items() if v is not None})
    if "warmup_epochs" not in overrides or overrides["warmup_epochs"] is None:
        base["warmup_epochs"] = 1.0 if base["epochs"] >= 3 else 0.0
    return TrainConfig(**base)


def check_image_size(enc: Encoder, size: int, name: str) -> None:
    """One blank size×size image through the image tower; a VlmError naming the tower's own size if it fails."""
    try:
        with torch.inference_mode():
            enc.encode_images(torch.zeros(1, 3, size, size, device=enc.device))
    except Exception as exc:  # noqa: BLE001 - whatever the tower raises means "cannot take this size"
        raise VlmError(f"{name} cannot take {size}×{size} images ({exception_summary(exc)}): leave --image-size "
                       f"out (its input size is {enc.preprocess.size}) or pick a size its image tower takes.") from None


def finetune(
    flag: str,
    model_name: str,
    *,
    mode: str = "linear-probe",
    config: TrainConfig | None = None,
    size: int = 28,
    weights: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    download: bool = False,
    runs_dir: str | os.PathLike = "runs",
    run_dir: str | os.PathLike | None = None,
    k: int | str = "auto",
    knn_weighting: str = "uniform",
    style: str | None = None,
    prompts: str | os.PathLike | None = None,
    zs_then: str = "full",
    l2_grid: Sequence[float] | None = None,
    cache_dir: str | os.PathLike | None = None,
    slice_axis: int = 0,
    pool: str = "mean",
    encoder: Encoder | None = None,
    log: Iterable[str] = (),
    progress: TrainProgress | None = None,
    embed_progress: EmbedProgress | None = None,
    max_epochs_this_call: int | None = None,
) -> TrainResult:
    """`vlm finetune`: fine-tune an image encoder on a dataset in one of four modes (see `vlm.finetune`).

    Args:
        flag: dataset flag. model_name: encoder alias/name for `vlm.encoders.load_encoder` (any timm
            name gives an image-only encoder). weights: its local weights file.
        mode: linear-probe, knn, full or zs-init.
        config: training options for full/zs-init (default `finetune_config()`); linear-probe/knn use
            its seed, device, image_size (overrides the encoder's input size), eval_batch_size (encoding
            batch) and n_bootstrap.
        k, knn_weighting: kNN neighbours (a number or "auto") and vote weighting (uniform/similarity).
        style, prompts, zs_then: zs-init's prompt style (default clip, else the first), prompt file
            (default: the shipped one) and what follows the initialisation (full or linear-probe).
        l2_grid: L2 strengths the probe chooses from on val AUC.
        cache_dir, slice_axis, pool: embedding cache folder and the 3D slice policy (probe/kNN).
        encoder: an already loaded `Encoder` (instead of `model_name`/`weights`).
        progress: per-batch/epoch callback of `vlm.training.fit` (full/zs-init);
        embed_progress: per-batch callback of the embedding pass (probe/kNN).

    Returns:
        A TrainResult (probe/kNN: `best_val_auc` of the chosen setting, `history` = the selection grid).

    Example:
        >>> finetune("breastmnist", "biomedclip", mode="zs-init", style="clip")   # doctest: +SKIP
    """
    from vlm.encoders import load_encoder

    if mode not in MODES:
        raise VlmError(f"Unknown fine-tuning mode '{mode}': choose one of {', '.join(MODES)}.")
    if zs_then not in ZS_THEN:
        raise VlmError(f"Unknown --zs-then '{zs_then}': choose {' or '.join(ZS_THEN)}.")
    if knn_weighting not in KNN_WEIGHTINGS:
        raise VlmError(f"Unknown kNN weighting '{knn_weighting}': choose {' or '.join(KNN_WEIGHTINGS)}.")
    task = get_task(flag)
    task.check_size(size)
    if run_dir is None:
        check_writable_folder(runs_dir, "Runs folder")
    check_log(log)
    trains = mode == "full" or (mode == "zs-init" and zs_then == "full")
    if trains and task.is_3d:
        raise VlmError(f"--mode {mode} trains the image tower on 2D images; {task.flag} is 3D. Use --mode "
                       f"linear-probe or knn (pooled slice embeddings), or `vlm train {task.flag} --model "
                       f"slices:<timm name>`.")
    config = (config or finetune_config()).resolved(task)
    ctx, device = setup_distributed(config.device)
    if ctx.world_size > 1 and not trains:
        raise VlmError(f"--mode {mode}{' --zs-then linear-probe' if mode == 'zs-init' else ''} fits on cached "
                       f"embeddings in one process: run it without torchrun (data-parallel is for --mode full "
                       f"and zs-init).")
    train_s, val_s, test_s = load_splits(task, size, data_root, download)
    seed_everything(config.seed)
    enc = encoder if encoder is not None else load_encoder(model_name, weights, device)
    if config.image_size is not None and config.image_size != enc.preprocess.size:
        check_image_size(enc, config.image_size, model_name)
        enc.preprocess = enc.preprocess.with_size(config.image_size)
    head_w, used_style = (zero_shot_head(enc, task, style=style, prompts=prompts) if mode == "zs-init"
                          else (None, None))
    options = FinetuneOptions(k=k, knn_weighting=knn_weighting, style=used_style or style,
                              prompts=str(prompts) if prompts is not None else None, zs_then=zs_then,
                              l2_grid=list(l2_grid) if l2_grid is not None else None,
                              cache_dir=str(cache_dir) if cache_dir is not None else None, slice_axis=slice_axis,
                              pool=pool)
    base_config = {"mode": mode, "encoder": enc.describe(), "model_name": model_name,
                   "weights": str(weights) if weights is not None else None, "size": size}
    if mode == "zs-init":
        base_config.update(style=used_style, prompts=options.prompts, zs_then=zs_then)

    if trains:
        check_batch_size(config.batch_size, train_s)
        tower = enc.image_tower()
        tower.requires_grad_(True)
        seed_everything(config.seed)
        model = TowerClassifier(tower, enc.embed_dim, task.num_classes, normalize=mode == "zs-init")
        if head_w is not None:
            with torch.no_grad():
                model.head.weight.copy_(head_w.to(model.head.weight.device))
                model.head.bias.zero_()
        spec = {"entry": "finetune", "flag": task.flag, "model": model_name, "mode": mode, "size": size,
                "weights": str(weights) if weights is not None else None,
                "data_root": str(data_root) if data_root is not None else None, "options": asdict(options),
                "config": config.to_dict()}
        return fit(model, train_s, val_s, test_s, config, model_name=enc.id, preprocess=enc.preprocess,
                   run_dir=run_dir, runs_dir=runs_dir, spec=spec, method=mode, weights_id=enc.weights_id,
                   extra_config={**base_config, **({"style": used_style} if used_style else {})},
                   log=log, progress=progress, max_epochs_this_call=max_epochs_this_call)

    policy = EmbeddingPolicy(slice_axis, pool, config.eval_batch_size or 256, cache_dir)
    return _frozen(task, enc, mode, (train_s, val_s, test_s), config, base_config, head_w, policy, runs_dir=runs_dir,
                   run_dir=run_dir, k=k, knn_weighting=knn_weighting, l2_grid=l2_grid, embed_progress=embed_progress,
                   log=log)


def _frozen(task: TaskSpec, enc: Encoder, mode: str, splits: tuple[Split, Split, Split], config: TrainConfig,
            base_config: dict[str, Any], head_w: torch.Tensor | None, policy: EmbeddingPolicy, *,
            runs_dir: str | os.PathLike, run_dir: str | os.PathLike | None, k: int | str, knn_weighting: str,
            l2_grid: Sequence[float] | None, embed_progress: EmbedProgress | None,
            log: Iterable[str] = ()) -> TrainResult:
    """linear-probe, knn and the zs-init probe: on cached embeddings, seconds after the first encoding; the
    trackers in `log` get the config and the test metrics (there are no epochs)."""
    from vlm.scoring import record_run, score_split

    t0 = time.perf_counter()
    emb, labels, encoded = {}, {}, 0
    for split in splits:
        e, n = policy.embed(enc, split, embed_progress)
        emb[split.split], labels[split.split] = e.float(), split.labels.to(e.device)
        encoded += n
    t_embed = time.perf_counter() - t0
    t1 = time.perf_counter()
    if mode == "knn":
        out = knn(task, emb, labels, k=k, weighting=knn_weighting)
        chosen = {"k": out["k"], "knn_weighting": knn_weighting, "k_grid": out["grid"]}
    else:
        grid = tuple(l2_grid) if l2_grid is not None else (L2_GRID + ZS_L2_EXTRA if head_w is not None else L2_GRID)
        out = linear_probe(task, emb, labels, l2_grid=grid, prior=head_w)
        chosen = {"l2": out["l2"], "l2_grid": out["grid"], "solver": "lbfgs", "standardize": True,
                  "prior": "zero-shot head" if head_w is not None else "zero"}
    t_fit = time.perf_counter() - t1
    test = splits[2]
    scores = out["scores"]
    metrics = score_split(test.to(scores.device), scores, n_bootstrap=config.n_bootstrap, seed=config.seed)
    seconds = time.perf_counter() - t0
    record_config = {**base_config, **chosen, "val_auc": out["val_auc"], "seed": config.seed,
                     "images_encoded": encoded, "embed_batch_size": config.eval_batch_size,
                     "cache_dir": str(policy.cache_dir) if policy.cache_dir is not None else None,
                     **policy.volume_fields(task.is_3d)}
    folder = Path(run_dir) if run_dir is not None else new_run_dir(runs_dir, f"{task.flag}_{mode}_{enc.id}")
    logits = out.get("logits", {})
    if "probe" in out:
        save_probe(folder / PROBE_FILE, out["probe"])
    record = record_run(test, scores, metrics, method=mode, model=enc.id, runs_dir=runs_dir, run_dir=folder,
                        logits=logits.get("test"), val_logits=logits.get("val"),
                        weights_id=enc.weights_id, seed=config.seed, config=record_config,
                        timings={"seconds": round(seconds, 4), "embed_seconds": round(t_embed, 4),
                                 "fit_seconds": round(t_fit, 4)},
                        preprocessing={**enc.preprocess.to_dict(), "id": enc.preprocess.id,
                                       **policy.volume_fields(task.is_3d)})
    log_record(log, record)
    history = out["grid"]
    return TrainResult(run_dir=folder, finished=True, epochs_run=0, best_epoch=0, best_val_auc=out["val_auc"],
                       history=history, seconds=seconds, seconds_per_epoch=0.0, stop_reason="completed",
                       metrics=metrics, record=record)
