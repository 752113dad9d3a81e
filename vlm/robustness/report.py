"""Robustness of a recorded method on MedMNIST-C: AUC, ACC, ECE per corruption and severity, balanced errors.

MedMNIST-C's measures (`medmnistc.eval.Evaluator`; Di Salvo, Doerrich and Ledig 2024):
- balanced error E = 1 - balanced accuracy: binary at 0.5 on the last score column, multi-class/ordinal
  by argmax, multi-label the mean over labels (`Metrics.balanced_acc`, scikit-learn's definition);
- per corruption c, E_c = the mean of E over the severities; BE_c = E_c / E_c(AlexNet) and
  RBE_c = (E_c - E_clean) / (E_c(AlexNet) - E_clean(AlexNet));
- BE and RBE: the means of BE_c and RBE_c over the dataset's corruptions.
The AlexNet errors are the package's `medmnistc.utils.baselines.BASELINES` (AlexNet at 224 px): the
package normalises every model by them, whatever image size it was evaluated at. They average all five
severities, so BE and RBE are only comparable when all five are scored.

The report is written atomically to the run folder as robustness.json (the run's own file).
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any, Callable, Sequence

from vlm.data import load_split
from vlm.errors import VlmError
from vlm.evaluate import evaluate
from vlm.files import atomic_write_text
from vlm.results import RunRecord, jsonable
from vlm.robustness.corrupt import SEVERITIES, CorruptionSizeError, corrupted_split, corruptions, medmnistc_version
from vlm.robustness.scorers import Scorer, run_scorer
from vlm.tasks import get_task
from vlm.temperature import apply_temperature

ROBUSTNESS_FILE = "robustness.json"
BASELINE = "AlexNet trained at 224 px (medmnistc.utils.baselines)"


def _cell(scorer: Scorer, split: Any, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """AUC, ACC (with CIs), ECE, Brier and balanced error of the scorer on one split; calibrated too when it has T."""
    logits = scorer.logits(split).double().cpu()
    labels = split.labels.cpu()
    m = evaluate(scorer.task, labels, apply_temperature(scorer.task, logits, 1.0), n_bootstrap=n_bootstrap, seed=seed)
    cell = {"auc": m.auc, "auc_ci": m.auc_ci, "acc": m.acc, "acc_ci": m.acc_ci, "ece": m.ece, "brier": m.brier,
            "balanced_error": 1 - m.balanced_acc}
    if scorer.temperature is not None:
        cal = evaluate(scorer.task, labels, apply_temperature(scorer.task, logits, scorer.temperature), n_bootstrap=0)
        cell.update(ece_calibrated=cal.ece, brier_calibrated=cal.brier)
    return jsonable(cell)


def balanced_errors(flag: str, clean_error: float, errors: dict[str, float]) -> dict[str, Any]:
    """BE_c and RBE_c per corruption from the mean balanced errors E_c, and their means BE and RBE.

    `errors`: corruption -> E_c. Corruptions without an AlexNet value get None (and are left out of the means).
    """
    from medmnistc.utils.baselines import BASELINES

    base = BASELINES.get(flag)
    per: dict[str, dict[str, float | None]] = {}
    for name, error in errors.items():
        alex = base["raw_scores"].get(name) if base else None
        if alex is None:
            per[name] = {"be": None, "rbe": None}
            continue
        per[name] = {"be": error / alex, "rbe": (error - clean_error) / (alex - base["clean_score"])}
    be = [v["be"] for v in per.values() if v["be"] is not None]
    rbe = [v["rbe"] for v in per.values() if v["rbe"] is not None]
    return {"per_corruption": per, "be": statistics.fmean(be) if be else None,
            "rbe": statistics.fmean(rbe) if rbe else None,
            "alexnet_clean_error": base["clean_score"] if base else None}


def _summaries(cells: list[dict[str, Any]], names: list[str], clean_error: float, flag: str) -> dict[str, Any]:
    """Per corruption: mean AUC/ACC/ECE and E_c over the severities, BE_c, RBE_c; overall means."""
    per: list[dict[str, Any]] = []
    for name in names:
        rows = [c for c in cells if c["corruption"] == name]
        mean = {k: statistics.fmean(v) if (v := [r[k] for r in rows if r[k] is not None]) else None
                for k in ("auc", "acc", "ece", "balanced_error")}
        per.append({"corruption": name, **mean})
    errors = {p["corruption"]: p["balanced_error"] for p in per}
    be = balanced_errors(flag, clean_error, errors)
    for p in per:
        p.update(be["per_corruption"][p["corruption"]])
    aucs = [c["auc"] for c in cells if c["auc"] is not None]
    return {"corruptions": per, "summary": {"clean_error": clean_error, "be": be["be"], "rbe": be["rbe"],
                                            "mean_auc": statistics.fmean(aucs) if aucs else None,
                                            "alexnet_clean_error": be["alexnet_clean_error"]}}


def robustness(
    run: str | os.PathLike | RunRecord,
    *,
    flag: str | None = None,
    runs_dir: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    names: Sequence[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    n_bootstrap: int = 0,
    device: str = "auto",
    batch_size: int = 256,
    encoder: Any = None,
    progress: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Score a run's method on the clean test split and on MedMNIST-C's corrupted ones; write robustness.json.

    `flag`: the dataset the run must be on (VlmError otherwise). `names`: a subset of the dataset's corruptions
    (default: all of them; those the package cannot draw at this image size are then skipped and listed in
    `skipped`); `severities`: a subset of 1-5.
    `seed` seeds the corruptions (`vlm.robustness.corrupt`); `n_bootstrap` > 0 adds AUC/ACC CIs per cell.
    `progress(advance)` is called after each scored split (with `set_total(n)` first when it has one).
    Returns the report: clean metrics, one cell per (corruption, severity), per-corruption means with
    BE/RBE, the summary and what was used (medmnistc version, seed, baseline).

    Example: `robustness("runs/2025..._breastmnist_train_medmnist-resnet18", data_root="../shared/data/medmnist")`
    """
    from vlm.compare import resolve_run

    record = resolve_run(run, runs_dir)
    if flag is not None and get_task(flag).flag != record.dataset:
        raise VlmError(f"Run {record.run_id} is a run of {record.dataset}, not {get_task(flag).flag}.")
    if record.split != "test":
        raise VlmError(f"Run {record.run_id} scored the {record.split} split; MedMNIST-C corrupts the test split.")
    available = corruptions(record.dataset)
    chosen = list(names) if names else available
    unknown = [n for n in chosen if n not in available]
    if unknown or not set(severities) <= set(SEVERITIES) or not severities:
        raise VlmError(f"MedMNIST-C for {record.dataset} has corruptions {', '.join(available)} and severities 1-5; "
                       f"got {', '.join(unknown) or 'severities ' + ', '.join(map(str, severities))}.")
    scorer = run_scorer(record, device=device, batch_size=batch_size, encoder=encoder)
    test = load_split(record.dataset, "test", int(record.size), data_root)
    if hasattr(progress, "set_total"):
        progress.set_total(1 + len(chosen) * len(severities))  # type: ignore[union-attr]
    clean = _cell(scorer, test, n_bootstrap, seed)
    cells: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for name in chosen:
        try:
            splits = [corrupted_split(test, name, s, seed=seed, cache_dir=cache_dir, data_root=data_root)
                      for s in severities]
        except CorruptionSizeError as exc:
            if names:
                raise
            skipped[name] = str(exc)
            if progress is not None:
                progress(len(severities))
            continue
        for severity, split in zip(severities, splits):
            cells.append({"corruption": name, "severity": severity, **_cell(scorer, split, n_bootstrap, seed)})
            if progress is not None:
                progress(1)
    chosen = [n for n in chosen if n not in skipped]
    report = {"run_id": record.run_id, "run_dir": record.path, "label": record.label, "method": scorer.kind,
              "dataset": record.dataset, "size": int(record.size), "split": "test", "n": len(test),
              "medmnistc": medmnistc_version(), "seed": seed, "severities": list(severities),
              "temperature": scorer.temperature, "baseline": BASELINE, "recorded_auc": record.metrics.get("auc"),
              "clean": clean, "cells": cells, "skipped": skipped,
              **_summaries(cells, chosen, clean["balanced_error"], record.dataset)}
    if tuple(severities) != SEVERITIES:
        report["note"] = "BE and RBE average the severities scored; MedMNIST-C's average all five."
    atomic_write_text(Path(record.path) / ROBUSTNESS_FILE, json.dumps(jsonable(report), indent=2))
    return report


def load_report(run: str | os.PathLike, runs_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """A robustness.json: given as the file, its run folder or a run id in `runs_dir` (VlmError if absent)."""
    path = Path(run)
    if path.is_file():
        file = path
    else:
        from vlm.compare import resolve_run

        file = Path(resolve_run(run, runs_dir).path) / ROBUSTNESS_FILE
    if not file.is_file():
        raise VlmError(f"No {ROBUSTNESS_FILE} at {file}: run `vlm robustness --run {run}` first.")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise VlmError(f"{file} is not valid JSON ({exc.msg}).") from None

