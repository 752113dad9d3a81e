"""Temperature scaling: one scalar T > 0 that divides a model's logits, fitted on the validation split.

Probabilities from logits z (N, K), in MedMNIST's score convention:
- binary, multi-class, ordinal: softmax(z / T) over the K columns; a binary task may also give one
  column (or a 1-D tensor) of positive-class logits, read as the logit pair [0, z] (sigmoid(z / T));
- multi-label: sigmoid(z / T) per label. For zero-shot ChestMNIST, where p(label) is the softmax over
  a positive/negative prompt pair, z is the pair's logit difference (positive minus negative).

`fit_temperature` minimises the validation NLL (mean cross-entropy; mean binary cross-entropy over
labels and samples for multi-label) over log T by golden-section search on [log 1e-3, log 1e3]: as a
function of 1/T the NLL is convex, so it is unimodal in log T and the search is deterministic and
cannot stall in a local minimum. A fit at a bound (no finite optimum: e.g. logits uninformative or
perfectly separating) returns that bound.

Zero-shot: CLIP-style logits are logit_scale * cosine, so softmax(logit_scale * cosine / T) is the
same classifier with a calibrated logit scale = logit_scale / T. Dividing by T > 0 keeps every
prediction (argmax; sigmoid(z / T) > 0.5 iff z > 0), hence ACC, and for binary and multi-label tasks
the order of the scores, hence AUC. The one-vs-rest AUCs of multi-class/ordinal tasks can move
slightly: softmax(z / T)_k ranks samples differently for different T. Calibration metrics change.
"""

from __future__ import annotations

import math

import torch

from vlm.errors import VlmError
from vlm.evaluate.inputs import Array, _prepare, _resolve
from vlm.tasks import TaskKind, TaskSpec

T_MIN, T_MAX = 1e-3, 1e3
_GOLDEN = (math.sqrt(5) - 1) / 2
_TOL = 1e-10  # bracket width in log T at which the search stops


def _pairs(kind: TaskKind, z: torch.Tensor) -> torch.Tensor:
    """Logits (N, K) with a binary task's single positive-class column (or 1-D logits) as the pair [0, z]."""
    if kind == "binary" and (z.ndim == 1 or z.shape[1] == 1):
        z = z.reshape(-1, 1)
        return torch.cat([torch.zeros_like(z), z], dim=1)
    return z


def _nll(kind: TaskKind, y: torch.Tensor, z: torch.Tensor, temperature: float) -> float:
    """Mean NLL of labels y (N, L) under logits z (N, K) divided by the temperature."""
    z = z / temperature
    if kind == "multi-label":
        return torch.nn.functional.binary_cross_entropy_with_logits(z, y.to(z.dtype)).item()
    return torch.nn.functional.cross_entropy(z, y[:, 0]).item()


def fit_temperature(kind: TaskKind | TaskSpec, val_logits: Array, val_labels: Array) -> float:
    """The temperature T in [1e-3, 1e3] that minimises the NLL of `val_labels` under `val_logits` / T.

    Logits (N, K) in float64 on their device (binary: also one positive-class column); labels as for
    `vlm.evaluate.evaluate`. Deterministic; see the module docstring for the search.
    """
    kind, names, name = _resolve(kind, None)
    y, z = _prepare(kind, val_labels, val_logits, names, name, probabilities=False)
    z = _pairs(kind, z)
    lo, hi = math.log(T_MIN), math.log(T_MAX)
    a, b = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
    fa, fb = _nll(kind, y, z, math.exp(a)), _nll(kind, y, z, math.exp(b))
    while hi - lo > _TOL:
        if fa <= fb:  # the minimum lies in [lo, b]
            hi, b, fb = b, a, fa
            a = hi - _GOLDEN * (hi - lo)
            fa = _nll(kind, y, z, math.exp(a))
        else:  # the minimum lies in [a, hi]
            lo, a, fa = a, b, fb
            b = lo + _GOLDEN * (hi - lo)
            fb = _nll(kind, y, z, math.exp(b))
    return math.exp((lo + hi) / 2)


def apply_temperature(kind: TaskKind | TaskSpec, logits: Array, temperature: float) -> torch.Tensor:
    """Probabilities (N, K) from logits / T: softmax for single-label kinds, sigmoid per label for multi-label.

    Keeps the logits' floating dtype and device (integers become float64); T = 1 gives exactly
    softmax(logits) (sigmoid(logits)). A binary task's single logit column gives two columns [1 - p, p].
    """
    kind, _, name = _resolve(kind, None)
    if not (math.isfinite(temperature) and temperature > 0):
        raise VlmError(f"The temperature must be a finite number > 0, got {temperature}.")
    z = torch.as_tensor(logits)
    if not z.is_floating_point():
        z = z.to(torch.float64)
    z = _pairs(kind, z)
    if z.ndim != 2:
        raise VlmError(f"Logits must have shape (N, K) for {name}; got shape {tuple(z.shape)}.")
    z = z / temperature
    return torch.sigmoid(z) if kind == "multi-label" else torch.softmax(z, dim=1)
