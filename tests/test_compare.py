"""Head-to-head comparison: published baselines, the comparison table, paired tests, `vlm compare`."""

from __future__ import annotations

import csv
import io
import json
import statistics

import medmnist
import pytest
import torch
from typer.testing import CliRunner

from cli import app
from conftest import write_synthetic
from vlm import compare
from vlm.baselines import METHODS_2D, METHODS_3D, RESOURCE, STORED_COPIES, medmnist_baselines
from vlm.commands.compare import to_csv, to_markdown
from vlm.data import load_split
from vlm.errors import VlmError
from vlm.results import RunRecord, load_runs
from vlm.scoring import record_run, score_split

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


# ----------------------------------------------------------------------------- published baselines
def test_baselines_cover_all_18_datasets_with_the_papers_methods():
    rows = medmnist_baselines()
    by_dataset: dict[str, list[str]] = {}
    for r in rows:
        by_dataset.setdefault(r["dataset"], []).append(r["method"])
        assert 0 < r["auc"] <= 1 and 0 < r["acc"] <= 1
        assert r["source"] in STORED_COPIES and r["split"] == "test" and "check" not in r
        assert "Scientific Data 10, 41 (2023)" in r["reference"] and r["reference"].endswith(r["table"])
        assert r["size"] == (224 if "(224)" in r["method"] else 28)
    assert set(by_dataset) == set(medmnist.INFO)
    for flag, methods in by_dataset.items():
        expected = METHODS_3D if flag.endswith("3d") else METHODS_2D
        assert sorted(methods) == sorted(expected), flag
    assert len(rows) == 12 * 7 + 6 * 8


def test_every_baseline_cell_names_its_stored_copy():
    # The shipped CSV: a `source` column (no `check`), every row sourced, no cell left unverified or "?".
    from importlib import resources
    text = resources.files("vlm").joinpath("resources", RESOURCE).read_text(encoding="utf-8")
    body = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    rows = list(csv.DictReader(io.StringIO("\n".join(body))))
    assert list(rows[0]) == ["dataset", "method", "table", "size", "auc", "acc", "source"]
    assert len(rows) == 132
    for r in rows:
        assert r["source"] in STORED_COPIES, r
        assert all(r[k] and r[k] != "?" and "unverified" not in r[k] for k in r), r
        assert len(r["auc"]) == len(r["acc"]) == 5  # three decimals, as printed
    # each stored copy is named precisely enough to re-read: repository, commit, path
    for name, where in STORED_COPIES.items():
        repo, rest = name.split("@")
        commit, path = rest.split(":")
        assert f"MedMNIST/{repo}, commit {commit}" in where and len(where.split("commit ")[1].split(",")[0]) == 40
        assert f", {path} " in where


# Spot checks against the stored copy (medmnist.github.io@83f35a9:index.html), including cells the
# older 2021 pages had otherwise: NoduleMNIST3D (re-run for the paper), 224 px ResNets, VesselMNIST3D.
@pytest.mark.parametrize("flag, method, auc, acc", [
    ("breastmnist", "ResNet-18 (28)", 0.901, 0.863),
    ("retinamnist", "ResNet-18 (28)", 0.717, 0.524),
    ("vesselmnist3d", "ResNet-18+ACS", 0.930, 0.928),
    ("adrenalmnist3d", "ResNet-18+ACS", 0.839, 0.754),
    ("nodulemnist3d", "ResNet-18+3D", 0.863, 0.844),
    ("nodulemnist3d", "auto-sklearn", 0.914, 0.874),
    ("vesselmnist3d", "AutoKeras", 0.773, 0.894),
    ("synapsemnist3d", "ResNet-50+3D", 0.851, 0.795),
    ("pathmnist", "ResNet-18 (224)", 0.989, 0.909),
    ("octmnist", "ResNet-18 (224)", 0.958, 0.763),
    ("bloodmnist", "auto-sklearn", 0.984, 0.878),
    ("chestmnist", "Google AutoML Vision", 0.778, 0.948),
])
def test_baseline_check_values(flag, method, auc, acc):
    (row,) = [r for r in medmnist_baselines(flag) if r["method"] == method]
    assert (row["auc"], row["acc"]) == (auc, acc)
    assert row["source"] == "medmnist.github.io@83f35a9:index.html"
    assert row["table"] == ("Table 4" if flag.endswith("3d") else "Table 3")


def test_baselines_unknown_dataset_suggests():
    with pytest.raises(VlmError, match="breastmnist"):
        medmnist_baselines("breastmnst")


# ----------------------------------------------------------------------------- helpers
def _score(split, seed, n_bootstrap=40):
    gen = torch.Generator().manual_seed(seed)
    s = torch.rand(len(split), split.task.num_classes, generator=gen, dtype=torch.float64)
    if split.task.kind != "multi-label":
        s = s / s.sum(1, keepdim=True)
    return s, score_split(split, s, n_bootstrap=n_bootstrap, seed=0)


def _run(root, runs, flag, seed, split="test", size=28, method="train", model="tiny", config=None, **kw):
    data = load_split(flag, split, size, root)
    scores, metrics = _score(data, seed)
    return record_run(data, scores, metrics, method=method, model=model, runs_dir=runs, seed=seed,
                      config=dict(config or {}), **kw)


def _fake(dataset="breastmnist", size=28, split="test", seed=0, auc=0.8, acc=0.7, method="train", model="m",
          config=None, **metrics):
    return RunRecord(method=method, model=model, dataset=dataset, size=size, split=split, seed=seed,
                     config=dict(config or {}), metrics={"auc": auc, "acc": acc, "n": 20, **metrics},
                     run_id=f"{dataset}-{size}-{split}-{model}-{seed}")


# ----------------------------------------------------------------------------- the table
def test_table_groups_seeds_into_mean_std_and_marks_best(data_root, runs_dir):
    seeded = [_run(data_root, runs_dir, "breastmnist", s, config={"lr": 0.01, "experiment_job": f"job{s}"})
              for s in (0, 1, 2)]
    single = _run(data_root, runs_dir, "breastmnist", 7, model="other")
    table = compare.comparison_table(load_runs(runs_dir))
    assert [c.label for c in table.columns] == ["breastmnist 28px test"]
    assert len(table.rows) == 2
    grouped = table.cell(table.row("train tiny"), table.columns[0])
    aucs = [r.metrics["auc"] for r in seeded]
    assert grouped.n_seeds == 3 and sorted(grouped.seeds) == [0, 1, 2]
    assert grouped.auc == pytest.approx(statistics.fmean(aucs))
    assert grouped.auc_std == pytest.approx(statistics.stdev(aucs)) and grouped.auc_ci is None
    assert "± " in compare.format_value(grouped, "auc") and "(n=3)" in compare.format_value(grouped, "auc")
    one = table.cell(table.row("train other"), table.columns[0])
    assert one.n_seeds == 1 and one.auc_ci == tuple(single.metrics["auc_ci"])
    assert compare.format_value(one, "auc").count("[") == 1
    for metric in ("auc", "acc"):
        best = max((grouped, one), key=lambda c: getattr(c, metric))
        assert getattr(best, f"best_{metric}") and not getattr(grouped if best is one else one, f"best_{metric}")


def test_repeated_seed_counts_once_newest_wins():
    old, new = _fake(seed=0, auc=0.6), _fake(seed=0, auc=0.9)
    new.run_id = "newer"
    table = compare.comparison_table([old, new])
    cell = table.cell(table.rows[0], table.columns[0])
    assert cell.n_seeds == 1 and cell.auc == 0.9 and cell.run_ids == ["newer"]
    assert any("replaced" in n for n in table.notes)


def test_table_never_merges_sizes_or_splits():
    records = [_fake(size=28, split="test", auc=0.7), _fake(size=64, split="test", auc=0.8),
               _fake(size=28, split="val", auc=0.9), _fake(size=224, split="test", auc=0.6)]
    table = compare.comparison_table(records, baselines="medmnist")
    labels = [c.label for c in table.columns]
    assert labels == ["breastmnist 28px val", "breastmnist 28px test", "breastmnist 64px test",
                      "breastmnist 224px test"]
    row = table.row("train m")
    assert [table.cell(row, c).auc for c in table.columns] == [
        {"breastmnist 28px test": 0.7, "breastmnist 64px test": 0.8, "breastmnist 28px val": 0.9,
         "breastmnist 224px test": 0.6}[c.label] for c in table.columns]
    assert all(table.cell(row, c).n_seeds == 1 for c in table.columns)
    # Published values only in test columns of their size.
    by_label = {c.label: c for c in table.columns}
    r18_28, r18_224 = table.row("ResNet-18 (28) (published)"), table.row("ResNet-18 (224) (published)")
    assert table.cell(r18_28, by_label["breastmnist 28px test"]).auc == 0.901
    assert table.cell(r18_28, by_label["breastmnist 224px test"]) is None
    assert table.cell(r18_224, by_label["breastmnist 224px test"]).auc == 0.891
    assert table.cell(r18_224, by_label["breastmnist 28px test"]) is None
    for label in ("breastmnist 28px val", "breastmnist 64px test"):
        assert not any(table.cell(r, by_label[label]) for r in table.rows if r.published)
    auto = table.row("Google AutoML Vision (published)")
    assert table.cell(auto, by_label["breastmnist 28px test"]).acc == 0.861
    pub = table.cell(auto, by_label["breastmnist 28px test"])
    assert pub.published and pub.auc_ci is None and pub.best_auc  # 0.919 beats 0.7 and the other papers' rows


def test_method_identity_ignores_seed_and_job_but_not_options():
    records = [
        _fake(seed=0, method="zero-shot", model="ViT-B-32", config={"style": "clip", "experiment_job": "a"}),
        _fake(seed=1, method="zero-shot", model="ViT-B-32", config={"style": "clip", "experiment_job": "b"}),
        _fake(seed=0, method="zero-shot", model="ViT-B-32", config={"style": "plain"}),
        _fake(seed=0, model="r18", config={"lr": 0.1, "out_dir": "/tmp/x"}),
        _fake(seed=0, model="r18", config={"lr": 0.01}),
    ]
    table = compare.comparison_table(records)
    labels = sorted(r.label for r in table.rows)
    assert labels == ["train r18 {lr=0.01}", "train r18 {lr=0.1}", "zero-shot ViT-B-32 [clip]",
                      "zero-shot ViT-B-32 [plain]"]
    clip = table.cell(table.row("zero-shot ViT-B-32 [clip]"), table.columns[0])
    assert clip.n_seeds == 2


def test_training_outcomes_do_not_split_seeds():
    # What `fit` records after training (chosen epoch, its val AUC, why it stopped, the precision that
    # ran on that device) differs between seeds of one method; it must not make rows of its own.
    records = [
        _fake(seed=s, model="acs:resnet18", config={"lr": 1e-3, "best_epoch": e, "best_val_auc": v, "epochs_run": 5,
                                                    "stop_reason": r, "precision": p, "device_used": d})
        for s, e, v, r, p, d in [(0, 2, 0.83, "completed", "bf16-autocast", "cpu"),
                                 (1, 4, 0.71, "early-stopping", "fp32", "cuda:0")]
    ]
    table = compare.comparison_table(records)
    assert [r.label for r in table.rows] == ["train acs:resnet18"]
    assert table.cell(table.rows[0], table.columns[0]).n_seeds == 2


def test_fewshot_seeds_are_one_row_per_method_and_k():
    # Each seed draws its own shots (a shots file and its digest) and picks its own option on val ("chosen").
    records = [
        _fake(seed=s, method="fewshot-knn", model="timm:lite0", config={
            "fewshot_method": "knn", "shots": k, "shots_file": f"shots/{k}_{s}.json", "shots_sha256": f"{k}{s}" * 8,
            "n_train": 2 * k, "options": {"k": "auto"}, "chosen": {"k": s + 1}, "val_auc": 0.5 + s / 10})
        for k in (1, 4) for s in (0, 1)
    ]
    table = compare.comparison_table(records)
    assert len(table.rows) == 2 and [table.cell(r, table.columns[0]).n_seeds for r in table.rows] == [2, 2]
    assert sorted(r.options["shots"] for r in table.rows) == [1, 4]


def test_experiment_method_is_one_row_across_datasets():
    # A probe run on a 2D and a 3D dataset picks its L2 strength per dataset and has 3D-only options.
    records = [
        _fake(method="linear-probe", model="lite0", config={"experiment_method": "probe", "l2": 1.0}),
        _fake(dataset="vesselmnist3d", method="linear-probe", model="lite0",
              config={"experiment_method": "probe", "l2": 10.0, "pool": "mean", "val_auc": 0.8}),
    ]
    table = compare.comparison_table(records)
    assert [r.label for r in table.rows] == ["probe (linear-probe lite0)"]
    assert all(table.cell(table.rows[0], col) is not None for col in table.columns)


def test_dataset_filter_and_baselines_for_3d():
    records = [_fake(dataset="vesselmnist3d"), _fake(dataset="breastmnist")]
    table = compare.comparison_table(records, datasets=["vesselmnist3d"], baselines=True)
    assert [c.label for c in table.columns] == ["vesselmnist3d 28px test"]
    acs = table.cell(table.row("ResNet-18+ACS (published)"), table.columns[0])
    assert (acs.auc, acs.acc) == (0.930, 0.928)
    autokeras = table.cell(table.row("AutoKeras (published)"), table.columns[0])
    assert (autokeras.auc, autokeras.acc) == (0.773, 0.894)
    # every published value is sourced now: none is marked unverified
    assert all(table.cell(r, table.columns[0]).note is None for r in table.rows if r.published)
    assert compare.format_value(autokeras, "auc") == "0.773†"
    assert not any("'?'" in n for n in table.notes)


def test_markdown_csv_json_outputs_parse(data_root, runs_dir):
    for s in (0, 1):
        _run(data_root, runs_dir, "breastmnist", s)
    _run(data_root, runs_dir, "pathmnist", 0)
    table = compare.comparison_table(load_runs(runs_dir), baselines="medmnist")
    md = to_markdown(table)
    lines = [line for line in md.splitlines() if line.startswith("|")]
    width = 1 + 2 * len(table.columns)
    assert all(line.count("|") - line.count("\\|") == width + 1 for line in lines)
    assert len(lines) == 2 + len(table.rows) and "**" in md
    rows = list(csv.DictReader(io.StringIO(to_csv(table))))
    assert {r["column"] for r in rows} == {"breastmnist 28px test", "pathmnist 28px test"}
    mine = [r for r in rows if r["method"] == "train tiny" and r["dataset"] == "breastmnist"]
    assert len(mine) == 1 and mine[0]["n_seeds"] == "2" and float(mine[0]["auc_std"]) >= 0
    data = json.loads(json.dumps(table.to_dict()))
    assert [c["label"] for c in data["columns"]] == [c.label for c in table.columns]
    assert data["rows"][0]["cells"]


# ----------------------------------------------------------------------------- paired comparison
def test_pair_with_itself_gives_zero_difference_and_p_one(data_root, runs_dir):
    run = _run(data_root, runs_dir, "breastmnist", 0)
    result = compare.pair_compare(run, run.path, n_bootstrap=50, seed=0, data_root=data_root)
    for metric in ("auc", "acc"):
        assert result[metric]["diff"] == 0 and result[metric]["p_value"] == 1.0
        assert result[metric]["ci"] == (0.0, 0.0)
    assert result["n"] == 20 and result["dataset"] == "breastmnist"


def test_pair_refuses_different_test_sets(data_root, runs_dir, tmp_path):
    a = _run(data_root, runs_dir, "breastmnist", 0)
    val = _run(data_root, runs_dir, "breastmnist", 1, split="val")
    other = _run(data_root, runs_dir, "retinamnist", 0)
    with pytest.raises(VlmError, match="split test vs val"):
        compare.pair_compare(a, val, 20, data_root=data_root)
    with pytest.raises(VlmError, match="dataset breastmnist vs retinamnist"):
        compare.pair_compare(a, other, 20, data_root=data_root)
    small_root = tmp_path / "small"
    small_root.mkdir()
    write_synthetic(small_root, "breastmnist", n=(10, 5, 12))
    short = _run(small_root, runs_dir, "breastmnist", 3)
    with pytest.raises(VlmError, match="different numbers of samples"):
        compare.pair_compare(a, short, 20, data_root=data_root)


def test_pair_refuses_different_thresholds_unless_given(data_root, runs_dir):
    data = load_split("breastmnist", "test", 28, data_root)
    scores, metrics = _score(data, 0)
    a = record_run(data, scores, metrics, method="train", model="a", runs_dir=runs_dir)
    b = record_run(data, scores, score_split(data, scores, threshold=0.3, n_bootstrap=0), method="train", model="b",
                   runs_dir=runs_dir)
    with pytest.raises(VlmError, match="different thresholds"):
        compare.pair_compare(a, b, 20, data_root=data_root)
    result = compare.pair_compare(a, b, 20, data_root=data_root, threshold=0.5)
    assert result["auc"]["diff"] == 0 and result["threshold"] == 0.5


# ----------------------------------------------------------------------------- CLI
def test_cli_compare_formats(data_root, runs_dir):
    for s in (0, 1):
        _run(data_root, runs_dir, "breastmnist", s)
    result = invoke("compare", runs_dir, "--json", "--baselines", "medmnist")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["columns"][0]["label"] == "breastmnist 28px test"
    assert any(r["published"] for r in data["rows"])
    md = invoke("compare", runs_dir, "--format", "markdown", "--dataset", "breastmnist")
    assert md.exit_code == 0 and md.stdout.startswith("| method | breastmnist 28px test AUC")
    rows = list(csv.DictReader(io.StringIO(invoke("compare", runs_dir, "--format", "csv").stdout)))
    assert rows[0]["n_seeds"] == "2"
    table = invoke("compare", runs_dir)
    assert table.exit_code == 0 and "breastmnist 28px test" in table.stdout
    # the one row is best in both columns: starred, so that plain text (no colours) shows it
    assert "best per column starred *" in " ".join(table.stdout.split()) and table.stdout.count("*") == 3


def test_cli_compare_pair(data_root, runs_dir):
    a = _run(data_root, runs_dir, "breastmnist", 0)
    b = _run(data_root, runs_dir, "breastmnist", 1, model="other")
    result = invoke("compare", runs_dir, "--pair", a.run_id, b.run_id, "--bootstrap", 50, "--data-root", data_root,
                    "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["a"]["run_id"] == a.run_id and data["auc"]["rounds"] <= 50
    assert data["auc"]["diff"] == pytest.approx(a.metrics["auc"] - b.metrics["auc"])
    md = invoke("compare", runs_dir, "--pair", a.path, b.path, "--bootstrap", 30, "--data-root", data_root,
                "--format", "markdown")
    assert md.exit_code == 0 and "| AUC |" in md.stdout


def test_cli_compare_errors(data_root, runs_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("compare", empty)
    assert result.exit_code == 2 and "No finished runs" in result.output
    a = _run(data_root, runs_dir, "breastmnist", 0)
    other = _run(data_root, runs_dir, "retinamnist", 0)
    result = invoke("compare", runs_dir, "--dataset", "pathmnist")
    assert result.exit_code == 2 and "No runs of pathmnist" in result.output
    result = invoke("compare", runs_dir, "--pair", a.run_id, other.run_id, "--data-root", data_root)
    assert result.exit_code == 2 and "different test sets" in result.output
    result = invoke("compare", runs_dir, "--format", "xml")
    assert result.exit_code == 2 and "--format" in result.output
    result = invoke("compare", runs_dir, "--baselines", "imagenet")
    assert result.exit_code == 2 and "medmnist" in result.output


def test_cli_help_has_examples():
    for args in (["compare", "--help"], ["plot", "roc", "--help"], ["plot", "embeddings", "--help"]):
        result = invoke(*args)
        assert result.exit_code == 0 and "Example" in result.stdout


def test_compare_with_no_runs_prints_the_published_table_alone(tmp_path):
    runner = CliRunner()
    out = runner.invoke(app, ["compare", str(tmp_path), "--baselines", "medmnist", "--json"])
    assert out.exit_code == 0, out.output
    table = json.loads(out.stdout)
    assert len(table["columns"]) == 12 * 2 + 6  # 2D at 28 and 224 px, 3D at 28 px
    assert all(row["published"] for row in table["rows"])
    md = runner.invoke(app, ["compare", str(tmp_path), "--baselines", "medmnist", "--dataset", "retinamnist",
                             "--format", "markdown"])
    assert md.exit_code == 0 and "| ResNet-18 (28) (published) | 0.717† | 0.524† |" in md.stdout
    bare = runner.invoke(app, ["compare", str(tmp_path)])
    assert bare.exit_code == 2 and "--baselines medmnist" in bare.output
