"""Method kinds, run specs and resume: what `vlm run` and `vlm train/finetune --resume` dispatch through.

A method kind (`train`, `finetune`, `zero-shot`, ...) is one `MethodKind` in a registry. It knows
the `options` an experiment's method of that kind accepts, a `check` of a method entry when the
experiment file is loaded, how to `run` one job, and, when its runs leave a resumable run folder,
how to `resume` one from the folder's spec.json (whose `entry` names the kind).

Run specs: a `Method` is a named method of one kind (model, weights, mode, prompts, styles,
options); a `Job` is a method on one dataset, size and seed, with a stable key.

Adding a kind (e.g. a few-shot method): write `run(job, *, runs_dir, data_root, device, cache_dir, progress)`
(`progress`: a `vlm.jobprogress.JobReporter` or None, to hand to the training loop and the encoders)
(and `resume(spec, config, **run_kwargs)` if its runs can be resumed), then
`register_method(MethodKind("few-shot", options=..., run=..., check=..., resume=...))`.
`vlm run` accepts the new kind at once, and `--resume` of a folder whose spec.json has
`"entry": "few-shot"` reaches its `resume`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from vlm.embeddings import EmbeddingPolicy
from vlm.errors import VlmError
from vlm.fewshot.experiment import FEWSHOT_OPTIONS, job_options, run_fewshot_job
from vlm.finetune import EXTRA_OPTIONS, finetune, finetune_config
from vlm.jobprogress import JobReporter
from vlm.scoring import record_tags
from vlm.training import SPEC_FILE, TrainConfig, TrainProgress, TrainResult, read_spec, train
from vlm.training.checkpoint import resume_point
from vlm.training.config import option_names

# Options that may change when a run is resumed (they do not change what is computed on the CPU).
RESUME_FREE = ("device",)


# ----------------------------------------------------------------------------- run specs
@dataclass(frozen=True)
class Method:
    """A named method of one kind, as an experiment file declares it."""

    name: str
    kind: str
    model: str
    weights: str | None = None
    mode: str | None = None
    prompts: str | None = None
    styles: str = "all"
    datasets: tuple[str, ...] | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def spec(self) -> dict[str, Any]:
        """What the method computes (its name and dataset restriction aside)."""
        return {"kind": self.kind, "model": self.model, "weights": self.weights, "mode": self.mode,
                "prompts": self.prompts, "styles": self.styles, "options": self.options}


@dataclass(frozen=True)
class Job:
    """One run of an experiment matrix: a method on one dataset, size and seed."""

    method: Method
    dataset: str
    size: int
    seed: int

    @property
    def key(self) -> str:
        """Stable id of what this job computes (its method spec, dataset, size and seed)."""
        blob = json.dumps({"spec": self.method.spec(), "dataset": self.dataset, "size": self.size,
                           "seed": self.seed}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        """`method · dataset size · seed`, for progress lines and summaries."""
        return f"{self.method.name} · {self.dataset} {self.size}px · seed {self.seed}"


# ----------------------------------------------------------------------------- the registry
class MethodError(VlmError):
    """A method entry that cannot run; `key` names the entry's key at fault (None: the entry itself)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class MethodKind:
    """One kind of method: its experiment options, entry check, job runner and (optional) resume."""

    name: str
    options: frozenset[str]  # the `options` keys an experiment method of this kind accepts
    run: Callable[..., Any]  # run(job, *, runs_dir, data_root, device, cache_dir, progress)
    check: Callable[[Method, tuple[str, ...]], None] = lambda method, datasets: None  # raises MethodError
    resume: Callable[..., TrainResult] | None = None  # resume(spec, config, **run_kwargs)


METHODS: dict[str, MethodKind] = {}


def register_method(kind: MethodKind) -> MethodKind:
    """Add (or replace) a method kind in the registry."""
    METHODS[kind.name] = kind
    return kind


def method_kinds() -> tuple[str, ...]:
    """The registered kind names, in registration order."""
    return tuple(METHODS)


def get_method(name: str) -> MethodKind:
    """The registered kind `name` (VlmError listing the kinds otherwise)."""
    if name not in METHODS:
        raise VlmError(f"Unknown method kind '{name}': choose one of {', '.join(METHODS)}.")
    return METHODS[name]


# ----------------------------------------------------------------------------- resume
def resume(
    run_dir: str | os.PathLike,
    *,
    overrides: dict[str, Any] | None = None,
    data_root: str | os.PathLike | None = None,
    download: bool = False,
    log: Iterable[str] = (),
    progress: TrainProgress | None = None,
    max_epochs_this_call: int | None = None,
) -> TrainResult:
    """Continue an interrupted `vlm train`/`vlm finetune` run from its `last.pt`, with its saved settings.

    `overrides` are the options the user gave again; any that differ from the saved ones (except
    `device`) raise a VlmError that lists them. `data_root` may point elsewhere. The spec's `entry`
    picks the method kind that resumes it; its `tags` (an experiment's job key) go into the record, so a
    job of `vlm run` resumed by hand counts as that job. A damaged folder (spec.json incomplete, last.pt
    missing, truncated or changed, best.safetensors gone) stops with a VlmError naming the file.

    Example:
        >>> resume("runs/20250101-120000_breastmnist_train_small-cnn")   # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    spec = read_spec(run_dir)
    if (run_dir / "record.json").is_file():
        raise VlmError(f"{run_dir} already finished (it has a record.json); start a new run instead.")
    config = TrainConfig.from_dict(spec["config"])
    config = _apply_overrides(spec, config, overrides or {}, run_dir)
    kind = METHODS.get(spec.get("entry"))  # type: ignore[arg-type]
    if kind is None or kind.resume is None:
        raise VlmError(f"{run_dir / SPEC_FILE} names no resumable method (entry {spec.get('entry')!r}).")
    resume_point(run_dir)  # the checkpoints verified before any work (fit reads them again)
    root = data_root if data_root is not None else spec.get("data_root")
    with record_tags(**spec.get("tags", {})):
        return kind.resume(spec, config, data_root=root, download=download, run_dir=run_dir, log=log,
                           progress=progress, max_epochs_this_call=max_epochs_this_call)


def _apply_overrides(spec: dict[str, Any], config: TrainConfig, overrides: dict[str, Any], run_dir: Path) -> TrainConfig:
    conflicts = []
    config_names = option_names()
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


# ----------------------------------------------------------------------------- the built-in kinds
# A job's seed and device come from the matrix; `recipe` names a recipe, its overrides are recorded, not set.
_TRAIN_OPTIONS = frozenset(option_names() - {"seed", "device", "recipe_overrides"})


def _check_train(method: Method, datasets: tuple[str, ...]) -> None:
    """Unknown models fail at load time, not an hour into the matrix."""
    from models import ModelError, model_dims

    try:
        model_dims(method.model)
    except ModelError as exc:
        raise MethodError(str(exc), key="model") from None


def _run_train(job: Job, *, runs_dir: str | os.PathLike, data_root: str | os.PathLike | None, device: str,
               cache_dir: str | os.PathLike | None, progress: JobReporter | None = None) -> None:
    method, opts = job.method, dict(job.method.options)
    model_opts, pretrained = opts.pop("model_opts", None), opts.pop("pretrained", None)
    train(job.dataset, method.model, config=TrainConfig(**opts, seed=job.seed, device=device), size=job.size,
          weights=method.weights, pretrained=pretrained, model_opts=model_opts, data_root=data_root,
          runs_dir=runs_dir, progress=progress)


def _resume_train(spec: dict[str, Any], config: TrainConfig, **run_kwargs: Any) -> TrainResult:
    return train(spec["flag"], spec["model"], config=config, size=spec["size"], weights=spec.get("weights"),
                 pretrained=spec.get("pretrained"), model_opts=spec.get("model_opts"), **run_kwargs)


def _check_finetune(method: Method, datasets: tuple[str, ...]) -> None:
    from vlm.finetune import MODES

    if not method.mode:
        raise MethodError("a finetune method needs 'mode' (linear-probe, knn, full or zs-init).")
    if method.mode not in MODES:
        raise MethodError(f"unknown mode '{method.mode}' (one of {', '.join(MODES)}).", key="mode")
    _check_encoder(method)


def _check_encoder(method: Method) -> None:
    """The encoder name means a backend (nothing is loaded)."""
    from vlm.encoders.base import resolve_name

    try:
        resolve_name(method.model)
    except VlmError as exc:
        raise MethodError(str(exc), key="model") from None


def _check_zero_shot(method: Method, datasets: tuple[str, ...]) -> None:
    """The encoder name resolves, and the prompt file (or the shipped one) is valid for every dataset, with the
    styles asked for: what the run would refuse, refused when the experiment is loaded (and by --dry-run)."""
    from vlm.prompts import load_prompt_set

    _check_encoder(method)
    for flag in datasets:
        try:
            prompt_set = load_prompt_set(Path(method.prompts) if method.prompts else flag, dataset=flag)
            if method.styles not in ("all", "best"):
                prompt_set.resolve_styles(method.styles)
        except VlmError as exc:
            raise MethodError(str(exc), key="prompts" if method.prompts else "styles") from None


def _run_finetune(job: Job, *, runs_dir: str | os.PathLike, data_root: str | os.PathLike | None, device: str,
                  cache_dir: str | os.PathLike | None, progress: JobReporter | None = None) -> None:
    method, opts = job.method, dict(job.method.options)
    extra = {k: opts.pop(k) for k in EXTRA_OPTIONS if k in opts}
    finetune(job.dataset, method.model, mode=method.mode or "linear-probe",
             config=finetune_config(**opts, seed=job.seed, device=device), size=job.size,
             weights=method.weights, data_root=data_root, runs_dir=runs_dir, cache_dir=cache_dir,
             prompts=method.prompts, progress=progress, embed_progress=progress.embed if progress else None, **extra)


def _resume_finetune(spec: dict[str, Any], config: TrainConfig, **run_kwargs: Any) -> TrainResult:
    return finetune(spec["flag"], spec["model"], mode=spec["mode"], config=config, size=spec["size"],
                    weights=spec.get("weights"), **run_kwargs, **spec.get("options", {}))


def _run_zero_shot(job: Job, *, runs_dir: str | os.PathLike, data_root: str | os.PathLike | None, device: str,
                   cache_dir: str | os.PathLike | None, progress: JobReporter | None = None) -> None:
    from vlm.runtime import resolve_device
    from vlm.zeroshot import run_zero_shot

    method = job.method
    run_zero_shot(job.dataset, method.model, weights=method.weights, prompts=method.prompts, styles=method.styles,
                  size=job.size, data_root=data_root, device=str(resolve_device(device)), cache_dir=cache_dir,
                  runs_dir=runs_dir, seed=job.seed, progress=progress.embed if progress else None, **method.options)


register_method(MethodKind("train", options=_TRAIN_OPTIONS | {"model_opts", "pretrained"}, run=_run_train,
                           check=_check_train, resume=_resume_train))
register_method(MethodKind("finetune", options=_TRAIN_OPTIONS | set(EXTRA_OPTIONS), run=_run_finetune,
                           check=_check_finetune, resume=_resume_finetune))
register_method(MethodKind("zero-shot", run=_run_zero_shot, check=_check_zero_shot,
                           options=frozenset({f.name for f in fields(EmbeddingPolicy)} - {"cache_dir"}
                                             | {"split", "n_bootstrap"})))
register_method(MethodKind("fewshot", options=FEWSHOT_OPTIONS, run=run_fewshot_job,  # vlm.fewshot.experiment
                           check=lambda method, datasets: job_options(method) and None))
