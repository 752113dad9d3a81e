"""Small helpers shared by the benchmark scripts (timing, device choice, environment, ratio tables).

Benchmarks are plain scripts (`python benchmarks/bench_X.py`); Python puts their folder on
`sys.path`, so they import this file as `from _common import ...`. Everything here is CPU/CUDA
agnostic: timings synchronise the device first, so GPU work is counted when it ends, not when it
is queued.

    parser = argparse.ArgumentParser()
    add_common_args(parser)                 # --device auto|cpu|cuda, --data-root, --threads
    add_step_args(parser, steps=5)          # --steps, --warmup (step-timing scripts)
    args = parser.parse_args()
    device = setup(args, "what this benchmark compares")   # threads set, environment printed
    with Stopwatch(device) as sw:
        work()
    print_ratio_table([("ours", 1.2), ("reference", 4.8)], baseline="ours")
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared/data/medmnist"


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Add --device, --data-root and --threads to a benchmark's parser."""
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where both sides run (auto: cuda when present, else cpu)")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                        help=f"folder of MedMNIST .npz files (default: {DEFAULT_DATA_ROOT})")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads for both sides (default: torch's own choice)")


def add_step_args(parser: argparse.ArgumentParser, steps: int) -> None:
    """Add --steps (timed steps per side, default `steps`) and --warmup (untimed steps first, default 1)."""
    parser.add_argument("--steps", type=int, default=steps, help=f"timed steps per side (default: {steps})")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per side first (default: 1)")


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU exits with a one-line message."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda was asked for, but torch sees no CUDA GPU here; use --device cpu or auto.")
    return torch.device(name)


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work (no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def now(device: torch.device | str) -> float:
    """time.perf_counter() after the device has finished its queued work."""
    sync(device)
    return time.perf_counter()


class Stopwatch:
    """`with Stopwatch(device) as sw: ...` -> `sw.seconds` (device synchronised at both ends)."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.seconds = float("nan")

    def __enter__(self) -> "Stopwatch":
        self._t0 = now(self.device)
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = now(self.device) - self._t0


def environment(device: torch.device) -> list[str]:
    """Lines describing where the numbers come from: command, versions, device, threads, CPUs, load."""
    if device.type == "cuda":
        dev = f"cuda ({torch.cuda.get_device_name(device)})"
    else:
        dev = f"cpu ({platform.processor() or platform.machine()})"
    cpus = os.cpu_count()
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    return [
        "command: " + " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        f"date:    {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"python {platform.python_version()}, torch {torch.__version__}, {platform.system()} {platform.release()}",
        f"device:  {dev}; torch threads {torch.get_num_threads()}; CPUs seen {cpus}; load average {load}",
    ]


def setup(args: argparse.Namespace, title: str) -> torch.device:
    """Apply --threads, pick the device and print the title and the environment."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    device = pick_device(getattr(args, "device", "auto"))
    print(f"== {title}")
    for line in environment(device):
        print("   " + line)
    print()
    return device


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain left-aligned text table (floats shown with 3 decimals)."""
    cells = [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def print_ratio_table(rows: Sequence[tuple[str, float]], baseline: str, unit: str = "s") -> None:
    """Seconds per contender and each one's ratio to `baseline` (ratio > 1: slower than baseline)."""
    base = dict(rows)[baseline]
    print_table(["contender", f"time [{unit}]", f"ratio vs {baseline}"],
                [(name, t, f"{t / base:.2f}x") for name, t in rows])
