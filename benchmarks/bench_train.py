"""Training epoch time: our trainer (`vlm.training.train` -> `fit`) against a MedMNIST-style reference loop.

Both sides train the SAME model (same initial weights: each built by `seed_everything(seed)` then
`models.create_model(name, K, in_chans=3)`, as `vlm.training.train` builds it) on the SAME data
with the same optimizer (Adam, lr 1e-3, MedMNIST's MultiStepLR), batch size, loss, epochs and torch
threads, one after the other in this one process, each after one warm-up optimisation step on a
throw-away copy of the model.

OURS       `vlm.training.train`, the function `vlm train` calls, which runs `vlm.training.fit`: the splits
           resident as uint8 tensors on the device, batches by indexing a shuffled order,
           preprocessing as tensor ops on the device (to float, grey->RGB, mean = std = 0.5), 2D
           models and batches in channels-last layout. Per epoch: train, score VAL (`predict` +
           `vlm.evaluate`, no bootstrap), write best.safetensors when val AUC improves, last.pt
           (model + optimizer + RNG state) and epochs.jsonl. After the last epoch: reload the best
           checkpoint, score TEST once with 1,000-round bootstrap CIs, write the RunRecord.
REFERENCE  written the way MedMNIST/experiments `MedMNIST2D/train_and_eval_pytorch.py` works:
           `medmnist.<Dataset>(split, transform=Compose([ToTensor(), Normalize([.5], [.5])]),
           as_rgb=True)` -> `DataLoader(batch_size, shuffle=True)` (per-image PIL transforms, no
           workers), train, then its `test(...)` on TRAIN, VAL and TEST with `medmnist.Evaluator`
           (scikit-learn AUC/ACC) every epoch, `scheduler.step()`; the model in PyTorch's default
           layout (`--reference-channels-last` gives it ours). After the last epoch:
           `torch.save` of the best model and the three test passes again. Its TensorBoard logging
           (tensorboardX, one scalar per step) is left out, which can only make the reference faster.

Per-epoch time is wall clock from the start of an epoch to the end of all its per-epoch work
(the device synchronised). Dataset loading and model construction are outside the timings on both
sides. The printed headline ratio is reference / ours of the mean seconds per epoch; the
training-phase ratio (train steps only) and the end-of-run ratio are printed too.

    python benchmarks/bench_train.py                                   # breastmnist, medmnist-resnet18, 2 epochs
    python benchmarks/bench_train.py --model small-cnn --epochs 3 --device cuda
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from _common import add_common_args, now, print_table, setup

from models import create_model
from vlm.data import load_split
from vlm.losses import make_loss
from vlm.preprocess import medmnist_preprocess
from vlm.runtime import seed_everything
from vlm.tasks import get_task
from vlm.training import InputPipeline, TrainConfig, batch_starts, fixed_input_size, train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="breastmnist", help="a 2D MedMNIST flag (default: breastmnist)")
    p.add_argument("--size", type=int, default=28, help="dataset image size (default: 28)")
    p.add_argument("--model", default="medmnist-resnet18",
                   help="a registry name: medmnist-resnet18 (default), small-cnn, tf_efficientnet_lite0, ...")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per side (default: 2)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--amp", action="store_true",
                   help="let our side use bf16 autocast (fit's default on CUDA, `vlm train --amp` on the CPU); "
                        "off by default so both sides compute in float32")
    p.add_argument("--reference-channels-last", action="store_true",
                   help="give the reference model the channels-last layout ours uses (default: MedMNIST's "
                        "plain layout), to isolate the input path")
    p.add_argument("--order", choices=("reference-first", "ours-first"), default="reference-first",
                   help="which side runs first (default: reference-first)")
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="where our run folder goes (default: a temporary folder, removed afterwards)")
    add_common_args(p)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- reference (MedMNIST style)
def _ref_train(model, loader, task_str, criterion, optimizer, device) -> float:
    """MedMNIST's `train(...)` (TensorBoard writer left out)."""
    total_loss = []
    model.train()
    for inputs, targets in loader:
        optimizer.zero_grad()
        outputs = model(inputs.to(device))
        if task_str == "multi-label, binary-class":
            targets = targets.to(torch.float32).to(device)
        else:
            targets = torch.squeeze(targets, 1).long().to(device)
        loss = criterion(outputs, targets)
        total_loss.append(loss.item())
        loss.backward()
        optimizer.step()
    return sum(total_loss) / len(total_loss)


def _ref_test(model, evaluator, loader, task_str, criterion, device):
    """MedMNIST's `test(...)`: scores on the device, then `Evaluator.evaluate` (scikit-learn) on numpy."""
    model.eval()
    total_loss = []
    y_score = torch.tensor([]).to(device)
    with torch.no_grad():
        for inputs, targets in loader:
            outputs = model(inputs.to(device))
            if task_str == "multi-label, binary-class":
                targets = targets.to(torch.float32).to(device)
                loss = criterion(outputs, targets)
                outputs = nn.Sigmoid()(outputs).to(device)
            else:
                targets = torch.squeeze(targets, 1).long().to(device)
                loss = criterion(outputs, targets)
                outputs = nn.Softmax(dim=1)(outputs).to(device)
            total_loss.append(loss.item())
            y_score = torch.cat((y_score, outputs), 0)
        y_score = y_score.detach().cpu().numpy()
        auc, acc = evaluator.evaluate(y_score, None, "bench")
    return [sum(total_loss) / len(total_loss), auc, acc]


def run_reference(model, args, device, image_size) -> dict:
    import medmnist
    import torch.utils.data as data
    import torchvision.transforms as transforms
    from medmnist import INFO

    info = INFO[args.dataset]
    task_str = info["task"]
    DataClass = getattr(medmnist, info["python_class"])
    steps = [transforms.Resize((image_size, image_size))] if image_size else []
    data_transform = transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize(mean=[.5], std=[.5])])
    root = str(args.data_root)
    ds = {s: DataClass(split=s, transform=data_transform, as_rgb=True, root=root, size=args.size)
          for s in ("train", "val", "test")}
    train_loader = data.DataLoader(dataset=ds["train"], batch_size=args.batch_size, shuffle=True)
    eval_loaders = {s: data.DataLoader(dataset=ds[s], batch_size=args.batch_size, shuffle=False)
                    for s in ("train", "val", "test")}
    evaluators = {s: medmnist.Evaluator(args.dataset, s, size=args.size, root=root) for s in ("train", "val", "test")}
    criterion = nn.BCEWithLogitsLoss() if task_str == "multi-label, binary-class" else nn.CrossEntropyLoss()

    # Warm-up: one optimisation step on a throw-away copy, through the reference's own input path.
    scratch = copy.deepcopy(model)
    opt = torch.optim.Adam(scratch.parameters(), lr=args.lr)
    inputs, targets = next(iter(train_loader))
    scratch.train()
    out = scratch(inputs.to(device))
    t = targets.float().to(device) if task_str == "multi-label, binary-class" else targets[:, 0].long().to(device)
    criterion(out, t).backward()
    opt.step()
    del scratch, opt
    now(device)

    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[0.5 * args.epochs, 0.75 * args.epochs], gamma=0.1)
    epochs, best_auc, best_model = [], 0.0, model
    for _ in range(args.epochs):
        t0 = now(device)
        _ref_train(model, train_loader, task_str, criterion, optimizer, device)
        t1 = now(device)
        metrics = {s: _ref_test(model, evaluators[s], eval_loaders[s], task_str, criterion, device)
                   for s in ("train", "val", "test")}
        scheduler.step()
        t2 = now(device)
        if metrics["val"][1] > best_auc:
            best_auc, best_model = metrics["val"][1], model
        epochs.append({"train": t1 - t0, "eval": t2 - t1, "total": t2 - t0, "val_auc": metrics["val"][1]})
    t0 = now(device)
    with tempfile.TemporaryDirectory(prefix="bench_ref_") as tmp:
        torch.save({"net": best_model.state_dict()}, str(Path(tmp) / "best_model.pth"))
        final = {s: _ref_test(best_model, evaluators[s], eval_loaders[s], task_str, criterion, device)
                 for s in ("train", "val", "test")}
    end = now(device) - t0
    return {"epochs": epochs, "end": end, "test_auc": final["test"][1], "steps": len(train_loader)}


# ----------------------------------------------------------------------------- ours (vlm.training.fit)
def run_ours(init: nn.Module, args, device, image_size, n_train: int, runs_dir: Path) -> dict:
    """`vlm.training.train` (what `vlm train` calls): it seeds, builds the model from the registry (2D models
    in channels-last layout), loads the splits and runs `fit`. Epoch times come from fit's progress events."""
    task = get_task(args.dataset)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer="adam",
                         scheduler="multistep", seed=args.seed, device=device.type, amp=args.amp,
                         image_size=image_size, n_bootstrap=1000)
    resolved = config.resolved(task)

    # Warm-up: one optimisation step on a throw-away copy (laid out as train() lays out its model),
    # through our own input path.
    scratch = copy.deepcopy(init).to(device, memory_format=torch.channels_last)
    opt = torch.optim.Adam(scratch.parameters(), lr=args.lr)
    pipeline = InputPipeline(medmnist_preprocess(image_size, rgb=True), is_3d=False, config=resolved)
    tr = load_split(task, "train", args.size, args.data_root).to(device)
    idx = torch.randperm(len(tr), device=device)[: args.batch_size]
    scratch.train()
    loss_fn = make_loss(resolved.loss, task, device=device)
    loss_fn(scratch(pipeline(tr.images[idx], True)), tr.labels[idx]).backward()
    opt.step()
    del scratch, opt, tr
    now(device)

    marks: dict[str, list[float]] = {"start": [], "last_batch": [], "epoch": [], "test": [], "done": []}

    def progress(event) -> None:
        if event.stage == "batch":
            if event.batch == event.batches:
                marks["last_batch"].append(now(device))
        elif event.stage in marks:
            marks[event.stage].append(now(device))

    cudnn = torch.backends.cudnn.benchmark
    try:
        result = train(args.dataset, args.model, config=config, size=args.size, data_root=args.data_root,
                       runs_dir=runs_dir, progress=progress)
    finally:
        torch.backends.cudnn.benchmark = cudnn  # fit turns it on for CUDA; leave the process as it was
    starts = [marks["start"][0], *marks["epoch"][:-1]]
    epochs = [{"train": lb - s, "eval": e - lb, "total": e - s, "val_auc": row["val_auc"]}
              for s, lb, e, row in zip(starts, marks["last_batch"], marks["epoch"], result.history)]
    return {"epochs": epochs, "end": marks["done"][0] - marks["test"][0], "test_auc": result.metrics.auc,
            "steps": len(batch_starts(n_train, resolved.batch_size)), "run_dir": result.run_dir}


# ----------------------------------------------------------------------------- main
def _mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = setup(args, "bench_train: training epoch time, vlm.training.train -> fit (ours) vs a MedMNIST-style loop (reference)")
    task = get_task(args.dataset)
    if task.is_3d:
        sys.exit(f"{args.dataset} is 3D; the reference loop is MedMNIST's 2D script. Pick a 2D dataset.")
    if args.epochs < 1:
        sys.exit("--epochs must be at least 1.")
    splits = tuple(load_split(task, s, args.size, args.data_root) for s in ("train", "val", "test"))
    seed_everything(args.seed)
    init = create_model(args.model, task.num_classes, in_chans=3)
    fixed = fixed_input_size(init)
    image_size = fixed if fixed is not None and fixed != args.size else None
    n_params = sum(p.numel() for p in init.parameters())
    n = {s.split: len(s) for s in splits}

    print(f"data:   {args.dataset} size {args.size} from {args.data_root}: train {n['train']}, val {n['val']}, "
          f"test {n['test']} images; task {task.kind}; input {image_size or args.size} px, 3 channels")
    print(f"model:  {args.model} ({n_params / 1e6:.2f} M parameters), same initial weights on both sides "
          f"(seed {args.seed})")
    print(f"train:  Adam lr {args.lr}, MultiStepLR x0.1 at 50%/75% of the epochs, batch {args.batch_size}, "
          f"{'BCE' if task.kind == 'multi-label' else 'cross-entropy'}, {args.epochs} timed epoch(s) per side "
          f"after 1 warm-up step; float32{' (ours: bf16 autocast)' if args.amp else ''}")
    print("per epoch, REFERENCE: train (DataLoader, PIL ToTensor+Normalize per image) + MedMNIST test() on "
          "train, val and test (medmnist.Evaluator) + scheduler.step()")
    print("per epoch, OURS:      train (resident uint8, index batches, tensor preprocessing) + score val "
          "(predict + vlm.evaluate) + best.safetensors when better + last.pt + epochs.jsonl")
    print(f"layout: ours as vlm.training.train sets it (channels-last 2D models and batches when written); reference "
          f"{'channels-last (--reference-channels-last)' if args.reference_channels_last else 'default NCHW, as MedMNIST'}")
    print("end of run, REFERENCE: torch.save(best) + test() on train, val and test")
    print("end of run, OURS:      load best + score test with 1,000 bootstrap rounds + RunRecord (record.json, scores.npy)")
    print(f"order:  {args.order}\n")

    tmp = None
    runs_dir = args.runs_dir
    if runs_dir is None:
        tmp = tempfile.mkdtemp(prefix="bench_train_runs_")
        runs_dir = Path(tmp)
    results = {}
    try:
        sides = ["reference", "ours"] if args.order == "reference-first" else ["ours", "reference"]
        for side in sides:
            t0 = time.perf_counter()
            if side == "reference":
                model = copy.deepcopy(init).to(device)
                if args.reference_channels_last:
                    model = model.to(memory_format=torch.channels_last)
                results[side] = run_reference(model, args, device, image_size)
                del model
            else:
                results[side] = run_ours(init, args, device, image_size, n["train"], runs_dir)
            print(f"  {side} done in {time.perf_counter() - t0:.1f} s")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    ref, ours = results["reference"], results["ours"]
    print()
    rows = []
    for i, (r, o) in enumerate(zip(ref["epochs"], ours["epochs"]), 1):
        rows.append((i, r["train"], r["eval"], r["total"], o["train"], o["eval"], o["total"], f"{r['total'] / o['total']:.2f}x"))
    print_table(["epoch", "ref train", "ref eval x3", "ref total", "ours train", "ours val+ckpt", "ours total",
                 "ref/ours"], rows)
    print()
    per_ref, per_ours = _mean(ref["epochs"], "total"), _mean(ours["epochs"], "total")
    tr_ref, tr_ours = _mean(ref["epochs"], "train"), _mean(ours["epochs"], "train")
    print_table(["", "reference", "ours", "ratio ref/ours"], [
        ("seconds per epoch (mean)", per_ref, per_ours, f"{per_ref / per_ours:.2f}x"),
        ("  of which training steps", tr_ref, tr_ours, f"{tr_ref / tr_ours:.2f}x"),
        ("end of run (after the epochs)", ref["end"], ours["end"], f"{ref['end'] / ours['end']:.2f}x"),
        ("optimizer steps per epoch", ref["steps"], ours["steps"], ""),
        ("val AUC after last epoch", ref["epochs"][-1]["val_auc"], ours["epochs"][-1]["val_auc"] or float("nan"), ""),
    ])
    print(f"\nRESULT {args.dataset} {args.model} {device.type}: {per_ref:.2f} s/epoch reference, {per_ours:.2f} s/epoch "
          f"ours -> ratio (reference / ours) {per_ref / per_ours:.2f}x "
          f"(training steps only {tr_ref / tr_ours:.2f}x)")


if __name__ == "__main__":
    main()
