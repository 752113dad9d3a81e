"""Data exploration: labelled sample montages (3D: middle slices) with class counts per split."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlm.errors import VlmError
from vlm.plots.figure import as_np, check_out, new_figure, save_figure, short
from vlm.tasks import SPLITS, TaskSpec


def volume_slices(volume: Any, mode: str = "middle", every: int = 4) -> np.ndarray:
    """One 2D image from a volume (C, D, H, W) or (D, H, W): the middle axial, coronal and sagittal
    slices side by side (`mode="middle"`), the same three in a square 2 x 2 tile (axial and coronal
    above, sagittal below; `mode="grid"`, a montage's tile, shaped like a 2D image), or every `every`-th
    axial slice in a row (`mode="axial"`).

    Channels are averaged; slices are separated by a 1-pixel bright line.
    """
    vol = as_np(volume).astype(float)
    if vol.ndim == 4:
        vol = vol.mean(axis=0)
    if vol.ndim != 3:
        raise VlmError(f"A volume must be (D, H, W) or (C, D, H, W); got shape {vol.shape}.")
    d, h, w = vol.shape
    if mode == "grid":
        top, bottom = volume_slices(vol, "middle")[:, : 2 * w + 1], vol[:, :, w // 2]  # (D or H, ...), (D, H)
        tile = np.zeros((top.shape[0] + 1 + d, max(top.shape[1], h)))
        tile[: top.shape[0], : top.shape[1]] = top
        tile[top.shape[0]] = 255.0
        tile[top.shape[0] + 1:, :h] = bottom
        return tile
    if mode == "middle":
        slices = [vol[d // 2], vol[:, h // 2, :], vol[:, :, w // 2]]
    elif mode == "axial":
        slices = [vol[i] for i in range(0, d, max(1, every))]
    else:
        raise VlmError(f"Unknown slice mode '{mode}': use middle or axial.")
    height = max(s.shape[0] for s in slices)
    sep = np.full((height, 1), 255.0)
    parts = []
    for s in slices:
        pad = np.zeros((height, s.shape[1]))
        pad[: s.shape[0]] = s
        parts += [pad, sep]
    return np.concatenate(parts[:-1], axis=1)


def _tile(image: np.ndarray, is_3d: bool) -> np.ndarray:
    """(H, W) grey or (H, W, 3) colour display image of one sample (C, H, W) / (C, D, H, W)."""
    if is_3d:
        return volume_slices(image, "grid")
    if image.shape[0] == 1:
        return image[0].astype(float)
    return np.transpose(image, (1, 2, 0)).astype(float) / 255.0


def pick_per_class(task: TaskSpec, labels: np.ndarray, per_class: int, seed: int = 0) -> list[np.ndarray]:
    """Up to `per_class` random sample indices per class (multi-label: per label, among its positives)."""
    rng = np.random.default_rng(seed)
    picks = []
    for c in range(task.num_classes):
        members = np.flatnonzero(labels[:, c] == 1) if task.kind == "multi-label" else np.flatnonzero(labels[:, 0] == c)
        picks.append(np.sort(rng.permutation(members)[:per_class]))
    return picks


def plot_montage(
    images: Any,
    labels: Any,
    task: TaskSpec,
    out: str | os.PathLike,
    *,
    per_class: int = 8,
    counts: dict[str, Sequence[int]] | None = None,
    title: str | None = None,
    seed: int = 0,
) -> Path:
    """A labelled montage: one row of `per_class` random samples per class (3D: middle slices along
    each axis), and, if `counts` ({split: per-class counts}) is given, grouped class-count bars per split.

    `images` (N, C, H, W) or (N, C, D, H, W) uint8, `labels` (N, L).
    """
    images, labels = as_np(images), as_np(labels)
    k = task.num_classes
    picks = pick_per_class(task, labels, per_class, seed)
    tiles = [[_tile(images[i], task.is_3d) for i in idx] for idx in picks]
    sample = next((row[0] for row in tiles if row), None)
    if sample is None:
        raise VlmError(f"No samples to show for {task.flag}.")
    th, tw = sample.shape[:2]
    # Samples are separated by a gap (3D: a wider grey one, since a volume's slices have white separators).
    gap_w, gap_value = (4, 128.0) if task.is_3d else (2, 255.0)
    aspect = tw / th
    row_h = 0.75
    width = min(18.0, max(7.0, per_class * row_h * aspect + 3.0))
    extra = 3.2 if counts else 0.0
    fig = new_figure(width, k * row_h + extra + 0.8)
    grid = fig.add_gridspec(k + (1 if counts else 0), 1, height_ratios=[1] * k + ([extra / row_h] if counts else []))
    for c, row in enumerate(tiles):
        ax = fig.add_subplot(grid[c])
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_ylabel(f"{c}: {short(task.labels[c], 22)}\n({len(picks[c])} shown)", rotation=0, ha="right",
                      va="center", fontsize=7)
        if not row:
            ax.text(0.5, 0.5, "no samples in this split", ha="center", va="center", fontsize=7, transform=ax.transAxes)
            continue
        gap = np.ones((th, gap_w) + sample.shape[2:]) * (1.0 if sample.ndim == 3 else gap_value)
        strip = np.concatenate([p for t in row for p in (t, gap)][:-1], axis=1)
        grey = strip.ndim == 2
        ax.imshow(strip, cmap="gray" if grey else None, vmin=0 if grey else None, vmax=255 if grey else None,
                  interpolation="nearest", aspect="equal")
        ax.set_xlim(-0.5, per_class * (tw + gap_w) - gap_w - 0.5)
    if counts:
        ax = fig.add_subplot(grid[k])
        splits = [s for s in SPLITS if s in counts] + [s for s in counts if s not in SPLITS]
        x = np.arange(k)
        width_bar = 0.8 / len(splits)
        for i, s in enumerate(splits):
            values = np.asarray(counts[s], dtype=float)
            ax.bar(x + (i - (len(splits) - 1) / 2) * width_bar, values, width_bar, label=f"{s} ({int(values.sum())})")
        ax.set_xticks(x, [short(n, 16) for n in task.labels], rotation=45 if k > 4 else 0,
                      ha="right" if k > 4 else "center", fontsize=7)
        ax.set_ylabel("positives" if task.kind == "multi-label" else "volumes" if task.is_3d else "images")
        ax.set_title("class counts per split", fontsize=9)
        ax.legend(fontsize="x-small")
        ax.grid(axis="y", alpha=0.3)
    what = "volumes (middle axial | coronal / sagittal slices)" if task.is_3d else "samples"
    fig.suptitle(title or f"{task.flag}: {per_class} random {what} per class", fontsize=10)
    return save_figure(fig, out)


def montage_figure(
    flag: str,
    out: str | os.PathLike,
    *,
    data_root: str | os.PathLike | None = None,
    size: int = 28,
    split: str = "train",
    per_class: int = 8,
    seed: int = 0,
) -> Path:
    """Samples per class from one split plus class counts of all three splits, from the local dataset file."""
    from vlm.data import load_split

    check_out(out)
    if per_class < 1:
        raise VlmError(f"--per-class must be at least 1, got {per_class}.")
    shown = load_split(flag, split, size, data_root)
    counts = {s: (shown if s == split else load_split(shown.task, s, size, data_root)).class_counts() for s in SPLITS}
    title = f"{shown.task.flag} {size}px {split}: {per_class} random " + (
        "volumes per class (middle axial | coronal / sagittal slices)" if shown.task.is_3d else "images per class")
    return plot_montage(shown.images, shown.labels, shown.task, out, per_class=per_class, counts=counts, title=title,
                        seed=seed)
