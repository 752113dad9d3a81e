"""Bootstrap resampling: percentile CIs of AUC/ACC and the paired test of two runs on the same samples."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from vlm.errors import VlmError
from vlm.ranges import check_options
from vlm.evaluate.core import _AucPlan, _column_aucs, _hits, _plans, _strict_auc
from vlm.evaluate.inputs import Array, _prepare, _resolve
from vlm.tasks import TaskKind, TaskSpec

# Bootstrap rounds are processed in chunks of about this many (round, sample) weights: small enough
# on the CPU for a chunk to stay in cache (about 4x faster than one big block), large on accelerators.
_CHUNK_ELEMENTS = {"cpu": 1 << 19}
_CHUNK_ELEMENTS_DEFAULT = 1 << 24


def _resample_weights(n: int, rounds: int, seed: int, device: torch.device) -> Iterator[torch.Tensor]:
    """Padded int32 multiplicity weights (r, 1 + n) of `rounds` bootstrap resamples, in chunks; seeded.

    The resamples are drawn by a CPU generator (in one stream, whatever the chunk size) and moved to
    `device`, so that a seed gives the same resamples, hence the same CIs, on the CPU and on a GPU.
    """
    gen = torch.Generator().manual_seed(seed)
    chunk = max(1, _CHUNK_ELEMENTS.get(device.type, _CHUNK_ELEMENTS_DEFAULT) // n)
    for start in range(0, rounds, chunk):
        r = min(chunk, rounds - start)
        drawn = torch.randint(1, n + 1, (r, n), generator=gen, dtype=torch.int32).to(device).long()
        weights = torch.zeros(r, 1 + n, dtype=torch.int32, device=device)
        yield weights.scatter_add_(1, drawn, torch.ones(1, 1, dtype=torch.int32, device=device).expand(r, n))


def _resample_sums(
    plans_per_run: list[list[_AucPlan]], columns: torch.Tensor, rounds: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """On `rounds` seeded resamples: AUC (S, rounds) of S runs' plans, and weighted sums (rounds, M) of
    per-sample columns (N, M), for statistics linear in the samples (ACC's hits, calibration terms)."""
    aucs, sums = [], []
    for weights in _resample_weights(columns.shape[0], rounds, seed, columns.device):
        aucs.append(torch.stack([_column_aucs(plans, weights).mean(dim=1) for plans in plans_per_run]))
        sums.append(weights[:, 1:].double() @ columns)
    return torch.cat(aucs, dim=1), torch.cat(sums)


def _bootstrap(
    runs: list[tuple[list[_AucPlan], torch.Tensor]], y: torch.Tensor, rounds: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """AUC and ACC (S, rounds) of S runs (AUC plans, hits per sample) on the SAME resamples of labels y (N, L)."""
    hits = torch.stack([h for _, h in runs], dim=1).double()  # (N, S)
    aucs, sums = _resample_sums([plans for plans, _ in runs], hits, rounds, seed)
    return aucs, sums.T / y.numel()


def _check_bootstrap_args(n_bootstrap: int, ci: float, threshold: float = 0.5) -> None:
    """Bootstrap rounds, CI level and the ACC threshold in their ranges (`vlm.ranges`)."""
    check_options({"n_bootstrap": n_bootstrap, "threshold": threshold})
    if not 0 < ci < 1:
        raise VlmError(f"ci must be a level between 0 and 1 such as 0.95, got {ci}.")


def _percentile_ci(values: torch.Tensor, ci: float) -> tuple[float, float] | None:
    """Percentile interval of the finite values (numpy's linear interpolation); None if there are none."""
    values = values[torch.isfinite(values)]
    if values.numel() == 0:
        return None
    alpha = (1 - ci) / 2
    lo, hi = torch.quantile(values, torch.tensor([alpha, 1 - alpha], dtype=values.dtype, device=values.device))
    return lo.item(), hi.item()


def paired_bootstrap(
    kind: TaskKind | TaskSpec,
    y_true: Array,
    scores_a: Array,
    scores_b: Array,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Compare two runs on the same samples: AUC and ACC differences a - b with CIs and p-values.

    Both runs are scored on the same resamples. For "auc" and "acc" the result holds `a`, `b`,
    `diff` (a - b on the full set), `ci` (percentile interval of the resampled differences) and
    `p_value`, two-sided: min(1, 2 * min(P(d <= 0), P(d >= 0))) over the resampled differences d,
    with the usual +1 correction ((count + 1) / (rounds + 1)) so that it is never exactly 0.
    Resamples where an AUC is undefined are left out of the AUC statistics. Raises VlmError if
    the full-set AUC is undefined.
    """
    kind, names, name = _resolve(kind, None)
    _check_bootstrap_args(n_bootstrap, ci, threshold)
    if n_bootstrap == 0:
        raise VlmError("paired_bootstrap needs n_bootstrap >= 1.")
    runs = [_prepare(kind, y_true, sc, names, name) for sc in (scores_a, scores_b)]
    if runs[0][1].shape != runs[1][1].shape:
        raise VlmError(f"The two runs' scores differ in shape: {tuple(runs[0][1].shape)} vs {tuple(runs[1][1].shape)}.")
    y = runs[0][0]
    plans = [_plans(kind, y, s) for _, s in runs]
    auc = [_strict_auc(kind, y, s, p, names) for (_, s), p in zip(runs, plans)]
    hits = [_hits(kind, y, s, threshold) for _, s in runs]
    boot_auc, boot_acc = _bootstrap(list(zip(plans, hits)), y, n_bootstrap, seed)
    out: dict[str, Any] = {"n_bootstrap": n_bootstrap, "seed": seed, "ci_level": ci, "threshold": float(threshold)}
    for metric, (a, b), boot in (("auc", auc, boot_auc), ("acc", [h.sum().item() / y.numel() for h in hits], boot_acc)):
        d = boot[0] - boot[1]
        d = d[torch.isfinite(d)]
        rounds = d.numel()
        tail = min(int((d <= 0).sum()), int((d >= 0).sum()))
        out[metric] = {"a": a, "b": b, "diff": a - b, "ci": _percentile_ci(d, ci),
                       "p_value": min(1.0, 2 * (tail + 1) / (rounds + 1)), "rounds": rounds}
    return out
