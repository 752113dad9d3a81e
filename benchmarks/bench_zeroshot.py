"""Zero-shot speed: our pipeline against a CLIP_benchmark-style loop, the encoder's overhead, and
the `vlm prompts compare` cache speed-up. One process, same model, same data, same torch threads.

The model is a seeded random-initialised open_clip architecture (default ViT-B-32, 224 px) saved
with `torch.save(model.state_dict())` to W.pt and loaded by both sides from that file. Loading it
is outside every in-process timing (CLIP_benchmark would load it once per run on top).

(a) one prompt set and a sweep of --sets prompt sets (default 10; files written to a temp folder:
    set_00 holds the shipped breastmnist `clip` templates, the others other ultrasound templates
    over the same class names), on --split (default test, 156 images):
    OURS       `vlm.zeroshot.run_zero_shot(..., encoder=enc, prompts=FILE, styles="clip")` once per
               set, the first call on an empty embedding cache (cold: it encodes the images and
               writes the cache; its time is the 1-set cold time), the next ones warm (the images
               come from the on-disk cache; their median is the 1-set warm time); and
               `vlm.zeroshot.compare_prompts(..., [10 files])` on an empty cache (cold) and again
               (warm). Both compute AUC/ACC with --bootstrap (default 1,000) CI rounds;
               run_zero_shot also writes a run record per set.
    CLIP_BENCHMARK-STYLE, written the way LAION-AI/CLIP_benchmark runs `zeroshot_classification`
               (clip_benchmark/cli.py + metrics/zeroshot_classification.py): per run a dataset with
               a per-image PIL `transform` = the model's preprocess (here medmnist's dataset class,
               `as_rgb=True`), a `torch.utils.data.DataLoader(batch_size, shuffle=False,
               num_workers)`, `zero_shot_classifier` built for the run (class-specific prompt lists,
               as its CuPL path takes them), `run_classification` re-encoding every image,
               logits = 100 * image @ W, then acc1 and balanced accuracy (+ the AUC, so that both
               sides compute the same number). tqdm bars and the results JSON are left out.
    Set i runs on both sides back to back (interleaved), so that a change in machine load hits both
    alike. Printed: seconds for 1 set and for --sets sets on each side and the ratios
    CLIP_benchmark-style / ours, for our cold (first run) and warm cache separately.
(b) encoding throughput, cache off: images/s of `vlm.embeddings.image_embeddings(enc, split,
    use_cache=False)` (slices of the resident uint8 split, tensor preprocessing, encode, normalise)
    against a plain loop of `model.encode_image(x)` over the same batches already preprocessed
    (same autocast: bf16 on CUDA, fp32 on CPU). The ratio is the pipeline's overhead.
(c) `vlm prompts compare FLAG --model M --weights W.pt --prompts A.yaml B.yaml --split val` run
    twice as a subprocess with the same fresh --cache-dir, the second time with two NEW prompt files:
    both wall times (process start, model load and weights hash included) and whether the second
    run encoded any image (the cache folder tells: a new or rewritten .safetensors file means it
    did). The second must take under half the time of the first; the script then measures the
    pieces (start-up + imports, model load, text classifiers, image encoding) to show why or why not.

    python benchmarks/bench_zeroshot.py                       # all parts, breastmnist test
    python benchmarks/bench_zeroshot.py --parts a --device cuda
    python benchmarks/bench_zeroshot.py --parts b,c --limit 64
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from _common import Stopwatch, add_common_args, now, print_table, setup
from zeroshot_reference import quiet_root_logger, vlm_command

TEMPLATES = [  # the first three are the shipped breastmnist `clip` style
    "a breast ultrasound image of {label}.",
    "an ultrasound scan of the breast showing {label}.",
    "a grayscale sonogram of {label} in the breast.",
    "a photo of {label}.",
    "a medical image of {label}.",
    "a breast ultrasound showing {label}.",
    "an ultrasound image with {label}.",
    "a sonogram showing {label}.",
    "a low-resolution breast ultrasound of {label}.",
    "a B-mode ultrasound of {label}.",
    "a cropped ultrasound image of {label}.",
    "this breast ultrasound shows {label}.",
    "an example of {label} on breast ultrasound.",
    "a radiology image of {label}.",
    "a clinical breast ultrasound with {label}.",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="a,b,c", help="which parts to run: a, b, c or a comma list (default: a,b,c)")
    p.add_argument("--model", default="ViT-B-32", help="open_clip architecture (default: ViT-B-32)")
    p.add_argument("--weights", type=Path, default=None, help="state dict of --model to use instead of a fresh W.pt")
    p.add_argument("--seed", type=int, default=0, help="seed of the random initialisation (default: 0)")
    p.add_argument("--split", default="test", help="split for parts a and b (default: test)")
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N images of every split (ours and the CLI read a truncated copy of the "
                        ".npz file, the CLIP_benchmark-style loop a Subset of medmnist's dataset; part c's val too)")
    p.add_argument("--compare-split", default="val", help="split of part c's `vlm prompts compare` (default: val)")
    p.add_argument("--sets", type=int, default=10, help="prompt sets in the sweep (default: 10)")
    p.add_argument("--batch-size", type=int, default=256,
                   help="images per forward pass, both sides (default: 256, ours' default; CLIP_benchmark's is 64)")
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader workers of the CLIP_benchmark-style loop (default: 0; CLIP_benchmark's is 4)")
    p.add_argument("--bootstrap", type=int, default=1000, help="our bootstrap CI rounds (default: 1000, the CLI's)")
    p.add_argument("--out-dir", type=Path, default=None, help="working folder (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the working folder")
    add_common_args(p)
    args = p.parse_args(argv)
    args.parts = {x.strip() for x in args.parts.split(",") if x.strip()}
    if not args.parts <= {"a", "b", "c"}:
        p.error("--parts takes a, b and/or c")
    return args


FLAG = "breastmnist"


# ----------------------------------------------------------------------------- set-up helpers
def make_weights(args: argparse.Namespace, work: Path) -> Path:
    if args.weights:
        return args.weights
    import open_clip

    torch.manual_seed(args.seed)
    with quiet_root_logger():
        model = open_clip.create_model(args.model)
    path = work / "W.pt"
    torch.save(model.state_dict(), path)
    return path


def make_data_root(args: argparse.Namespace, work: Path) -> Path:
    if not args.limit:
        return args.data_root
    root = work / "data"
    root.mkdir(exist_ok=True)
    with np.load(args.data_root / f"{FLAG}.npz") as npz:
        arrays = {k: npz[k][: args.limit] for k in npz.files}
    np.savez(root / f"{FLAG}.npz", **arrays)
    return root


def write_prompt_sets(folder: Path, n: int, offset: int = 0) -> list[Path]:
    """n breastmnist prompt files, one `clip` style each: 3 templates over the shipped class names."""
    from vlm.prompts import load_prompt_set

    shipped = load_prompt_set(FLAG)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(offset, offset + n):
        if i < len(TEMPLATES) // 3:  # sets 0-4: disjoint triples (set 0 = the shipped clip style)
            templates = TEMPLATES[3 * i:3 * i + 3]
        else:  # sets 5-...: other combinations
            templates = [TEMPLATES[(i + 5 * j) % len(TEMPLATES)] for j in range(3)]
        doc = {"dataset": FLAG, "classes": shipped.classes,
               "names": {c: list(v) for c, v in shipped.names.items()},
               "styles": {"clip": {"description": f"variant {i}", "templates": templates}}}
        path = folder / f"set_{i:02d}.yaml"
        path.write_text(json.dumps(doc, indent=1))  # JSON is YAML
        files.append(path)
    return files


# ----------------------------------------------------------------------------- CLIP_benchmark-style loop
def zero_shot_classifier(model, tokenizer, classnames, templates, device, amp):
    """As clip_benchmark.metrics.zeroshot_classification.zero_shot_classifier (dict = per-class prompts)."""
    with torch.no_grad(), amp():
        weights = []
        for classname in classnames:
            texts = templates[classname] if isinstance(templates, dict) else [t.format(c=classname) for t in templates]
            emb = model.encode_text(tokenizer(texts).to(device))
            emb = F.normalize(emb, dim=-1).mean(dim=0)
            weights.append(emb / emb.norm())
        return torch.stack(weights, dim=1).to(device)


def run_classification(model, classifier, dataloader, device, amp):
    """As clip_benchmark's run_classification: encode every image of the loader, logits = 100 * img @ W."""
    pred, true = [], []
    with torch.no_grad():
        for images, target in dataloader:
            images, target = images.to(device), target.to(device)
            with amp():
                feats = F.normalize(model.encode_image(images), dim=-1)
                logits = 100.0 * feats @ classifier
            true.append(target.cpu())
            pred.append(logits.float().cpu())
    return torch.cat(pred), torch.cat(true)


def clip_benchmark_run(model, preprocess, tokenizer, prompts: dict[str, list[str]], classnames: list[str],
                       data_root: Path, split: str, batch_size: int, workers: int, device: torch.device,
                       limit: int | None = None) -> dict:
    """One CLIP_benchmark-style zero-shot run: dataset + DataLoader, classifier, classification, metrics."""
    import medmnist
    from medmnist.evaluator import getAUC
    from sklearn.metrics import balanced_accuracy_score

    amp = (lambda: torch.autocast("cuda", dtype=torch.float16)) if device.type == "cuda" else nullcontext
    cls = getattr(medmnist, medmnist.INFO[FLAG]["python_class"])
    dataset = cls(split=split, transform=preprocess, target_transform=lambda t: int(t[0]), as_rgb=True,
                  root=str(data_root), size=28)
    if limit:  # medmnist's classes assert the official split sizes: subset the full file instead
        dataset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    classifier = zero_shot_classifier(model, tokenizer, classnames, prompts, device, amp)
    logits, target = run_classification(model, classifier, loader, device, amp)
    pred = logits.argmax(dim=1)
    return {"acc1": (pred == target).float().mean().item(),
            "mean_per_class_recall": balanced_accuracy_score(target.numpy(), pred.numpy()),
            "auc": getAUC(target.numpy(), logits.softmax(dim=1).numpy(), "binary-class"), "n": len(dataset)}


# ----------------------------------------------------------------------------- parts
def part_a(args, device, enc, weights: Path, data_root: Path, work: Path) -> str:
    import open_clip

    from vlm.prompts import load_prompt_set
    from vlm.zeroshot import compare_prompts, run_zero_shot

    files = write_prompt_sets(work / "prompts", args.sets)
    n_sets = len(files)
    with quiet_root_logger():
        model, _, preprocess = open_clip.create_model_and_transforms(args.model, pretrained=str(weights), device=device)
    model.eval()
    tokenizer = open_clip.get_tokenizer(args.model)
    common = dict(split=args.split, data_root=data_root, batch_size=args.batch_size, n_bootstrap=args.bootstrap)

    # warm-up (untimed): one tiny forward pass each, so that neither side pays first-call costs
    with torch.inference_mode():
        enc.encode_images(torch.zeros(1, 3, enc.preprocess.size, enc.preprocess.size, device=device))
        model.encode_image(torch.zeros(1, 3, enc.preprocess.size, enc.preprocess.size, device=device))

    print(f"(a) zero-shot evaluation, 1 and {n_sets} prompt sets ({FLAG} {args.split}, {args.model} 224 px, "
          f"batch {args.batch_size}, our bootstrap {args.bootstrap} rounds)")
    # Interleaved, so that a change in machine load hits both sides alike: set i with ours
    # (run_zero_shot; the first call on an empty cache), then set i CLIP_benchmark-style.
    cache_a = work / "cache_a"
    classnames = load_prompt_set(files[0]).classes
    ours_loop, encoded, auc_ours, base, base_res = [], [], None, [], None
    for i, f in enumerate(files):
        with Stopwatch(device) as sw:
            res = run_zero_shot(FLAG, args.model, encoder=enc, prompts=f, styles="clip", cache_dir=cache_a,
                                runs_dir=work / "runs", device=device.type, **common)[0]
        ours_loop.append(sw.seconds)
        encoded.append(res["images_encoded"])
        auc_ours = res["auc"] if i == 0 else auc_ours
        # CLIP_benchmark-style: every run rebuilds the loader and the classifier and re-encodes every image
        prompts = dict(zip(classnames, load_prompt_set(f).expand("clip")))
        with Stopwatch(device) as sw:
            res = clip_benchmark_run(model, preprocess, tokenizer, prompts, classnames, args.data_root, args.split,
                                     args.batch_size, args.workers, device, args.limit)
        base.append(sw.seconds)
        base_res = res if base_res is None else base_res
    # ours: compare_prompts over all sets, cold (empty cache) then warm
    cache_b = work / "cache_b"
    with Stopwatch(device) as cmp_cold:
        rows = compare_prompts(FLAG, args.model, files, encoder=enc, cache_dir=cache_b, device=device.type, **common)
    with Stopwatch(device) as cmp_warm:
        compare_prompts(FLAG, args.model, files, encoder=enc, cache_dir=cache_b, device=device.type, **common)

    one_cold = ours_loop[0]
    base_one = statistics.median(base)  # every CLIP_benchmark-style run does the same work
    one_warm = statistics.median(ours_loop[1:]) if n_sets > 1 else float("nan")
    n = base_res["n"]
    print(f"    ours: images encoded per run_zero_shot call {encoded} (cold, then warm cache); "
          f"set_00 AUC ours {auc_ours:.4f} vs CLIP_benchmark-style {base_res['auc']:.4f} ({n} images; the two "
          f"differ only by the resize, see zeroshot_reference.py)")
    print(f"    seconds per set, interleaved: CLIP_benchmark-style {', '.join(f'{t:.1f}' for t in base)}")
    print(f"                                  ours (run_zero_shot)  {', '.join(f'{t:.1f}' for t in ours_loop)}")
    print_table(
        ["workload", "CLIP_benchmark-style [s]", "ours cold [s]", "ours warm [s]", "ratio cold", "ratio warm"],
        [
            ("1 prompt set (run_zero_shot)", base_one, one_cold, one_warm, f"{base_one / one_cold:.2f}x",
             f"{base_one / one_warm:.2f}x"),
            (f"{n_sets} sets, compare_prompts", sum(base), cmp_cold.seconds, cmp_warm.seconds,
             f"{sum(base) / cmp_cold.seconds:.2f}x", f"{sum(base) / cmp_warm.seconds:.2f}x"),
            (f"{n_sets} sets, {n_sets} x run_zero_shot", sum(base), sum(ours_loop), "-",
             f"{sum(base) / sum(ours_loop):.2f}x", "-"),
        ])
    print(f"    ratio = CLIP_benchmark-style seconds / ours (> 1: ours is faster). Cold = starting from an empty "
          f"embedding cache (ours encodes the images once, then reads them from the cache): the {n_sets} x "
          f"run_zero_shot loop is one cold call and {n_sets - 1} warm ones, the first of which gives the 1-set cold "
          f"time and whose median gives the 1-set warm time; CLIP_benchmark-style 1 set = the median of its {n_sets} "
          f"runs (identical work each). compare_prompts: one call over all {n_sets} files, "
          f"ranking {len(rows)} rows (best AUC {rows[0]['auc']:.4f}).")
    print()
    return (f"(a) CLIP_benchmark-style / ours: 1 set {base_one / one_cold:.2f}x cold, {base_one / one_warm:.2f}x warm; "
            f"{n_sets} sets (compare_prompts) {sum(base) / cmp_cold.seconds:.2f}x cold, "
            f"{sum(base) / cmp_warm.seconds:.2f}x warm")


def part_b(args, device, enc, data_root: Path) -> str:
    from vlm.data import load_split
    from vlm.embeddings import image_embeddings

    def autocast():  # what image_embeddings does: bf16 autocast on CUDA, plain fp32 on CPU
        return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    split = load_split(FLAG, args.split, 28, data_root)
    n = len(split)
    bs = args.batch_size
    images = split.images.to(device) if device.type == "cuda" else split.images
    batches = [enc.preprocess(images[i:i + bs], device) for i in range(0, n, bs)]  # plain loop: pre-made input
    with torch.inference_mode(), autocast():  # warm-up, untimed
        enc.model.encode_image(batches[0][:2])
    with Stopwatch(device) as ours:
        emb, encoded = image_embeddings(enc, split, batch_size=bs, use_cache=False)
    assert encoded == n
    with Stopwatch(device) as plain:
        with torch.inference_mode(), autocast():
            for x in batches:
                enc.model.encode_image(x)
    ours_ips, plain_ips = n / ours.seconds, n / plain.seconds
    print(f"(b) encoding throughput, cache off ({n} {args.split} images, {args.model} at {enc.preprocess.size} px, "
          f"batch {bs}, {'bf16 autocast' if device.type == 'cuda' else 'fp32'})")
    print_table(["contender", "seconds", "images/s"], [
        ("vlm.embeddings.image_embeddings (preprocess + encode + normalise)", ours.seconds, f"{ours_ips:.1f}"),
        ("plain model.encode_image loop (inputs preprocessed beforehand)", plain.seconds, f"{plain_ips:.1f}"),
    ])
    print(f"    pipeline / plain throughput: {ours_ips / plain_ips:.3f} (overhead of the pipeline "
          f"{(plain_ips / ours_ips - 1) * 100:+.1f}% time, preprocessing on the fly included)")
    print()
    return f"(b) {ours_ips:.1f} vs {plain_ips:.1f} images/s, pipeline / plain {ours_ips / plain_ips:.3f}"


def _cache_state(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.glob("*.safetensors")} \
        if folder.is_dir() else {}


def part_c(args, device, weights: Path, data_root: Path, work: Path) -> str:
    first = write_prompt_sets(work / "compare", 2, offset=1)      # A, B
    second = write_prompt_sets(work / "compare", 2, offset=3)     # new files C, D
    cache = work / "cache_cli"
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    runs = []
    for files in (first, second):
        cmd = [*vlm_command(), "prompts", "compare", FLAG, "--model", args.model, "--weights", str(weights),
               "--prompts", *map(str, files), "--split", args.compare_split, "--data-root", str(data_root),
               "--cache-dir", str(cache), "--device", device.type, "--json"]
        before = _cache_state(cache)
        t0 = now(device)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        seconds = now(device) - t0
        if proc.returncode != 0:
            sys.exit(f"vlm prompts compare failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
        after = _cache_state(cache)
        wrote = sorted(k for k, v in after.items() if before.get(k) != v)
        ranking = json.loads(proc.stdout)["ranking"]
        runs.append((cmd, seconds, wrote, ranking))
    print(f"(c) `vlm prompts compare` twice, same --cache-dir, second time with new prompt files "
          f"({FLAG} {args.compare_split}, {args.model}, subprocess wall time incl. start-up, model load, weights hash)")
    for i, (cmd, seconds, wrote, ranking) in enumerate(runs, 1):
        shown = " ".join(Path(c).name if (j == 0 or c.endswith((".yaml", ".pt"))) else c for j, c in enumerate(cmd))
        print(f"    run {i}: {seconds:.1f} s  encoded images: {'yes (wrote ' + ', '.join(wrote) + ')' if wrote else 'no (cache file unchanged)'}"
              f"  best: {Path(ranking[0]['prompts']).name} AUC {ranking[0]['auc']:.4f}")
        print(f"           {shown}")
    t1, t2 = runs[0][1], runs[1][1]
    ok = t2 < 0.5 * t1 and not runs[1][2]
    print(f"    second / first = {t2 / t1:.2f} -> {'OK: the second run took under half the time of the first and encoded no image' if ok else 'NOT MET: the second run should take under half the time of the first and encode nothing'}")
    # Where a run's time goes, measured here piece by piece: what the cache removes is only the encoding.
    from vlm.data import load_split
    from vlm.embeddings import image_embeddings
    from vlm.encoders import load_encoder
    from vlm.files import _digest_cached
    from vlm.prompts import load_prompt_set
    from vlm.zeroshot import text_classifier

    t0 = now(device)
    subprocess.run([sys.executable, "-c", "import cli, open_clip, vlm.zeroshot"], check=True, env=env)
    t_import = now(device) - t0
    _digest_cached.cache_clear()  # count the weights hash, as a fresh process pays it
    with Stopwatch(device) as t_load:
        enc = load_encoder(args.model, weights=weights, device=device)
    with Stopwatch(device) as t_text:
        for f in second:
            ps = load_prompt_set(f, dataset=FLAG)
            for style in ps.style_names:
                text_classifier(enc, ps, style)
    split = load_split(FLAG, args.compare_split, 28, data_root)
    with Stopwatch(device) as t_enc:
        image_embeddings(enc, split, use_cache=False)
    fixed = t_import + t_load.seconds + t_text.seconds
    print(f"    where the time goes (measured separately in this process): python start-up + imports {t_import:.1f} s, "
          f"model build + weights load + hash {t_load.seconds:.1f} s, text classifiers of 2 files "
          f"{t_text.seconds:.1f} s (the text tower runs 77-token sequences) = {fixed:.1f} s paid by every run; "
          f"encoding the {len(split)} {args.compare_split} images, the only part the cache removes, {t_enc.seconds:.1f} s. "
          f"The second run can take under half of the first only when the encoding costs more than "
          f"everything else (a larger split, a bigger model, a slower device).")
    print()
    return (f"(c) prompts compare {t1:.1f} s then {t2:.1f} s ({t2 / t1:.2f}, second encoded "
            f"{'images' if runs[1][2] else 'nothing'}): {'under half: met' if ok else 'NOT under half'}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = setup(args, f"zero-shot speed: ours vs CLIP_benchmark-style ({FLAG}, {args.model} random-init, "
                         f"parts {','.join(sorted(args.parts))})")
    from vlm.encoders import load_encoder

    work = args.out_dir or Path(tempfile.mkdtemp(prefix="bench_zs_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        weights = make_weights(args, work)
        data_root = make_data_root(args, work)
        enc = load_encoder(args.model, weights=weights, device=device) if args.parts & {"a", "b"} else None
        summary = []
        if "a" in args.parts:
            summary.append(part_a(args, device, enc, weights, data_root, work))
        if "b" in args.parts:
            summary.append(part_b(args, device, enc, data_root))
        if "c" in args.parts:
            summary.append(part_c(args, device, weights, data_root, work))
        print("RESULT: " + "; ".join(summary))
    finally:
        if args.keep or args.out_dir:
            print(f"(working folder kept: {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
