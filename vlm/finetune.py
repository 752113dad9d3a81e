"""Vision-only fine-tuning of an image encoder (a VLM's image tower or a timm backbone) with a linear head.

Four modes, each recorded as one run (method = the mode, model = the encoder id):

- `linear-probe`: frozen encoder. L2-normalised embeddings of train/val/test come from
  `vlm.embeddings.image_embeddings` (disk-cached, so a second probe encodes nothing); features are
  standardised with the training mean/std and a logistic regression is fitted in torch with
  full-batch L-BFGS (softmax over K classes; per-label sigmoid for multi-label). The L2 strength is
  chosen on VALIDATION AUC over `l2_grid` (fitted from the strongest to the weakest, each warm-started
  from the previous); the test split is scored once with the chosen model.
- `knn`: cosine k-nearest neighbours of the normalised embeddings against the training split. The
  score of class c is the fraction of the k neighbours of class c (`weighting="uniform"`) or their
  share of the weights exp(cos / 0.07) (`"similarity"`, as in DINO's kNN); multi-label: per label,
  the (weighted) fraction of positive neighbours. Rows are probabilities; no softmax. `k="auto"`
  picks k from (1, 3, 5, 10, 20, 50, 100, 200) on validation AUC.
- `full`: the tower plus a linear head (on the tower's features) trained end to end by
  `vlm.train.fit`, the tower at `backbone_lr` (default 1e-5), the head at `lr` (default 1e-3),
  AdamW + cosine with one warm-up epoch, the encoder's own preprocessing.
- `zs-init` (vision-language encoders only): the head sits on L2-normalised features and starts as
  the zero-shot classifier of one prompt style, `logit_scale * text_classifier(...)`, bias 0, so at
  step 0 it reproduces the zero-shot scores (multi-label: per label `logit_scale * (t_pos - t_neg)`,
  whose sigmoid is the zero-shot pair softmax). Then `zs_then="full"` (default) fine-tunes tower and
  head as `full`; `zs_then="linear-probe"` keeps the tower frozen and fits the probe on the cached
  embeddings with its L2 penalty pulling the weights toward the zero-shot head instead of toward 0
  (a large L2 returns the zero-shot classifier; the grid adds 100 and 1000 for that end).

3D datasets work with `linear-probe` and `knn` through pooled slice embeddings (`slice_axis`,
`pool`); `full`/`zs-init` with `zs_then="full"` need 2D images.

Example:
    >>> finetune("breastmnist", "tf_efficientnet_lite0", mode="linear-probe",
    ...          weights="../shared/weights/tf_efficientnet_lite0.safetensors")   # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from vlm.data import Split
from vlm.errors import VlmError, exception_summary
from vlm.evaluate import evaluate
from vlm.results import new_run_dir
from vlm.tasks import TaskSpec, get_task
from vlm.runtime import resolve_device, seed_everything
from vlm.train import Progress, TrainConfig, TrainResult, fit, load_splits, write_spec

MODES = ("linear-probe", "knn", "full", "zs-init")
ZS_THEN = ("full", "linear-probe")
KNN_WEIGHTINGS = ("uniform", "similarity")
L2_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
ZS_L2_EXTRA = (100.0, 1000.0)
K_GRID = (1, 3, 5, 10, 20, 50, 100, 200)
KNN_TEMPERATURE = 0.07

if TYPE_CHECKING:
    from vlm.encoders import Encoder


def finetune_config(**overrides: Any) -> TrainConfig:
    """Defaults for `full`/`zs-init` fine-tuning: 10 epochs, batch 128, head lr 1e-3, tower lr 1e-5,
    AdamW (weight decay 0.01), cosine schedule with 1 warm-up epoch (none below 3 epochs)."""
    base: dict[str, Any] = dict(epochs=10, batch_size=128, lr=1e-3, backbone_lr=1e-5, optimizer="adamw",
                                scheduler="cosine")
    base.update({k: v for k, v in overrides.items() if v is not None})
    if "warmup_epochs" not in overrides or overrides["warmup_epochs"] is None:
        base["warmup_epochs"] = 1.0 if base["epochs"] >= 3 else 0.0
    return TrainConfig(**base)


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


# ----------------------------------------------------------------------------- zero-shot head
def zero_shot_head(encoder, task: TaskSpec, *, style: str | None = None,
                   prompts: str | os.PathLike | None = None) -> tuple[torch.Tensor, str]:
    """Head weights (K, E) = logit_scale * the zero-shot classifier of one style, and the style used.

    Multi-label: (L, E) with row l = logit_scale * (t_pos_l - t_neg_l). Default style: 'clip' when the
    prompt set has it, else its first style.
    """
    from vlm.prompts import load_prompt_set
    from vlm.zeroshot import check_prompt_set, text_classifier

    if not encoder.has_text:
        raise VlmError(f"--mode zs-init needs a vision-language encoder with a text tower; {encoder.id} is "
                       f"image-only. Use --mode full or linear-probe.")
    prompt_set = load_prompt_set(Path(prompts) if prompts is not None else task.flag, dataset=task.flag)
    check_prompt_set(prompt_set, task)
    if style is None:
        style = "clip" if "clip" in prompt_set.style_names else prompt_set.style_names[0]
    chosen = prompt_set.resolve_styles(style)
    if len(chosen) != 1:
        raise VlmError(f"--style takes one prompt style for zs-init, got {', '.join(chosen)}.")
    w = text_classifier(encoder, prompt_set, chosen[0]).float()
    head = w[:, :, 1] - w[:, :, 0] if w.dim() == 3 else w  # (E, K)
    return (encoder.logit_scale * head).T.contiguous(), chosen[0]


# ----------------------------------------------------------------------------- linear probe
def fit_logistic(x: torch.Tensor, y: torch.Tensor, kind: str, num_outputs: int, l2: float, *,
                 prior: tuple[torch.Tensor, torch.Tensor] | None = None,
                 init: tuple[torch.Tensor, torch.Tensor] | None = None,
                 max_iter: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic regression by full-batch L-BFGS: mean CE (multi-label: mean BCE) + l2/2 * ||W - W_prior||^2.

    x: (N, E) float features; y: (N, L) int64 labels. Returns (W (K, E), b (K,)).
    """
    e = x.shape[1]
    w0, b0 = prior if prior is not None else (torch.zeros(num_outputs, e, device=x.device), None)
    start = init if init is not None else (w0, b0 if b0 is not None else torch.zeros(num_outputs, device=x.device))
    w = start[0].detach().clone().float().requires_grad_(True)
    b = start[1].detach().clone().float().requires_grad_(True)
    target = y.float() if kind == "multi-label" else y[:, 0]
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=1e-6,
                            tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = x @ w.T + b
        loss = (F.binary_cross_entropy_with_logits(logits, target) if kind == "multi-label"
                else F.cross_entropy(logits, target))
        loss = loss + 0.5 * l2 * (w - w0).pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def logistic_scores(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    logits = x @ w.T + b
    return torch.sigmoid(logits) if kind == "multi-label" else torch.softmax(logits, dim=1)


def _auc(task: TaskSpec, labels: torch.Tensor, scores: torch.Tensor) -> float:
    auc = evaluate(task, labels.to(scores.device), scores, n_bootstrap=0).auc
    return auc if math.isfinite(auc) else -math.inf


def linear_probe(task: TaskSpec, emb: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], *,
                 l2_grid: Sequence[float] = L2_GRID, prior: torch.Tensor | None = None,
                 max_iter: int = 300) -> dict[str, Any]:
    """Fit the probe for each L2 strength on train, choose on val AUC; return test scores and the grid.

    `prior` (K, E) on normalised embeddings: penalise ||W - prior|| (zs-init probe) instead of ||W||.
    Returns {"scores": test scores, "l2": chosen, "val_auc": its val AUC, "grid": [{l2, val_auc}]}.
    """
    kind = task.kind
    mean, std = emb["train"].mean(dim=0), emb["train"].std(dim=0).clamp_min(1e-6)
    z = {s: (e - mean) / std for s, e in emb.items()}
    k = task.num_classes
    prior_z = None
    if prior is not None:  # logits = P x = (P * std) z + P mean in standardised coordinates
        prior = prior.to(mean.device).float()
        prior_z = (prior * std, prior @ mean)
    grid = sorted(set(float(v) for v in l2_grid), reverse=True)
    if not grid or any(v <= 0 for v in grid):
        raise VlmError("The L2 grid needs positive values.")
    rows, best, state = [], None, prior_z
    for l2 in grid:
        w, b = fit_logistic(z["train"], labels["train"], kind, k, l2, prior=prior_z, init=state, max_iter=max_iter)
        state = (w, b)
        auc = _auc(task, labels["val"], logistic_scores(z["val"], w, b, kind))
        rows.append({"l2": l2, "val_auc": None if auc == -math.inf else auc})
        if best is None or auc > best[0]:
            best = (auc, l2, w, b)
    auc, l2, w, b = best  # type: ignore[misc]
    return {"scores": logistic_scores(z["test"], w, b, kind), "l2": l2,
            "val_auc": None if auc == -math.inf else auc, "grid": rows[::-1]}


# ----------------------------------------------------------------------------- kNN
def _neighbours(train_emb: torch.Tensor, query: torch.Tensor, k: int, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    sims, idx = [], []
    for start in range(0, len(query), chunk):
        s, i = (query[start:start + chunk] @ train_emb.T).topk(k, dim=1)
        sims.append(s)
        idx.append(i)
    return torch.cat(sims), torch.cat(idx)


def _votes(sims: torch.Tensor, idx: torch.Tensor, train_labels: torch.Tensor, kind: str, num_classes: int,
           weighting: str) -> torch.Tensor:
    w = torch.ones_like(sims) if weighting == "uniform" else torch.exp((sims - sims[:, :1]) / KNN_TEMPERATURE)
    if kind == "multi-label":
        lab = train_labels[idx].float()  # (N, k, L)
    else:
        lab = F.one_hot(train_labels[:, 0][idx], num_classes).float()  # (N, k, K)
    return (lab * w[..., None]).sum(dim=1) / w.sum(dim=1, keepdim=True)


def knn_scores(train_emb: torch.Tensor, train_labels: torch.Tensor, query: torch.Tensor, k: int, *, kind: str,
               num_classes: int, weighting: str = "uniform") -> torch.Tensor:
    """(N, K) class-vote fractions of the k most cosine-similar training embeddings (inputs L2-normalised)."""
    if weighting not in KNN_WEIGHTINGS:
        raise VlmError(f"Unknown kNN weighting '{weighting}': choose {' or '.join(KNN_WEIGHTINGS)}.")
    k = min(int(k), len(train_emb))
    sims, idx = _neighbours(train_emb.float(), query.float(), k)
    return _votes(sims, idx, train_labels.to(idx.device), kind, num_classes, weighting)


def knn(task: TaskSpec, emb: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], *, k: int | str = "auto",
        weighting: str = "uniform", k_grid: Sequence[int] = K_GRID) -> dict[str, Any]:
    """kNN scores for test with k given, or chosen on val AUC (`k="auto"`)."""
    if weighting not in KNN_WEIGHTINGS:
        raise VlmError(f"Unknown kNN weighting '{weighting}': choose {' or '.join(KNN_WEIGHTINGS)}.")
    n_train = len(emb["train"])
    train_labels = labels["train"].to(emb["train"].device)
    rows: list[dict[str, Any]] = []
    if k == "auto":
        ks = sorted({min(int(v), n_train) for v in k_grid})
        sims, idx = _neighbours(emb["train"], emb["val"], ks[-1])
        best = None
        for kk in ks:
            scores = _votes(sims[:, :kk], idx[:, :kk], train_labels, task.kind, task.num_classes, weighting)
            auc = _auc(task, labels["val"], scores)
            rows.append({"k": kk, "val_auc": None if auc == -math.inf else auc})
            if best is None or auc > best[0]:
                best = (auc, kk)
        val_auc, chosen = best  # type: ignore[misc]
    else:
        try:
            chosen = int(k)
        except (TypeError, ValueError):
            raise VlmError(f"--k takes a positive number or 'auto', got '{k}'.") from None
        if chosen < 1:
            raise VlmError(f"--k must be at least 1, got {chosen}.")
        if chosen > n_train:
            raise VlmError(f"--k {chosen} is larger than the training split ({n_train} images).")
        val_auc = _auc(task, labels["val"], knn_scores(emb["train"], train_labels, emb["val"], chosen,
                                                      kind=task.kind, num_classes=task.num_classes,
                                                      weighting=weighting))
        rows.append({"k": chosen, "val_auc": None if val_auc == -math.inf else val_auc})
    scores = knn_scores(emb["train"], train_labels, emb["test"], chosen, kind=task.kind,
                        num_classes=task.num_classes, weighting=weighting)
    return {"scores": scores, "k": chosen, "val_auc": None if val_auc == -math.inf else val_auc, "grid": rows}


# ----------------------------------------------------------------------------- entry point
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
    encoder=None,
    log: Iterable[str] = (),
    progress: Progress | None = None,
    embed_progress: Callable[[int], Any] | None = None,
    max_epochs_this_call: int | None = None,
) -> TrainResult:
    """`vlm finetune`: fine-tune an image encoder on a dataset in one of four modes (see the module doc).

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
        progress: per-batch/epoch callback of `vlm.train.fit` (full/zs-init);
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
    trains = mode == "full" or (mode == "zs-init" and zs_then == "full")
    if trains and task.is_3d:
        raise VlmError(f"--mode {mode} trains the image tower on 2D images; {task.flag} is 3D. Use --mode "
                       f"linear-probe or knn (pooled slice embeddings), or `vlm train {task.flag} --model "
                       f"slices:<timm name>`.")
    config = (config or finetune_config()).resolved(task)
    device = resolve_device(config.device)
    train_s, val_s, test_s = load_splits(task, size, data_root, download)
    seed_everything(config.seed)
    enc = encoder if encoder is not None else load_encoder(model_name, weights, device)
    if config.image_size is not None and config.image_size != enc.preprocess.size:
        check_image_size(enc, config.image_size, model_name)
        enc.preprocess = enc.preprocess.with_size(config.image_size)
    head_w, used_style = (zero_shot_head(enc, task, style=style, prompts=prompts) if mode == "zs-init"
                          else (None, None))
    options = {"k": k, "knn_weighting": knn_weighting, "style": used_style or style,
               "prompts": str(prompts) if prompts is not None else None, "zs_then": zs_then,
               "l2_grid": list(l2_grid) if l2_grid is not None else None,
               "cache_dir": str(cache_dir) if cache_dir is not None else None, "slice_axis": slice_axis,
               "pool": pool}
    base_config = {"mode": mode, "encoder": enc.describe(), "model_name": model_name,
                   "weights": str(weights) if weights is not None else None, "size": size}
    if mode == "zs-init":
        base_config.update(style=used_style, prompts=options["prompts"], zs_then=zs_then)

    if trains:
        if config.batch_size > len(train_s):
            raise VlmError(f"--batch-size {config.batch_size} is larger than {task.flag}'s training split "
                           f"({len(train_s)} images): use --batch-size {len(train_s)} or less.")
        tower = enc.image_tower()
        tower.requires_grad_(True)
        seed_everything(config.seed)
        model = TowerClassifier(tower, enc.embed_dim, task.num_classes, normalize=mode == "zs-init")
        if head_w is not None:
            with torch.no_grad():
                model.head.weight.copy_(head_w.to(model.head.weight.device))
                model.head.bias.zero_()
        if run_dir is None:
            run_dir = new_run_dir(runs_dir, f"{task.flag}_{mode}_{enc.id}")
            write_spec(Path(run_dir), {"entry": "finetune", "flag": task.flag, "model": model_name, "mode": mode,
                                       "size": size, "weights": str(weights) if weights is not None else None,
                                       "data_root": str(data_root) if data_root is not None else None,
                                       "options": options, "config": config.to_dict()})
        return fit(model, train_s, val_s, test_s, config, model_name=enc.id, preprocess=enc.preprocess,
                   run_dir=run_dir, method=mode, weights_id=enc.weights_id,
                   extra_config={**base_config, **({"style": used_style} if used_style else {})},
                   log=log, progress=progress, max_epochs_this_call=max_epochs_this_call,
                   resume_hint=f"vlm finetune --resume {run_dir}")

    return _frozen(task, enc, mode, (train_s, val_s, test_s), config, base_config, head_w, runs_dir=runs_dir,
                   run_dir=run_dir, k=k, knn_weighting=knn_weighting, l2_grid=l2_grid, cache_dir=cache_dir,
                   slice_axis=slice_axis, pool=pool, embed_progress=embed_progress)


def _frozen(task: TaskSpec, enc, mode: str, splits: tuple[Split, Split, Split], config: TrainConfig,
            base_config: dict[str, Any], head_w: torch.Tensor | None, *, runs_dir, run_dir, k, knn_weighting,
            l2_grid, cache_dir, slice_axis, pool, embed_progress) -> TrainResult:
    """linear-probe, knn and the zs-init probe: on cached embeddings, seconds after the first encoding."""
    from vlm.embeddings import image_embeddings
    from vlm.scoring import record_run, score_split

    t0 = time.perf_counter()
    emb, labels, encoded = {}, {}, 0
    for split in splits:
        e, n = image_embeddings(enc, split, batch_size=config.eval_batch_size or 256, cache_dir=cache_dir,
                                slice_axis=slice_axis, pool=pool, progress=embed_progress)
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
                     "cache_dir": str(cache_dir) if cache_dir is not None else None,
                     **({"slice_axis": slice_axis, "pool": pool} if task.is_3d else {})}
    folder = Path(run_dir) if run_dir is not None else new_run_dir(runs_dir, f"{task.flag}_{mode}_{enc.id}")
    record = record_run(test, scores, metrics, method=mode, model=enc.id, runs_dir=runs_dir, run_dir=folder,
                        weights_id=enc.weights_id, seed=config.seed, config=record_config,
                        timings={"seconds": round(seconds, 4), "embed_seconds": round(t_embed, 4),
                                 "fit_seconds": round(t_fit, 4)},
                        preprocessing={**enc.preprocess.to_dict(), "id": enc.preprocess.id,
                                       **({"slice_axis": slice_axis, "pool": pool} if task.is_3d else {})})
    history = out["grid"]
    return TrainResult(run_dir=folder, finished=True, epochs_run=0, best_epoch=0, best_val_auc=out["val_auc"],
                       history=history, seconds=seconds, seconds_per_epoch=0.0, stop_reason="completed",
                       metrics=metrics, record=record)
