"""One CoOp training step through the text tower: the prompts cut to their own tokens against the whole context.

CoOp (`vlm fewshot --method coop`) learns context vectors in front of the class names and trains them
through the frozen text tower; the image embeddings come from the cache, so a step is one text-tower
forward and backward over the K prompts. `PromptTower.trim` cuts the prompts' token ids to their own
tokens (open_clip's causal towers: up to the last EOT; nothing before it attends to the padding) before
the learner is built. This script builds CoOp's prompt learner for `--dataset` (class names of the
`clip` prompt style, context "a photo of a") twice from the same encoder: as `vlm fewshot` does, and
with `trim` left out (the whole context, 77 tokens for CLIP), and times `--steps` steps of each (cross-
entropy of `logit_scale * cos` on `--batch` random unit image embeddings, backward to the context), after
`--warmup` untimed ones. Printed: tokens per prompt, median seconds per step, the ratio, and the largest
difference between the two sides' text classifiers before training (float rounding only).

Without `--weights` it makes a random-initialised open_clip ViT-B-32 as the tests do (seed 0, logit
scale log 100) in a temporary folder: no CLIP weights can be had offline, and the cost of a step does
not depend on the weights.

    python benchmarks/bench_fewshot.py --threads 1
    python benchmarks/bench_fewshot.py --weights vitb32.pt --dataset retinamnist --steps 10
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from _common import add_common_args, add_step_args, now, print_table, setup

from vlm.encoders import load_encoder
from vlm.fewshot.base import FewShotData
from vlm.fewshot.methods.coop import CoOpOptions, PromptLearner, coop_prompts
from vlm.fewshot.run import zero_shot_classifier
from vlm.fewshot.towers import prompt_tower
from vlm.tasks import get_task


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ViT-B-32", help="open_clip architecture (default: ViT-B-32)")
    p.add_argument("--weights", type=Path, default=None,
                   help="its state dict (default: a random-initialised one, seed 0, in a temporary folder)")
    p.add_argument("--dataset", default="breastmnist", help="single-label MedMNIST flag whose class names are used")
    p.add_argument("--batch", type=int, default=32, help="image embeddings per step (default: 32, CoOp's batch)")
    add_step_args(p, steps=5)
    add_common_args(p)
    return p.parse_args(argv)


def random_weights(model: str, folder: Path) -> Path:
    """A seeded random-initialised open_clip state dict with logit_scale = log(100), as tests/conftest.py makes."""
    import open_clip

    torch.manual_seed(0)
    net = open_clip.create_model(model, pretrained=None)
    with torch.no_grad():
        net.logit_scale.fill_(math.log(100.0))
    path = folder / f"{model}.pt"
    torch.save(net.state_dict(), path)
    return path


def learner(data: FewShotData, trimmed: bool) -> PromptLearner:
    """CoOp's prompt learner as `build_learner` makes it; `trimmed=False` keeps the tokenizer's whole context."""
    tower = prompt_tower(data.encoder)
    if not trimmed:
        tower.trim = lambda tokens: tokens  # type: ignore[method-assign]
    opts = CoOpOptions()
    texts, owner = coop_prompts(data.head().names, opts.ctx_init, opts, multi_label=False)
    return PromptLearner(tower, texts, owner, opts.ctx_init, csc=False, random_init=False, seed=0)


def time_steps(lrn: PromptLearner, x: torch.Tensor, y: torch.Tensor, scale: float, device: torch.device,
               steps: int, warmup: int) -> list[float]:
    """Seconds of each timed step: text classifier, logits, cross-entropy, backward to the context."""
    times = []
    with lrn.tower.frozen():
        for i in range(warmup + steps):
            t0 = now(device)
            loss = F.cross_entropy(scale * x @ lrn(), y)
            lrn.ctx.grad = None
            loss.backward()
            if i >= warmup:
                times.append(now(device) - t0)
    return times


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = setup(args, f"CoOp step through the {args.model} text tower: own tokens vs whole context ({args.dataset})")
    task = get_task(args.dataset)
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights or random_weights(args.model, Path(tmp))
        enc = load_encoder(args.model, weights, str(device))
    data = FewShotData(task, {}, {}, enc, 0, lambda: zero_shot_classifier(enc, task))
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(args.batch, enc.embed_dim, generator=g), dim=-1).to(device)
    y = torch.randint(0, task.num_classes, (args.batch,), generator=g).to(device)
    sides = {"whole context": learner(data, trimmed=False), "own tokens (vlm fewshot)": learner(data, trimmed=True)}
    with torch.no_grad():
        w = {name: lrn() for name, lrn in sides.items()}
    gap = float((w["whole context"] - w["own tokens (vlm fewshot)"]).abs().max())
    rows = []
    for name, lrn in sides.items():
        times = time_steps(lrn, x, y, enc.logit_scale, device, args.steps, args.warmup)
        rows.append((name, lrn.tokens["ids"].shape[1], statistics.median(times)))
        print(f"{name}: steps {[round(t, 3) for t in times]} s", flush=True)
    print()
    print_table(["prompts", "tokens", "s/step (median)"], rows)
    ratio = rows[0][2] / rows[1][2]
    print(f"\nmax |W_whole - W_own| before training: {gap:.2e}")
    print(f"RESULT own tokens {ratio:.2f}x faster per step ({rows[0][1]} -> {rows[1][1]} tokens)")


if __name__ == "__main__":
    main()
