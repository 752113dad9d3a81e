"""Temperature scaling of scored runs: one T fitted on the val logits by NLL, applied once to the test logits.

A run folder that keeps its logits (`logits.npy` for test, `val_logits.npy` for val: trained and fine-tuned
models, the linear probe, zero-shot runs made with `--calibrate temperature`) can be calibrated at any time.
The record keeps its raw `metrics` and gains

    calibrated: {"method": "temperature", "temperature": T, "fit_split": "val", "val_nll": [before, after],
                 "metrics": <the test Metrics of softmax(logits / T)>}

written atomically into its own record.json. Zero-shot logits are logit_scale * cosine, so T rescales the
model's logit scale (multi-label: the positive-minus-negative pair logit); see `vlm.temperature`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlm.errors import VlmError
from vlm.evaluate import calibration_metrics, evaluate
from vlm.results import RunRecord, save_run
from vlm.scoring import LOGITS_FILE, VAL_LOGITS_FILE, load_scores_file
from vlm.tasks import TaskSpec
from vlm.temperature import apply_temperature, fit_temperature

CALIBRATIONS = ("temperature",)


def check_calibration(method: str | None) -> None:
    """None (no calibration) or a known method (VlmError listing them)."""
    if method is not None and method not in CALIBRATIONS:
        raise VlmError(f"Unknown calibration '{method}': choose {', '.join(CALIBRATIONS)}.")


def temperature_scaling(task: TaskSpec, val_logits: torch.Tensor, val_labels: torch.Tensor, logits: torch.Tensor,
                        labels: torch.Tensor, *, n_bootstrap: int = 1000, seed: int = 0,
                        threshold: float = 0.5) -> dict[str, Any]:
    """Fit T on (val_logits, val_labels), score softmax(logits / T) against `labels`: the `calibrated` block."""
    val_logits, logits = val_logits.double().cpu(), logits.double().cpu()
    val_labels, labels = val_labels.cpu(), labels.cpu()
    temperature = fit_temperature(task, val_logits, val_labels)
    nll = [calibration_metrics(task, val_labels, apply_temperature(task, val_logits, t))["nll"]
           for t in (1.0, temperature)]
    metrics = evaluate(task, labels, apply_temperature(task, logits, temperature), n_bootstrap=n_bootstrap,
                       seed=seed, threshold=threshold)
    return {"method": "temperature", "temperature": temperature, "fit_split": "val", "val_nll": nll,
            "metrics": metrics.to_dict()}


def _why_no_logits(record: RunRecord) -> str:
    if record.method == "knn":
        return "kNN scores are neighbour vote fractions, not logits, so there is no temperature to fit"
    if record.method == "scores":
        return "it was recorded by `vlm evaluate` from a scores file"
    if record.method == "zero-shot":
        return ("zero-shot runs score the val split only with --calibrate: re-run "
                "`vlm zero-shot ... --calibrate temperature`")
    return "it was recorded before runs kept their logits; re-run it with --calibrate temperature"


def run_logits(record: RunRecord) -> tuple[torch.Tensor, torch.Tensor]:
    """The (test, val) logits saved in a run folder (VlmError saying why a run has none)."""
    folder = Path(record.path)
    missing = [name for name in (LOGITS_FILE, VAL_LOGITS_FILE) if not (folder / name).is_file()]
    if missing:
        raise VlmError(f"Run {record.run_id} cannot be calibrated: it has no {' or '.join(missing)} "
                       f"({_why_no_logits(record)}).")
    return load_scores_file(folder / LOGITS_FILE), load_scores_file(folder / VAL_LOGITS_FILE)


def _data_root(record: RunRecord, data_root: str | os.PathLike | None) -> str | os.PathLike | None:
    """The given data root, else the one the run's spec.json names, else the default."""
    if data_root is not None:
        return data_root
    from vlm.training import SPEC_FILE, read_spec

    return read_spec(record.path).get("data_root") if (Path(record.path) / SPEC_FILE).is_file() else None


def calibrate_run(run: str | os.PathLike | RunRecord, *, runs_dir: str | os.PathLike | None = None,
                  data_root: str | os.PathLike | None = None, method: str = "temperature") -> RunRecord:
    """Fit and apply temperature scaling to a recorded test run; returns the record with `calibrated` set.

    `run`: a record, run folder or run id in `runs_dir`. Labels come from the dataset files (`data_root`,
    default: the run's own). Refuses, in one line, runs without saved logits or not on the test split.

    Example: `calibrate_run("runs/20250101-120000_breastmnist_train_small-cnn").calibrated["temperature"]`
    """
    from vlm.compare import resolve_run
    from vlm.data import load_split

    check_calibration(method)
    record = resolve_run(run, runs_dir)
    if record.split != "test":
        raise VlmError(f"Run {record.run_id} scored the {record.split} split: temperature scaling is fitted on val "
                       f"and applied to test, so it needs a test run.")
    logits, val_logits = run_logits(record)
    root = _data_root(record, data_root)
    val, test = (load_split(record.dataset, s, int(record.size), root) for s in ("val", "test"))
    for split, array in ((val, val_logits), (test, logits)):
        if array.shape[0] != len(split):
            raise VlmError(f"Run {record.run_id} saved {array.shape[0]} rows of {split.split} logits; the "
                           f"{record.dataset} {record.size}px {split.split} split has {len(split)} samples.")
    m = record.metrics
    record.calibrated = temperature_scaling(test.task, val_logits, val.labels, logits, test.labels,
                                            n_bootstrap=int(m.get("n_bootstrap", 1000)), seed=int(m.get("seed", 0)),
                                            threshold=float(m.get("threshold", 0.5)))
    save_run(record, None, run_dir=record.path)
    return record


def calibrated_scores(record: RunRecord) -> np.ndarray | None:
    """softmax(test logits / T) of a calibrated run (None when the run has no `calibrated` block)."""
    if not record.calibrated:
        return None
    from vlm.tasks import get_task

    logits, _ = run_logits(record)
    return apply_temperature(get_task(record.dataset), logits, record.calibrated["temperature"]).numpy()
