"""`vlm fewshot`, `vlm plot fewshot` and the `fewshot` kind of `vlm run` (tiny timm / open_clip models,
synthetic data, typer's CliRunner)."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli import app
from conftest import write_synthetic
from fixtures.tiny_models import FakeEncoder, tiny_open_clip_config
from vlm.commands.fewshot import spread_values
from vlm.data import load_split
from vlm.experiments import JOB_KEY, finished_jobs
from vlm.fewshot import run_fewshot
from vlm.fewshot.experiment import JOB_TAG
from vlm.results import load_run, load_runs
from vlm.scoring import record_run, score_split

runner = CliRunner()


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> dict[str, Any]:
    """Synthetic breastmnist + vesselmnist3d files, a tiny timm tower and a tiny open_clip model (weights files)."""
    import open_clip
    import timm

    base = tmp_path_factory.mktemp("fewshot_cli")
    root = base / "data"
    root.mkdir()
    write_synthetic(root, "breastmnist", n=(40, 16, 20), separable=True)
    write_synthetic(root, "vesselmnist3d", n=(10, 6, 6))
    torch.manual_seed(0)
    timm_weights = base / "test_efficientnet.pt"
    torch.save(timm.create_model("test_efficientnet", num_classes=0).state_dict(), timm_weights)
    clip_name = tiny_open_clip_config(base / "configs", "medvlm-fewshot-cli-tiny")
    clip_weights = base / "tiny_clip.pt"
    torch.save(open_clip.create_model(clip_name, pretrained=None).state_dict(), clip_weights)
    return {"base": base, "root": root, "timm": timm_weights, "clip": clip_name, "clip_weights": clip_weights}


def fewshot(bench, tmp_path: Path, *args: str, model: str = "test_efficientnet", weights: str = "timm"):
    base = ["fewshot", *args[:1], "--model", model, "--weights", str(bench[weights]), "--data-root", str(bench["root"]),
            "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(bench["base"] / "cache"), "--device", "cpu",
            "--bootstrap", "10"]
    return runner.invoke(app, base + list(args[1:]), env={"COLUMNS": "200"})


def test_spread_values_takes_words_up_to_the_next_option_or_dataset():
    args = ["--method", "knn", "coop", "--shots", "1", "2", "all", "breastmnist", "--seeds", "0", "1", "--json"]
    assert spread_values(args) == ["--method", "knn", "--method", "coop", "--shots", "1", "--shots", "2", "--shots",
                                   "all", "breastmnist", "--seeds", "0", "--seeds", "1", "--json"]
    assert spread_values(["--model", "a", "b"]) == ["--model", "a", "b"]


def test_json_rows_are_methods_by_k_by_seeds_and_share_shots_files(bench, tmp_path):
    result = fewshot(bench, tmp_path, "breastmnist", "--method", "linear-probe", "knn", "--shots", "1", "2", "full",
                     "--seeds", "0", "1", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    rows = data["rows"]
    assert len(rows) == 2 * 3 * 2 and all(set(r) == {"method", "shots", "seed", "auc", "acc", "auc_ci", "acc_ci",
                                                     "run_dir"} for r in rows)
    assert {(r["method"], r["shots"], r["seed"]) for r in rows} == {
        (m, k, s) for m in ("linear-probe", "knn") for k in (1, 2, "all") for s in (0, 1)}
    assert len(data["summary"]) == 6 and all(s["n_seeds"] == 2 for s in data["summary"])
    assert data["images_encoded"] == 76 and len(rows[0]["auc_ci"]) == 2

    # A later call with another method draws nothing new: the same shots file per (K, seed) for every method.
    again = fewshot(bench, tmp_path, "breastmnist", "--method", "knn", "--method", "linear-probe", "--shots", "2",
                    "--seeds", "1", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["images_encoded"] == 0  # embeddings from the cache
    digests: dict = {}
    for row in rows + json.loads(again.stdout)["rows"]:
        config = load_run(row["run_dir"]).config
        digests.setdefault((row["shots"], row["seed"]), set()).add((config["shots_file"], config["shots_sha256"]))
    assert len(digests) == 6 and all(len(v) == 1 for v in digests.values())


def test_table_shows_mean_and_std_per_method_and_k(bench, tmp_path):
    result = fewshot(bench, tmp_path, "breastmnist", "--method", "knn", "--shots", "1", "4", "--seeds", "0", "1")
    assert result.exit_code == 0, result.output
    assert "few-shot AUC" in result.stdout and "K=4" in result.stdout and "mean ± std over 2 seeds;" in result.stdout
    assert re.search(r"knn\s+│\s+\d\.\d{3} ± \d\.\d{3}", result.stdout)


def test_text_methods_and_3d_volumes(bench, tmp_path):
    result = fewshot(bench, tmp_path, "breastmnist", "--method", "coop", "tip-adapter", "clip-adapter", "--shots", "2",
                     "--seeds", "0", "--option", "coop.epochs=2", "--option", "clip-adapter.epochs=2",
                     "--option", "clip-adapter.ratios=[0.2]", "--option", "tip-adapter.search_steps=[3,2]", "--json",
                     model=bench["clip"], weights="clip_weights")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert [r["method"] for r in rows] == ["coop", "tip-adapter", "clip-adapter"]
    assert load_run(rows[0]["run_dir"]).config["options"]["epochs"] == 2
    volumes = fewshot(bench, tmp_path, "vesselmnist3d", "--method", "knn", "--shots", "2", "--seeds", "0",
                      "--slice-axis", "1", "--pool", "max", "--json")
    assert volumes.exit_code == 0, volumes.output
    record = load_run(json.loads(volumes.stdout)["rows"][0]["run_dir"])
    assert record.config["slice_axis"] == 1 and record.config["pool"] == "max" and record.metrics["n"] == 6


@pytest.mark.parametrize("args, needle", [
    (["--method", "lineer-probe"], "Unknown few-shot method 'lineer-probe'"),
    (["--shots", "0"], "--shots must be a whole number of at least 1"),
    (["--shots", "two"], "--shots takes whole numbers"),
    (["--method", "coop"], "image-only: coop need"),
    (["--method", "knn", "tip-adapter"], "image-only: tip-adapter need"),
    (["--option", "knn.l2=1"], "'knn' is not one of the methods run"),
])
def test_bad_input_is_one_line_exit_2(bench, tmp_path, args, needle):
    result = fewshot(bench, tmp_path, "breastmnist", *args, "--shots", "1", "--seeds", "0")
    assert result.exit_code == 2, result.output
    assert needle in result.stderr and "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1


def test_mismatched_shots_file_is_refused(bench, tmp_path):
    first = fewshot(bench, tmp_path, "breastmnist", "--method", "knn", "--shots", "2", "--seeds", "3", "--json")
    shots_file = load_run(json.loads(first.stdout)["rows"][0]["run_dir"]).config["shots_file"]
    reused = fewshot(bench, tmp_path, "breastmnist", "--shots-file", shots_file, "--json")  # K and seed from it
    assert reused.exit_code == 0, reused.output
    assert [(r["shots"], r["seed"]) for r in json.loads(reused.stdout)["rows"]] == [(2, 3)]
    wrong = fewshot(bench, tmp_path, "breastmnist", "--shots-file", shots_file, "--shots", "4", "--seeds", "3")
    assert wrong.exit_code == 2 and "does not match this run: K 2 in the file vs 4 here" in wrong.stderr


# ----------------------------------------------------------------------------- vlm plot fewshot
def test_plot_has_a_band_and_curve_per_method_the_full_points_and_the_zero_shot_line(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    write_synthetic(root, "breastmnist", n=(40, 16, 20), separable=True)
    runs = tmp_path / "runs"
    enc = FakeEncoder()
    run_fewshot("breastmnist", "fake", methods=["linear-probe", "knn"], shots=[1, 2, 4, "all"], seeds=[0, 1],
                data_root=root, runs_dir=runs, encoder=enc, n_bootstrap=0)
    test = load_split("breastmnist", "test", 28, root)
    scores = torch.full((len(test), 2), 0.5)
    record_run(test, scores, score_split(test, scores, n_bootstrap=0), method="zero-shot", model=enc.id,
               runs_dir=runs, config={"style": "clip"})
    out = tmp_path / "curves.svg"
    result = runner.invoke(app, ["plot", "fewshot", str(runs), "--dataset", "breastmnist", "--out", str(out)])
    assert result.exit_code == 0, result.output
    svg = out.read_text()
    for kind in ("curve", "band", "full"):
        assert sorted(set(re.findall(rf'id="fewshot-{kind}-([\w-]+)"', svg))) == ["knn", "linear-probe"]
        assert len(re.findall(rf'id="fewshot-{kind}-', svg)) == 4  # two methods on each of the AUC and ACC panels
    assert 'id="zero-shot-0"' in svg and "zero-shot" in re.sub(r'id="[^"]*"', "", svg)  # the line and its label

    empty = runner.invoke(app, ["plot", "fewshot", str(runs), "--dataset", "retinamnist", "--out", str(out)])
    assert empty.exit_code == 2 and "No few-shot runs of retinamnist" in empty.stderr

    # runs encoded at another input size are not mixed in: --image-size picks them, the title says both sizes
    run_fewshot("breastmnist", "fake", methods=["knn"], shots=[1], seeds=[0], data_root=root, runs_dir=runs,
                encoder=FakeEncoder(), image_size=32, n_bootstrap=0)
    mixed = runner.invoke(app, ["plot", "fewshot", str(runs), "--dataset", "breastmnist", "--out", str(out)])
    assert mixed.exit_code == 2 and "several input sizes (native, 32): pick one with --image-size" in mixed.stderr
    picked = runner.invoke(app, ["plot", "fewshot", str(runs), "--dataset", "breastmnist", "--image-size", "32",
                                 "--out", str(out)])
    assert picked.exit_code == 0, picked.output
    svg = out.read_text()
    assert re.findall(r'id="fewshot-curve-([\w-]+)"', svg) == ["knn", "knn"] and "breastmnist 28px at 32px" in svg


# ----------------------------------------------------------------------------- vlm run
def test_experiment_with_a_fewshot_method_runs_each_k_and_resumes(bench, tmp_path):
    assert JOB_TAG == JOB_KEY
    path = tmp_path / "exp.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: fs
        seeds: [0, 1]
        datasets: [breastmnist]
        methods:
          - name: probe
            kind: fewshot
            model: test_efficientnet
            weights: {bench['timm']}
            options: {{method: linear-probe, shots: [1, 4], n_bootstrap: 0, max_iter: 50}}
        """))
    runs = tmp_path / "runs"
    args = ["run", str(path), "--runs-dir", str(runs), "--data-root", str(bench["root"]), "--device", "cpu",
            "--cache-dir", str(bench["base"] / "cache"), "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["ran"] == ["probe · breastmnist 28px · seed 0", "probe · breastmnist 28px · seed 1"]
    records = load_runs(runs)
    assert sorted((r.config["shots"], r.seed) for r in records) == [(1, 0), (1, 1), (4, 0), (4, 1)]
    assert {r.config["experiment_method"] for r in records} == {"probe K=1", "probe K=4"}
    assert sorted(key.count("/K=1") for key in finished_jobs(runs)) == [0, 0, 1, 1]  # K=4 ends the job: its plain key
    assert all(r.config["options"]["max_iter"] == 50 for r in records)

    # Interrupted after K=1 of seed 1: only its K=4 runs again.
    last = next(r for r in records if r.seed == 1 and r.config["shots"] == 4)
    (Path(last.path) / "record.json").unlink()
    again = runner.invoke(app, args)
    assert json.loads(again.stdout)["ran"] == ["probe · breastmnist 28px · seed 1"]
    assert sorted((r.config["shots"], r.seed) for r in load_runs(runs)) == [(1, 0), (1, 1), (4, 0), (4, 1)]

    bad = path.read_text().replace("max_iter: 50", "max_iters: 50")
    path.write_text(bad)
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "unknown fewshot option 'max_iters'" in result.stderr


def test_calibrate_temperature_scales_every_run_that_kept_its_logits(bench, tmp_path):
    result = fewshot(bench, tmp_path, "breastmnist", "--method", "coop", "tip-adapter", "clip-adapter", "--shots", "2",
                     "--seeds", "0", "--option", "coop.epochs=2", "--option", "clip-adapter.epochs=2",
                     "--option", "clip-adapter.ratios=[0.2]", "--option", "tip-adapter.search_steps=[3,2]",
                     "--calibrate", "temperature", "--json", model=bench["clip"], weights="clip_weights")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["calibrated"]) == 3
    val = load_split("breastmnist", "val", 28, bench["root"])
    for row in data["rows"]:
        record = load_run(row["run_dir"])
        folder = Path(record.path)
        logits = torch.from_numpy(np.load(folder / "logits.npy"))
        scores = torch.from_numpy(np.load(folder / "scores.npy"))
        assert torch.allclose(logits.softmax(dim=1), scores, atol=1e-5)  # the logits are the scored model's
        assert np.load(folder / "val_logits.npy").shape == (len(val), 2)
        cal = record.calibrated
        assert cal["temperature"] > 0 and cal["val_nll"][1] <= cal["val_nll"][0] + 1e-9  # fitted on val by NLL
        assert cal["metrics"]["auc"] == pytest.approx(record.metrics["auc"])  # T > 0 keeps the ranking
    knn = fewshot(bench, tmp_path, "breastmnist", "--method", "knn", "--shots", "2", "--seeds", "0",
                  "--calibrate", "temperature", "--json")
    assert knn.exit_code == 0 and json.loads(knn.stdout)["calibrated"] == []  # vote fractions: no logits
    strict = fewshot(bench, tmp_path, "breastmnist", "--shots", "2", "--seeds", "0", "--val-shots", "2",
                     "--calibrate", "temperature")
    assert strict.exit_code == 2 and "full val split" in strict.output
