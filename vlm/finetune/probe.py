"""Classifiers on frozen embeddings: the logistic-regression probe (L2 chosen on val AUC) and cosine kNN."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from vlm.errors import VlmError
from vlm.evaluate import evaluate
from vlm.files import atomic_write_bytes
from vlm.tasks import TaskSpec

KNN_WEIGHTINGS = ("uniform", "similarity")
L2_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
ZS_L2_EXTRA = (100.0, 1000.0)
K_GRID = (1, 3, 5, 10, 20, 50, 100, 200)
PROBE_FILE = "probe.safetensors"  # a linear-probe run's chosen weights and standardisation
KNN_TEMPERATURE = 0.07


# ----------------------------------------------------------------------------- linear probe
def fit_logistic(x: torch.Tensor, y: torch.Tensor, kind: str, num_outputs: int, l2: float, *,
                 prior: tuple[torch.Tensor, torch.Tensor] | None = None,
                 init: tuple[torch.Tensor, torch.Tensor] | None = None,
                 max_iter: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic regression by full-batch L-BFGS: mean CE (multi-label: mean BCE) + l2/2 * ||W - W_prior||^2.

    x: (N, E) float features; y: (N, L) int64 labels. Returns (W (K, E), b (K,)).
    """
    e = x.shape[1]
    w0, b0 = prior if prior is not None else (torch.zeros(num_outputs, e, device=x.device), None)
    start = init if init is not None else (w0, b0 if b0 is not None else torch.zeros(num_outputs, device=x.device))
    w = start[0].detach().clone().float().requires_grad_(True)
    b = start[1].detach().clone().float().requires_grad_(True)
    target = y.float() if kind == "multi-label" else y[:, 0]
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=1e-6,
                            tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = x @ w.T + b
        loss = (F.binary_cross_entropy_with_logits(logits, target) if kind == "multi-label"
                else F.cross_entropy(logits, target))
        loss = loss + 0.5 * l2 * (w - w0).pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def logistic_scores(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    """The probe's probabilities: softmax over classes, per-label sigmoid for multi-label."""
    logits = x @ w.T + b
    return torch.sigmoid(logits) if kind == "multi-label" else torch.softmax(logits, dim=1)


def save_probe(path: Path, probe: dict[str, torch.Tensor]) -> None:
    """The chosen probe (w, b and the standardisation mean, std) as safetensors, written atomically."""
    from safetensors.torch import save

    atomic_write_bytes(path, save({k: v.detach().float().cpu().contiguous() for k, v in probe.items()}))


def load_probe(path: Path) -> dict[str, torch.Tensor]:
    """What `save_probe` wrote."""
    from safetensors.torch import load_file

    return load_file(str(path))


def probe_logits(emb: torch.Tensor, probe: dict[str, torch.Tensor]) -> torch.Tensor:
    """The probe's logits (N, K) of raw embeddings (N, E): standardised, then z @ w.T + b."""
    p = {k: v.to(emb.device) for k, v in probe.items()}
    return ((emb.float() - p["mean"]) / p["std"]) @ p["w"].T + p["b"]


def _auc(task: TaskSpec, labels: torch.Tensor, scores: torch.Tensor) -> float:
    auc = evaluate(task, labels.to(scores.device), scores, n_bootstrap=0).auc
    return auc if math.isfinite(auc) else -math.inf


def linear_probe(task: TaskSpec, emb: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], *,
                 l2_grid: Sequence[float] = L2_GRID, prior: torch.Tensor | None = None,
                 max_iter: int = 300) -> dict[str, Any]:
    """Fit the probe for each L2 strength on train, choose on val AUC; return test scores and the grid.

    `prior` (K, E) on normalised embeddings: penalise ||W - prior|| (zs-init probe) instead of ||W||.
    Returns {"scores": test scores, "logits": {"val", "test"} logits, "probe": {"w", "b", "mean", "std"} (the
    chosen weights on features standardised with the training mean/std), "l2": chosen, "val_auc": its val AUC,
    "grid": [{l2, val_auc}]}.
    """
    kind = task.kind
    mean, std = emb["train"].mean(dim=0), emb["train"].std(dim=0).clamp_min(1e-6)
    z = {s: (e - mean) / std for s, e in emb.items()}
    k = task.num_classes
    prior_z = None
    if prior is not None:  # logits = P x = (P * std) z + P mean in standardised coordinates
        prior = prior.to(mean.device).float()
        prior_z = (prior * std, prior @ mean)
    grid = sorted(set(float(v) for v in l2_grid), reverse=True)
    if not grid or any(v <= 0 for v in grid):
        raise VlmError("The L2 grid needs positive values.")
    rows, best, state = [], None, prior_z
    for l2 in grid:
        w, b = fit_logistic(z["train"], labels["train"], kind, k, l2, prior=prior_z, init=state, max_iter=max_iter)
        state = (w, b)
        auc = _auc(task, labels["val"], logistic_scores(z["val"], w, b, kind))
        rows.append({"l2": l2, "val_auc": None if auc == -math.inf else auc})
        if best is None or auc > best[0]:
            best = (auc, l2, w, b)
    auc, l2, w, b = best  # type: ignore[misc]
    return {"scores": logistic_scores(z["test"], w, b, kind), "l2": l2,
            "logits": {s: z[s] @ w.T + b for s in ("val", "test")},
            "probe": {"w": w, "b": b, "mean": mean, "std": std},
            "val_auc": None if auc == -math.inf else auc, "grid": rows[::-1]}


# ----------------------------------------------------------------------------- kNN
def _neighbours(train_emb: torch.Tensor, query: torch.Tensor, k: int, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    sims, idx = [], []
    for start in range(0, len(query), chunk):
        s, i = (query[start:start + chunk] @ train_emb.T).topk(k, dim=1)
        sims.append(s)
        idx.append(i)
    return torch.cat(sims), torch.cat(idx)


def _votes(sims: torch.Tensor, idx: torch.Tensor, train_labels: torch.Tensor, kind: str, num_classes: int,
           weighting: str) -> torch.Tensor:
    w = torch.ones_like(sims) if weighting == "uniform" else torch.exp((sims - sims[:, :1]) / KNN_TEMPERATURE)
    if kind == "multi-label":
        lab = train_labels[idx].float()  # (N, k, L)
    else:
        lab = F.one_hot(train_labels[:, 0][idx], num_classes).float()  # (N, k, K)
    return (lab * w[..., None]).sum(dim=1) / w.sum(dim=1, keepdim=True)


def knn_scores(train_emb: torch.Tensor, train_labels: torch.Tensor, query: torch.Tensor, k: int, *, kind: str,
               num_classes: int, weighting: str = "uniform") -> torch.Tensor:
    """(N, K) class-vote fractions of the k most cosine-similar training embeddings (inputs L2-normalised)."""
    if weighting not in KNN_WEIGHTINGS:
        raise VlmError(f"Unknown kNN weighting '{weighting}': choose {' or '.join(KNN_WEIGHTINGS)}.")
    k = min(int(k), len(train_emb))
    sims, idx = _neighbours(train_emb.float(), query.float(), k)
    return _votes(sims, idx, train_labels.to(idx.device), kind, num_classes, weighting)


def knn(task: TaskSpec, emb: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], *, k: int | str = "auto",
        weighting: str = "uniform", k_grid: Sequence[int] = K_GRID) -> dict[str, Any]:
    """kNN scores for test with k given, or chosen on val AUC (`k="auto"`)."""
    if weighting not in KNN_WEIGHTINGS:
        raise VlmError(f"Unknown kNN weighting '{weighting}': choose {' or '.join(KNN_WEIGHTINGS)}.")
    n_train = len(emb["train"])
    train_labels = labels["train"].to(emb["train"].device)
    rows: list[dict[str, Any]] = []
    if k == "auto":
        ks = sorted({min(int(v), n_train) for v in k_grid})
        sims, idx = _neighbours(emb["train"], emb["val"], ks[-1])
        best = None
        for kk in ks:
            scores = _votes(sims[:, :kk], idx[:, :kk], train_labels, task.kind, task.num_classes, weighting)
            auc = _auc(task, labels["val"], scores)
            rows.append({"k": kk, "val_auc": None if auc == -math.inf else auc})
            if best is None or auc > best[0]:
                best = (auc, kk)
        val_auc, chosen = best  # type: ignore[misc]
    else:
        try:
            chosen = int(k)
        except (TypeError, ValueError):
            raise VlmError(f"--k takes a positive number or 'auto', got '{k}'.") from None
        if chosen < 1:
            raise VlmError(f"--k must be at least 1, got {chosen}.")
        if chosen > n_train:
            raise VlmError(f"--k {chosen} is larger than the training split ({n_train} images).")
        val_auc = _auc(task, labels["val"], knn_scores(emb["train"], train_labels, emb["val"], chosen,
                                                      kind=task.kind, num_classes=task.num_classes,
                                                      weighting=weighting))
        rows.append({"k": chosen, "val_auc": None if val_auc == -math.inf else val_auc})
    scores = knn_scores(emb["train"], train_labels, emb["test"], chosen, kind=task.kind,
                        num_classes=task.num_classes, weighting=weighting)
    return {"scores": scores, "k": chosen, "val_auc": None if val_auc == -math.inf else val_auc, "grid": rows}
