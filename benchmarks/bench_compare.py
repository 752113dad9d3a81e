"""`vlm compare` over many run records: the library call and the CLI, on 5,000 synthetic records.

The records are written in the real format (`RunRecord.to_dict()` as `vlm.results.save_run` writes
it, one `RUN/record.json` per run folder; scores files are left out: the table does not read them).
Their metrics come from `vlm.evaluate.evaluate` on random scores of each task kind (200 bootstrap
rounds, so CIs, per-class values and confusion matrices are there), and they cover every dataset
and size of MedMNIST+ × 17 methods × 5 seeds (the first `--records` of them), with configs like
those `vlm train`/`vlm finetune`/`vlm zero-shot` write.

Timed, each `--repeat` times (the best wall time is printed, with the CPU seconds of that call:
on a busy machine wall time is what the scheduler gives, CPU time what the work costs):

LIBRARY  `load_runs(folder)` + `comparison_table(records, baselines="medmnist")` + `to_markdown(table)`
CLI      `python cli.py compare FOLDER --baselines medmnist --format markdown` (and the rich table),
         as a subprocess, its start-up (`python cli.py --help`) shown on its own line

    python benchmarks/bench_compare.py
    python benchmarks/bench_compare.py --records 20000 --keep /tmp/many-runs
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import REPO_ROOT, print_table, setup

from vlm.commands.compare import to_markdown
from vlm.compare import comparison_table
from vlm.evaluate import evaluate
from vlm.results import RECORD_FILE, RunRecord, _json_default, library_versions, load_runs
from vlm.tasks import all_tasks

METHODS = ([("train", m) for m in ("small-cnn", "medmnist-resnet18", "resnet50", "tf_efficientnet_lite0",
                                   "vit_small_patch16_224", "acs:resnet18")]
           + [(mode, m) for mode in ("linear-probe", "knn", "full") for m in ("ViT-B-32", "BiomedCLIP", "resnet18")]
           + [("zero-shot", m) for m in ("ViT-B-32", "BiomedCLIP")])
SEEDS = range(5)


def metric_templates() -> dict[tuple[str, int], dict]:
    """Real Metrics dicts for every (task kind, class count) of MedMNIST, from random scores."""
    out = {}
    gen = torch.Generator().manual_seed(0)
    for task in all_tasks():
        k = task.num_classes
        if (task.kind, k) in out:
            continue
        n = 400
        if task.kind == "multi-label":
            labels, scores = (torch.rand(n, k, generator=gen) < 0.3).long(), torch.rand(n, k, generator=gen)
        else:
            labels = torch.randint(0, k, (n, 1), generator=gen)
            scores = torch.softmax(torch.randn(n, k, generator=gen, dtype=torch.float64), dim=1)
        out[(task.kind, k)] = evaluate(task, labels, scores, n_bootstrap=200, seed=0).to_dict()
    return out


def write_records(folder: Path, count: int) -> int:
    """`count` run folders with a record.json each; returns how many were written."""
    templates, versions = metric_templates(), library_versions()
    rng = np.random.default_rng(0)
    written = 0
    for task in all_tasks():
        for size in task.sizes:
            for method, model in METHODS:
                for seed in SEEDS:
                    if written == count:
                        return written
                    metrics = dict(templates[(task.kind, task.num_classes)])
                    metrics["auc"], metrics["acc"] = float(rng.uniform(0.5, 1)), float(rng.uniform(0.3, 1))
                    config = {"epochs": 100, "batch_size": 128, "lr": 1e-3, "optimizer": "adam", "seed": seed,
                              "device": "cuda", "mode": method if method != "train" else None,
                              "best_epoch": int(rng.integers(1, 100)), "epochs_run": 100, "stop_reason": "completed"}
                    record = RunRecord(method=method, model=model, dataset=task.flag, size=size, split="test",
                                       metrics=metrics, weights_id="pretrained", seed=seed, config=config,
                                       timings={"seconds": float(rng.uniform(10, 1000))},
                                       preprocessing={"mean": [0.5], "std": [0.5], "interpolation": "bilinear"},
                                       versions=versions)
                    run = folder / f"20250101-{written:06d}_{task.flag}_{method}_{model.replace(':', '-')}"
                    run.mkdir()
                    record.run_id, record.path = run.name, str(run)
                    (run / RECORD_FILE).write_text(json.dumps(record.to_dict(), indent=2, default=_json_default))
                    written += 1
    return written


def best_of(repeat: int, fn) -> tuple[float, float]:
    """The best wall time of `repeat` calls and the CPU seconds (this process and its children) of that call."""
    best = (math.inf, math.inf)
    for _ in range(repeat):
        cpu0, t0 = _cpu(), time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - t0, _cpu() - cpu0))
    return best


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5000, help="run records to write (default 5000)")
    parser.add_argument("--repeat", type=int, default=3, help="timings per side; the best is printed")
    parser.add_argument("--keep", type=Path, default=None, help="write the records here and keep them")
    args = parser.parse_args()
    setup(argparse.Namespace(device="cpu"), "vlm compare over many run records (library and CLI)")

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "runs"
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        n = write_records(folder, args.records)
        print(f"wrote {n} records to {folder} in {time.perf_counter() - t0:.1f} s")

        def library() -> None:
            records = load_runs(folder)
            assert len(records) == n
            to_markdown(comparison_table(records, baselines="medmnist"))

        def load_only() -> None:
            load_runs(folder)

        def cli(*extra: str) -> None:
            subprocess.run([sys.executable, str(REPO_ROOT / "cli.py"), *extra], check=True, stdout=subprocess.DEVNULL,
                           env={**os.environ, "COLUMNS": "200"}, cwd=REPO_ROOT)

        rows = [
            ("library: load_runs", best_of(args.repeat, load_only)),
            ("library: load_runs + comparison_table + to_markdown", best_of(args.repeat, library)),
            ("CLI start-up: vlm --help", best_of(args.repeat, lambda: cli("--help"))),
            ("CLI: vlm compare --format markdown", best_of(args.repeat, lambda: cli(
                "compare", str(folder), "--baselines", "medmnist", "--format", "markdown"))),
            ("CLI: vlm compare (rich table)", best_of(args.repeat, lambda: cli(
                "compare", str(folder), "--baselines", "medmnist"))),
        ]
    print_table(["what", "wall [s]", "CPU [s]"], [(name, wall, cpu) for name, (wall, cpu) in rows])
    wall, cpu = max(times for name, times in rows if name.startswith("CLI: "))
    print(f"RESULT: vlm compare over {n} records takes {wall:.2f} s end to end ({cpu:.2f} s CPU; "
          f"{'under' if wall < 5 else 'OVER'} the 5 s budget; load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
