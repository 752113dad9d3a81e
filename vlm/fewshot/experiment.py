"""The `fewshot` method kind of `vlm run`: a job is one few-shot method's curve on one dataset and seed.

    methods:
      - name: coop
        kind: fewshot
        model: ViT-B-32
        weights: vitb32.pt
        styles: clip                      # the prompt style of the zero-shot head and class names (one)
        options: {method: coop, shots: [1, 2, 4, 8, 16, all], epochs: 10}

`options.method` (required) names a method of `vlm.fewshot.METHODS`; `shots` lists the K values
(default 1 2 4 8 16, "all" = full data); the job's seed (the experiment's `seeds`) is the seed of the
draws, so the shots files (`<runs_dir>/shots`) are shared with every other few-shot method of that
seed. Further options: `val_shots`, `image_size`, `n_bootstrap`, `slice_axis`, `pool`, `batch_size`
and the method's own hyper-parameters (its options dataclass).

Each K writes its record as soon as it is scored, tagged with the job key plus "/K=<k>", the last K
with the job key itself: a job counts as finished once its whole curve is there, and an interrupted
job reruns only the K values that have no record. `vlm compare` shows each K as its own method row
("<name> K=<k>").
"""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from vlm.errors import VlmError
from vlm.fewshot.base import METHODS, get_method
from vlm.fewshot.run import DEFAULT_SHOTS, run_fewshot
from vlm.fewshot.shots import check_shot

JOB_TAG = "experiment_job"  # vlm.experiments.JOB_KEY (importing it from there would make an import cycle)
RUN_OPTIONS = ("val_shots", "image_size", "n_bootstrap", "slice_axis", "pool", "batch_size")
FEWSHOT_OPTIONS = frozenset({"method", "shots", *RUN_OPTIONS}
                            | {f.name for spec in METHODS.values() for f in fields(spec.options)})


def _finished_tags(runs_dir: str | os.PathLike) -> set[str]:
    from vlm.results import load_runs

    if not Path(runs_dir).is_dir():
        return set()
    return {str(r.config[JOB_TAG]) for r in load_runs(runs_dir) if r.config.get(JOB_TAG)}


def job_options(method: Any) -> tuple[Any, list, dict[str, Any], dict[str, Any], list[str]]:
    """An experiment's few-shot method as (method spec, K values, run options, the method's own options, prompt
    styles); a VlmError when they do not fit (checked when the experiment file is loaded, and by --dry-run)."""
    opts = dict(method.options)
    name = opts.pop("method", None)
    if not name:
        raise VlmError(f"Few-shot method '{method.name}' needs options.method: one of {', '.join(METHODS)}.")
    spec = get_method(str(name))
    shots = opts.pop("shots", list(DEFAULT_SHOTS))
    shots = [check_shot(k) for k in (shots if isinstance(shots, list) else [shots])]
    run_opts = {k: opts.pop(k) for k in RUN_OPTIONS if k in opts}
    spec.make_options(opts)
    styles = [s for s in str(method.styles).split(",") if s and s != "all"]
    if len(styles) > 1:
        raise VlmError(f"Few-shot method '{method.name}' takes one prompt style, not {method.styles}.")
    return spec, shots, run_opts, opts, styles


def run_fewshot_job(job: Any, *, runs_dir: str | os.PathLike, data_root: str | os.PathLike | None, device: str,
                    cache_dir: str | os.PathLike | None, progress: Any = None) -> None:
    """Run the K values of one job that have no record yet, one record per K (see the module doc);
    `progress` (a `vlm.jobprogress.JobReporter`) hears the encodings."""
    from vlm.encoders import load_encoder
    from vlm.runtime import resolve_device
    from vlm.scoring import record_tags

    method = job.method
    spec, shots, run_opts, opts, styles = job_options(method)
    done = _finished_tags(runs_dir)
    todo = [(k, job.key if i == len(shots) - 1 else f"{job.key}/K={k}") for i, k in enumerate(shots)]
    todo = [(k, tag) for k, tag in todo if tag not in done]
    if not todo:
        return
    enc = load_encoder(method.model, method.weights, resolve_device(device))
    for k, tag in todo:
        with record_tags(**{JOB_TAG: tag, "experiment_method": f"{method.name} K={k}"}):
            run_fewshot(job.dataset, method.model, methods=[spec.name], shots=[k], seeds=[job.seed],
                        weights=method.weights, size=job.size, data_root=data_root, runs_dir=runs_dir,
                        cache_dir=cache_dir, prompts=method.prompts, style=styles[0] if styles else None,
                        options={spec.name: opts}, encoder=enc, progress=progress.embed if progress else None,
                        **run_opts)
