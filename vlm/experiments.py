"""Experiment files: a YAML matrix of datasets × methods × seeds, run until every job has a record.

    name: breast-vs-vessel
    seeds: [0]
    datasets:
      - breastmnist                      # size 28 by default
      - {flag: vesselmnist3d, size: 28}
    methods:
      - name: resnet18-scratch
        kind: train                      # a kind of vlm.methods: train | finetune | zero-shot
        model: medmnist-resnet18
        datasets: [breastmnist]          # optional: restrict to some datasets
        options: {epochs: 10}            # options of `vlm train` / `vlm finetune` / `vlm zero-shot`
    launch:                              # optional; `vlm run` options of the same names override these
      workers: 2                         # jobs at once on this machine (one GPU each when there are GPUs)
      launcher: slurm                    # or local (submitit's LocalExecutor); leave out to run here
      partition: gpu                     # SLURM partition
      gpus_per_job: 1
      time: 60                           # minutes per job (SLURM time limit)
      array_parallelism: 16              # SLURM array tasks at once

A job is (method, dataset, size, seed). Its key is stored in the record's config, so `vlm run` skips
jobs that already have a finished record and an interrupted matrix resumes where it stopped
(`vlm.launch` runs the jobs, across workers and through submitit).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from vlm.errors import VlmError
from vlm.methods import Job, Method, MethodError, get_method, method_kinds, resume
from vlm.ranges import check_option
from vlm.results import RunRecord, load_runs
from vlm.tasks import get_task

TOP_KEYS = {"name", "description", "seeds", "datasets", "methods", "runs_dir", "data_root", "device", "launch"}
DATASET_KEYS = {"flag", "size"}
METHOD_KEYS = {"name", "kind", "model", "weights", "mode", "prompts", "styles", "datasets", "options"}
JOB_KEY = "experiment_job"
LAUNCHERS = ("local", "slurm")


@dataclass(frozen=True)
class LaunchSettings:
    """How `vlm run` spreads the jobs: worker processes here, or a submitit launcher (local or SLURM)."""

    workers: int = 1  # worker processes (here, or tasks of the local launcher)
    launcher: str | None = None  # None: run here; "local" or "slurm": through submitit
    partition: str | None = None  # SLURM partition
    gpus_per_job: int = 1
    time: int = 60  # minutes per job (the SLURM time limit; the local launcher's timeout per task)
    array_parallelism: int = 16  # SLURM array tasks running at once

    def merged(self, **overrides: Any) -> "LaunchSettings":
        """These settings with the given non-None values replaced (the CLI's options over the file's keys)."""
        settings = replace(self, **{k: v for k, v in overrides.items() if v is not None})
        settings.check()
        return settings

    def check(self) -> None:
        """A VlmError naming the setting at fault."""
        if self.launcher is not None and self.launcher not in LAUNCHERS:
            raise VlmError(f"Unknown launcher '{self.launcher}' (one of {', '.join(LAUNCHERS)}).")
        for name in ("workers", "time", "array_parallelism", "gpus_per_job"):
            check_option(name, getattr(self, name), f"launch {name}")


LAUNCH_KEYS = {f.name for f in fields(LaunchSettings)}


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
    launch: LaunchSettings = field(default_factory=LaunchSettings)

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
        if entry["kind"] not in method_kinds():
            raise reader.fail(where + ("kind",), f"unknown kind '{entry['kind']}' (one of {', '.join(method_kinds())}).")
        kind = get_method(entry["kind"])
        if entry["name"] in names:
            raise reader.fail(where + ("name",), f"method name '{entry['name']}' is used twice.")
        names.add(entry["name"])
        try:
            kind.check(str(entry["model"]), entry.get("mode"))
        except MethodError as exc:
            raise reader.fail(where + ((exc.key,) if exc.key else ()), str(exc)) from None
        restrict = None
        if entry.get("datasets") is not None:
            restrict = tuple(reader.dataset(f, where + ("datasets", j)) for j, f in enumerate(entry["datasets"]))
            missing = sorted(set(restrict) - flags)
            if missing:
                raise reader.fail(where + ("datasets",), f"{', '.join(missing)} not in the experiment's datasets.")
        options = entry.get("options") or {}
        if not isinstance(options, dict):
            raise reader.fail(where + ("options",), "options must be a mapping.")
        allowed = kind.options
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
    launch = _launch(reader, data.get("launch") or {})
    optional_path = (lambda p: Path(p) if p else None)  # relative paths are from the working folder, as on the CLI
    return Experiment(name=str(data.get("name", path.stem)), path=path, seeds=list(seeds), datasets=datasets,
                      methods=methods, runs_dir=optional_path(data.get("runs_dir")),
                      data_root=optional_path(data.get("data_root")), device=str(data.get("device", "auto")),
                      launch=launch)


def _launch(reader: _Reader, entry: Any) -> LaunchSettings:
    """The `launch` mapping: integers where counts are, a known launcher."""
    entry = reader.mapping(entry, ("launch",), LAUNCH_KEYS)
    for key, value in entry.items():
        text = key in ("launcher", "partition")
        if (not isinstance(value, str)) if text else (not isinstance(value, int) or isinstance(value, bool)):
            raise reader.fail(("launch", key), f"launch {key} must be {'text' if text else 'an integer'}.")
    try:
        return LaunchSettings().merged(**entry)
    except VlmError as exc:
        raise reader.fail(("launch", next(iter(entry), None)), str(exc)) from None


def finished_jobs(runs_dir: str | os.PathLike) -> dict[str, RunRecord]:
    """Finished records under a runs folder that belong to an experiment job, by job key."""
    if not Path(runs_dir).is_dir():
        return {}
    return {r.config[JOB_KEY]: r for r in load_runs(runs_dir) if r.config.get(JOB_KEY)}


def pending_jobs(experiment: Experiment, runs_dir: str | os.PathLike) -> list[Job]:
    done = finished_jobs(runs_dir)
    return [job for job in experiment.jobs() if job.key not in done]


def run_job(job: Job, *, runs_dir: str | os.PathLike, data_root: str | os.PathLike | None, device: str = "auto",
            cache_dir: str | os.PathLike | None = None, resume_dir: str | os.PathLike | None = None) -> None:
    """Run one job through its method kind (the same library call as its CLI command), or continue it in
    `resume_dir` (a run folder of it that has a spec.json and no record); its records carry the job key."""
    from vlm.scoring import record_tags

    with record_tags(**{JOB_KEY: job.key, "experiment_method": job.method.name}):
        if resume_dir is not None:
            resume(resume_dir, overrides={"device": device}, data_root=data_root)
        else:
            get_method(job.method.kind).run(job, runs_dir=runs_dir, data_root=data_root, device=device,
                                            cache_dir=cache_dir)
