"""Optional experiment trackers of a training run (`--log NAME`): TensorBoard, MLflow, Weights & Biases.

Each is an optional package (`pip install "medvlm[trackers]"` brings tensorboard and mlflow-skinny; W&B is
`pip install wandb`), imported only when asked for. Every tracker receives the same three things:

- the run's config once, flattened to dotted keys (`flat_config`);
- each epochs.jsonl row's numbers (train_loss, val_auc, val_acc, lr, seconds) at step = its epoch;
- the final test metrics with their 95% CIs (`final_metrics`: test_auc, test_auc_ci_lo, test_auc_ci_hi, ...),
  at the step of the last epoch.

Where each writes:
- `tensorboard`: torch's SummaryWriter in `<run dir>/tensorboard` (the config as the text summary "config");
  `tensorboard --logdir runs` shows every run.
- `mlflow`: an `MlflowClient` on `$MLFLOW_TRACKING_URI`, by default the file store `<runs dir>/mlruns` (one for
  all runs of a runs folder; `MLFLOW_ALLOW_FILE_STORE=true` is set for it, as MLflow 3 asks of file stores);
  `MLFLOW_TRACKING_URI=sqlite:///runs/mlflow.db` uses SQLite (needs sqlalchemy and alembic, in the extra).
  Experiment `$MLFLOW_EXPERIMENT_NAME` (default "medvlm"), one MLflow run per run folder (tag `vlm.run_id`, so
  `--resume` continues it), params = the flat config, status FINISHED after the test, KILLED before it.
- `wandb`: `wandb.init` in the run folder (project `$WANDB_PROJECT`, default "medvlm"; `WANDB_MODE=offline`
  works without an account); the test metrics go to the run's summary.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from vlm.errors import VlmError
from vlm.training.config import check_choice

if TYPE_CHECKING:
    from vlm.results import RunRecord

MLFLOW_DIR = "mlruns"
TENSORBOARD_DIR = "tensorboard"
EXPERIMENT = "medvlm"
# Metrics entries that are settings of the scoring, not results.
_SETTINGS = frozenset({"threshold", "ci_level", "n_bootstrap", "seed", "auc_bootstrap_skipped"})


@dataclass(frozen=True)
class TrackerKind:
    """A tracker: the package it needs and how to install it."""

    name: str
    package: str
    install: str


KINDS = {k.name: k for k in (
    TrackerKind("tensorboard", "tensorboard", 'pip install "medvlm[trackers]" (or pip install tensorboard)'),
    TrackerKind("mlflow", "mlflow", 'pip install "medvlm[trackers]" (or pip install mlflow-skinny)'),
    TrackerKind("wandb", "wandb", "pip install wandb (then `wandb login`, or WANDB_MODE=offline)"),
)}
LOGGERS = tuple(KINDS)


def check_log(names: Iterable[str]) -> None:
    """Fail early when a tracker is unknown, or asked for but not installed."""
    for name in names:
        check_choice("logger", name, LOGGERS)
        kind = KINDS[name]
        if importlib.util.find_spec(kind.package) is None:
            raise VlmError(f"--log {name} needs the {kind.package} package: {kind.install}.")


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config entries as dotted keys with text values (lists as JSON; None as "None")."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_config(value, name + "."))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value, default=str)
    return out


def run_params(method: str, model: str, dataset: str, weights_id: str | None, config: dict[str, Any]) -> dict[str, Any]:
    """What a tracker records as the run's config: its identity (method, model, dataset, weights) and options."""
    return {"method": method, "model": model, "dataset": dataset, "weights_id": weights_id, **config}


def final_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The test results of `Metrics.to_dict()` as flat numbers: test_auc, test_auc_ci_lo, test_auc_ci_hi, ..."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if key in _SETTINGS or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[f"test_{key}"] = float(value)
        elif key.endswith("_ci") and isinstance(value, (list, tuple)) and len(value) == 2:
            out[f"test_{key}_lo"], out[f"test_{key}_hi"] = float(value[0]), float(value[1])
    return out


class _Tracker:
    """One tracker's side of a run; `final` logs like `log` unless the tracker keeps a summary."""

    def log(self, scalars: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def final(self, scalars: dict[str, float], step: int) -> None:
        self.log(scalars, step)

    def close(self, finished: bool) -> None:
        """Flush and close."""


class _TensorBoard(_Tracker):
    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR))
        rows = "\n".join(f"| {k} | {v} |" for k, v in flat_config(config).items())
        self.writer.add_text("config", "| option | value |\n|---|---|\n" + rows, 0)

    def log(self, scalars: dict[str, float], step: int) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self, finished: bool) -> None:
        self.writer.close()


def mlflow_uri(run_dir: Path) -> str:
    """$MLFLOW_TRACKING_URI, else the file store `<runs dir>/mlruns` (and MLflow's opt-in to file stores)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (run_dir.resolve().parent / MLFLOW_DIR).as_uri()


class _MLflow(_Tracker):
    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.uri = mlflow_uri(run_dir)
        try:
            self.client = MlflowClient(tracking_uri=self.uri)
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
            found = self.client.get_experiment_by_name(name)
            experiment = found.experiment_id if found else self.client.create_experiment(name)
            tag = run_dir.name.replace("'", "\\'")
            earlier = self.client.search_runs([experiment], f"tags.`vlm.run_id` = '{tag}'", max_results=1)
            if earlier:  # a resumed run continues its MLflow run
                self.run_id = earlier[0].info.run_id
                self.client.update_run(self.run_id, status="RUNNING")
            else:
                run = self.client.create_run(experiment, run_name=run_dir.name,
                                             tags={"vlm.run_id": run_dir.name, "vlm.run_dir": str(run_dir)})
                self.run_id = run.info.run_id
                params = [Param(k, v[:6000]) for k, v in flat_config(config).items()]
                for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                    self.client.log_batch(self.run_id, params=params[i:i + 100])
        except MlflowException as exc:
            raise VlmError(f"--log mlflow: MLflow tracking at {self.uri} failed: {exc.message}") from None

    def log(self, scalars: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in scalars.items()])

    def close(self, finished: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if finished else "KILLED")


class _WandB(_Tracker):
    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", EXPERIMENT), name=run_dir.name,
                              id=run_dir.name.replace(":", "-")[:64], resume="allow", dir=str(run_dir), config=config)

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def final(self, scalars: dict[str, float], step: int) -> None:
        self.run.summary.update(scalars)

    def close(self, finished: bool) -> None:
        self.run.finish(exit_code=0 if finished else 1)


_FACTORIES: dict[str, Callable[[Path, dict[str, Any]], Any]] = {
    "tensorboard": _TensorBoard, "mlflow": _MLflow, "wandb": _WandB}


class Loggers:
    """The trackers a run asked for: the config at the start, per-epoch numbers, the final test metrics."""

    def __init__(self, names: Iterable[str], run_dir: Path, config: dict[str, Any]) -> None:
        names = list(dict.fromkeys(names))
        check_log(names)
        self.trackers = [_FACTORIES[name](Path(run_dir), config) for name in names]
        self.step = 0
        self.finished = False

    def epoch(self, row: dict[str, Any]) -> None:
        """Log the numbers of one epochs.jsonl row at step = its epoch."""
        self.step = int(row["epoch"])
        scalars = {k: float(v) for k, v in row.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"}
        for tracker in self.trackers:
            tracker.log(scalars, self.step)

    def test(self, metrics: dict[str, Any]) -> None:
        """Log the final test metrics (`Metrics.to_dict()`) with their CIs."""
        scalars = final_metrics(metrics)
        for tracker in self.trackers:
            tracker.final(scalars, self.step)
        self.finished = True

    def close(self) -> None:
        """Flush and close every tracker (MLflow: FINISHED after the test, else KILLED)."""
        for tracker in self.trackers:
            tracker.close(self.finished)


def log_record(names: Iterable[str], record: RunRecord) -> None:
    """Send a run scored without epochs (a linear probe, kNN) to the trackers: its config and test metrics."""
    names = list(names)
    if not names:
        return
    loggers = Loggers(names, Path(record.path), run_params(record.method, record.model, record.dataset,
                                                           record.weights_id, record.config))
    try:
        loggers.test(record.metrics)
    finally:
        loggers.close()
