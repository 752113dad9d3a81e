"""Evaluator time: `vlm.evaluate.evaluate` (bootstrap CIs) against the same computation with scikit-learn.

On the same synthetic, seeded scores (binary, 9-class and 14-label, N = 10,000 each by default;
scores rounded to 4 decimals so that ties occur), both sides compute MedMNIST's AUC and ACC
(`medmnist.evaluator.getAUC/getACC` definitions) and percentile 95% bootstrap CIs of both:

OURS     one call `evaluate(kind, labels, scores, n_bootstrap=ROUNDS, seed=0)` on tensors on the device
         (it also returns per-class AUC/ACC, confusion matrix and balanced accuracy).
SKLEARN  the plain loop people write: the full-set point estimates, then ROUNDS times draw N indices
         with replacement (`numpy.random.default_rng(0).integers`), compute `roc_auc_score` per
         averaged column (binary: the last column; multi-class: one-vs-rest per class; multi-label:
         per label) and `accuracy_score` (per label for multi-label), then `numpy.percentile`.

The point estimates must agree to 1e-9 (checked; also against medmnist.evaluator itself). The CI
bounds are printed side by side: the two sides draw different resamples (torch vs numpy
generators), so the bounds agree only up to bootstrap noise. The ratio printed is sklearn / ours
in wall-clock seconds. With `--sklearn-rounds R` smaller than `--rounds`, the sklearn loop runs R
rounds and its time is extrapolated linearly to `--rounds` (said so in the output).

    python benchmarks/bench_evaluator.py
    python benchmarks/bench_evaluator.py --rounds 1000 --sklearn-rounds 200 --device cuda
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from _common import Stopwatch, add_common_args, print_table, setup

from vlm.evaluate import evaluate

CASES = (("binary", 2), ("multi-class", 9), ("multi-label", 14))
MEDMNIST_TASK = {"binary": "binary-class", "multi-class": "multi-class", "multi-label": "multi-label, binary-class"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000, help="samples per synthetic case (default: 10000)")
    p.add_argument("--rounds", type=int, default=1000, help="bootstrap rounds (default: 1000)")
    p.add_argument("--sklearn-rounds", type=int, default=None,
                   help="rounds the sklearn loop actually runs (default: --rounds); fewer -> time extrapolated linearly")
    p.add_argument("--cases", default="binary,multi-class,multi-label",
                   help="comma list of binary, multi-class, multi-label (default: all three)")
    p.add_argument("--seed", type=int, default=0, help="data and bootstrap seed (default: 0)")
    add_common_args(p)
    p.set_defaults(data_root=None)  # synthetic data: --data-root is accepted and unused
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- data
def synthetic(kind: str, k: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels (N, L) int64 and scores (N, K) float64 in MedMNIST's convention, rounded to 4 decimals."""
    rng = np.random.default_rng(seed)
    if kind == "binary":
        y = (rng.random(n) < 0.3).astype(np.int64)
        p = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.2 * y)))
        return y[:, None], np.round(np.stack([1 - p, p], axis=1), 4)
    if kind == "multi-class":
        y = rng.integers(0, k, n)
        logits = rng.normal(size=(n, k))
        logits[np.arange(n), y] += 1.5
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return y[:, None], np.round(e / e.sum(axis=1, keepdims=True), 4)
    prevalence = np.linspace(0.02, 0.30, k)
    y = (rng.random((n, k)) < prevalence).astype(np.int64)
    p = 1 / (1 + np.exp(-(rng.normal(size=(n, k)) + 1.0 * y)))
    return y, np.round(p, 4)


# ----------------------------------------------------------------------------- the scikit-learn loop
def sk_auc_acc(kind: str, y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """MedMNIST's AUC and ACC with scikit-learn (y (N, L), s (N, K))."""
    from sklearn.metrics import accuracy_score, roc_auc_score

    if kind == "binary":
        return roc_auc_score(y[:, 0], s[:, -1]), accuracy_score(y[:, 0], s[:, -1] > 0.5)
    if kind == "multi-class":
        auc = np.mean([roc_auc_score(y[:, 0] == c, s[:, c]) for c in range(s.shape[1])])
        return auc, accuracy_score(y[:, 0], s.argmax(axis=1))
    auc = np.mean([roc_auc_score(y[:, c], s[:, c]) for c in range(s.shape[1])])
    return auc, np.mean([accuracy_score(y[:, c], s[:, c] > 0.5) for c in range(s.shape[1])])


def sk_evaluate(kind: str, y: np.ndarray, s: np.ndarray, rounds: int, seed: int) -> dict:
    """Point estimates, then `rounds` bootstrap resamples in a Python loop; 95% percentile CIs."""
    import warnings

    t0 = time.perf_counter()
    auc, acc = sk_auc_acc(kind, y, s)
    t_point = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    n = len(y)
    aucs, accs = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a resample lacking a class: sklearn warns and returns nan
        for _ in range(rounds):
            idx = rng.integers(0, n, n)
            try:
                a, c = sk_auc_acc(kind, y[idx], s[idx])
            except ValueError:  # older scikit-learn raises on a resample lacking a class
                a, c = math.nan, sk_acc(kind, y[idx], s[idx])
            aucs.append(a)
            accs.append(c)
    aucs, accs = np.asarray(aucs, float), np.asarray(accs, float)
    ci = lambda v: tuple(np.percentile(v[np.isfinite(v)], [2.5, 97.5])) if np.isfinite(v).any() else None
    return {"auc": float(auc), "acc": float(acc), "auc_ci": ci(aucs), "acc_ci": ci(accs),
            "seconds_point": t_point, "seconds": time.perf_counter() - t0}


def sk_acc(kind: str, y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import accuracy_score

    if kind == "binary":
        return accuracy_score(y[:, 0], s[:, -1] > 0.5)
    if kind == "multi-class":
        return accuracy_score(y[:, 0], s.argmax(axis=1))
    return float(np.mean([accuracy_score(y[:, c], s[:, c] > 0.5) for c in range(s.shape[1])]))


# ----------------------------------------------------------------------------- main
def _fmt_ci(ci) -> str:
    return "none" if ci is None else f"[{ci[0]:.4f}, {ci[1]:.4f}]"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = setup(args, "bench_evaluator: vlm.evaluate.evaluate (ours) vs a scikit-learn bootstrap loop")
    sk_rounds = args.sklearn_rounds or args.rounds
    if sk_rounds > args.rounds:
        raise SystemExit("--sklearn-rounds must not exceed --rounds.")
    extrapolated = sk_rounds < args.rounds
    import sklearn
    from medmnist.evaluator import getACC, getAUC

    print(f"data:   synthetic, seed {args.seed}, N = {args.n} per case, scores rounded to 4 decimals (ties)")
    print(f"ours:   evaluate(kind, labels, scores, n_bootstrap={args.rounds}, seed={args.seed}) on {device.type} "
          f"tensors (float64), one timed call after a warm-up call")
    print(f"sklearn {sklearn.__version__}: point estimates + a Python loop of {sk_rounds} resamples "
          f"(roc_auc_score per column + accuracy_score) + numpy.percentile, on numpy arrays (CPU)"
          + (f"; its time EXTRAPOLATED LINEARLY from {sk_rounds} to {args.rounds} rounds" if extrapolated else ""))
    print("both:   MedMNIST definitions (binary: last column, ACC at > 0.5; multi-class: mean one-vs-rest AUC, "
          "argmax ACC; multi-label: mean per-label AUC and ACC at > 0.5); 95% percentile CIs\n")

    cases = [c for c in CASES if c[0] in {x.strip() for x in args.cases.split(",")}]
    rows, ci_rows, total_ours, total_sk = [], [], 0.0, 0.0
    for kind, k in cases:
        y, s = synthetic(kind, k, args.n, args.seed)
        y_t, s_t = torch.from_numpy(y).to(device), torch.from_numpy(s).to(device)
        # Warm-up, both sides (imports, kernels, allocator).
        evaluate(kind, y_t, s_t, n_bootstrap=10, seed=args.seed)
        sk_evaluate(kind, y, s, rounds=2, seed=args.seed)

        with Stopwatch(device) as sw:
            m = evaluate(kind, y_t, s_t, n_bootstrap=args.rounds, seed=args.seed)
        sk = sk_evaluate(kind, y, s, rounds=sk_rounds, seed=args.seed)
        sk_seconds = sk["seconds_point"] + (sk["seconds"] - sk["seconds_point"]) * args.rounds / sk_rounds
        total_ours += sw.seconds
        total_sk += sk_seconds

        d_auc, d_acc = abs(m.auc - sk["auc"]), abs(m.acc - sk["acc"])
        mm_auc = getAUC(y, s, MEDMNIST_TASK[kind])
        mm_acc = getACC(y, s, MEDMNIST_TASK[kind])
        d_mm = max(abs(m.auc - mm_auc), abs(m.acc - mm_acc))
        ok = max(d_auc, d_acc, d_mm) <= 1e-9
        label = f"{kind} K={k}"
        rows.append((label, args.n, sw.seconds, sk_seconds, f"{sk_seconds / sw.seconds:.1f}x",
                     f"{max(d_auc, d_acc):.1e}", f"{d_mm:.1e}", "OK" if ok else "MISMATCH"))
        ci_rows.append((label, f"{m.auc:.6f}", _fmt_ci(m.auc_ci), _fmt_ci(sk["auc_ci"]),
                        f"{m.acc:.6f}", _fmt_ci(m.acc_ci), _fmt_ci(sk["acc_ci"])))
        print(f"  {label}: ours {sw.seconds:.3f} s, sklearn {sk['seconds']:.3f} s for {sk_rounds} rounds"
              + (f" -> {sk_seconds:.3f} s extrapolated to {args.rounds}" if extrapolated else ""))

    sk_head = "sklearn [s]" + (" (extrap.)" if extrapolated else "")
    print()
    print_table(["case", "N", "ours [s]", sk_head, "sklearn/ours", "|ours-sklearn|", "|ours-medmnist|",
                 "point est. 1e-9"], rows)
    print()
    print_table(["case", "AUC", "AUC CI ours", "AUC CI sklearn", "ACC", "ACC CI ours", "ACC CI sklearn"], ci_rows)
    print("\n(CI bounds differ by bootstrap noise only: the two sides draw different resamples.)")
    print(f"\nRESULT {device.type}, {args.rounds} rounds, N={args.n}: ours {total_ours:.2f} s, sklearn "
          f"{total_sk:.2f} s{' (extrapolated from ' + str(sk_rounds) + ' rounds)' if extrapolated else ''} "
          f"over {len(cases)} cases -> ratio (sklearn / ours) {total_sk / total_ours:.1f}x")


if __name__ == "__main__":
    main()
