"""Training-step time in fp32 against bf16 autocast (`vlm train --amp`), per model, same data and weights.

For each `--models` entry the script builds the model as `vlm train` does (`create_model`, 2D models
in channels-last layout), takes `--batch-size` real training images or volumes of `--dataset` through
the trainer's own input pipeline (`vlm.training.InputPipeline`: to float, normalise, MedMNIST's shape
transform where it applies), and times `--steps` optimisation steps (Adam, cross-entropy) twice, from
the same initial weights: once in fp32 and once under `vlm.training.autocast(device, True)`, the context
`fit` runs its forward passes in. Each side first takes `--warmup` untimed steps. The batch holds
both classes in equal parts where the split has them. Printed: median seconds per step of each side,
the ratio fp32 / bf16 (> 1: bf16 is faster), and the loss of the first step of each side, from the
same weights and batch (the difference is bf16's rounding in the forward pass).

On CUDA bf16 autocast is `fit`'s default; on the CPU it can pay off for models dominated by dense
convolutions (acs:resnet18 ran 2x faster on this project's AVX2-only AMD EPYC, which has no bf16
instructions) and costs time for depthwise ones (EfficientNet slices 2.3x slower).

    python benchmarks/bench_precision.py                                    # acs:resnet18 and slices:lite0 on vesselmnist3d
    python benchmarks/bench_precision.py --models medmnist-resnet18 --dataset breastmnist --threads 1
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch
import torch.nn.functional as F

from _common import add_common_args, add_step_args, now, print_table, setup

from models import create_model
from vlm.data import load_split
from vlm.preprocess import medmnist_preprocess
from vlm.runtime import seed_everything
from vlm.training import InputPipeline, TrainConfig, autocast


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="acs:resnet18,slices:tf_efficientnet_lite0",
                   help="comma-separated registry names (default: acs:resnet18,slices:tf_efficientnet_lite0)")
    p.add_argument("--dataset", default="vesselmnist3d", help="a single-label MedMNIST flag, 28 px (default: vesselmnist3d)")
    p.add_argument("--batch-size", type=int, default=32, help="(default: 32, the 3D recipes' batch)")
    add_step_args(p, steps=4)
    add_common_args(p)
    return p.parse_args(argv)


def time_steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, amp: bool,
               steps: int, warmup: int) -> tuple[list[float], float]:
    """Seconds of each timed optimisation step and the loss of the first step."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    times, first_loss = [], float("nan")
    for i in range(warmup + steps):
        t0 = now(device)
        with autocast(device, amp):
            logits = model(x)
        out = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        out.backward()
        opt.step()
        if i == 0:
            first_loss = out.item()
        if i >= warmup:
            times.append(now(device) - t0)
    return times, first_loss


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = setup(args, f"training step: fp32 vs bf16 autocast ({args.dataset}, batch {args.batch_size})")
    split = load_split(args.dataset, "train", 28, args.data_root)
    task = split.task
    config = TrainConfig(batch_size=args.batch_size).resolved(task)
    pipeline = InputPipeline(medmnist_preprocess(None, rgb=True), is_3d=task.is_3d, config=config)  # vlm train's default
    rows_of = [torch.nonzero(split.labels[:, 0] == c).flatten() for c in range(task.num_classes)]
    per_class = -(-args.batch_size // task.num_classes)
    idx = torch.cat([r[:per_class] for r in rows_of])[:args.batch_size]  # both/all classes where present
    x = pipeline(split.images[idx].to(device), True)
    y = split.labels[idx, 0].to(device)
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        seed_everything(0)
        model = create_model(name, task.num_classes, in_chans=3).to(device)
        if not task.is_3d:
            model = model.to(memory_format=torch.channels_last)
        fp32, loss32 = time_steps(copy.deepcopy(model), x, y, device, False, args.steps, args.warmup)
        bf16, loss16 = time_steps(copy.deepcopy(model), x, y, device, True, args.steps, args.warmup)
        t32, t16 = statistics.median(fp32), statistics.median(bf16)
        rows.append((name, t32, t16, f"{t32 / t16:.2f}x", f"{loss32:.4f} / {loss16:.4f}"))
        print(f"{name}: fp32 steps {[round(t, 2) for t in fp32]} s, bf16 steps {[round(t, 2) for t in bf16]} s",
              flush=True)
    print()
    print_table(["model", "fp32 s/step", "bf16 s/step", "fp32 / bf16", "first loss fp32 / bf16"], rows)
    print()
    print("RESULT " + "; ".join(f"{r[0]} {r[3]}" for r in rows))


if __name__ == "__main__":
    main()
