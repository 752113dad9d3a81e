"""Figures: every kind writes a PNG and an SVG that show what they should. SVGs are read back as text
(legend entries, titles, axis labels, annotations) and artists (lines, bars, scatters, images); PNGs are
decoded (size, not blank, the plotted colours). The `vlm plot` commands are in test_cli_plot.py."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colormaps

from fixtures.figures import hex_colour, read_png, read_svg
from vlm import plots
from vlm.data import load_split
from vlm.errors import VlmError
from vlm.plots.figure import short
from vlm.results import load_runs
from vlm.tasks import get_task


@pytest.mark.parametrize("name, suffix", [("binary", ".png"), ("binary", ".svg"), ("multiclass", ".png"),
                                          ("multilabel", ".svg")])
def test_roc_figures(bench, name, suffix):
    records = bench[name] if name == "binary" else [bench[name]]
    path = plots.roc_figure(records, bench["base"] / f"roc_{name}{suffix}", data_root=bench["root"])
    k = get_task(records[0].dataset).num_classes
    n_curves = len(records) if name == "binary" else k  # binary: one per run; one run: one per class + macro
    if suffix == ".png":
        png = read_png(path)
        assert png.size == {"binary": (870, 960), "multiclass": (960, 960)}[name] and not png.is_blank()  # 6.4 in wide,
        # 5.2 in + 0.2 in per legend row: 3 rows (binary), 6 in two columns (9 classes, macro, chance)
        assert all(png.has(f"C{i}") for i in range(n_curves))  # each curve's tab10 colour
        return
    svg = read_svg(path)
    texts = svg.texts()
    assert "false positive rate" in texts and "true positive rate" in texts
    chance, *curves = svg.lines()
    assert len(chance.xy) == 2 and chance.stroke == "#bfbfbf"
    assert svg.extent("legend_1")[1] > svg.extent("patch_2")[3]  # below the axes' background: it covers no curve
    if name == "binary":
        assert "ROC · breastmnist 28px test" in texts
        assert svg.legend() == ["chance"] + [f"train tiny seed {r.seed} (AUC {r.metrics['auc']:.3f})" for r in records]
        assert [line.stroke for line in curves] == [hex_colour("C0"), hex_colour("C1")]
    else:
        record = records[0]
        assert "ROC · chestmnist 28px test (macro)" in texts
        assert svg.legend() == (["chance"] + [f"{c['label']} (AUC {c['auc']:.3f})" for c in record.metrics["per_class"]]
                                + [f"train tiny macro (AUC {record.metrics['auc']:.3f})"])
        assert [line.stroke for line in curves] == [hex_colour(colormaps["tab20"](i)) for i in range(k)] + ["#000000"]
        n_curves += 1  # the macro curve
    assert len(curves) == n_curves
    roc = curves if name == "binary" else curves[:-1]  # each run's or class's curve; a macro mean may start above 0
    assert all(c.xy[0] == chance.xy[0] and c.xy[-1] == chance.xy[-1] for c in roc)  # from (0, 0) to (1, 1)


def test_roc_plot_from_arrays_and_macro_curve(tmp_path):
    curves = {"a": (np.array([0, 0.5, 1]), np.array([0, 1, 1])), "b": (np.array([0, 1]), np.array([0, 1]))}
    fpr, tpr = plots.macro_curve(curves)
    assert fpr.tolist() == [0, 0.5, 1] and tpr.tolist() == [0, 0.75, 1]
    path = plots.plot_roc([{"label": "m", "fpr": fpr, "tpr": tpr, "auc": 0.75}], tmp_path / "r.svg")
    svg = read_svg(path)
    assert svg.legend() == ["chance", "m (AUC 0.750)"]
    assert {"ROC", "false positive rate", "true positive rate"} <= set(svg.texts())
    chance, curve = svg.lines()
    assert curve.stroke == hex_colour("C0") and len(curve.xy) == 3
    (x0, y0), (x1, y1) = chance.xy  # the diagonal from (0, 0) to (1, 1) fixes the axes' scale
    assert curve.xy[1] == pytest.approx((x0 + 0.5 * (x1 - x0), y0 + 0.75 * (y1 - y0)), abs=0.01)  # (0.5, 0.75)


def test_roc_refuses_mixed_test_sets_and_bad_suffix(bench, tmp_path):
    with pytest.raises(VlmError, match="one ROC figure shows one test set"):
        plots.roc_figure([bench["binary"][0], bench["multiclass"]], tmp_path / "x.png", data_root=bench["root"])
    with pytest.raises(VlmError, match=r"\.png or \.svg"):
        plots.roc_figure(bench["binary"], tmp_path / "x.jpg", data_root=bench["root"])


@pytest.mark.parametrize("name, suffix", [("binary", ".png"), ("binary", ".svg"), ("multiclass", ".svg"),
                                          ("multilabel", ".png")])
def test_confusion_figures(bench, name, suffix):
    record = bench[name][0] if name == "binary" else bench[name]
    path = plots.confusion_figure(record, bench["base"] / f"cm_{name}{suffix}")
    cm = np.asarray(record.metrics["confusion"], dtype=float)
    counts = cm.reshape(len(cm), -1)  # (K, K), or (L, 4): TN FP FN TP per label
    totals = np.repeat(cm.sum(axis=-1).reshape(len(cm), -1), cm.shape[-1], axis=1)  # per true class / value
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.nan_to_num(counts / totals)
    if suffix == ".png":
        png = read_png(path)
        sizes = {"binary": (630, 1200), "multilabel": (1395, 2730)}  # 8.0 x 4.2 and 18.2 x 9.3 in
        assert png.size == sizes[name] and not png.is_blank()
        blues = colormaps["Blues"]  # every cell's shade: counts up to the largest count, rates up to 1
        assert all(png.has(blues(v / max(counts.max(), 1)), tol=2) for v in np.unique(counts))
        assert all(png.has(blues(v), tol=2) for v in np.unique(rates))
        return
    svg = read_svg(path)
    title = f"train tiny · {record.dataset} 28px test (n=20)" + (", threshold 0.5" if name == "binary" else "")
    assert title in svg.texts()
    names = [c["label"] for c in record.metrics["per_class"]]
    k = len(names)
    ticks = svg.texts("axes_1")[: 2 * k + 2]
    assert ticks == [short(c, 16) for c in names] + ["predicted"] + [short(c, 20) for c in names] + ["true"]
    assert svg.annotations(1) == [f"{v:.0f}" for v in counts.flat] + ["counts"]  # axes 2 and 4: the colour bars
    assert svg.annotations(3) == [f"{v:.2f}" for v in rates.flat] + ["row-normalised"]
    assert svg.images() == 4  # two matrices, two colour bars


def test_confusion_checks_shape(tmp_path):
    with pytest.raises(VlmError, match="2 x 2"):
        plots.plot_confusion([[1, 2, 3]], ["a", "b"], tmp_path / "c.png")


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_style_bars(bench, suffix):
    path = plots.styles_figure(load_runs(bench["runs"]), "breastmnist", bench["base"] / f"styles{suffix}")
    if suffix == ".png":
        png = read_png(path)
        assert png.size == (660, 870) and not png.is_blank()  # 5.8 x 4.4 in
        assert png.has("C0") and png.has("C1")  # AUC and ACC bars
        return
    svg = read_svg(path)
    title = "Zero-shot prompt styles · ViT-B-32 · breastmnist 28px test"
    assert title in svg.texts() and "score" in svg.texts()
    assert svg.texts("matplotlib.axis_1") == ["clip", "plain", "radiology"]
    assert svg.legend() == ["AUC (95% CI)", "ACC (95% CI)"]
    values = {m: [r.metrics[m] for r in bench["zeroshot"]] for m in ("auc", "acc")}  # styles clip, plain, radiology
    assert svg.annotations() == [f"{v:.2f}" for v in values["auc"] + values["acc"]] + [title]
    bars = svg.bars()
    for metric, colour in (("auc", "C0"), ("acc", "C1")):
        heights = np.array([b.height for b in bars if b.fill == hex_colour(colour)])
        assert len(heights) == 3 and np.allclose(heights / heights.max(), values[metric] / np.max(values[metric]),
                                                 rtol=1e-3)


def test_long_titles_are_broken_at_their_separators_not_clipped(tmp_path):
    title = "Zero-shot prompt styles · hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224 · breastmnist 28px test"
    entries = [{"style": "clip", "auc": 0.8, "acc": 0.7}, {"style": "plain", "auc": 0.6, "acc": 0.5}]
    svg = read_svg(plots.plot_style_bars(entries, tmp_path / "s.svg", title=title))
    lines = [span for span in svg.text_spans() if span[0] in title]
    assert " · ".join(text for text, _, _ in lines) == title and len(lines) == 3
    assert all(0 <= left and right <= svg.width() for _, left, right in lines)  # every line inside the figure


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
    if suffix == ".png":
        png = read_png(path)
        sizes = {"pathmnist": (1612, 1050), "vesselmnist3d": (825, 1050)}  # 7 x 10.75 in; 7 x 5.5 in as a 2D
        assert png.size == sizes[flag] and not png.is_blank()  # binary dataset: a volume's tile is square
        assert all(png.has(f"C{i}") for i in range(3))  # the count bars of train, val, test
        return
    task = get_task(flag)
    k = task.num_classes
    svg = read_svg(path)
    texts = svg.texts()
    what = "volumes per class (middle axial | coronal / sagittal slices)" if task.is_3d else "images per class"
    assert f"{flag} 28px train: 3 random {what}" in texts
    axis_word = "volumes" if task.is_3d else "positives" if task.kind == "multi-label" else "images"
    assert axis_word in svg.texts(f"axes_{k + 1}")  # the count bars' y axis
    assert all(f"{c}: {short(label, 22)}" in texts for c, label in enumerate(task.labels))
    assert texts.count("(3 shown)") == k and svg.images() == k  # one strip of 3 samples per class
    counts = {s: load_split(flag, s, 28, bench["root"]).class_counts() for s in ("train", "val", "test")}
    assert svg.legend() == [f"{s} ({sum(c)})" for s, c in counts.items()]
    bars = svg.bars(axes=k + 1)
    assert [b.fill for b in bars] == [hex_colour(f"C{i}") for i in range(3) for _ in range(k)]
    expected = np.concatenate(list(counts.values())).astype(float)
    heights = np.array([b.height for b in bars])
    assert np.allclose(heights / heights.max(), expected / expected.max(), rtol=1e-3)


def test_volume_slices():
    vol = np.zeros((1, 8, 6, 4))
    vol[0, 4, :, :] = 200  # the middle axial slice is bright
    image = plots.volume_slices(vol)
    assert image.shape == (8, 4 + 1 + 4 + 1 + 6)  # axial (6x4), coronal (8x4), sagittal (8x6), padded to 8 rows
    assert image[:6, :4].min() == 200
    assert plots.volume_slices(vol[0], mode="axial", every=4).shape == (6, 4 + 1 + 4)
    grid = plots.volume_slices(vol, mode="grid")  # axial | coronal above, sagittal (8 x 6) below
    assert grid.shape == (8 + 1 + 8, 4 + 1 + 4) and grid[:6, :4].min() == 200 and (grid[8] == 255).all()
    cube = plots.volume_slices(np.zeros((28, 28, 28)), mode="grid")
    assert cube.shape == (57, 57)  # a cube's tile is square, shaped like a 2D image
    with pytest.raises(VlmError):
        plots.volume_slices(np.zeros((4, 4)))


@pytest.mark.parametrize("method, suffix", [("pca", ".png"), ("pca", ".svg"), ("tsne", ".png")])
def test_embedding_scatter(tmp_path, method, suffix):
    rng = np.random.default_rng(0)
    labels = np.arange(45) % 3
    emb = rng.normal(size=(45, 16)) + labels[:, None] * 3.0
    path = plots.plot_embeddings(emb, labels, ["a", "b", "c"], tmp_path / f"e{suffix}", method=method)
    if suffix == ".png":
        png = read_png(path)
        assert png.size == (870, 1080) and not png.is_blank()  # 7.2 x 5.8 in
        assert all(png.has(f"C{c}", alpha=0.8, tol=2) for c in range(3))  # points of each class
        return
    svg = read_svg(path)
    assert svg.legend() == ["a (15)", "b (15)", "c (15)"]
    assert {"PCA 1", "PCA 2", "PCA of 45 embeddings"} <= set(svg.texts())
    assert svg.scatters() == [(hex_colour(f"C{c}"), 15) for c in range(3)]


def test_embedding_scatter_multilabel_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    labels = (rng.random((30, 4)) < 0.3).astype(int)
    png = read_png(plots.plot_embeddings(rng.normal(size=(30, 8)), labels, list("abcd"), tmp_path / "m.png"))
    first = labels.argmax(axis=1)[labels.any(axis=1)]  # a point takes the colour of its first positive label
    assert png.size == (870, 1080) and not png.is_blank()
    assert all(png.has(f"C{c}", alpha=0.8, tol=2) for c in np.unique(first))
    with pytest.raises(VlmError, match="30 embeddings but 29 labels"):
        plots.plot_embeddings(rng.normal(size=(30, 8)), labels[:29], list("abcd"), tmp_path / "m.png")
    with pytest.raises(VlmError, match="pca or tsne"):
        plots.project_2d(rng.normal(size=(30, 8)), "umap")


def test_embeddings_figure_reads_the_cache_and_encodes_nothing(bench, tmp_path):
    from fixtures.tiny_models import FakeEncoder
    from vlm.embeddings import image_embeddings

    split = load_split("pathmnist", "test", 28, bench["root"])
    image_embeddings(FakeEncoder(), split, cache_dir=tmp_path)  # e.g. a zero-shot run cached them

    class Cached(FakeEncoder):
        def encode_images(self, x):
            raise AssertionError("encoded an image that the cache holds")

    path = plots.embeddings_figure("pathmnist", "fake", tmp_path / "e.svg", data_root=bench["root"], cache_dir=tmp_path,
                                   limit=12, encoder=Cached())
    svg = read_svg(path)
    assert sum(n for _, n in svg.scatters()) == 12 and "PCA of fake image embeddings · pathmnist 28px test (n=12)" in svg.texts()
