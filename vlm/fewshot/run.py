"""Few-shot runs: encode a dataset once, then for every (K, seed) draw (or reuse) the shots and run each
method on them, writing one RunRecord per (method, K, seed).

`run_fewshot(...) -> list[RunRecord]` is what `vlm fewshot` calls; `curve_rows(records)` turns the
records into the rows of a K-shot curve and `curve_summary(rows)` averages them over seeds.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from vlm.data import Split, load_split
from vlm.embeddings import EmbedProgress, check_policy, image_embeddings
from vlm.errors import VlmError
from vlm.files import check_writable_folder
from vlm.fewshot.base import FewShotData, MethodSpec, ZeroShotHead, get_method
from vlm.fewshot.shots import Shot, Shots, check_shot, default_shots_path, prepare_shots
from vlm.finetune.modes import check_image_size
from vlm.results import RunRecord, new_run_dir
from vlm.runtime import seed_everything
from vlm.tasks import TaskSpec

METHOD_PREFIX = "fewshot-"
DEFAULT_SHOTS = (1, 2, 4, 8, 16)


def zero_shot_classifier(encoder: Any, task: TaskSpec, prompts: str | os.PathLike | None = None,
                         style: str | None = None) -> ZeroShotHead:
    """The zero-shot classifier of one prompt style (default 'clip', else the file's first) and its class names."""
    from vlm.zeroshot import one_style_classifier

    w, used, prompt_set = one_style_classifier(encoder, task, prompts=prompts, style=style,
                                               refusal="Few-shot methods take one prompt style")
    names = [prompt_set.styles[used].names[c][0] for c in prompt_set.classes]
    return ZeroShotHead(w, used, str(prompt_set.path), names)


def _subset(emb: torch.Tensor, split: Split, indices: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    if indices is None:
        return emb, split.labels.to(emb.device)
    idx = indices.to(emb.device)
    return emb[idx], split.labels.to(emb.device)[idx]


def problem(task: TaskSpec, splits: dict[str, Split], emb: dict[str, torch.Tensor], shots: Shots, encoder: Any,
            head: ZeroShotHead | None = None, *, prompts: str | os.PathLike | None = None,
            style: str | None = None) -> FewShotData:
    """The FewShotData of one (K, seed): train (and val, when drawn) restricted to the shots; test whole."""
    train = _subset(emb["train"], splits["train"], shots.train_indices)
    val = _subset(emb["val"], splits["val"], shots.val_indices)
    test = _subset(emb["test"], splits["test"], None)
    cached: list[ZeroShotHead] = [head] if head is not None else []

    def zero_shot() -> ZeroShotHead:
        if not cached:
            cached.append(zero_shot_classifier(encoder, task, prompts, style))
        return cached[0]

    return FewShotData(task, {"train": train[0], "val": val[0], "test": test[0]},
                       {"train": train[1], "val": val[1], "test": test[1]}, encoder, shots.seed,
                       zero_shot if encoder.has_text else None, str(prompts) if prompts is not None else None, style)


def run_method(spec: MethodSpec, data: FewShotData, shots: Shots, test: Split, *, options: dict[str, Any] | None = None,
               runs_dir: str | os.PathLike = "runs", n_bootstrap: int = 1000,
               extra_config: dict[str, Any] | None = None, timings: dict[str, float] | None = None) -> RunRecord:
    """Fit one method on one (K, seed) problem, score the test split once and write its record."""
    from vlm.scoring import record_run, score_split

    opts = spec.make_options(options)
    seed_everything(data.seed)
    t0 = time.perf_counter()
    out = spec.fit(data, opts)
    fit_seconds = time.perf_counter() - t0
    metrics = score_split(test.to(out.scores.device), out.scores, n_bootstrap=n_bootstrap, seed=data.seed)
    enc = data.encoder
    config = {**(extra_config or {}), "fewshot_method": spec.name, **shots.summary(), "seed": data.seed,
              "options": vars(opts), "chosen": out.chosen, "val_auc": out.val_auc,
              "selection": {"metric": "val AUC", "val": "full" if shots.data.val is None else f"{shots.data.val.k}-shot",
                            "rows": out.selection}}
    if spec.needs_text:
        head = data.head()
        config.update(style=head.style, prompts_file=head.prompts_file)
    folder = new_run_dir(runs_dir, f"{test.task.flag}_{METHOD_PREFIX}{spec.name}_{shots.k}shot_s{data.seed}_{enc.id}")
    # val logits only for the full val split: `vlm calibrate` fits T against the val split's labels
    logits = out.logits if out.logits is not None and shots.data.val is None else {}
    return record_run(test, out.scores, metrics, method=METHOD_PREFIX + spec.name, model=enc.id, runs_dir=runs_dir,
                      run_dir=folder, logits=logits.get("test"), val_logits=logits.get("val"),
                      weights_id=enc.weights_id, seed=data.seed, config=config,
                      timings={**(timings or {}), "fit_seconds": round(fit_seconds, 4)},
                      score_convention=f"few-shot {spec.name}: {spec.convention}",
                      preprocessing={**enc.preprocess.to_dict(), "id": enc.preprocess.id})


def _draws(shots: Sequence[Shot] | None, seeds: Sequence[int] | None, shots_file: str | os.PathLike | None) -> list:
    if shots_file is None and (shots is None or seeds is None):
        raise VlmError("Give the shots (K values) and seeds, or one --shots-file to take them from.")
    ks = [None] if shots is None else [check_shot(k) for k in shots]
    pairs = [(k, s if s is None else int(s)) for k in ks for s in ([None] if seeds is None else seeds)]
    if shots_file is not None and len(pairs) > 1:
        raise VlmError(f"One shots file holds one draw: give a single K and seed with {shots_file}, not "
                       f"{len(pairs)} (K, seed) pairs.")
    return pairs


def run_fewshot(
    flag: str,
    model: str,
    *,
    methods: Sequence[str] = ("linear-probe",),
    shots: Sequence[Shot] | None = DEFAULT_SHOTS,
    seeds: Sequence[int] | None = (0, 1, 2),
    weights: str | os.PathLike | None = None,
    size: int = 28,
    data_root: str | os.PathLike | None = None,
    download: bool = False,
    device: str = "cpu",
    runs_dir: str | os.PathLike = "runs",
    shots_dir: str | os.PathLike | None = None,
    shots_file: str | os.PathLike | None = None,
    val_shots: Shot | None = None,
    prompts: str | os.PathLike | None = None,
    style: str | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 256,
    slice_axis: int = 0,
    pool: str = "mean",
    n_bootstrap: int = 1000,
    image_size: int | None = None,
    progress: EmbedProgress | None = None,
    on_record: Callable[[RunRecord], Any] | None = None,
    encoder: Any = None,
) -> list[RunRecord]:
    """Run few-shot `methods` for every K in `shots` and seed in `seeds`; one record per (method, K, seed).

    Images are encoded once per split (`vlm.embeddings.image_embeddings`, cached in `cache_dir`; 3D:
    pooled slice embeddings). Shots files live in `shots_dir` (default `<runs_dir>/shots`) and are shared
    by all methods of a (K, seed); `shots_file` names one file instead (then `shots`/`seeds` may be None
    and come from it). `val_shots=K` validates on a K-shot draw of val instead of the full split.
    `options` maps a method name to its hyper-parameter overrides (see each method's options class);
    `prompts`/`style` pick the zero-shot classifier and class names of the text methods. `image_size`
    overrides the encoder's input size (checked with one blank image). `on_record(record)` is called
    after each record is written (progress bars).

    Example: `run_fewshot("breastmnist", "biomedclip", methods=["tip-adapter", "coop"], shots=[1, 4, 16])`.
    """
    from vlm.encoders import load_encoder

    specs = [get_method(name) for name in methods]
    for spec in specs:
        spec.make_options((options or {}).get(spec.name))
    unknown = sorted(set(options or {}) - {s.name for s in specs})
    if unknown:
        raise VlmError(f"Options given for method(s) not run: {', '.join(unknown)}.")
    draws = _draws(shots, seeds, shots_file)
    if val_shots is not None:
        check_shot(val_shots, "val_shots")
    check_policy(slice_axis, pool)
    check_writable_folder(runs_dir, "Runs folder")
    check_writable_folder(shots_dir if shots_dir is not None else Path(runs_dir) / "shots", "Shots folder")
    splits = {s: load_split(flag, s, size, data_root, download=download) for s in ("train", "val", "test")}
    task = splits["train"].task
    enc = encoder if encoder is not None else load_encoder(model, weights, device)
    if image_size is not None and image_size != enc.preprocess.size:
        check_image_size(enc, image_size, model)
        enc.preprocess = enc.preprocess.with_size(image_size)
    text = [s.name for s in specs if s.needs_text]
    if text and not enc.has_text:
        raise VlmError(f"{enc.id} is image-only: {', '.join(text)} need(s) a vision-language model with a text tower.")
    t0 = time.perf_counter()
    emb, encoded = {}, 0
    for name, split in splits.items():
        emb[name], n = image_embeddings(enc, split, batch_size=batch_size, cache_dir=cache_dir, slice_axis=slice_axis,
                                        pool=pool, progress=progress)
        encoded += n
    embed_seconds = time.perf_counter() - t0
    head = zero_shot_classifier(enc, task, prompts, style) if text else None
    base = {"model_name": model, "weights": str(weights) if weights is not None else None, "size": size,
            "image_size": image_size, "encoder": enc.describe(), "images_encoded": encoded,
            "cache_dir": str(cache_dir) if cache_dir is not None else None,
            **({"slice_axis": slice_axis, "pool": pool} if task.is_3d else {})}
    folder = Path(shots_dir) if shots_dir is not None else Path(runs_dir) / "shots"
    records = []
    for k, seed in draws:
        path = shots_file if shots_file is not None else default_shots_path(folder, task.flag, size, k, seed, val_shots)
        drawn = prepare_shots(splits["train"], splits["val"], k, seed, path, val_shots=val_shots)
        data = problem(task, splits, emb, drawn, enc, head, prompts=prompts, style=style)
        for spec in specs:
            records.append(run_method(spec, data, drawn, splits["test"], options=(options or {}).get(spec.name),
                                      runs_dir=runs_dir, n_bootstrap=n_bootstrap, extra_config=base,
                                      timings={"embed_seconds": round(embed_seconds, 4)}))
            if on_record is not None:
                on_record(records[-1])
    return records


def input_size(record: RunRecord) -> int | None:
    """The size the record's images were encoded at (its preprocessing's; None where it kept native pixels)."""
    size = record.preprocessing.get("size")
    return None if size is None else int(size)


def size_note(record: RunRecord) -> str:
    """'breastmnist 28px' or, where the encoder took another input size, 'breastmnist 28px at 224px'."""
    encoded = input_size(record)
    return f"{record.dataset} {record.size}px" + ("" if encoded in (None, int(record.size)) else f" at {encoded}px")


def curve_rows(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One row per few-shot record: method, shots, seed, auc, acc, auc_ci, acc_ci, run_dir."""
    rows = []
    for r in records:
        if not r.method.startswith(METHOD_PREFIX):
            continue
        m = r.metrics
        rows.append({"method": r.method[len(METHOD_PREFIX):], "shots": r.config.get("shots"), "seed": r.seed,
                     "auc": m.get("auc"), "acc": m.get("acc"), "auc_ci": m.get("auc_ci"), "acc_ci": m.get("acc_ci"),
                     "run_dir": r.path})
    return rows


def curve_summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds per (method, shots): method, shots, n_seeds, auc, auc_std, acc, acc_std."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["shots"]), []).append(row)
    out = []
    for (method, k), group in groups.items():
        entry: dict[str, Any] = {"method": method, "shots": k, "n_seeds": len(group)}
        for metric in ("auc", "acc"):
            values = [g[metric] for g in group if g[metric] is not None]
            entry[metric] = statistics.fmean(values) if values else None
            entry[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0 if values else None
        out.append(entry)
    return out
