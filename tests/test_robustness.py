"""MedMNIST-C robustness: the package's corruptions and their cache, BE/RBE against medmnistc's Evaluator, the
rebuilt methods (trained model, linear probe, zero-shot) reproducing their recorded logits, the CLI and the plot."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli import app
from conftest import write_synthetic
from fixtures.tiny_models import FakeEncoder
from vlm.data import load_split
from vlm.errors import VlmError
from vlm.evaluate import evaluate

medmnistc = pytest.importorskip("medmnistc.corruptions.registry")  # needs ImageMagick's MagickWand too
from vlm.robustness import corrupt_images, corrupted_split, corruptions, robustness  # noqa: E402
from vlm.robustness.corrupt import CorruptionSizeError, _motion_blur  # noqa: E402
from vlm.robustness.report import balanced_errors  # noqa: E402

runner = CliRunner()
BREAST = ["pixelate", "jpeg_compression", "speckle_noise", "motion_blur", "brightness_up", "brightness_down",
          "contrast_down"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small-cnn trained for one epoch on synthetic breastmnist (its data root and run folder)."""
    from vlm.training import TrainConfig, train

    root = tmp_path_factory.mktemp("robust")
    write_synthetic(root, "breastmnist", separable=True)
    result = train("breastmnist", "small-cnn", config=TrainConfig(epochs=1, batch_size=16, n_bootstrap=0),
                   data_root=root, runs_dir=root / "runs")
    return root, result.run_dir


# ----------------------------------------------------------------------------- corruptions
def test_breastmnist_corruptions_are_medmnistc_own():
    assert corruptions("breastmnist") == BREAST == list(medmnistc.CORRUPTIONS_DS["breastmnist"])
    with pytest.raises(VlmError, match="no corruptions for vesselmnist3d"):
        corruptions("vesselmnist3d")


@pytest.mark.parametrize("flag,channels", [("breastmnist", 1), ("pathmnist", 3)])
def test_every_corruption_keeps_shape_and_dtype_and_is_seeded(flag, channels):
    rng = np.random.default_rng(0)
    images = rng.integers(30, 220, size=(3, channels, 28, 28)).astype(np.uint8)
    state = np.random.get_state()[1].copy(), random.getstate()
    for name in corruptions(flag):
        for severity in (1, 5):
            try:
                out = corrupt_images(images, flag, name, severity, seed=0)
            except CorruptionSizeError:  # stains and bubbles sized for 224 px
                assert (flag, name) in {("pathmnist", "stain_deposit"), ("pathmnist", "bubble")}
                continue
            assert out.shape == images.shape and out.dtype == np.uint8, name
            assert np.array_equal(out, corrupt_images(images, flag, name, severity, seed=0)), name
    assert np.array_equal(np.random.get_state()[1], state[0]) and random.getstate() == state[1]  # left alone
    noisy = [corrupt_images(images, flag, "jpeg_compression" if channels == 3 else "speckle_noise", 5, seed=s)
             for s in (0, 1)]
    assert not np.array_equal(images, noisy[0])
    if channels == 1:
        assert not np.array_equal(*noisy)
    with pytest.raises(VlmError, match="severities 1 to 5"):
        corrupt_images(images, flag, corruptions(flag)[0], 6)


def test_motion_blur_matches_the_package_where_the_package_runs(monkeypatch):
    """At 224 px grey (the size medmnistc's shape test assumes), with np.fromstring restored, the package's
    MotionBlur.apply and the NumPy 2 port draw the same angle and give the same image."""
    from PIL import Image

    corruptor = medmnistc.CORRUPTIONS_DS["breastmnist"]["motion_blur"]
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (224, 224)).astype(np.uint8)).convert("RGB")
    monkeypatch.setattr(np, "fromstring", lambda blob, dtype: np.frombuffer(blob, dtype), raising=False)
    np.random.seed(3)
    theirs = corruptor.apply(img, 2)
    np.random.seed(3)
    assert np.array_equal(_motion_blur(corruptor, img, 2), theirs)


def test_corrupted_split_is_cached_per_key(tmp_path, monkeypatch):
    write_synthetic(tmp_path, "breastmnist")
    test = load_split("breastmnist", "test", 28, tmp_path)
    first = corrupted_split(test, "pixelate", 3, data_root=tmp_path)
    files = sorted((tmp_path / "medmnistc").glob("*.npy"))
    assert len(files) == 1 and json.loads(files[0].with_suffix(".json").read_text())["severity"] == 3
    monkeypatch.setattr("vlm.robustness.corrupt.corrupt_images", lambda *a: pytest.fail("not cached"))
    again = corrupted_split(test, "pixelate", 3, data_root=tmp_path)
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, test.labels)
    monkeypatch.undo()
    corrupted_split(test, "pixelate", 3, seed=1, data_root=tmp_path)
    corrupted_split(test, "pixelate", 4, data_root=tmp_path)
    assert len(list((tmp_path / "medmnistc").glob("*.npy"))) == 3
    files[0].write_bytes(b"broken")
    assert torch.equal(corrupted_split(test, "pixelate", 3, data_root=tmp_path).images, first.images)


# ----------------------------------------------------------------------------- MedMNIST-C's measures
def test_balanced_errors_agree_with_medmnistc_evaluator(tmp_path):
    from medmnistc.eval import Evaluator

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(60, 1))
    noisy = lambda level: np.clip(y[:, [0]] * level + rng.random((60, 1)) * (1 - level), 0, 1)  # noqa: E731
    two = lambda p: np.concatenate([1 - p, p], axis=1)  # noqa: E731
    ev = Evaluator("breastmnist", y, BREAST, str(tmp_path), "test", "binary-class")
    clean = two(noisy(0.3))
    ev.evaluate_clean(clean)
    errors = {}
    for name in BREAST:
        probs = [two(noisy(level)) for level in np.linspace(0.25, 0.02, 5)]
        ev.evaluate(np.concatenate(probs), name)
        errors[name] = float(np.mean([1 - evaluate("binary", y, p, n_bootstrap=0).balanced_acc for p in probs]))
    ev.output_log = {}
    ev.populate_summary()
    ours = balanced_errors("breastmnist", 1 - evaluate("binary", y, clean, n_bootstrap=0).balanced_acc, errors)
    assert ours["be"] == pytest.approx(ev.output_log["metrics"]["be"], abs=1e-12)
    assert ours["rbe"] == pytest.approx(ev.output_log["metrics"]["rbe"], abs=1e-12)
    for name in BREAST:
        assert ours["per_corruption"][name]["rbe"] == pytest.approx(ev.output_log["rbe_scores"][name], abs=1e-12)


# ----------------------------------------------------------------------------- rebuilt methods
def test_trained_run_robustness_report_and_cli(trained, tmp_path):
    root, run = trained
    report = robustness(run, data_root=root, cache_dir=tmp_path / "c", names=["pixelate", "contrast_down"])
    assert np.allclose(report["clean"]["auc"], json.loads((run / "record.json").read_text())["metrics"]["auc"])
    assert [(c["corruption"], c["severity"]) for c in report["cells"]] == [
        (n, s) for n in ("pixelate", "contrast_down") for s in range(1, 6)]
    assert {p["corruption"] for p in report["corruptions"]} == {"pixelate", "contrast_down"}
    assert report["summary"]["be"] is not None and report["medmnistc"] == "0.1.0"
    saved = json.loads((run / "robustness.json").read_text())
    assert saved["cells"] == json.loads(json.dumps(report["cells"]))
    result = invoke("robustness", "breastmnist", "--run", run, "--data-root", root, "--cache-dir", tmp_path / "c",
                    "--corruption", "pixelate", "--severity", "1", "--severity", "5", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [c["severity"] for c in data["cells"]] == [1, 5] and "BE and RBE average" in data["note"]
    bad = invoke("robustness", "pathmnist", "--run", run, "--data-root", root)
    assert bad.exit_code == 2 and "is a run of breastmnist, not pathmnist" in bad.output
    for suffix in ("png", "svg"):
        out = tmp_path / f"rob.{suffix}"
        plotted = invoke("plot", "robustness", run, run, "--out", out)
        assert plotted.exit_code == 0, plotted.output
        assert out.stat().st_size > 1000


def test_linear_probe_and_zero_shot_rebuild_their_recorded_logits(tmp_path):
    from vlm.finetune import finetune
    from vlm.zeroshot import run_zero_shot

    write_synthetic(tmp_path, "breastmnist", separable=True)
    kw = dict(data_root=tmp_path, runs_dir=tmp_path / "runs", cache_dir=tmp_path / "emb")
    probe = finetune("breastmnist", "fake", mode="linear-probe", encoder=FakeEncoder(), **kw).run_dir
    shot = Path(run_zero_shot("breastmnist", "fake", styles="clip", encoder=FakeEncoder(), n_bootstrap=0,
                              **kw)[0]["run_dir"])
    for run in (probe, shot):
        report = robustness(run, data_root=tmp_path, cache_dir=tmp_path / "c", names=["brightness_up"],
                            severities=(2,), encoder=FakeEncoder())
        logits = torch.from_numpy(np.load(run / "logits.npy")).double()
        expected = evaluate("binary", load_split("breastmnist", "test", 28, tmp_path).labels, logits.softmax(1),
                            n_bootstrap=0)
        assert report["clean"]["auc"] == pytest.approx(expected.auc, abs=1e-9)
        assert report["clean"]["ece"] == pytest.approx(expected.ece, abs=1e-5)
    knn = finetune("breastmnist", "fake", mode="knn", encoder=FakeEncoder(), **kw).run_dir
    with pytest.raises(VlmError, match="kNN run"):
        robustness(knn, data_root=tmp_path)


def test_full_finetune_run_is_rebuilt_from_spec_and_best_weights(tmp_path):
    import warnings

    from vlm.finetune import finetune, finetune_config
    from vlm.robustness import run_scorer

    write_synthetic(tmp_path, "breastmnist", separable=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = finetune("breastmnist", "test_efficientnet", mode="full", data_root=tmp_path, runs_dir=tmp_path / "r",
                       config=finetune_config(epochs=1, batch_size=16, image_size=32, n_bootstrap=0,
                                              device="cpu")).record
        logits = run_scorer(run, device="cpu").logits(load_split("breastmnist", "test", 28, tmp_path))
    assert torch.allclose(logits, torch.from_numpy(np.load(Path(run.path) / "logits.npy")), atol=1e-5)
