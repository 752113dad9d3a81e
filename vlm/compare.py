"""Head-to-head comparison of scored runs: one table across methods and datasets, and paired tests.

`comparison_table(records)` builds a plain data structure (`ComparisonTable`; `format_value` and
`legend` give its cell notation as text); `vlm compare` shows it as a rich table, Markdown, CSV or
JSON. Its rules:

- **Rows are methods.** A method is the record's method + model + weights id + the config entries
  that define it (prompt style, fine-tuning mode, hyper-parameters, ...). Entries that only describe
  one run are ignored: the seed, the experiment job key, devices, folders and files (keys in
  `RUN_SPECIFIC_KEYS`, keys starting with "_" and keys ending in _dir/_path/_file/_root).
- **Columns are (dataset, size, split).** Runs on other sizes or splits are never merged; every column
  is labelled like ``breastmnist 28px test``.
- **Cells** hold AUC, ACC, ECE, Brier and NLL (`vlm.compare_model.METRICS`; `vlm compare --metrics`
  picks the shown ones): a single run shows its bootstrap 95% CIs; several runs of one method
  (different seeds) show mean ± std (sample std) over the n seeds. A repeated seed counts once: the
  newest record wins. The best value of each metric in each column is marked (ties all marked): the
  highest AUC and ACC, the lowest ECE, Brier and NLL.
- **Published baselines** (`baselines="medmnist"`) are appended as rows marked published, with no CI,
  and only in test-split columns of their own size: the "ResNet-xx (28)" rows and every 28 px method
  (auto-sklearn, AutoKeras, Google AutoML Vision, all 3D methods) go to ``<flag> 28px test``, the
  "ResNet-xx (224)" rows to ``<flag> 224px test``; every published value names its stored source
  (see `vlm.baselines`).

`pair_compare(run_a, run_b)` runs `vlm.evaluate.paired_bootstrap` on two runs' saved scores and
refuses runs on different test sets (dataset, size, split or number of samples).
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any, Iterable, Sequence

from vlm.compare_model import LOWER_IS_BETTER, METRICS, Cell, Column, ComparisonTable, Row
from vlm.errors import VlmError
from vlm.files import finite_or_none
from vlm.results import RunRecord, load_run, load_scores
from vlm.tasks import SPLITS, all_tasks, get_task

# Config entries that describe one run, not the method (see the module docstring).
RUN_SPECIFIC_KEYS = frozenset({
    "seed", "experiment_job", "experiment", "device", "data_root", "runs_dir", "run_dir", "out", "output",
    "scores_file", "checkpoint", "resume", "download", "num_workers", "workers", "verbose", "quiet",
    "log_every", "cache", "cache_dir", "best_epoch", "epochs_run", "stopped_epoch", "elapsed", "timings",
    "experiment_method", "device_used", "precision", "images_encoded", "l2", "l2_grid", "val_auc", "k_grid",
    "best_val_auc", "stop_reason", "selection", "chosen", "shots_sha256",
})
_RUN_SPECIFIC_SUFFIXES = ("_dir", "_path", "_file", "_root")


# ----------------------------------------------------------------------------- method identity
def method_options(record: RunRecord) -> dict[str, Any]:
    """The config entries that define a record's method (run-specific entries dropped)."""
    return {
        k: v for k, v in sorted(record.config.items())
        if k not in RUN_SPECIFIC_KEYS and not k.startswith("_") and not k.endswith(_RUN_SPECIFIC_SUFFIXES)
    }


def method_key(record: RunRecord) -> str:
    """A stable identity of the record's method: equal for runs that differ only in seed.

    Runs of an experiment file are identified by their method's name there, so one method run on
    several datasets (whose per-dataset choices, such as a probe's L2 strength, differ) is one row.
    """
    if record.config.get("experiment_method"):
        ident: dict[str, Any] = {"experiment_method": record.config["experiment_method"]}
    else:
        ident = {"method": record.method, "model": record.model, "weights_id": record.weights_id,
                 "options": method_options(record)}
    return json.dumps(ident, sort_keys=True, default=str)


def _short(value: Any, width: int = 24) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def _base_label(record: RunRecord) -> str:
    if record.config.get("experiment_method"):
        return f"{record.config['experiment_method']} ({record.label})"
    label = record.label
    if record.weights_id and record.weights_id not in label:
        label += f" ({_short(record.weights_id)})"
    return label


def method_labels(identities: dict[str, RunRecord]) -> dict[str, str]:
    """Readable, unique row labels: the record label, plus the options that tell equal labels apart."""
    by_base: dict[str, list[str]] = {}
    for key, record in identities.items():
        by_base.setdefault(_base_label(record), []).append(key)
    labels = {}
    for base, keys in by_base.items():
        if len(keys) == 1:
            labels[keys[0]] = base
            continue
        options = {k: method_options(identities[k]) for k in keys}
        names = sorted({name for o in options.values() for name in o})
        differing = [n for n in names if len({json.dumps(o.get(n), default=str) for o in options.values()}) > 1]
        for k in keys:
            extra = ", ".join(f"{n}={_short(options[k].get(n, '-'), 16)}" for n in differing)
            labels[k] = f"{base} {{{extra}}}" if extra else base
    return labels


# ----------------------------------------------------------------------------- building the table
def _metric(record: RunRecord, name: str) -> float | None:
    return finite_or_none(record.metrics.get(name))


def _ci(record: RunRecord, name: str) -> tuple[float, float] | None:
    value = record.metrics.get(name)
    return (float(value[0]), float(value[1])) if value else None


def _column_order(col: Column) -> tuple:
    order = {t.flag: i for i, t in enumerate(all_tasks())}
    split = SPLITS.index(col.split) if col.split in SPLITS else len(SPLITS)
    return (order.get(col.dataset, len(order)), col.dataset, col.size, split, col.split)


def _run_cell(records: list[RunRecord]) -> Cell:
    """One cell from the runs of one method in one column (one per seed)."""
    ns = {r.metrics.get("n") for r in records}
    cell = Cell(auc=None, acc=None, n_seeds=len(records), seeds=[r.seed for r in records],
                run_ids=[r.run_id for r in records], n=ns.pop() if len(ns) == 1 else None)
    for metric in METRICS:
        values = [v for v in (_metric(r, metric) for r in records) if v is not None]
        setattr(cell, metric, statistics.fmean(values) if values else None)
        if len(records) == 1:
            setattr(cell, f"{metric}_ci", _ci(records[0], f"{metric}_ci"))
        elif len(values) > 1:
            setattr(cell, f"{metric}_std", statistics.stdev(values))
        if metric == "auc" and len(values) < len(records):
            cell.note = f"AUC undefined in {len(records) - len(values)} of {len(records)} runs"
    return cell


def _mark_best(table: ComparisonTable) -> None:
    """Mark each column's best value of every metric: the highest, or the lowest for LOWER_IS_BETTER; rows of
    styles chosen on test are never marked."""
    barred = {r.key for r in table.rows if r.test_selected}
    for col in table.columns:
        cells = [c for (rk, ck), c in table.cells.items() if ck == col.key and rk not in barred]
        for metric in METRICS:
            sign = -1 if metric in LOWER_IS_BETTER else 1
            values = [sign * getattr(c, metric) for c in cells if getattr(c, metric) is not None]
            if not values:
                continue
            top = max(values)
            for c in cells:
                value = getattr(c, metric)
                if value is not None and sign * value >= top - 1e-12:
                    setattr(c, f"best_{metric}", True)


def comparison_table(
    records: Iterable[RunRecord],
    datasets: Sequence[str] | None = None,
    baselines: bool | str = False,
) -> ComparisonTable:
    """One row per method, one column per (dataset, size, split), the METRICS in each cell.

    `records`: finished run records (`vlm.results.load_runs`), oldest first. `datasets`: keep only
    these flags. `baselines`: True or "medmnist" appends the published MedMNIST v2 results
    (see `vlm.baselines`) to the test-split columns of their size. The rules for rows, columns,
    seeds and best marks are in the module docstring; `ComparisonTable.to_dict` is its JSON form.

    Example: `comparison_table(load_runs("runs"), ["breastmnist"], baselines="medmnist")`
    """
    records = list(records)
    flags = [get_task(d).flag for d in datasets] if datasets else None
    if flags is not None:
        records = [r for r in records if r.dataset in flags]

    # Newest record per (method, column, seed) wins; runs without a seed count as one seed.
    latest: dict[tuple[str, str, str], RunRecord] = {}
    identities: dict[str, RunRecord] = {}
    notes: list[str] = []
    for record in records:
        col = Column(record.dataset, int(record.size), record.split)
        key = method_key(record)
        identities.setdefault(key, record)
        slot = (key, col.key, json.dumps(record.seed))
        if slot in latest:
            notes.append(f"{record.label} on {col.label} seed {record.seed}: run {latest[slot].run_id} replaced "
                         f"by the newer {record.run_id}")
        latest[slot] = record

    grouped: dict[tuple[str, str], list[RunRecord]] = {}
    columns: dict[str, Column] = {}
    for (key, col_key, _), record in latest.items():
        grouped.setdefault((key, col_key), []).append(record)
        columns[col_key] = Column(record.dataset, int(record.size), record.split)

    labels = method_labels(identities)
    test_selected = {key for (key, _, _), rec in latest.items()
                     if (rec.config.get("selection") or {}).get("split") == "test"}
    rows = [Row(key=k, label=labels[k] + (" ‡" if k in test_selected else ""), method=r.method, model=r.model,
                weights_id=r.weights_id, options=method_options(r), test_selected=k in test_selected)
            for k, r in identities.items()]
    rows.sort(key=lambda r: (r.method, r.label))
    cells = {slot: _run_cell(recs) for slot, recs in grouped.items()}

    if baselines:
        name = "medmnist" if baselines is True else str(baselines)
        if not columns:  # no runs: the published table alone
            columns = _published_columns(name, flags)
        rows_pub, cells_pub = _baseline_rows(name, list(columns.values()), flags)
        rows += rows_pub
        cells.update(cells_pub)
        if rows_pub:
            notes.append("Published rows (Yang et al., Scientific Data 2023, Tables 3-4) are placed only in test "
                         "columns of their input size; '(224)' ResNets were trained on 28 px images upsampled to 224.")

    cols = sorted(columns.values(), key=_column_order)
    for col in cols:
        ns = {c.n for (_, ck), c in cells.items() if ck == col.key and not c.published and c.n is not None}
        if len(ns) > 1:
            notes.append(f"{col.label} holds runs on different numbers of samples ({', '.join(map(str, sorted(ns)))}).")
    table = ComparisonTable(columns=cols, rows=rows, cells=cells, notes=notes)
    _mark_best(table)
    return table


def _published_columns(name: str, flags: list[str] | None) -> dict[str, Column]:
    """A test column for every (dataset, size) that the published set has results for."""
    from vlm.baselines import baselines as published

    cols = [Column(task.flag, int(entry["size"]), "test") for task in all_tasks()
            if flags is None or task.flag in flags for entry in published(name, task.flag)]
    return {col.key: col for col in cols}


def _baseline_rows(name: str, columns: list[Column], flags: list[str] | None) -> tuple[list[Row], dict]:
    from vlm.baselines import baselines as published

    rows: dict[str, Row] = {}
    cells: dict[tuple[str, str], Cell] = {}
    for col in columns:
        if col.split != "test" or (flags is not None and col.dataset not in flags):
            continue
        for entry in published(name, col.dataset):
            if entry["size"] != col.size:
                continue
            key = f"published:{name}:{entry['method']}"
            rows.setdefault(key, Row(key=key, label=f"{entry['method']} (published)", method=entry["method"],
                                     model=entry["method"], published=True, source=entry["source"]))
            cells[(key, col.key)] = Cell(auc=entry["auc"], acc=entry["acc"], n_seeds=0, published=True)
    return list(rows.values()), cells


# ----------------------------------------------------------------------------- cell notation
def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_value(cell: Cell, metric: str) -> str:
    """'0.901 [0.853, 0.944]' (one run), '0.901 ± 0.012 (n=3)' (several seeds), '0.901†' (published)."""
    value = getattr(cell, metric)
    if value is None:
        return "-"
    text = f"{value:.3f}"
    if cell.published:
        return text + "†"
    std = getattr(cell, f"{metric}_std")
    ci = getattr(cell, f"{metric}_ci")
    if cell.n_seeds > 1:
        return f"{text} ± {_fmt(std)} (n={cell.n_seeds})"
    if ci:
        return f"{text} [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text


def legend(table: ComparisonTable, best_mark: str = "in bold") -> str:
    """One line explaining the cell notation."""
    parts = ["single run: value [95% bootstrap CI]", "several seeds: mean ± std (n seeds)",
             f"best per column {best_mark}"]
    if any(r.test_selected for r in table.rows):
        parts.append("‡ one of several prompt styles scored on test, not selected on val (never marked best)")
    if any(r.published for r in table.rows):
        parts.append("† published (no CI)")
    return "; ".join(parts) + "."


# ----------------------------------------------------------------------------- paired comparison
def resolve_run(run: str | os.PathLike | RunRecord, runs_dir: str | os.PathLike | None = None) -> RunRecord:
    """A run record from a record, a run folder, a record.json, or a run id (or unique prefix) in `runs_dir`."""
    if isinstance(run, RunRecord):
        return run
    path = Path(run)
    if path.exists():
        return load_run(path)
    if runs_dir is not None:
        base = Path(runs_dir)
        if (base / str(run)).is_dir():
            return load_run(base / str(run))
        if base.is_dir():
            matches = sorted(p for p in base.iterdir() if p.is_dir() and p.name.startswith(str(run)))
            if len(matches) == 1:
                return load_run(matches[0])
            if len(matches) > 1:
                raise VlmError(f"Run '{run}' is ambiguous in {base}: {', '.join(p.name for p in matches[:5])}.")
    where = f" or in {runs_dir}" if runs_dir is not None else ""
    raise VlmError(f"No run '{run}' (not a run folder{where}).")


def pair_compare(
    run_a: str | os.PathLike | RunRecord,
    run_b: str | os.PathLike | RunRecord,
    n_bootstrap: int = 1000,
    seed: int = 0,
    *,
    data_root: str | os.PathLike | None = None,
    runs_dir: str | os.PathLike | None = None,
    threshold: float | None = None,
    ci: float = 0.95,
) -> dict[str, Any]:
    """Paired bootstrap of two runs on the same test set: AUC and ACC differences a - b, CIs, p-values.

    The runs must share dataset, size, split and number of samples (else a VlmError names what
    differs); labels come from the split (`data_root`). ACC uses `threshold`, by default the
    threshold both runs were scored with (a VlmError if they differ). Returns the dict of
    `vlm.evaluate.paired_bootstrap` plus `a`, `b` (run id, label, path), dataset, size, split and n.

    Example: `pair_compare("runs/2024..._a", "runs/2024..._b", n_bootstrap=2000)`
    """
    from vlm.data import load_split
    from vlm.evaluate import paired_bootstrap

    a, b = resolve_run(run_a, runs_dir), resolve_run(run_b, runs_dir)
    differs = [f"{what} {va} vs {vb}" for what, va, vb in (
        ("dataset", a.dataset, b.dataset), ("size", a.size, b.size), ("split", a.split, b.split)) if va != vb]
    if differs:
        raise VlmError(f"Runs {a.run_id} and {b.run_id} are on different test sets ({'; '.join(differs)}); "
                       f"a paired comparison needs the same samples.")
    scores_a, scores_b = load_scores(a), load_scores(b)
    if scores_a.shape[0] != scores_b.shape[0]:
        raise VlmError(f"Runs {a.run_id} and {b.run_id} scored different numbers of samples "
                       f"({scores_a.shape[0]} vs {scores_b.shape[0]}) on {a.dataset} {a.size}px {a.split}; "
                       f"a paired comparison needs the same samples.")
    split = load_split(a.dataset, a.split, int(a.size), data_root)
    if len(split) != scores_a.shape[0]:
        raise VlmError(f"The {a.dataset} {a.size}px {a.split} split has {len(split)} samples but the runs scored "
                       f"{scores_a.shape[0]}: they were scored on a subset, which cannot be paired with the labels.")
    if threshold is None:
        ta, tb = a.metrics.get("threshold", 0.5), b.metrics.get("threshold", 0.5)
        if ta != tb:
            raise VlmError(f"Runs {a.run_id} and {b.run_id} computed ACC at different thresholds ({ta} vs {tb}); "
                           f"pass a threshold (--threshold) for the paired comparison.")
        threshold = float(ta)
    result = paired_bootstrap(split.task.kind, split.labels, scores_a, scores_b, n_bootstrap=n_bootstrap, seed=seed,
                              ci=ci, threshold=threshold)
    info = lambda r: {"run_id": r.run_id, "label": r.label, "seed": r.seed, "path": r.path}  # noqa: E731
    return {"a": info(a), "b": info(b), "dataset": a.dataset, "size": int(a.size), "split": a.split,
            "n": int(scores_a.shape[0]), **result}


def pair_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The `pair_compare` result as one flat row per metric (for tables and CSV)."""
    rows = []
    for metric in ("auc", "acc"):
        m = result[metric]
        lo, hi = m["ci"] if m["ci"] else (None, None)
        rows.append({"metric": metric.upper(), "a": m["a"], "b": m["b"], "diff": m["diff"], "ci_lo": lo, "ci_hi": hi,
                     "p_value": m["p_value"], "rounds": m["rounds"]})
    return rows
