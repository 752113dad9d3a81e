"""The `vlm plot` commands: roc, confusion, styles, montage and embeddings, and their errors."""

from __future__ import annotations

import json
import sys
import types

import torch
from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _is_figure(path) -> bool:
    data = path.read_bytes()
    if path.suffix == ".png":
        return data.startswith(b"\x89PNG") and len(data) > 1000
    return data.lstrip().startswith(b"<?xml") and b"<svg" in data


def test_cli_plot_roc_confusion_styles_montage(bench, tmp_path):
    runs, root = bench["runs"], bench["root"]
    out = tmp_path / "roc.svg"
    result = invoke("plot", "roc", "breastmnist", "--runs-dir", runs, "--data-root", root, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"file": str(out)} and _is_figure(out)
    run_id = bench["multiclass"].run_id
    result = invoke("plot", "roc", "pathmnist", "--runs-dir", runs, "--run", run_id, "--data-root", root,
                    "--out", tmp_path / "roc.png")
    assert result.exit_code == 0 and "roc.png" in result.stdout
    result = invoke("plot", "confusion", bench["binary"][0].run_id, "--runs-dir", runs, "--out", tmp_path / "cm.png",
                    "--json")
    assert result.exit_code == 0 and _is_figure(tmp_path / "cm.png")
    result = invoke("plot", "styles", "breastmnist", "--runs-dir", runs, "--model", "ViT-B-32",
                    "--out", tmp_path / "st.png", "--json")
    assert result.exit_code == 0 and _is_figure(tmp_path / "st.png")
    result = invoke("plot", "montage", "breastmnist", "--data-root", root, "--per-class", 2,
                    "--out", tmp_path / "mo.svg", "--json")
    assert result.exit_code == 0 and _is_figure(tmp_path / "mo.svg")


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


def test_cli_plot_embeddings_uses_encoder_and_embeddings(bench, tmp_path, monkeypatch):
    calls = {}

    def load_encoder(name, weights=None, device="cpu"):
        calls["encoder"] = (name, weights, device)
        return "ENC"

    def image_embeddings(encoder, split, **kwargs):  # returns (embeddings, images encoded), as vlm.embeddings
        calls["split"] = (encoder, split.task.flag, len(split))
        return torch.randn(len(split), 12, generator=torch.Generator().manual_seed(0)), len(split)

    monkeypatch.setitem(sys.modules, "vlm.encoders", types.SimpleNamespace(load_encoder=load_encoder))
    monkeypatch.setitem(sys.modules, "vlm.embeddings", types.SimpleNamespace(image_embeddings=image_embeddings))
    out = tmp_path / "emb.png"
    result = invoke("plot", "embeddings", "pathmnist", "--model", "tiny-clip", "--weights", "w.pt", "--data-root",
                    bench["root"], "--limit", 15, "--device", "cpu", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    assert calls == {"encoder": ("tiny-clip", "w.pt", "cpu"), "split": ("ENC", "pathmnist", 15)}
    assert json.loads(result.stdout)["file"] == str(out) and _is_figure(out)
