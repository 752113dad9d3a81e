"""Zero-shot check: `vlm zero-shot` (run as a user runs it) against open_clip's own reference pipeline.

Both sides use the SAME model: a seeded, random-initialised open_clip architecture (default ViT-B-32)
whose `state_dict()` is saved with `torch.save` to W.pt; no pretrained CLIP weights are needed.

OURS       the command line, in a subprocess, exactly as a user types it:
           `vlm zero-shot FLAG --model ViT-B-32 --weights W.pt --style clip --save-scores S.npy
           --data-root ROOT --cache-dir (fresh) --runs-dir (fresh) --device DEV --json`.
           The split is resident as uint8 and preprocessed as tensor ops (bicubic resize, grey->RGB,
           CLIP mean/std); the text classifier comes from the shipped prompt file.
REFERENCE  open_clip's pipeline: each image of medmnist's dataset class with `as_rgb=True` (a PIL
           image, grey -> RGB) -> the `preprocess` transform of `open_clip.create_model_and_transforms`
           (PIL bicubic resize to 224, center crop, ToTensor, Normalize) -> `model.encode_image`,
           L2-normalised. The classifier is `open_clip.build_zero_shot_classifier`, called once per class
           with one constant "template" per prompt, so that it embeds exactly the prompts that
           `load_prompt_set(FLAG).expand(STYLE)` lists for that class (the prompt file mixes templates,
           several class names and explicit prompts; build_zero_shot_classifier's math — normalise each
           prompt embedding, average, renormalise — is applied to the same lists). Scores:
           softmax(model.logit_scale.exp() * image @ W).

Reported: argmax agreement (threshold >= 98%), AUC of each side and |dAUC| (threshold <= 0.01; AUC via
`vlm.evaluate.auc_score`, cross-checked with `medmnist.evaluator.getAUC`), max |d score|, plus the
diagnostics that explain the differences: the text classifiers are compared directly (they should
agree to float precision), then the preprocessed pixels (the resize is the only step that differs),
the image-embedding cosines and each disagreement's class margin. Exits 1 if a threshold fails,
2 if the CLI fails.

    python benchmarks/zeroshot_reference.py                       # breastmnist test, ViT-B-32, style clip
    python benchmarks/zeroshot_reference.py --out-dir /tmp/zsref --keep --device cpu
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from _common import add_common_args, print_table, setup

AGREEMENT_MIN = 0.98
DAUC_MAX = 0.01
RAISED_LOGIT_SCALE = 100.0  # CLIP's clamp for a trained model's logit scale


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="breastmnist", help="a 2D single-label MedMNIST flag (default: breastmnist)")
    p.add_argument("--model", default="ViT-B-32", help="open_clip architecture (default: ViT-B-32)")
    p.add_argument("--style", default="clip", help="prompt style of the shipped prompt file (default: clip)")
    p.add_argument("--split", default="test", help="split to score (default: test)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random initialisation (default: 0)")
    p.add_argument("--weights", type=Path, default=None,
                   help="reuse a state dict saved from the seeded model instead of creating W.pt")
    p.add_argument("--batch-size", type=int, default=64, help="reference encoding batch size (default: 64)")
    p.add_argument("--out-dir", type=Path, default=None, help="working folder (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the working folder (W.pt, scores, cache, runs)")
    add_common_args(p)
    return p.parse_args(argv)


@contextlib.contextmanager
def quiet_root_logger():
    """open_clip logs 'No pretrained weights loaded' on the root logger for a random init."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def vlm_command() -> list[str]:
    exe = shutil.which("vlm")
    return [exe] if exe else [sys.executable, "-c", "from cli import app; app()"]


def run_cli(args: argparse.Namespace, weights: Path, work: Path, device: torch.device) -> tuple[dict, Path, float, list[str]]:
    scores_file = work / "S.npy"
    cmd = [*vlm_command(), "zero-shot", args.dataset, "--model", args.model, "--weights", str(weights),
           "--style", args.style, "--split", args.split, "--save-scores", str(scores_file),
           "--data-root", str(args.data_root), "--cache-dir", str(work / "cache"), "--runs-dir", str(work / "runs"),
           "--device", device.type, "--json"]
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        print("CLI failed:", " ".join(cmd), f"(exit {proc.returncode})")
        print(proc.stderr.strip()[-3000:])
        sys.exit(2)
    return json.loads(proc.stdout), scores_file, seconds, cmd


def reference_embeddings(model, preprocess, dataset, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """PIL image per sample -> open_clip preprocess -> encode_image -> L2-normalise (fp32)."""
    pixels = torch.stack([dataset[i][0] for i in range(len(dataset))])
    feats = []
    with torch.no_grad():
        for start in range(0, len(pixels), batch_size):
            x = pixels[start:start + batch_size].to(device)
            feats.append(F.normalize(model.encode_image(x).float(), dim=-1))
    return torch.cat(feats), pixels


def reference_classifier(model, tokenizer, prompt_lists: list[list[str]], device: torch.device) -> torch.Tensor:
    """open_clip.build_zero_shot_classifier per class over exactly that class's prompts -> (E, K)."""
    from open_clip import build_zero_shot_classifier

    columns = []
    for i, prompts in enumerate(prompt_lists):
        templates = [(lambda _name, p=p: p) for p in prompts]  # one constant "template" per prompt
        columns.append(build_zero_shot_classifier(model, tokenizer, [f"class{i}"], templates,
                                                  num_classes_per_batch=None, device=device))
    return torch.cat(columns, dim=1).float()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = setup(args, f"zero-shot check: `vlm zero-shot` vs open_clip's reference pipeline "
                         f"({args.dataset} {args.split}, {args.model} random-init seed {args.seed}, style {args.style})")
    import medmnist
    import open_clip
    from medmnist.evaluator import getAUC

    from vlm.data import load_split
    from vlm.embeddings import image_embeddings
    from vlm.encoders import load_encoder
    from vlm.evaluate import auc_score
    from vlm.prompts import load_prompt_set
    from vlm.tasks import get_task
    from vlm.zeroshot import text_classifier

    task = get_task(args.dataset)
    if task.is_3d or task.kind == "multi-label":
        sys.exit(f"{args.dataset}: this check covers 2D single-label datasets.")
    work = args.out_dir or Path(tempfile.mkdtemp(prefix="zsref_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        # ---------------------------------------------------------------- the model, saved to W.pt
        torch.manual_seed(args.seed)
        with quiet_root_logger():
            model, _, preprocess = open_clip.create_model_and_transforms(args.model)
        weights = args.weights or work / "W.pt"
        if args.weights:
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        else:
            torch.save(model.state_dict(), weights)
        model = model.to(device).eval()
        tokenizer = open_clip.get_tokenizer(args.model)
        logit_scale = float(model.logit_scale.exp().item())
        print(f"model: {args.model} random-init (torch.manual_seed({args.seed})), logit_scale = {logit_scale:.4f} "
              f"(log(1/0.07) init), weights {weights} ({weights.stat().st_size / 2**20:.0f} MiB)")

        # ---------------------------------------------------------------- ours: the CLI
        out, scores_file, cli_seconds, cmd = run_cli(args, weights, work, device)
        ours = torch.from_numpy(np.load(scores_file)).double()
        result = out["results"][0]
        print(f"ours:  {' '.join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))}")
        print(f"       {cli_seconds:.1f} s wall; images encoded {out['images_encoded']}; AUC {result['auc']:.4f} "
              f"ACC {result['acc']:.4f} (CLI JSON)")

        # ---------------------------------------------------------------- reference: open_clip
        cls = getattr(medmnist, task.python_class)
        dataset = cls(split=args.split, transform=preprocess, as_rgb=True, root=str(args.data_root), size=28)
        labels = torch.from_numpy(np.asarray(dataset.labels).reshape(len(dataset), -1).astype(np.int64))
        t0 = time.perf_counter()
        ref_emb, ref_pixels = reference_embeddings(model, preprocess, dataset, args.batch_size, device)
        prompt_set = load_prompt_set(args.dataset)
        prompt_lists = prompt_set.expand(args.style)
        w_ref = reference_classifier(model, tokenizer, prompt_lists, device)
        ref_cos = ref_emb @ w_ref
        ref = (logit_scale * ref_cos).softmax(dim=-1).double().cpu()
        ref_seconds = time.perf_counter() - t0
        print(f"ref:   medmnist.{task.python_class}(as_rgb=True, transform=open_clip preprocess) -> encode_image; "
              f"build_zero_shot_classifier over {[len(p) for p in prompt_lists]} prompts per class; "
              f"{ref_seconds:.1f} s")
        print()

        # ---------------------------------------------------------------- headline numbers
        y = labels.numpy()
        agree = (ours.argmax(1) == ref.argmax(1)).double().mean().item()
        auc_ours, auc_ref = auc_score(task, y, ours.numpy()), auc_score(task, y, ref.numpy())
        auc_ours_mm = getAUC(y, ours.numpy(), task.kind if task.kind != "ordinal" else "ordinal-regression")
        auc_ref_mm = getAUC(y, ref.numpy(), task.kind if task.kind != "ordinal" else "ordinal-regression")
        d_auc = abs(auc_ours - auc_ref)
        d_score = (ours - ref).abs().max().item()
        n = len(y)
        n_dis = int((ours.argmax(1) != ref.argmax(1)).sum())
        ok_agree, ok_auc = agree >= AGREEMENT_MIN, d_auc <= DAUC_MAX
        print(f"AGREEMENT ({n} {args.split} images, model's own logit_scale {logit_scale:.2f}):")
        print_table(["metric", "ours (CLI)", "reference", "difference", "threshold", "pass"], [
            ("argmax agreement", f"{agree:.2%}", "", f"{n_dis} of {n} differ", f">= {AGREEMENT_MIN:.0%}",
             "yes" if ok_agree else "NO"),
            ("AUC (vlm.evaluate)", f"{auc_ours:.4f}", f"{auc_ref:.4f}", f"|dAUC| = {d_auc:.4f}", f"<= {DAUC_MAX}",
             "yes" if ok_auc else "NO"),
            ("AUC (medmnist getAUC)", f"{auc_ours_mm:.4f}", f"{auc_ref_mm:.4f}", f"{abs(auc_ours_mm - auc_ref_mm):.4f}",
             "", ""),
            ("max |d score|", "", "", f"{d_score:.2e}", "", ""),
            ("score range (last column)", f"{ours[:, -1].min():.4f}..{ours[:, -1].max():.4f}",
             f"{ref[:, -1].min():.4f}..{ref[:, -1].max():.4f}", "", "", ""),
        ])
        print()

        # ---------------------------------------------------------------- why they differ
        enc = load_encoder(args.model, weights=weights, device=device)
        data = load_split(args.dataset, args.split, 28, args.data_root)
        w_ours = text_classifier(enc, prompt_set, args.style).float()
        emb, encoded = image_embeddings(enc, data, cache_dir=work / "cache")  # the CLI's cached embeddings
        ours_cos = (emb.float() @ w_ours).cpu()
        recomputed = (enc.logit_scale * ours_cos).softmax(dim=-1).double()
        our_pixels = enc.preprocess(data.images, device).cpu()
        std = torch.tensor(enc.preprocess.std).view(1, 3, 1, 1)
        pix = ((our_pixels - ref_pixels).abs() * std)  # back in [0, 1] pixel units
        grey = data.images.float().div(255)
        aa = F.interpolate(grey, size=(enc.preprocess.size,) * 2, mode="bicubic", align_corners=False,
                           antialias=True).clamp(0, 1)
        ref_grey = (ref_pixels[:, :1] * std[:, :1] + torch.tensor(enc.preprocess.mean[0])).clamp(0, 1)
        pix_aa = (aa - ref_grey).abs()
        # which torch resize our preprocessing is (checked, not assumed): with or without antialias
        our_grey = (our_pixels[:, :1] * std[:, :1] + torch.tensor(enc.preprocess.mean[0])).clamp(0, 1)
        plain = F.interpolate(grey, size=(enc.preprocess.size,) * 2, mode="bicubic", align_corners=False).clamp(0, 1)
        ours_aa = (our_grey - aa).abs().max() < (our_grey - plain).abs().max()
        cos = (F.normalize(emb.float().cpu(), dim=-1) * ref_emb.cpu()).sum(-1)
        # margin: the reference's top-1 minus top-2 class cosine; shift: the most any difference of two
        # class cosines moved between the pipelines (for a binary task: how far the margin moved)
        ref_cos = ref_cos.cpu()
        top2 = ref_cos.topk(2, dim=-1).values
        ref_margin = top2[:, 0] - top2[:, 1]
        delta = ours_cos - ref_cos
        shift = delta.max(dim=-1).values - delta.min(dim=-1).values
        print("WHY THE SCORES DIFFER (only the resize differs between the two pipelines):")
        print(f"  text classifier:  max |W_ours - W_ref| = {(w_ours.cpu() - w_ref.cpu()).abs().max():.2e} "
              f"(same prompts, same math: identical to float precision)")
        print(f"  image embeddings: read back from the CLI's cache ({encoded} images re-encoded); "
              f"scores recomputed from them match S.npy to {(recomputed - ours).abs().max():.1e}")
        print(f"  pixels after preprocessing, in [0,1] units: max |ours - PIL| = {pix.max():.4f} "
              f"({pix.max() * 255:.1f} grey levels), mean {pix.mean():.5f}")
        if enc.preprocess.resampler == "pil":
            print(f"     ours: {enc.preprocess.interpolation} resize {data.images.shape[-1]}->{enc.preprocess.size} "
                  f"as PIL's own fixed-point resampling redone in tensor ops (vlm.preprocess.pil_resize)")
        else:
            print(f"     ours: {enc.preprocess.interpolation} resize {data.images.shape[-1]}->{enc.preprocess.size} as "
                  + ("torch F.interpolate(antialias=True) (the PIL-style a = -0.5 kernel)" if ours_aa else
                     "torch F.interpolate without antialias (bicubic a = -0.75 kernel)")
                  + ", in float, clamped to [0, 1], never rounded")
        print("     PIL:  Image.resize bicubic (a = -0.5 kernel, fixed-point weights), rounded to uint8 before ToTensor")
        print(f"     (for comparison, torch bicubic with antialias=True, the PIL-style kernel: max |d| = {pix_aa.max():.4f}"
              f" = {pix_aa.max() * 255:.1f} grey levels: PIL up to its uint8 rounding and fixed-point weights)")
        print(f"  image-embedding cosine ours vs reference: min {cos.min():.6f}, mean {cos.mean():.6f}")
        print(f"  class margin (top-1 minus top-2 cosine of the reference): median {ref_margin.median():.2e} "
              f"(range {ref_margin.min():.2e}..{ref_margin.max():.2e}); "
              f"shift between pipelines median {shift.median():.2e}, max {shift.max():.2e}")
        if n_dis:
            idx = torch.nonzero(ours.argmax(1) != ref.argmax(1)).flatten()
            print(f"  the {n_dis} disagreement(s) are images whose reference margin is below the pipeline shift: "
                  + ", ".join(f"#{int(i)} margin {ref_margin[i]:.1e} shift {shift[i]:.1e}" for i in idx[:8])
                  + (" ..." if n_dis > 8 else ""))
        tied = (ref_margin < shift.max()).sum().item()
        print(f"  images whose reference margin is below the largest pipeline shift (the only ones whose argmax "
              f"could flip): {tied} of {n}")
        print(f"  random-init scores are nearly tied: softmax of {logit_scale:.1f} x a margin of "
              f"~{ref_margin.median():.0e} puts every score near 1/K, hence max |d score| ~ {logit_scale:.0f} x shift / 4")
        # A larger logit scale changes neither argmax nor the AUC (softmax is monotone in scale * margin):
        big_ours = (RAISED_LOGIT_SCALE * ours_cos).softmax(-1).double()
        big_ref = (RAISED_LOGIT_SCALE * ref_cos).softmax(-1).double()
        print(f"  with logit_scale raised to {RAISED_LOGIT_SCALE:.0f} (a trained CLIP's clamp): agreement "
              f"{(big_ours.argmax(1) == big_ref.argmax(1)).double().mean():.2%}, AUC ours {auc_score(task, y, big_ours.numpy()):.4f} "
              f"ref {auc_score(task, y, big_ref.numpy()):.4f}, max |d score| {(big_ours - big_ref).abs().max():.2e} "
              f"— agreement and AUC cannot change with the scale (argmax and ranks are scale-invariant); only the "
              f"score gap grows. The headline above uses the model's own scale.")
        print()
        verdict = "PASS" if ok_agree and ok_auc else "FAIL"
        print(f"RESULT: {verdict}: argmax agreement {agree:.2%} (>= {AGREEMENT_MIN:.0%}: {'yes' if ok_agree else 'no'}), "
              f"|dAUC| {d_auc:.4f} (<= {DAUC_MAX}: {'yes' if ok_auc else 'no'}), max |d score| {d_score:.2e}")
        return 0 if verdict == "PASS" else 1
    finally:
        if args.keep or args.out_dir:
            print(f"(working folder kept: {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
