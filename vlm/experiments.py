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
import typing
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, create_model

from vlm.embeddings import EmbeddingPolicy
from vlm.errors import VlmError
from vlm.finetune.modes import FinetuneOptions
from vlm.jobprogress import JobReporter
from vlm.methods import Job, Method, get_method, method_kinds, resume
from vlm.ranges import RANGES
from vlm.results import RunRecord, load_runs
from vlm.runtime import check_device_name
from vlm.schemas import Flag, Number, Schema, Text, line_of, validate
from vlm.tasks import get_task
from vlm.training.config import TrainConfig
from vlm.yaml_files import read_yaml

JOB_KEY = "experiment_job"
LAUNCHERS = ("local", "slurm")


class LaunchSettings(BaseModel):
    """How `vlm run` spreads the jobs: worker processes here, or a submitit launcher (local or SLURM)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    workers: Number("workers") = 1  # worker processes (here, or tasks of the local launcher)
    launcher: Optional[Literal["local", "slurm"]] = None  # None: run here; or through submitit
    partition: Optional[Text] = None  # SLURM partition
    gpus_per_job: Number("gpus_per_job") = 1
    time: Number("time") = 60  # minutes per job (the SLURM time limit; the local launcher's timeout per task)
    array_parallelism: Number("array_parallelism") = 16  # SLURM array tasks running at once

    def merged(self, **overrides: Any) -> "LaunchSettings":
        """These settings with the given non-None values replaced (the CLI's options over the file's keys)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return validate(LaunchSettings, {**self.model_dump(), **given}, "launch settings")

    def check(self) -> None:
        """A VlmError naming the setting at fault (settings built without validation)."""
        validate(LaunchSettings, self.model_dump(), "launch settings")


LAUNCH_KEYS = set(LaunchSettings.model_fields)


# ----------------------------------------------------------------------------- the file's schema
def _one_or_list(value: Any) -> Any:
    return [value] if not isinstance(value, list) and value is not None else value


def _joined(value: Any) -> Any:
    """`[clip, descriptive]` -> "clip,descriptive" (a list of anything else is left to fail as text)."""
    return ",".join(value) if isinstance(value, list) and all(isinstance(v, str) for v in value) else value


class DatasetEntry(Schema):
    """`- breastmnist` or `- {flag: vesselmnist3d, size: 28}`."""

    flag: Text
    size: StrictInt = 28


class MethodEntry(Schema):
    """One method of the matrix; `options` are checked against its kind's typed options (`options_schema`)."""

    name: Annotated[Text, Field(min_length=1)]
    kind: Text
    model: Annotated[Text, Field(min_length=1)]
    weights: Optional[Text] = None
    mode: Optional[Text] = None
    prompts: Optional[Text] = None
    styles: Annotated[Text, BeforeValidator(_joined)] = "all"
    datasets: Optional[Annotated[list[Text], BeforeValidator(_one_or_list)]] = None
    options: Optional[dict[str, Any]] = None


class ExperimentFile(Schema):
    """The experiment file (see the module docstring)."""

    name: Optional[Text] = None
    description: Optional[Text] = None
    seeds: Annotated[list[Number("seed")], BeforeValidator(_one_or_list), Field(min_length=1)] = [0]
    datasets: Annotated[list[Annotated[DatasetEntry, BeforeValidator(lambda v: {"flag": v} if isinstance(v, str)
                                                                   else v)]], Field(min_length=1)]
    methods: Annotated[list[MethodEntry], Field(min_length=1)]
    runs_dir: Optional[Text] = None
    data_root: Optional[Text] = None
    device: Text = "auto"
    launch: Optional[LaunchSettings] = None


def _option_type(name: str, hint: Any) -> Any:
    """The schema type of one method option from its Python type (TrainConfig, FinetuneOptions, EmbeddingPolicy):
    numbers with their range (`vlm.ranges`), strict text and flags, anything for what is not typed there."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    if typing.get_origin(args[0]) is list:
        item = typing.get_args(args[0])[0]
        return list[Number(name) if name in RANGES else _option_type(name, item)]
    if typing.get_origin(args[0]) in (dict, Literal):
        return args[0]
    types = [Number(name) if a in (int, float) and name in RANGES else {str: Text, bool: Flag, int: StrictInt,
                                                                        float: float}.get(a, Any) for a in args]
    return Any if Any in types else Union[tuple(types)] if len(types) > 1 else types[0]


# Options typed by the library calls themselves, not by an options dataclass.
_CALL_OPTIONS = {"model_opts": Optional[dict[str, Any]], "pretrained": Optional[bool],
                 "split": Literal["train", "val", "test"]}


@lru_cache(maxsize=None)
def options_schema(kind: str) -> type[BaseModel]:
    """The typed options of a method kind: the kind's option names, each with the type its library call takes."""
    hints: dict[str, Any] = dict(_CALL_OPTIONS)
    for owner in (EmbeddingPolicy, FinetuneOptions, TrainConfig):
        hints.update(typing.get_type_hints(owner))
    fields_ = {name: (Optional[_option_type(name, hints[name])] if name in hints else Any, None)
               for name in sorted(get_method(kind).options)}
    return create_model(f"{kind}-options", __config__=ConfigDict(extra="forbid"), **fields_)


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


class _Reader:
    """Points the semantic checks (known datasets, kinds, models) at `file:line`."""

    def __init__(self, path: Path, lines: dict[tuple, int]):
        self.path, self.lines = path, lines

    def fail(self, where: tuple, message: str) -> VlmError:
        return VlmError(f"{self.path}:{line_of(where, self.lines) or 1}: {message}")

    def dataset(self, flag: str, where: tuple) -> str:
        try:
            return get_task(flag).flag
        except VlmError as exc:
            raise self.fail(where, str(exc)) from None


def load_experiment(path: str | os.PathLike) -> Experiment:
    """Parse and validate an experiment file (types and ranges by its schema, then datasets, kinds, models and
    option names); every error is one line naming the file and line."""
    path = Path(path)
    data, lines = read_yaml(path, "experiment file")
    if not isinstance(data, dict):
        raise VlmError(f"{path}:1: an experiment file is a YAML mapping with datasets and methods"
                       + (" (the file is empty)." if data is None else f", not a {type(data).__name__}."))
    doc = validate(ExperimentFile, data, str(path), lines=lines)
    reader = _Reader(path, lines)
    try:
        check_device_name(doc.device)
    except VlmError as exc:
        raise reader.fail(("device",), str(exc)) from None
    datasets = []
    for i, entry in enumerate(doc.datasets):
        flag = reader.dataset(entry.flag, ("datasets", i))
        if entry.size not in get_task(flag).sizes:
            raise reader.fail(("datasets", i, "size"), f"{flag} has no size {entry.size} "
                                                       f"(sizes: {get_task(flag).sizes}).")
        datasets.append((flag, entry.size))
    flags = {flag for flag, _ in datasets}
    methods, names = [], set()
    for i, entry in enumerate(doc.methods):
        methods.append(_method(reader, entry, ("methods", i), flags, names))
    optional_path = (lambda p: Path(p) if p else None)  # relative paths are from the working folder, as on the CLI
    return Experiment(name=doc.name or path.stem, path=path, seeds=list(doc.seeds), datasets=datasets,
                      methods=methods, runs_dir=optional_path(doc.runs_dir), data_root=optional_path(doc.data_root),
                      device=doc.device, launch=doc.launch or LaunchSettings())


def _method(reader: _Reader, entry: MethodEntry, where: tuple, flags: set[str], names: set[str]) -> Method:
    """One method entry: a known kind, a unique name, its datasets among the experiment's, typed options and the
    kind's own check (models, prompt files)."""
    if entry.kind not in method_kinds():
        raise reader.fail(where + ("kind",), f"unknown kind '{entry.kind}' (one of {', '.join(method_kinds())}).")
    if entry.name in names:
        raise reader.fail(where + ("name",), f"method name '{entry.name}' is used twice.")
    names.add(entry.name)
    restrict = None
    if entry.datasets is not None:
        restrict = tuple(reader.dataset(f, where + ("datasets", j)) for j, f in enumerate(entry.datasets))
        missing = sorted(set(restrict) - flags)
        if missing:
            raise reader.fail(where + ("datasets",), f"{', '.join(missing)} not in the experiment's datasets.")
    options = validate(options_schema(entry.kind), entry.options or {}, str(reader.path), lines=reader.lines,
                       prefix=where + ("options",), what=f"{entry.kind} option").model_dump(exclude_unset=True)
    method = Method(name=entry.name, kind=entry.kind, model=entry.model, weights=entry.weights, mode=entry.mode,
                    prompts=entry.prompts, styles=entry.styles, datasets=restrict, options=options)
    try:
        get_method(entry.kind).check(method, restrict or tuple(sorted(flags)))
    except VlmError as exc:  # a MethodError names the key at fault
        key = getattr(exc, "key", None)
        raise reader.fail(where + ((key,) if key else ("options",) if entry.options else ()), str(exc)) from None
    return method


def finished_jobs(runs_dir: str | os.PathLike) -> dict[str, RunRecord]:
    """Finished records under a runs folder that belong to an experiment job, by job key."""
    if not Path(runs_dir).is_dir():
        return {}
    return {r.config[JOB_KEY]: r for r in load_runs(runs_dir) if r.config.get(JOB_KEY)}


def pending_jobs(experiment: Experiment, runs_dir: str | os.PathLike) -> list[Job]:
    done = finished_jobs(runs_dir)
    return [job for job in experiment.jobs() if job.key not in done]


def run_job(job: Job, *, runs_dir: str | os.PathLike, data_root: str | os.PathLike | None, device: str = "auto",
            cache_dir: str | os.PathLike | None = None, resume_dir: str | os.PathLike | None = None,
            progress: JobReporter | None = None) -> None:
    """Run one job through its method kind (the same library call as its CLI command), or continue it in
    `resume_dir` (a run folder of it that has a spec.json and no record); its records carry the job key.
    `progress` hears its training epochs and encodings."""
    from vlm.scoring import record_tags

    with record_tags(**{JOB_KEY: job.key, "experiment_method": job.method.name}):
        if resume_dir is not None:
            resume(resume_dir, overrides={"device": device}, data_root=data_root, progress=progress)
        else:
            get_method(job.method.kind).run(job, runs_dir=runs_dir, data_root=data_root, device=device,
                                            cache_dir=cache_dir, progress=progress)
