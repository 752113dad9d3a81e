"""Embedding scatters: PCA or t-SNE of an encoder's image embeddings, coloured by class."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlm.errors import VlmError
from vlm.plots.figure import as_np, check_out, class_colors, new_figure, save_figure, short


def project_2d(embeddings: Any, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(N, 2) projection of (N, E) embeddings by PCA or t-SNE (scikit-learn)."""
    x = as_np(embeddings).astype(np.float64)
    if x.ndim != 2:
        raise VlmError(f"Embeddings must be (N, E); got shape {x.shape}.")
    n = x.shape[0]
    if n < 3:
        raise VlmError(f"Need at least 3 embeddings to project, got {n}.")
    if method == "pca":
        from sklearn.decomposition import PCA

        dims = min(2, x.shape[1])
        y = PCA(n_components=dims, random_state=seed).fit_transform(x)
        return y if dims == 2 else np.concatenate([y, np.zeros((n, 1))], axis=1)
    if method == "tsne":
        from sklearn.manifold import TSNE

        from threadpoolctl import threadpool_limits

        perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
        # Small problems gain nothing from OpenMP threads and slow down badly on a busy machine.
        with threadpool_limits(limits=1 if n <= 5000 else None, user_api="openmp"):
            return tsne.fit_transform(x)
    raise VlmError(f"Unknown projection '{method}': use pca or tsne.")


def plot_embeddings(
    embeddings: Any,
    labels: Any,
    class_names: Sequence[str],
    out: str | os.PathLike,
    *,
    method: str = "pca",
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """A 2D PCA or t-SNE scatter of (N, E) embeddings coloured by class.

    `labels` is (N,) / (N, 1) class indices, or (N, L) 0/1 for multi-label data, where a point takes
    the colour of its first positive label (grey "none" if it has no positive label).
    """
    y = as_np(labels)
    y = y.reshape(len(y), -1)
    x = as_np(embeddings)
    if len(y) != len(x):
        raise VlmError(f"{len(x)} embeddings but {len(y)} labels.")
    if y.shape[1] > 1:
        has = y.any(axis=1)
        cls = np.where(has, y.argmax(axis=1), -1)
    else:
        cls = y[:, 0].astype(int)
    points = project_2d(x, method, seed)
    fig = new_figure(7.2, 5.8)
    ax = fig.add_subplot()
    names = list(class_names)
    colors = class_colors(max(len(names), 1))
    if (cls < 0).any():
        ax.scatter(*points[cls < 0].T, s=6, color="0.75", alpha=0.5, label="none", linewidths=0)
    for c, name in enumerate(names):
        mask = cls == c
        if mask.any():
            ax.scatter(*points[mask].T, s=8, color=colors[c], alpha=0.8, linewidths=0,
                       label=f"{short(name, 24)} ({int(mask.sum())})")
    ax.set(xlabel=f"{method.upper()} 1", ylabel=f"{method.upper()} 2",
           title=title or f"{method.upper()} of {len(x)} embeddings")
    ax.legend(fontsize="x-small", markerscale=2, loc="best", ncols=1 if len(names) <= 12 else 2)
    ax.grid(alpha=0.2)
    return save_figure(fig, out)


def embeddings_figure(
    flag: str,
    encoder_name: str,
    out: str | os.PathLike,
    *,
    weights: str | None = None,
    method: str = "pca",
    split: str = "test",
    size: int = 28,
    data_root: str | os.PathLike | None = None,
    limit: int | None = 2000,
    seed: int = 0,
    device: str = "cpu",
    cache_dir: str | os.PathLike | None = None,
    encoder: Any = None,
) -> Path:
    """Plot a split's image embeddings by class: the embedding cache's (`vlm.embeddings.image_embeddings`, the
    whole split, as zero-shot and the linear probe cache it; 3D: slices along D, mean-pooled), encoded and
    cached when it has none; the encoder loads lazily, so a cache hit builds no model. `limit` keeps a random
    subset of that many points (0/None: all); `encoder` reuses a loaded encoder."""
    from vlm.data import load_split

    check_out(out)
    if method not in ("pca", "tsne"):
        raise VlmError(f"Unknown projection '{method}': use pca or tsne.")
    from vlm.embeddings import image_embeddings
    from vlm.encoders import load_encoder

    data = load_split(flag, split, size, data_root)
    enc = encoder if encoder is not None else load_encoder(encoder_name, weights, device=device, lazy=True)
    emb, _ = image_embeddings(enc, data, cache_dir=cache_dir)
    labels = data.labels
    if limit and len(data) > limit:
        idx = np.sort(np.random.default_rng(seed).permutation(len(data))[:limit])
        emb, labels = as_np(emb)[idx], as_np(labels)[idx]
    return plot_embeddings(emb, labels, data.task.labels, out, method=method, seed=seed,
                           title=f"{method.upper()} of {encoder_name} image embeddings · {data.task.flag} {size}px "
                                 f"{split} (n={len(labels)})")
