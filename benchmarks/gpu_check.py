"""GPU check: what only a CUDA machine can show, in one table, in under 5 minutes on one GPU.

1. The evaluator on CUDA equals the CPU: AUC/ACC to 1e-9 and the same bootstrap CIs for a seed
   (`vlm.evaluate` draws its resamples from a CPU generator), for a binary, a 9-class and a 14-label
   task of 10,000 synthetic samples (scores rounded to 4 decimals, so that ties occur).
2. The bf16 matmul throughput (a 8192² matmul, timed), the yardstick of the rows below.
3. Training steps as `vlm train` takes them (bf16 autocast on CUDA) (uint8 batch -> `InputPipeline` -> model ->
   cross-entropy -> AdamW): medmnist-resnet18 at 28 px, batch 128; a random-init timm
   `vit_base_patch16_224` fine-tune step at 224 px (28 px images resized on the device), batch 32.
   Achieved TFLOP/s = forward FLOPs (counted by `torch.utils.flop_counter`) x 3 / step time.
4. Zero-shot image encoding of a random-init open_clip ViT-B-16 at 224 px: our path
   (`vlm.embeddings.encode_split`: resident uint8 28 px images, resize + normalise on the device,
   bf16 autocast) against a bare `model.encode_image` loop over inputs preprocessed beforehand, and
   against the floor that the counted FLOPs per image take at the measured matmul throughput.
5. A 1-GPU torchrun run of `vlm train` (a subprocess: NCCL process group, DDP, SyncBatchNorm, the
   gathered test scores): it must finish with the test split's n and a record that says
   world_size 1, backend nccl.

Without CUDA it says so and exits 0 (nothing checked). `--device cpu --quick` runs every check but
the torchrun one on the CPU with small models and sizes (the test suite does; its timings mean nothing).

    python benchmarks/gpu_check.py                      # on a CUDA machine
    python benchmarks/gpu_check.py --device cpu --quick
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from _common import DEFAULT_DATA_ROOT, REPO_ROOT, Stopwatch, environment, print_table

Row = tuple[str, str, str, str]  # check, result, reference, verdict (ok / FAIL / info)


@dataclass(frozen=True)
class Sizes:
    """How big each check is (the full sizes on CUDA; --quick: small models, a few steps)."""

    eval_n: int = 10_000
    eval_rounds: int = 1000
    matmul: int = 8192
    cnn: str = "medmnist-resnet18"
    cnn_batch: int = 128
    vit: str = "vit_base_patch16_224"
    vit_size: int | None = None  # None: the model's own 224 px
    vit_batch: int = 32
    steps: int = 20
    warmup: int = 3
    clip: str = "ViT-B-16"
    clip_images: int = 2048
    clip_batch: int = 256


QUICK = Sizes(eval_n=300, eval_rounds=50, matmul=256, cnn="small-cnn", cnn_batch=8, vit="vit_tiny_patch16_224",
              vit_size=32, vit_batch=2, steps=1, warmup=1, clip="ViT-S-16", clip_images=2, clip_batch=2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="(default: cuda)")
    p.add_argument("--quick", action="store_true", help="small models and sizes; no torchrun run")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                   help="MedMNIST files for the torchrun run (breastmnist; synthetic when it is not there)")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- 1. evaluator
def check_evaluator(device: torch.device, sizes: Sizes) -> list[Row]:
    """The evaluator on `device` against the CPU, per task kind."""
    from vlm.evaluate import evaluate

    g = torch.Generator().manual_seed(0)
    rows = []
    for kind, k in (("binary", 2), ("multi-class", 9), ("multi-label", 14)):
        n = sizes.eval_n
        if kind == "multi-label":
            y = (torch.rand(n, k, generator=g) < 0.3).long()
            s = (torch.rand(n, k, generator=g, dtype=torch.float64) * 0.6 + y * 0.3).round(decimals=4)
        else:
            y = torch.randint(0, k, (n, 1), generator=g)
            s = torch.softmax(torch.randn(n, k, generator=g, dtype=torch.float64) + F.one_hot(y[:, 0], k), 1)
            s = s.round(decimals=4)
        cpu = evaluate(kind, y, s, n_bootstrap=sizes.eval_rounds, seed=7)
        dev = evaluate(kind, y.to(device), s.to(device), n_bootstrap=sizes.eval_rounds, seed=7)
        diff = max(abs(cpu.auc - dev.auc), abs(cpu.acc - dev.acc),
                   *(abs(a - b) for a, b in zip((*cpu.auc_ci, *cpu.acc_ci), (*dev.auc_ci, *dev.acc_ci))))
        rows.append((f"evaluator {kind} N={n}, {sizes.eval_rounds} rounds: {device.type} vs cpu",
                     f"max |diff| AUC, ACC, CIs {diff:.1e} (AUC {dev.auc:.4f})", "<= 1e-9",
                     "ok" if diff <= 1e-9 else "FAIL"))
    return rows


# ----------------------------------------------------------------------------- 2. matmul
def matmul_tflops(device: torch.device, n: int) -> float:
    """Measured TFLOP/s of an n x n matmul (bf16 on CUDA, fp32 on the CPU)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    reps = 20
    with Stopwatch(device) as sw:
        for _ in range(reps):
            a @ b
    return 2 * n**3 * reps / sw.seconds / 1e12


def forward_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call, as `torch.utils.flop_counter` counts them (matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# ----------------------------------------------------------------------------- 3. training steps
def train_step(name: str, device: torch.device, sizes: Sizes, batch: int, peak: float, **opts: int) -> Row:
    """Seconds per training step of a registry model, fed as `vlm train` feeds it (bf16 autocast on CUDA)."""
    from models import create_model
    from vlm.preprocess import medmnist_preprocess
    from vlm.tasks import get_task
    from vlm.training import InputPipeline, TrainConfig, autocast, fixed_input_size

    torch.manual_seed(0)
    task = get_task("pathmnist")
    model = create_model(name, task.num_classes, in_chans=3, **opts).to(device, memory_format=torch.channels_last)
    image_size = fixed_input_size(model)
    pipeline = InputPipeline(medmnist_preprocess(image_size), is_3d=False, config=TrainConfig().resolved(task))
    images = torch.randint(0, 256, (batch, 3, 28, 28), dtype=torch.uint8, device=device)
    labels = torch.randint(0, task.num_classes, (batch, 1), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        with autocast(device, None):
            loss = F.cross_entropy(model(pipeline(images, True)).float(), labels[:, 0])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(sizes.warmup):
        step()
    with Stopwatch(device) as sw:
        for _ in range(sizes.steps):
            step()
    seconds = sw.seconds / sizes.steps
    flops = 3 * forward_flops(lambda: model(pipeline(images, False)))
    px = image_size or 28
    precision = "bf16" if device.type == "cuda" else "fp32"
    return (f"{precision} train step {name} {px} px, batch {batch}",
            f"{seconds * 1e3:.1f} ms ({batch / seconds:,.1f} img/s)",
            f"{flops / seconds / 1e12:.3g} TFLOP/s = {flops / seconds / 1e12 / peak:.0%} of matmul", "info")


# ----------------------------------------------------------------------------- 4. zero-shot encoding
def clip_encoding(device: torch.device, sizes: Sizes, peak: float) -> list[Row]:
    """Our encoding path against a bare encode_image loop and against the FLOP floor."""
    from vlm.data import Split
    from vlm.embeddings import encode_split
    from vlm.encoders import load_encoder
    from vlm.preprocess import channels_last
    from vlm.tasks import get_task

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "random-initialised": meant
        enc = load_encoder(sizes.clip, device=device)
    n, bs = sizes.clip_images, sizes.clip_batch
    images = torch.randint(0, 256, (n, 3, 28, 28), dtype=torch.uint8, device=device)
    split = Split(images, torch.zeros(n, 1, dtype=torch.long, device=device), get_task("pathmnist"), "test", 28)
    x_all = torch.cat([channels_last(enc.preprocess(images[i:i + bs], device)) for i in range(0, n, bs)])
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    def bare() -> None:
        with torch.inference_mode(), autocast:
            for i in range(0, n, bs):
                enc.model.encode_image(x_all[i:i + bs])

    encode_split(enc, split, batch_size=bs)  # warm-up of both paths
    bare()
    with Stopwatch(device) as ours_sw:
        encode_split(enc, split, batch_size=bs)
    with Stopwatch(device) as bare_sw:
        bare()
    with torch.inference_mode():
        per_image = forward_flops(lambda: enc.model.encode_image(x_all[:1]))
    floor = n * per_image / (peak * 1e12)
    size = enc.preprocess.size
    return [
        (f"zero-shot encode {sizes.clip} {size} px, {n} images: ours (uint8 28 px, resize on device)",
         f"{n / ours_sw.seconds:,.1f} img/s", f"bare encode_image loop {n / bare_sw.seconds:,.1f} img/s "
         f"(ours/bare {bare_sw.seconds / ours_sw.seconds:.2f})", "info"),
        (f"zero-shot encode {sizes.clip}: FLOP floor ({per_image / 1e9:.1f} GFLOP/image at {peak:.3g} TFLOP/s)",
         f"{n / floor:,.1f} img/s", f"ours at {floor / ours_sw.seconds:.0%} of the floor speed", "info"),
    ]


# ----------------------------------------------------------------------------- 5. torchrun
def torchrun_train(data_root: Path) -> Row:
    """`torchrun --nproc_per_node 1 cli.py train` on the GPU: it finishes and records a DDP run."""
    with tempfile.TemporaryDirectory() as tmp:
        if not (data_root / "breastmnist.npz").is_file():
            data_root = Path(tmp)
            _synthetic_breastmnist(data_root)
        runs = Path(tmp) / "runs"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "cli.py",
               "train", "breastmnist", "--model", "medmnist-resnet18", "--epochs", "2", "--batch-size", "128",
               "--data-root", str(data_root), "--runs-dir", str(runs), "--json"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        wall = time.perf_counter() - t0
        label = "torchrun --nproc_per_node 1 vlm train breastmnist medmnist-resnet18, 2 epochs"
        if proc.returncode != 0:
            return label, f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}", "exit 0", "FAIL"
        summary = json.loads(proc.stdout)
        record = json.loads((Path(summary["run_dir"]) / "record.json").read_text())
        dist = record["config"].get("distributed", {})
        ok = summary["n"] == 156 and dist.get("world_size") == 1 and dist.get("backend") == "nccl"
        return (label, f"AUC {summary['auc']:.3f}, n {summary['n']}, {wall:.0f} s wall, {dist}",
                "n 156, world_size 1, nccl", "ok" if ok else "FAIL")


def _synthetic_breastmnist(root: Path) -> None:
    """A breastmnist.npz in MedMNIST's layout with the real split sizes and random images."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 546), ("val", 78), ("test", 156)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).astype(np.uint8)[:, None]
    np.savez_compressed(root / "breastmnist.npz", **arrays)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Run the checks and print the table; 1 when a check fails, 0 otherwise (also without CUDA)."""
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: SKIPPED, nothing checked: torch {torch.__version__} sees no CUDA GPU "
              f"(torch.cuda.is_available() is False). Run it on a CUDA machine, or `--device cpu --quick` "
              f"to run the checks on the CPU.")
        return 0
    device = torch.device(args.device)
    sizes = QUICK if args.quick else Sizes()
    print("== gpu_check")
    for line in environment(device):
        print("   " + line)
    t0 = time.perf_counter()
    rows = check_evaluator(device, sizes)
    peak = matmul_tflops(device, sizes.matmul)
    rows.append((f"matmul {sizes.matmul}² {'bf16' if device.type == 'cuda' else 'fp32'}", f"{peak:.3g} TFLOP/s",
                 "the yardstick below", "info"))
    rows.append(train_step(sizes.cnn, device, sizes, sizes.cnn_batch, peak))
    rows.append(train_step(sizes.vit, device, sizes, sizes.vit_batch, peak,
                           **({"img_size": sizes.vit_size} if sizes.vit_size else {})))
    rows += clip_encoding(device, sizes, peak)
    if not args.quick and device.type == "cuda":
        rows.append(torchrun_train(args.data_root))
    print()
    print_table(["check", "result", "reference", "verdict"], rows)
    failed = [r[0] for r in rows if r[3] == "FAIL"]
    print(f"\n{len(rows)} checks in {time.perf_counter() - t0:.0f} s; " +
          (f"FAILED: {'; '.join(failed)}" if failed else "no failures"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
