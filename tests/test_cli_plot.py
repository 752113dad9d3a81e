"""The `vlm plot` commands: roc, confusion, styles, montage and embeddings, and their errors."""

from __future__ import annotations

import json
import sys
import types

import torch
from typer.testing import CliRunner

from cli import app
from fixtures.figures import read_png, read_svg

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_cli_plot_roc_confusion_styles_montage(bench, tmp_path):
    runs, root = bench["runs"], bench["root"]
    out = tmp_path / "roc.svg"
    result = invoke("plot", "roc", "breastmnist", "--runs-dir", runs, "--data-root", root, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"file": str(out)}
    roc = read_svg(out)  # every finished breastmnist run: two trained seeds, three zero-shot styles
    assert "ROC · breastmnist 28px test" in roc.texts() and len(roc.lines()) == 1 + 5
    assert roc.legend() == ["chance"] + [f"{name} (AUC {r.metrics['auc']:.3f})" for name, r in zip(
        ["train tiny seed 0", "train tiny seed 1", "zero-shot ViT-B-32 [clip]", "zero-shot ViT-B-32 [plain]",
         "zero-shot ViT-B-32 [radiology]"], bench["binary"] + bench["zeroshot"])]
    run_id = bench["multiclass"].run_id
    result = invoke("plot", "roc", "pathmnist", "--runs-dir", runs, "--run", run_id, "--data-root", root,
                    "--out", tmp_path / "roc.png")
    assert result.exit_code == 0 and "roc.png" in result.stdout
    png = read_png(tmp_path / "roc.png")  # the one run: nine class curves (tab10) and the black macro curve
    assert png.size == (960, 960) and all(png.has(f"C{i}") for i in range(9))
    result = invoke("plot", "confusion", bench["binary"][0].run_id, "--runs-dir", runs, "--out", tmp_path / "cm.png",
                    "--json")
    assert result.exit_code == 0
    png = read_png(tmp_path / "cm.png")
    assert png.size == (630, 1200) and not png.is_blank()  # a 2 x 2 confusion (8.0 x 4.2 in)
    result = invoke("plot", "styles", "breastmnist", "--runs-dir", runs, "--model", "ViT-B-32",
                    "--out", tmp_path / "st.png", "--json")
    assert result.exit_code == 0
    png = read_png(tmp_path / "st.png")
    assert png.size == (660, 870) and png.has("C0") and png.has("C1")  # three styles' AUC and ACC bars
    result = invoke("plot", "montage", "breastmnist", "--data-root", root, "--per-class", 2,
                    "--out", tmp_path / "mo.svg", "--json")
    assert result.exit_code == 0
    montage = read_svg(tmp_path / "mo.svg")
    assert "breastmnist 28px train: 2 random images per class" in montage.texts()
    assert montage.texts().count("(2 shown)") == 2 and montage.images() == 2


def test_cli_plot_errors(bench, tmp_path):
    runs, root = bench["runs"], bench["root"]
    result = invoke("plot", "roc", "breastmnist", "--runs-dir", runs, "--run", bench["multiclass"].run_id,
                    "--data-root", root, "--out", tmp_path / "r.png")
    assert result.exit_code == 2 and "run of pathmnist, not breastmnist" in result.output
    result = invoke("plot", "roc", "retinamnist", "--runs-dir", runs, "--data-root", root, "--out", tmp_path / "r.png")
    assert result.exit_code == 2 and "No finished runs of retinamnist" in result.output
    result = invoke("plot", "confusion", "no-such-run", "--runs-dir", runs, "--out", tmp_path / "c.png")
    assert result.exit_code == 2 and "No run 'no-such-run'" in result.output
    result = invoke("plot", "montage", "breastmnist", "--data-root", root, "--out", tmp_path / "m.gif")
    assert result.exit_code == 2 and ".png or .svg" in result.output


def test_cli_plot_embeddings_reads_the_whole_split_through_the_cache(bench, tmp_path, monkeypatch):
    calls = {}

    def load_encoder(name, weights=None, device="cpu", lazy=False):
        calls["encoder"] = (name, weights, device, lazy)
        return "ENC"

    def image_embeddings(encoder, split, **kwargs):  # returns (embeddings, images encoded), as vlm.embeddings
        calls["split"] = (encoder, split.task.flag, len(split), kwargs)
        return torch.randn(len(split), 12, generator=torch.Generator().manual_seed(0)), len(split)

    monkeypatch.setitem(sys.modules, "vlm.encoders", types.SimpleNamespace(load_encoder=load_encoder))
    monkeypatch.setitem(sys.modules, "vlm.embeddings", types.SimpleNamespace(image_embeddings=image_embeddings))
    out = tmp_path / "emb.svg"
    result = invoke("plot", "embeddings", "pathmnist", "--model", "tiny-clip", "--weights", "w.pt", "--data-root",
                    bench["root"], "--limit", 15, "--device", "cpu", "--cache-dir", tmp_path / "cache", "--out", out,
                    "--json")
    assert result.exit_code == 0, result.output
    # the lazy encoder builds nothing while the cache answers; the cache entry is the whole split's (20 images)
    assert calls == {"encoder": ("tiny-clip", "w.pt", "cpu", True),
                     "split": ("ENC", "pathmnist", 20, {"cache_dir": tmp_path / "cache"})}
    assert json.loads(result.stdout)["file"] == str(out)
    svg = read_svg(out)
    assert sum(n for _, n in svg.scatters()) == 15 and "PCA of tiny-clip image embeddings · pathmnist 28px test (n=15)" \
        in " ".join(svg.texts())
