"""Experiment files: a YAML matrix of datasets × methods × seeds, run until every job has a record.

    name: breast-vs-vessel
    seeds: [0]
    datasets:
      - breastmnist                      # size 28 by default
      - {flag: vesselmnist3d, size: 28}
    methods:
      - name: resnet18-scratch
        kind: train                      # train | finetune | zero-shot
        model: medmnist-resnet18
        datasets: [breastmnist]          # optional: restrict to some datasets
        options: {epochs: 10}            # options of `vlm train` / `vlm finetune` / `vlm zero-shot`

A job is (method, dataset, size, seed). Its key is stored in the record's config, so `vlm run` skips
jobs that already have a finished record and an interrupted matrix resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vlm.errors import VlmError
from vlm.results import RunRecord, load_runs
from vlm.tasks import get_task

KINDS = ("train", "finetune", "zero-shot")
TOP_KEYS = {"name", "description", "seeds", "datasets", "methods", "runs_dir", "data_root", "device"}
DATASET_KEYS = {"flag", "size"}
METHOD_KEYS = {"name", "kind", "model", "weights", "mode", "prompts", "styles", "datasets", "options"}
JOB_KEY = "experiment_job"


@dataclass(frozen=True)
class Method:
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
        return {"kind": self.kind, "model": self.model, "weights": self.weights, "mode": self.mode,
                "prompts": self.prompts, "styles": self.styles, "options": self.options}


@dataclass(frozen=True)
class Job:
    """One run of the matrix."""

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
        return f"{self.method.name} · {self.dataset} {self.size}px · seed {self.seed}"


@dataclass
class Experiment:
    name: str
    path: Path
    seeds: list[int]
    datasets: list[tuple[str, int]]
    methods: list[Method]
    runs_dir: Path | None = None
    data_root: Path | None = None
    device: str = "auto"

    def jobs(self) -> list[Job]:
        """Every (method, dataset, size, seed) of the matrix, in file order."""
        return [Job(m, flag, size, seed)
                for m in self.methods
                for flag, size in self.datasets if m.datasets is None or flag in m.datasets
                for seed in self.seeds]


def _line_index(node: yaml.Node, path: tuple = ()) -> dict[tuple, int]:
    """1-based line of every mapping key and list item of a composed YAML document."""
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            lines.update(_line_index(value, path + (key.value,)))
            lines[path + (key.value,)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.update(_line_index(item, path + (i,)))
    return lines


class _Reader:
    """Validates a parsed experiment and points errors at `file:line`."""

    def __init__(self, path: Path, lines: dict[tuple, int]):
        self.path, self.lines = path, lines

    def fail(self, where: tuple, message: str) -> VlmError:
        line = next((self.lines[where[:i]] for i in range(len(where), -1, -1) if where[:i] in self.lines), 1)
        return VlmError(f"{self.path}:{line}: {message}")

    def mapping(self, value: Any, where: tuple, allowed: set[str]) -> dict:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {type(value).__name__}.")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.fail(where + (unknown[0],), f"unknown key '{unknown[0]}' (allowed: {', '.join(sorted(allowed))}).")
        return value

    def dataset(self, flag: Any, where: tuple) -> str:
        try:
            return get_task(str(flag)).flag
        except VlmError as exc:
            raise self.fail(where, str(exc)) from None


def _check_model(reader: _Reader, kind: str, model: str, where: tuple) -> None:
    """Unknown models fail at load time, not an hour into the matrix."""
    from models.registry import ModelError, model_dims

    if kind == "train":
        try:
            model_dims(model)
        except ModelError as exc:
            raise reader.fail(where, str(exc)) from None


def load_experiment(path: str | os.PathLike) -> Experiment:
    """Parse and validate an experiment file; every error names the file and line."""
    path = Path(path)
    try:
        text = path.read_text()
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except FileNotFoundError:
        raise VlmError(f"Experiment file {path} not found.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise VlmError(f"{path}:{mark.line + 1 if mark else '?'}: not valid YAML ({getattr(exc, 'problem', exc)}).") from None
    reader = _Reader(path, _line_index(node) if node is not None else {})
    data = reader.mapping(data, (), TOP_KEYS)
    for key in ("datasets", "methods"):
        if not data.get(key):
            raise reader.fail((), f"'{key}' is required and must not be empty.")

    datasets = []
    for i, entry in enumerate(data["datasets"]):
        entry = {"flag": entry} if isinstance(entry, str) else reader.mapping(entry, ("datasets", i), DATASET_KEYS)
        flag = reader.dataset(entry.get("flag"), ("datasets", i))
        size = int(entry.get("size", 28))
        if size not in get_task(flag).sizes:
            raise reader.fail(("datasets", i, "size"), f"{flag} has no size {size} (sizes: {get_task(flag).sizes}).")
        datasets.append((flag, size))
    flags = {flag for flag, _ in datasets}

    methods, names = [], set()
    for i, entry in enumerate(data["methods"]):
        where = ("methods", i)
        entry = reader.mapping(entry, where, METHOD_KEYS)
        for key in ("name", "kind", "model"):
            if not entry.get(key):
                raise reader.fail(where, f"method {i + 1} needs '{key}'.")
        if entry["kind"] not in KINDS:
            raise reader.fail(where + ("kind",), f"unknown kind '{entry['kind']}' (one of {', '.join(KINDS)}).")
        if entry["name"] in names:
            raise reader.fail(where + ("name",), f"method name '{entry['name']}' is used twice.")
        names.add(entry["name"])
        if entry["kind"] == "finetune" and not entry.get("mode"):
            raise reader.fail(where, "a finetune method needs 'mode' (linear-probe, knn, full or zs-init).")
        _check_model(reader, entry["kind"], str(entry["model"]), where + ("model",))
        restrict = None
        if entry.get("datasets") is not None:
            restrict = tuple(reader.dataset(f, where + ("datasets", j)) for j, f in enumerate(entry["datasets"]))
            missing = sorted(set(restrict) - flags)
            if missing:
                raise reader.fail(where + ("datasets",), f"{', '.join(missing)} not in the experiment's datasets.")
        options = entry.get("options") or {}
        if not isinstance(options, dict):
            raise reader.fail(where + ("options",), "options must be a mapping.")
        allowed = job_options(entry["kind"])
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise reader.fail(where + ("options", unknown[0]), f"unknown {entry['kind']} option '{unknown[0]}' "
                              f"(allowed: {', '.join(sorted(allowed))}).")
        styles = entry.get("styles", "all")
        methods.append(Method(
            name=str(entry["name"]), kind=entry["kind"], model=str(entry["model"]), weights=entry.get("weights"),
            mode=entry.get("mode"), prompts=entry.get("prompts"),
            styles=",".join(styles) if isinstance(styles, list) else str(styles),
            datasets=restrict, options=dict(options)))

    seeds = data.get("seeds", [0])
    seeds = [seeds] if isinstance(seeds, int) else seeds
    if not all(isinstance(s, int) for s in seeds):
        raise reader.fail(("seeds",), "seeds must be integers.")
    optional_path = (lambda p: Path(p) if p else None)  # relative paths are from the working folder, as on the CLI
    return Experiment(name=str(data.get("name", path.stem)), path=path, seeds=list(seeds), datasets=datasets,
                      methods=methods, runs_dir=optional_path(data.get("runs_dir")),
                      data_root=optional_path(data.get("data_root")), device=str(data.get("device", "auto")))


def finished_jobs(runs_dir: str | os.PathLike) -> dict[str, RunRecord]:
    """Finished records under a runs folder that belong to an experiment job, by job key."""
    if not Path(runs_dir).is_dir():
        return {}
    return {r.config[JOB_KEY]: r for r in load_runs(runs_dir) if r.config.get(JOB_KEY)}


def pending_jobs(experiment: Experiment, runs_dir: str | os.PathLike) -> list[Job]:
    done = finished_jobs(runs_dir)
    return [job for job in experiment.jobs() if job.key not in done]


def job_options(kind: str) -> set[str]:
    """The `options` a method of this kind accepts (the keyword arguments of its library call)."""
    from dataclasses import fields

    from vlm.training import TrainConfig

    train_opts = {f.name for f in fields(TrainConfig)} - {"seed", "device"}
    if kind == "train":
        return train_opts | {"model_opts", "pretrained"}
    if kind == "finetune":
        return train_opts | {"k", "knn_weighting", "style", "zs_then", "slice_axis", "pool"}
    return {"split", "batch_size", "slice_axis", "pool", "n_bootstrap"}


def run_job(job: Job, *, runs_dir: str | os.PathLike, data_root: str | os.PathLike | None, device: str = "auto",
            cache_dir: str | os.PathLike | None = None) -> None:
    """Run one job through the same library call as its CLI command; its records carry the job key."""
    from vlm.scoring import record_tags
    from vlm.training import TrainConfig

    method, opts = job.method, dict(job.method.options)
    with record_tags(**{JOB_KEY: job.key, "experiment_method": method.name}):
        if method.kind == "zero-shot":
            from vlm.runtime import resolve_device
            from vlm.zeroshot import run_zero_shot

            run_zero_shot(job.dataset, method.model, weights=method.weights, prompts=method.prompts,
                          styles=method.styles, size=job.size, data_root=data_root, device=str(resolve_device(device)),
                          cache_dir=cache_dir, runs_dir=runs_dir, seed=job.seed, **opts)
        elif method.kind == "finetune":
            from vlm.finetune import finetune, finetune_config

            extra = {k: opts.pop(k) for k in ("k", "knn_weighting", "style", "zs_then", "slice_axis", "pool") if k in opts}
            finetune(job.dataset, method.model, mode=method.mode or "linear-probe",
                     config=finetune_config(**opts, seed=job.seed, device=device), size=job.size,
                     weights=method.weights, data_root=data_root, runs_dir=runs_dir, cache_dir=cache_dir,
                     prompts=method.prompts, **extra)
        else:
            from vlm.training import train

            model_opts, pretrained = opts.pop("model_opts", None), opts.pop("pretrained", None)
            train(job.dataset, method.model, config=TrainConfig(**opts, seed=job.seed, device=device), size=job.size,
                  weights=method.weights, pretrained=pretrained, model_opts=model_opts, data_root=data_root,
                  runs_dir=runs_dir)
