"""Figures: every kind writes a non-empty PNG and SVG (the `vlm plot` commands are in test_cli_plot.py)."""

from __future__ import annotations

import numpy as np
import pytest

from vlm import plots
from vlm.errors import VlmError
from vlm.results import load_runs


def _is_figure(path) -> bool:
    data = path.read_bytes()
    if path.suffix == ".png":
        return data.startswith(b"\x89PNG") and len(data) > 1000
    return data.lstrip().startswith(b"<?xml") and b"<svg" in data


@pytest.mark.parametrize("name, suffix", [("binary", ".png"), ("binary", ".svg"), ("multiclass", ".png"),
                                          ("multilabel", ".svg")])
def test_roc_figures(bench, name, suffix):
    records = bench[name] if name == "binary" else [bench[name]]
    path = plots.roc_figure(records, bench["base"] / f"roc_{name}{suffix}", data_root=bench["root"])
    assert _is_figure(path)


def test_roc_plot_from_arrays_and_macro_curve(tmp_path):
    curves = {"a": (np.array([0, 0.5, 1]), np.array([0, 1, 1])), "b": (np.array([0, 1]), np.array([0, 1]))}
    fpr, tpr = plots.macro_curve(curves)
    assert fpr.tolist() == [0, 0.5, 1] and tpr.tolist() == [0, 0.75, 1]
    path = plots.plot_roc([{"label": "m", "fpr": fpr, "tpr": tpr, "auc": 0.75}], tmp_path / "r.svg")
    assert b"AUC 0.750" in path.read_bytes() or _is_figure(path)


def test_roc_refuses_mixed_test_sets_and_bad_suffix(bench, tmp_path):
    with pytest.raises(VlmError, match="one ROC figure shows one test set"):
        plots.roc_figure([bench["binary"][0], bench["multiclass"]], tmp_path / "x.png", data_root=bench["root"])
    with pytest.raises(VlmError, match=r"\.png or \.svg"):
        plots.roc_figure(bench["binary"], tmp_path / "x.jpg", data_root=bench["root"])


@pytest.mark.parametrize("name, suffix", [("binary", ".png"), ("binary", ".svg"), ("multiclass", ".svg"),
                                          ("multilabel", ".png")])
def test_confusion_figures(bench, name, suffix):
    record = bench[name][0] if name == "binary" else bench[name]
    assert _is_figure(plots.confusion_figure(record, bench["base"] / f"cm_{name}{suffix}"))


def test_confusion_checks_shape(tmp_path):
    with pytest.raises(VlmError, match="2 x 2"):
        plots.plot_confusion([[1, 2, 3]], ["a", "b"], tmp_path / "c.png")


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_style_bars(bench, suffix):
    path = plots.styles_figure(load_runs(bench["runs"]), "breastmnist", bench["base"] / f"styles{suffix}")
    assert _is_figure(path)


def test_styles_errors(bench, tmp_path):
    records = load_runs(bench["runs"])
    with pytest.raises(VlmError, match="No zero-shot runs of pathmnist"):
        plots.styles_figure(records, "pathmnist", tmp_path / "s.png")
    with pytest.raises(VlmError, match="models there: ViT-B-32"):
        plots.styles_figure(records, "breastmnist", tmp_path / "s.png", model="RN50")


@pytest.mark.parametrize("flag, suffix", [("pathmnist", ".png"), ("vesselmnist3d", ".png"), ("vesselmnist3d", ".svg"),
                                          ("chestmnist", ".svg")])
def test_montages_2d_3d_multilabel(bench, flag, suffix):
    path = plots.montage_figure(flag, bench["base"] / f"montage_{flag}{suffix}", data_root=bench["root"], per_class=3)
    assert _is_figure(path)


def test_volume_slices():
    vol = np.zeros((1, 8, 6, 4))
    vol[0, 4, :, :] = 200  # the middle axial slice is bright
    image = plots.volume_slices(vol)
    assert image.shape == (8, 4 + 1 + 4 + 1 + 6)  # axial (6x4), coronal (8x4), sagittal (8x6), padded to 8 rows
    assert image[:6, :4].min() == 200
    assert plots.volume_slices(vol[0], mode="axial", every=4).shape == (6, 4 + 1 + 4)
    with pytest.raises(VlmError):
        plots.volume_slices(np.zeros((4, 4)))


@pytest.mark.parametrize("method, suffix", [("pca", ".png"), ("pca", ".svg"), ("tsne", ".png")])
def test_embedding_scatter(tmp_path, method, suffix):
    rng = np.random.default_rng(0)
    labels = np.arange(45) % 3
    emb = rng.normal(size=(45, 16)) + labels[:, None] * 3.0
    path = plots.plot_embeddings(emb, labels, ["a", "b", "c"], tmp_path / f"e{suffix}", method=method)
    assert _is_figure(path)


def test_embedding_scatter_multilabel_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    labels = (rng.random((30, 4)) < 0.3).astype(int)
    assert _is_figure(plots.plot_embeddings(rng.normal(size=(30, 8)), labels, list("abcd"), tmp_path / "m.png"))
    with pytest.raises(VlmError, match="30 embeddings but 29 labels"):
        plots.plot_embeddings(rng.normal(size=(30, 8)), labels[:29], list("abcd"), tmp_path / "m.png")
    with pytest.raises(VlmError, match="pca or tsne"):
        plots.project_2d(rng.normal(size=(30, 8)), "umap")
