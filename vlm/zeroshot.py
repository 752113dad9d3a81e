"""Zero-shot classification with a CLIP-style encoder and a prompt-set file.

Convention (open_clip / CLIP, recorded in every run as `score_convention`):

* text classifier: per class, the prompts' text embeddings are L2-normalised and averaged -> W (E, K)
  (one `encode_texts` call for all prompts; one per class for encoders with `pads_per_class`: MedCLIP).
  Prompt ensembling (`ensemble`, recorded in each run): "embeddings" renormalises the mean
  (open_clip/CLIP convention; the default), "logits" keeps it as is, so that `logit_scale * image @ W`
  is the mean of the class's prompt logits, as MedCLIP's `PromptClassifier(ensemble=True)` scores (the
  default of encoders whose `prompt_ensemble` is "logits": MedCLIP). Multi-label (ChestMNIST): per
  label a (negative, positive) pair of such ensembles -> W (E, L, 2).
* scores: `softmax(logit_scale * cos(image, class))` over the K classes, with the model's own
  `logit_scale`, in float32. Multi-label: per label, softmax over its (negative, positive) pair and
  the positive probability is the score.
* image embeddings come from `vlm.embeddings.image_embeddings` (cached, 3D volumes slice-pooled), so
  trying more prompt styles or files re-encodes no image; prompt embeddings from `vlm.text_cache` (cached
  per prompt string), and encoders load lazily, so a run whose embeddings are all cached builds no tower.

Model selection (choosing a prompt file or style) is meant to happen on the validation split with
`compare_prompts(..., split="val")`; `run_zero_shot` then scores the test split once per style.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vlm.data import Split, load_split
from vlm.embeddings import EmbeddingPolicy, EmbedProgress
from vlm.encoders import Encoder, load_encoder
from vlm.errors import VlmError
from vlm.files import atomic_save_npy, check_new_file, check_writable_folder, file_digest
from vlm.prompts import PromptSet, load_prompt_set
from vlm.results import Timer
from vlm.tasks import TaskSpec
from vlm.text_cache import TextCache

ENSEMBLES = ("embeddings", "logits")
_ENSEMBLE_RULES = {
    "embeddings": "a class embedding is the renormalised mean of its L2-normalised prompt embeddings "
                  "(open_clip/CLIP convention)",
    "logits": "a class logit is the mean of its prompts' logits logit_scale * cosine(image, prompt embedding) "
              "(MedCLIP PromptClassifier(ensemble=True)), i.e. the class embedding is the mean of its "
              "L2-normalised prompt embeddings, not renormalised",
}


def score_convention(ensemble: str = "embeddings") -> str:
    """The zero-shot score convention recorded in a run, for one prompt-ensembling rule."""
    return ("zero-shot: softmax over classes of logit_scale * cosine(image embedding, class text embedding), fp32, "
            f"with the model's own logit_scale; {_ENSEMBLE_RULES[ensemble]}; multi-label: per label, softmax over "
            "its (negative, positive) prompt pair, score = p(positive); 3D: slice embeddings L2-normalised, pooled "
            "per volume, renormalised")


SCORE_CONVENTION = score_convention("embeddings")


def check_ensemble(ensemble: str | None) -> None:
    """A VlmError unless `ensemble` is None or one of ENSEMBLES."""
    if ensemble is not None and ensemble not in ENSEMBLES:
        raise VlmError(f"Unknown prompt ensembling '{ensemble}': choose one of {', '.join(ENSEMBLES)}.")


def resolve_ensemble(encoder: Encoder, ensemble: str | None = None) -> str:
    """`ensemble`, or (None) the encoder's own rule: its `prompt_ensemble` if it has one (MedCLIP:
    "logits"), else "embeddings"."""
    chosen = ensemble if ensemble is not None else getattr(encoder, "prompt_ensemble", "embeddings")
    check_ensemble(chosen)
    return chosen


def _encode_groups(encoder: Encoder, groups: Sequence[Sequence[str]], texts: TextCache | None = None,
                   ) -> list[torch.Tensor]:
    """L2-normalised prompt embeddings per group: one `encode_texts` call for all prompts (as open_clip's
    `build_zero_shot_classifier`), or one per group for an encoder whose `pads_per_class` is true (MedCLIP:
    its text pooling sees the padding, and it tokenises each class's prompts together). `texts`: through
    that cache."""
    encode = functools.partial(texts.encode, encoder) if texts is not None else encoder.encode_texts
    if getattr(encoder, "pads_per_class", False):
        return [F.normalize(encode(list(g)).float(), dim=-1) for g in groups]
    emb = F.normalize(encode([p for g in groups for p in g]).float(), dim=-1)
    return list(emb.split([len(g) for g in groups]))


def _ensemble(encoder: Encoder, groups: Sequence[Sequence[str]], ensemble: str, texts: TextCache | None = None,
              ) -> torch.Tensor:
    """Per group, the mean of its L2-normalised prompt embeddings (renormalised for "embeddings") -> (E, G)."""
    if any(len(g) == 0 for g in groups):
        raise VlmError("Every class needs at least one prompt.")
    means = [e.mean(dim=0) for e in _encode_groups(encoder, groups, texts)]
    return torch.stack([F.normalize(m, dim=-1) for m in means] if ensemble == "embeddings" else means, dim=1)


def text_classifier(encoder: Encoder, prompt_set: PromptSet, style: str, ensemble: str | None = None,
                    texts: TextCache | None = None) -> torch.Tensor:
    """Zero-shot weights of one style: (E, K) for single-label tasks, (E, L, 2) [negative, positive]
    per label for multi-label tasks. `ensemble`: "embeddings" or "logits" (see the module docstring);
    None: the encoder's own rule (`resolve_ensemble`). With `texts`, prompt embeddings come from (and go
    to) that cache.

    Example: `W = text_classifier(enc, load_prompt_set("breastmnist"), "clip")` -> (512, 2).
    """
    if not encoder.has_text:
        encoder.encode_texts([])  # raises the image-only error
    ensemble = resolve_ensemble(encoder, ensemble)
    if prompt_set.is_multi_label:
        pairs = prompt_set.expand_pairs(style)
        groups = [side for pos, neg in pairs for side in (neg, pos)]
        w = _ensemble(encoder, groups, ensemble, texts)  # (E, 2L): neg0, pos0, neg1, pos1, ...
        return w.view(w.shape[0], len(pairs), 2)
    return _ensemble(encoder, prompt_set.expand(style), ensemble, texts)


def _operands(image_emb: torch.Tensor, classifier: torch.Tensor, kind: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 embeddings and classifier on one device; VlmError when the classifier's shape does not fit `kind`."""
    img = image_emb.float()
    w = classifier.float().to(img.device)
    if kind is not None and (kind == "multi-label") != (w.dim() == 3):
        raise VlmError(f"A {kind} task needs a {'(E, L, 2)' if kind == 'multi-label' else '(E, K)'} classifier, "
                       f"got shape {tuple(w.shape)}.")
    return img, w


def zero_shot_logits(image_emb: torch.Tensor, classifier: torch.Tensor, logit_scale: float,
                     kind: str | None = None) -> torch.Tensor:
    """Logits (N, K) in float32: logit_scale * image_emb @ W; for a multi-label (E, L, 2) classifier the
    positive-minus-negative pair logit (N, L), whose sigmoid is `zero_shot_scores`' pair softmax."""
    img, w = _operands(image_emb, classifier, kind)
    if w.dim() == 3:
        logits = logit_scale * torch.einsum("ne,elp->nlp", img, w)
        return logits[..., 1] - logits[..., 0]
    return logit_scale * img @ w


def zero_shot_scores(image_emb: torch.Tensor, classifier: torch.Tensor, logit_scale: float,
                     kind: str | None = None) -> torch.Tensor:
    """Scores (N, K) in float32: softmax(logit_scale * image_emb @ W) over classes, or for a multi-label
    (E, L, 2) classifier the positive probability of each label's (negative, positive) softmax.

    `image_emb` must be L2-normalised (as `image_embeddings` returns it)."""
    img, w = _operands(image_emb, classifier, kind)
    if w.dim() == 3:
        logits = logit_scale * torch.einsum("ne,elp->nlp", img, w)
        return logits.softmax(dim=-1)[..., 1]
    return (logit_scale * img @ w).softmax(dim=-1)


def check_prompt_set(prompt_set: PromptSet, task: TaskSpec) -> None:
    """The prompt set must be for this dataset, with its classes (VlmError naming both)."""
    if prompt_set.dataset != task.flag:
        raise VlmError(f"Prompt file {prompt_set.path} is for {prompt_set.dataset}, not {task.flag}.")
    if len(prompt_set.classes) != task.num_classes or list(prompt_set.classes) != list(task.labels):
        raise VlmError(f"Prompt file {prompt_set.path} has {len(prompt_set.classes)} classes "
                       f"({', '.join(prompt_set.classes)}) but {task.flag} has {task.num_classes} "
                       f"({', '.join(task.labels)}).")


def one_style_classifier(encoder: Encoder, task: TaskSpec, *, prompts: str | os.PathLike | None = None,
                         style: str | None = None, refusal: str = "This method takes one prompt style",
                         ) -> tuple[torch.Tensor, str, PromptSet]:
    """The float text classifier of one prompt style (default 'clip' when the set has it, else its first).

    Returns the classifier (as `text_classifier`), the style used and the prompt set; several styles
    raise a VlmError that starts with `refusal`.
    """
    prompt_set = load_prompt_set(Path(prompts) if prompts is not None else task.flag, dataset=task.flag)
    check_prompt_set(prompt_set, task)
    if style is None:
        style = "clip" if "clip" in prompt_set.style_names else prompt_set.style_names[0]
    chosen = prompt_set.resolve_styles(style)
    if len(chosen) != 1:
        raise VlmError(f"{refusal}, got {', '.join(chosen)}.")
    return text_classifier(encoder, prompt_set, chosen[0]).float(), chosen[0], prompt_set


def _load_prompts(flag: str, prompts: str | os.PathLike | None) -> PromptSet:
    ps = load_prompt_set(Path(prompts) if prompts is not None else flag, dataset=flag)
    return ps


def _scores_path(base: Path, style: str, several: bool) -> Path:
    if not several:
        return base
    return base.with_name(f"{base.stem}_{style}{base.suffix or '.npy'}")


def run_zero_shot(
    flag: str,
    model: str,
    *,
    weights: str | os.PathLike | None = None,
    prompts: str | os.PathLike | None = None,
    styles: str | Sequence[str] = "best",
    split: str = "test",
    size: int = 28,
    data_root: str | os.PathLike | None = None,
    download: bool = False,
    batch_size: int = 256,
    device: str = "cpu",
    cache_dir: str | os.PathLike | None = None,
    runs_dir: str | os.PathLike = "runs",
    slice_axis: int = 0,
    pool: str = "mean",
    n_bootstrap: int = 1000,
    seed: int = 0,
    progress: EmbedProgress | None = None,
    record: bool = True,
    save_scores: str | os.PathLike | None = None,
    force: bool = False,
    encoder: Encoder | None = None,
    ensemble: str | None = None,
    calibrate: str | None = None,
) -> list[dict[str, Any]]:
    """Zero-shot score one split of a dataset with the chosen prompt style(s); record one run per style.

    `styles="best"` (the default) ranks the prompt file's styles on the VAL split (`compare_prompts`, from
    cached embeddings) and scores `split` once with the winner; each result and record then carries
    `selection = {"split": "val", "style": NAME, "ranking": [{style, auc, acc}, ...]}`. Several styles
    scored on test (`styles="all"`, `split="test"`) are each marked `selection = {"split": "test", ...}`:
    choosing among them would be a choice made on test, and `vlm compare` never marks such a row best.

    Returns one dict per style: style, ensemble, prompts (file), model (encoder id), weights_id, auc, acc, auc_ci,
    acc_ci, balanced_acc, per_class, n, images_encoded (this call; 0 when the embeddings came from the cache), seconds (this
    style: text classifier + scores + metrics), encode_seconds (shared image embedding time), run_dir
    (None unless `record`), scores_file (with `save_scores`: FILE, or FILE_<style>.npy when several
    styles run; an existing file is refused before any work unless `force`). `encoder` reuses an already loaded encoder instead of `model`/`weights`. `ensemble`:
    "embeddings" or "logits" prompt ensembling, None for the encoder's own (see `resolve_ensemble`). Every
    record keeps the test logits (logits.npy); `calibrate="temperature"` also scores the val split, keeps its
    logits and fits a temperature per style there (`vlm.calibrate`), adding `calibrated` to the result and
    the record.

    Example: `run_zero_shot("breastmnist", "biomedclip", styles="clip", data_root="../shared/data/medmnist")`.
    """
    from vlm.calibrate import check_calibration, temperature_scaling
    from vlm.scoring import record_run, score_split

    check_calibration(calibrate)
    if calibrate and split != "test":
        raise VlmError(f"--calibrate fits the temperature on val and applies it to test; --split {split} "
                       f"cannot be calibrated.")
    policy = EmbeddingPolicy(slice_axis, pool, batch_size, cache_dir)
    policy.check()
    check_ensemble(ensemble)
    data = load_split(flag, split, size, data_root, download=download)
    val = load_split(flag, "val", size, data_root, download=download) if calibrate else None
    task = data.task
    prompt_set = _load_prompts(task.flag, prompts)
    check_prompt_set(prompt_set, task)
    best = styles == "best"
    chosen = prompt_set.style_names if best else prompt_set.resolve_styles(styles)
    several = not best and len(chosen) > 1
    if save_scores is not None and (Path(save_scores).is_dir() or not Path(save_scores).name):
        raise VlmError(f"--save-scores {save_scores} is a folder; give a file name.")
    for style in (chosen if several else [None]) if save_scores is not None else []:
        check_new_file(_scores_path(Path(save_scores), str(style), several), force=force, option="--save-scores")
    if record:
        check_writable_folder(runs_dir, "Runs folder")
    with Timer() as t_load:
        enc = encoder if encoder is not None else load_encoder(model, weights, device, lazy=True)
    if not enc.has_text:
        enc.encode_texts([])  # image-only: one clear error before any work
    rule = resolve_ensemble(enc, ensemble)
    texts = TextCache(cache_dir)
    selection = None
    if best and len(chosen) > 1:
        ranking = compare_prompts(task.flag, enc.id, [prompt_set.path], split="val", size=size, data_root=data_root,
                                  download=download, batch_size=batch_size, cache_dir=cache_dir,
                                  slice_axis=slice_axis, pool=pool, n_bootstrap=0, progress=progress, encoder=enc,
                                  ensemble=rule, text_cache=texts)
        chosen = [ranking[0]["style"]]
        selection = {"split": "val", "style": chosen[0],
                     "ranking": [{"style": r["style"], "auc": r["auc"], "acc": r["acc"]} for r in ranking]}
    elif len(chosen) > 1 and split == "test":
        selection = {"split": "test", "style": None,
                     "note": "several styles scored on test: a choice among them is not a val selection"}
    with Timer() as t_img:
        emb, encoded = policy.embed(enc, data, progress)
        val_emb, val_encoded = policy.embed(enc, val, progress) if val is not None else (None, 0)
    prompt_file = Path(prompt_set.path)
    prompt_sha = file_digest(prompt_file)
    results = []
    for style in chosen:
        with Timer() as t_style:
            with Timer() as t_text:
                w = text_classifier(enc, prompt_set, style, rule, texts)
            scores = zero_shot_scores(emb, w, enc.logit_scale, task.kind)
            logits = zero_shot_logits(emb, w, enc.logit_scale, task.kind)
            metrics = score_split(data, scores, n_bootstrap=n_bootstrap, seed=seed)
            val_logits = calibrated = None
            if val is not None:
                val_logits = zero_shot_logits(val_emb, w, enc.logit_scale, task.kind)
                calibrated = temperature_scaling(task, val_logits, val.labels, logits, data.labels,
                                                 n_bootstrap=n_bootstrap, seed=seed)
        result: dict[str, Any] = {"style": style, "ensemble": rule, "prompts": str(prompt_file), "model": enc.id,
                                  "weights_id": enc.weights_id, **metrics.to_dict(),
                                  "images_encoded": encoded + val_encoded, "seconds": round(t_style.seconds, 4),
                                  "encode_seconds": round(t_img.seconds, 4), "run_dir": None,
                                  "selection": selection}
        if calibrated is not None:
            result["calibrated"] = calibrated
        if save_scores is not None:
            out = _scores_path(Path(save_scores), style, several)
            atomic_save_npy(out, scores.detach().float().cpu().numpy())
            result["scores_file"] = str(out)
        if record:
            config = {
                "style": style, "ensemble": rule, "prompts_file": str(prompt_file), "prompts_sha256": prompt_sha,
                "n_prompts": prompt_set.n_prompts(style), "model_name": model,
                "weights": str(weights) if weights is not None else None, "encoder": enc.describe(),
                "batch_size": batch_size, "device": str(enc.device), "n_bootstrap": n_bootstrap,
                "images_encoded": encoded, "cache_dir": str(cache_dir) if cache_dir is not None else None,
                **policy.volume_fields(task.is_3d), "selection": selection,
            }
            rec = record_run(data, scores, metrics, method="zero-shot", model=enc.id, runs_dir=runs_dir,
                             logits=logits, val_logits=val_logits, calibrated=calibrated,
                             weights_id=enc.weights_id, seed=seed, config=config,
                             timings={"load_encoder": round(t_load.seconds, 4), "image_embeddings": round(t_img.seconds, 4),
                                      "text_classifier": round(t_text.seconds, 4), "style": round(t_style.seconds, 4)},
                             score_convention=score_convention(rule),
                             preprocessing={**enc.preprocess.to_dict(), "id": enc.preprocess.id,
                                            **policy.volume_fields(task.is_3d)})
            result["run_dir"] = rec.path
        results.append(result)
    return results


def load_prompt_sets(task: TaskSpec, prompt_files: Sequence[str | os.PathLike]) -> list[PromptSet]:
    """The prompt sets of `prompt_files`, each checked against `task` (a VlmError naming the file)."""
    if not prompt_files:
        raise VlmError("Give at least one prompt file to compare (--prompts A.yaml B.yaml ...).")
    sets = [_load_prompts(task.flag, f) for f in prompt_files]
    for ps in sets:
        check_prompt_set(ps, task)
    return sets


@dataclass
class PromptRanker:
    """A split, an encoder, the split's image embeddings and a text-embedding cache, held in memory to rank
    prompt files again and again (`vlm prompts compare --watch`); each `rank` reads the files anew."""

    data: Split
    encoder: Encoder
    image_emb: torch.Tensor
    texts: TextCache
    n_bootstrap: int = 1000
    seed: int = 0
    ensemble: str | None = None  # None: the encoder's own rule (`resolve_ensemble`)

    def rank(self, prompt_files: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
        """Every style of every file, best AUC first (ties: higher ACC); rows as `compare_prompts` returns them."""
        from vlm.scoring import score_split

        rule = resolve_ensemble(self.encoder, self.ensemble)
        rows = []
        for ps in load_prompt_sets(self.data.task, prompt_files):
            for style in ps.style_names:
                w = text_classifier(self.encoder, ps, style, rule, self.texts)
                scores = zero_shot_scores(self.image_emb, w, self.encoder.logit_scale, self.data.task.kind)
                metrics = score_split(self.data, scores, n_bootstrap=self.n_bootstrap, seed=self.seed).to_dict()
                rows.append({"prompts": str(ps.path), "style": style, "ensemble": rule, "n_prompts": ps.n_prompts(style),
                             **metrics})
        rows.sort(key=lambda r: (-_num(r["auc"]), -_num(r["acc"])))
        for i, r in enumerate(rows, 1):
            r["rank"] = i
        return rows


def prompt_ranker(
    flag: str,
    model: str,
    prompt_files: Sequence[str | os.PathLike] = (),
    *,
    weights: str | os.PathLike | None = None,
    split: str = "val",
    size: int = 28,
    data_root: str | os.PathLike | None = None,
    download: bool = False,
    batch_size: int = 256,
    device: str = "cpu",
    cache_dir: str | os.PathLike | None = None,
    slice_axis: int = 0,
    pool: str = "mean",
    n_bootstrap: int = 1000,
    seed: int = 0,
    progress: EmbedProgress | None = None,
    encoder: Encoder | None = None,
    text_cache: TextCache | None = None,
    ensemble: str | None = None,
) -> PromptRanker:
    """Load a split, check `prompt_files` (before any model work), load the encoder lazily (no tower is built
    while the caches answer) and take the split's image embeddings (cached); `text_cache` defaults to
    `TextCache(cache_dir)`; `ensemble` as in `run_zero_shot`."""
    policy = EmbeddingPolicy(slice_axis, pool, batch_size, cache_dir)
    policy.check()
    check_ensemble(ensemble)
    data = load_split(flag, split, size, data_root, download=download)
    if prompt_files:
        load_prompt_sets(data.task, prompt_files)
    texts = text_cache if text_cache is not None else TextCache(cache_dir)
    enc = encoder if encoder is not None else load_encoder(model, weights, device, lazy=True)
    emb, _ = policy.embed(enc, data, progress)
    return PromptRanker(data, enc, emb, texts, n_bootstrap, seed, ensemble)


def compare_prompts(flag: str, model: str, prompt_files: Sequence[str | os.PathLike], **options: Any,
                    ) -> list[dict[str, Any]]:
    """Rank every style of every prompt file on one split (default: val, for model selection), best AUC first
    (ties: higher ACC). Images are encoded once (and cached), prompts too; nothing is recorded. `options` are
    `prompt_ranker`'s (weights, split, size, data_root, cache_dir, n_bootstrap, encoder, text_cache, ensemble, ...).

    Each row: rank, prompts (file), style, ensemble, n_prompts, auc, acc, auc_ci, acc_ci, balanced_acc, per_class,
    n. `ensemble` as in `run_zero_shot`.

    Example: `compare_prompts("breastmnist", "biomedclip", ["prompts/breastmnist.yaml", "mine.yaml"])`.
    """
    if not prompt_files:
        raise VlmError("Give at least one prompt file to compare (--prompts A.yaml B.yaml ...).")
    return prompt_ranker(flag, model, prompt_files, **options).rank(prompt_files)


def _num(x: Any) -> float:
    return float(x) if x is not None and np.isfinite(x) else float("-inf")
