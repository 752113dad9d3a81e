"""Start-up time of `vlm` commands and of a fully cached `vlm prompts compare`, as subprocess wall times.

(a) start-up: `python cli.py --help`, `datasets`, `models`, `prompts list`, `prompts show breastmnist` and
    `prompts validate prompts/*.yaml` against a bare `python -c "import typer, rich"`. Target: every command
    within 2x of that baseline. Also shown: the floor of any typer command, a one-command app with one str
    option printing a small rich table (typer coerces option values through pydantic).
(b) warm compare: `python cli.py prompts compare breastmnist --model local-dir:TINY --prompts P0..P9.yaml`
    with every image and text embedding already in --cache-dir (one untimed run fills it), against a bare
    `python -c "import torch"`. TINY is a random-initialised tiny open_clip model (1-layer ViT, 32 px)
    saved as a local-dir folder (config JSON + weights file, so that its embeddings are cacheable).
    Target: within 2.5x of that baseline.

Rounds are interleaved (every command once per round, `--repeats` rounds) so that changes in machine load
hit all commands alike; the table shows each command's median and its ratio to the round's baseline
median. Children inherit OMP_NUM_THREADS (`--threads`, default 1).

    python benchmarks/bench_startup.py                       # both parts, 3 rounds
    python benchmarks/bench_startup.py --parts startup --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared/data/medmnist"
TINY_CFG = {"embed_dim": 16,
            "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
# The floor any typer + rich command pays: a one-command app with one str option printing a small rich table
# (typer coerces option values through pydantic, and help goes through typer.rich_utils).
FLOOR = """import typer
app = typer.Typer(rich_markup_mode="rich")
@app.command()
def main(fmt: str = "table"):
    from rich.console import Console
    from rich.table import Table
    table = Table("a", "b")
    table.add_row("1", "2")
    Console().print(table)
app()
"""
TEMPLATES = ["a breast ultrasound image of {label}.", "an ultrasound scan of the breast showing {label}.",
             "a grayscale sonogram of {label} in the breast.", "a photo of {label}.", "{label}.",
             "a medical image of {label}.", "an ultrasound of {label}.", "breast tissue with {label}.",
             "a B-mode image of {label}.", "a scan showing {label}."]


def cpu_model() -> str:
    """The CPU model name (lscpu / /proc/cpuinfo), and whether it has AVX-512."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    avx = "AVX-512" if any(f.startswith("avx512") for f in flags) else ("AVX2, no AVX-512" if "avx2" in flags else "no AVX2")
    return f"{name} ({avx})"


def timed(cmd: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one subprocess run (it must exit 0)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{shlex.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()[-400:]}")
    return seconds


def measure(commands: dict[str, list[str]], baseline: str, repeats: int, env: dict[str, str],
            floor: str | None = None) -> None:
    """Run every command once per round (interleaved), then print medians and ratios to `baseline` (and `floor`)."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for r in range(repeats):
        for name, cmd in commands.items():
            times[name].append(timed(cmd, env))
        print(f"   round {r + 1}/{repeats}: " + ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items()), flush=True)
    base = statistics.median(times[baseline])
    low = statistics.median(times[floor]) if floor else None
    width = max(map(len, commands))
    print(f"\n{'command'.ljust(width)}  median [s]  {f'ratio vs {baseline}':>24}" + ("  ratio vs floor" if low else ""))
    print(f"{'-' * width}  ----------  {'-' * 24}" + ("  ---------------" if low else ""))
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name.ljust(width)}  {med:10.3f}  {med / base:23.2f}x" + (f"  {med / low:14.2f}x" if low else ""))
    print()


def tiny_model(folder: Path) -> Path:
    """A random tiny open_clip model as a local-dir folder (open_clip_config.json + weights file)."""
    import logging

    import open_clip
    import torch

    logging.getLogger().setLevel(logging.ERROR)  # open_clip warns that it built a model without weights
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": TINY_CFG, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{folder}", load_weights=False)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def prompt_files(folder: Path, n: int = 10) -> list[Path]:
    """`n` breastmnist prompt files, each with two styles over different templates."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        a, b = TEMPLATES[i % len(TEMPLATES)], TEMPLATES[(i + 3) % len(TEMPLATES)]
        text = ("dataset: breastmnist\nclasses: [malignant, \"normal, benign\"]\n"
                "names:\n  malignant: [a malignant tumor, breast cancer]\n"
                "  \"normal, benign\": [normal breast tissue, a benign lesion]\n"
                f"styles:\n  first:\n    templates: [{json.dumps(a)}]\n  second:\n    templates: [{json.dumps(b)}, "
                f"{json.dumps('set ' + str(i) + ': ' + a)}]\n")
        path = folder / f"set_{i:02d}.yaml"
        path.write_text(text)
        files.append(path)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="startup,compare", help="startup, compare or both (comma-separated)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (median of these)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for the child processes")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="MedMNIST .npz folder")
    args = parser.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), COLUMNS="120")
    py = sys.executable
    print("== vlm start-up (subprocess wall times)")
    print("   command: " + shlex.join([Path(py).name, *sys.argv]))
    print(f"   date:    {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; python {platform.python_version()}")
    print(f"   cpu:     {cpu_model()}; CPUs seen {os.cpu_count()}; OMP_NUM_THREADS={args.threads}; "
          f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    parts = set(args.parts.split(","))
    if "startup" in parts:
        prompts = sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "prompts").glob("*.yaml"))
        measure({
            "import typer, rich": [py, "-c", "import typer, rich"],
            "typer floor": [py, "-c", FLOOR],
            "vlm --help": [py, "cli.py", "--help"],
            "vlm datasets": [py, "cli.py", "datasets", "--data-root", str(args.data_root)],
            "vlm models": [py, "cli.py", "models"],
            "vlm prompts list": [py, "cli.py", "prompts", "list"],
            "vlm prompts show": [py, "cli.py", "prompts", "show", "breastmnist"],
            "vlm prompts validate": [py, "cli.py", "prompts", "validate", *prompts],
        }, "import typer, rich", args.repeats, env, floor="typer floor")
    if "compare" in parts:
        with tempfile.TemporaryDirectory(prefix="bench_startup_") as tmp:
            root = Path(tmp)
            model = tiny_model(root / "tiny")
            files = [str(p) for p in prompt_files(root / "prompts")]
            compare = [py, "cli.py", "prompts", "compare", "breastmnist", "--model", f"local-dir:{model}",
                       "--prompts", *files, "--data-root", str(args.data_root), "--cache-dir", str(root / "cache")]
            print(f"   filling the cache: {shlex.join(compare[1:6])} ... ({len(files)} prompt files)", flush=True)
            timed(compare, env)
            measure({"import torch": [py, "-c", "import torch"], "vlm prompts compare (cached)": compare},
                    "import torch", args.repeats, env)


if __name__ == "__main__":
    main()
