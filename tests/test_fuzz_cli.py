"""A fuzz test of the CLI (hypothesis): generated option values, score files, run records, experiment YAML and
prompt YAML through `vlm` in-process. Every run exits 0 or 2, never with a traceback; on exit 2 stderr is one
line; nothing outside the run's own runs folder is touched (data, cache, working folder, home).

Derandomised (the same cases every run, no example database written), 440 cases in all, kept under 60 s:
commands that would train or encode are driven to fail fast after their checks (`--resume` of a folder that
is not a run, an encoder folder that does not exist), so what is fuzzed is the checking of every input.
`VLM_FUZZ_EXAMPLES=N` explores instead: random cases, N per test (e.g. 2000 for a longer search).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cli import app
from conftest import write_synthetic
from vlm.results import RunRecord

EXPLORE = int(os.environ.get("VLM_FUZZ_EXAMPLES", "0"))
FUZZ = settings(derandomize=not EXPLORE, database=None, deadline=None, max_examples=EXPLORE or 60,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MORE = settings(FUZZ, max_examples=EXPLORE or 100)
CASES = {"n": 0}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Path:
    """data/ (synthetic files), cache/, home/, cwd/ (all watched) and runs/ (one fresh folder per case)."""
    root = tmp_path_factory.mktemp("fuzz")
    for name in ("data", "cache", "home", "cwd", "runs"):
        (root / name).mkdir()
    for flag in ("breastmnist", "retinamnist", "chestmnist"):
        write_synthetic(root / "data", flag)
    np.save(root / "cwd" / "scores.npy", np.full((20, 2), 0.5))
    (root / "cwd" / "a-file").write_text("not a folder")
    return root


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(folder, d) != root / "runs"]
        for name in files + dirs:
            st_ = Path(folder, name).lstat()
            out[str(Path(folder, name).relative_to(root))] = (st_.st_size, st_.st_mtime_ns)
    return out


def run_cli(sandbox: Path, args: list[str]) -> None:
    """One case: `vlm ARGS` (RUNS replaced by a fresh runs folder) and the checks of the module docstring."""
    CASES["n"] += 1
    runs = Path(tempfile.mkdtemp(dir=sandbox / "runs"))
    args = [a.replace("RUNS", str(runs)) for a in args]
    before = _snapshot(sandbox)
    cwd = os.getcwd()
    os.chdir(sandbox / "cwd")
    try:
        result = CliRunner().invoke(app, args, env={"VLM_CACHE_DIR": str(sandbox / "cache"), "HOME": str(
            sandbox / "home"), "VLM_DATA_ROOT": str(sandbox / "data"), "COLUMNS": "200", "HF_HUB_OFFLINE": "1"})
    finally:
        os.chdir(cwd)
    shown = f"vlm {' '.join(args)}\nexit {result.exit_code}\n{result.output}\n{result.exception!r}"
    assert result.exit_code in (0, 2), shown
    assert result.exception is None or isinstance(result.exception, SystemExit), shown
    assert "Traceback" not in result.output, shown
    if result.exit_code == 2:
        assert len(result.stderr.strip().splitlines()) == 1, shown
    assert _snapshot(sandbox) == before, shown


# ----------------------------------------------------------------------------- values
NUMBER_TEXT = st.one_of(
    st.integers(-3, 40).map(str),
    st.sampled_from(["0", "-1", "1", "2", "0.5", "1.5", "1e-3", "1e9", "nan", "inf", "-inf", "ten", "", " ", "1,2",
                     "4294967296", "99999999999999999999", "0x10", "True"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
YAML_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-5, 300), st.floats(allow_nan=True, width=32),
                       st.text(max_size=8), st.lists(st.integers(-1, 3), max_size=3),
                       st.dictionaries(st.text(max_size=4), st.integers(0, 3), max_size=2))


def _flatten(options: dict[str, str]) -> list[str]:
    return [part for flag, value in options.items() for part in (flag, value)]


# ----------------------------------------------------------------------------- commands
TRAIN_FLAGS = ["--epochs", "--batch-size", "--lr", "--backbone-lr", "--weight-decay", "--lr-gamma", "--warmup-epochs",
               "--gamma", "--seed", "--patience", "--bootstrap", "--image-size", "--lr-milestones", "--size"]


@FUZZ
@given(options=st.dictionaries(st.sampled_from(TRAIN_FLAGS), NUMBER_TEXT, max_size=5),
       command=st.sampled_from(["train", "finetune"]))
def test_fuzz_training_options(sandbox, options, command):
    run_cli(sandbox, [command, "--resume", "RUNS/not-a-run", "--runs-dir", "RUNS", *_flatten(options)])


SCORES = st.one_of(
    st.sampled_from(["good", "complex", "ints", "pickled", "nan", "big", "rows", "3d", "cols", "folder", "missing",
                     "text"]))


def _scores_file(sandbox: Path, kind: str) -> str:
    folder = Path(tempfile.mkdtemp(dir=sandbox / "runs"))
    path = folder / "s.npy"
    p = np.random.default_rng(0).random((20, 1))
    arrays = {"good": np.hstack([1 - p, p]), "complex": np.hstack([1 - p, p]) + 1j, "ints": np.zeros((20, 2), int),
              "nan": np.full((20, 2), np.nan), "big": np.hstack([1 - p, p]) * 3, "rows": np.full((19, 2), 0.5),
              "3d": np.full((20, 2, 1), 0.5), "cols": np.full((20, 5), 0.2), "text": np.array(["a"] * 20)}
    if kind == "pickled":
        np.save(path, np.array([{"a": 1}] * 20, dtype=object), allow_pickle=True)
    elif kind == "folder":
        path.mkdir()
    elif kind in arrays:
        np.save(path, arrays[kind])
    return str(path)


@FUZZ
@given(kind=SCORES, options=st.dictionaries(st.sampled_from(["--threshold", "--bootstrap", "--seed", "--size"]),
                                            NUMBER_TEXT, max_size=3),
       split=st.sampled_from(["test", "val", "train", "dev", ""]), flag=st.sampled_from(["breastmnist", "chestmnist",
                                                                                        "nosuchmnist"]),
       record=st.booleans())
def test_fuzz_evaluate(sandbox, kind, options, split, flag, record):
    args = ["evaluate", flag, "--scores", _scores_file(sandbox, kind), "--split", split, *_flatten(options)]
    run_cli(sandbox, args + (["--record", "--runs-dir", "RUNS"] if record else []))


@FUZZ
@given(options=st.dictionaries(st.sampled_from(["--batch-size", "--slice-axis", "--bootstrap", "--seed", "--size"]),
                               NUMBER_TEXT, max_size=3),
       style=st.sampled_from(["best", "all", "clip", "clipp", "clip,descriptive", ""]),
       save=st.sampled_from([None, "new.npy", "scores.npy", "a-file/s.npy", "."]),
       force=st.booleans(), split=st.sampled_from(["test", "val", "nope"]))
def test_fuzz_zero_shot_options(sandbox, options, style, save, force, split):
    args = ["zero-shot", "breastmnist", "--model", str(sandbox / "no-such-encoder-folder"), "--style", style,
            "--split", split, "--runs-dir", "RUNS", "--cache-dir", "RUNS/cache", *_flatten(options)]
    args += ["--save-scores", f"RUNS/{save}" if save == "new.npy" else save] if save else []
    run_cli(sandbox, args + (["--force"] if force else []))


GOOD_RECORD = RunRecord("train", "small-cnn", "breastmnist", 28, "test", {"auc": 0.9, "acc": 0.8, "n": 20}).to_dict()


@FUZZ
@given(changes=st.lists(st.tuples(st.sampled_from(sorted(GOOD_RECORD) + ["metrics.auc", "metrics.auc_ci", "extra"]),
                                  YAML_VALUE), max_size=3),
       options=st.dictionaries(st.sampled_from(["--metrics", "--dataset", "--baselines"]),
                               st.sampled_from(["auc", "auc,ece", "f1", "breastmnist", "nosuch", "medmnist", ""]),
                               max_size=2))
def test_fuzz_compare_records(sandbox, changes, options):
    runs = Path(tempfile.mkdtemp(dir=sandbox / "runs"))
    for i, (key, value) in enumerate([("run_id", "good")] + changes):
        record = json.loads(json.dumps(GOOD_RECORD))
        if key.startswith("metrics."):
            record["metrics"][key.split(".")[1]] = value
        else:
            record[key] = value
        (runs / f"run{i}").mkdir()
        (runs / f"run{i}" / "record.json").write_text(json.dumps(record, default=str))
    run_cli(sandbox, ["compare", str(runs), *_flatten(options)])


DATASET_ENTRY = st.one_of(st.sampled_from(["breastmnist", "retinamnist", "nosuchmnist", "vesselmnist3d"]),
                          st.fixed_dictionaries({"flag": st.sampled_from(["breastmnist", "chestmnist"])},
                                                optional={"size": st.one_of(st.sampled_from([28, 64, 512]),
                                                                            YAML_VALUE)}),
                          YAML_VALUE)
OPTION_NAMES = ["epochs", "lr", "batch_size", "weight_decay", "gamma", "optimizer", "seed", "n_bootstrap", "k",
                "shots", "method", "lr_milestones", "model_opts", "pretrained", "split", "bogus", "amp"]
METHOD = st.fixed_dictionaries(
    {"name": st.one_of(st.text(min_size=1, max_size=5), YAML_VALUE),
     "kind": st.one_of(st.sampled_from(["train", "finetune", "zero-shot", "fewshot", "nope"]), YAML_VALUE),
     "model": st.sampled_from(["small-cnn", "medmnist-resnet18", "ViT-B-32", "nosuchmodel", "acs:resnet18"])},
    optional={"options": st.one_of(st.dictionaries(st.sampled_from(OPTION_NAMES), YAML_VALUE, max_size=3),
                                   YAML_VALUE),
              "mode": st.sampled_from(["knn", "full", "linear-probe", "bad", ""]),
              "styles": st.one_of(st.sampled_from(["clip", "all", "nope"]), YAML_VALUE),
              "datasets": st.one_of(st.lists(st.sampled_from(["breastmnist", "pathmnist"]), max_size=2), YAML_VALUE),
              "prompts": st.sampled_from(["/no/such.yaml", "prompts/breastmnist.yaml"]), "colour": YAML_VALUE})
EXPERIMENT = st.fixed_dictionaries(
    {"datasets": st.one_of(st.lists(DATASET_ENTRY, max_size=3), YAML_VALUE),
     "methods": st.one_of(st.lists(METHOD, max_size=2), YAML_VALUE)},
    optional={"name": YAML_VALUE, "seeds": st.one_of(st.lists(YAML_VALUE, max_size=3), YAML_VALUE),
              "launch": st.one_of(st.dictionaries(st.sampled_from(["workers", "launcher", "time", "gpus"]), YAML_VALUE,
                                                  max_size=2), YAML_VALUE),
              "device": st.one_of(st.sampled_from(["cpu", "auto", "tpu"]), YAML_VALUE), "colour": YAML_VALUE})


@MORE
@given(doc=st.one_of(EXPERIMENT, YAML_VALUE), broken=st.sampled_from([None, None, None, ":", "- [", "\t", "\x00"]))
def test_fuzz_experiment_yaml(sandbox, doc, broken):
    path = Path(tempfile.mkdtemp(dir=sandbox / "runs")) / "exp.yaml"
    text = yaml.safe_dump(doc, allow_unicode=True)
    path.write_text(text if broken is None else text[: len(text) // 2] + broken + text[len(text) // 2:])
    run_cli(sandbox, ["run", str(path), "--dry-run", "--runs-dir", "RUNS"])


SIDE = st.fixed_dictionaries({}, optional={"templates": st.one_of(st.lists(st.sampled_from(
    ["a photo of {label}.", "{label}", "no placeholder", "{organ}", "{label"]), max_size=2), YAML_VALUE),
    "prompts": st.one_of(st.dictionaries(st.sampled_from(["malignant", "normal, benign", "other"]),
                                         st.one_of(st.lists(YAML_VALUE, max_size=2), YAML_VALUE), max_size=2),
                         YAML_VALUE)})
PROMPTS = st.fixed_dictionaries(
    {"dataset": st.one_of(st.sampled_from(["breastmnist", "chestmnist", "nosuch"]), YAML_VALUE),
     "classes": st.one_of(st.just(["malignant", "normal, benign"]), st.lists(YAML_VALUE, max_size=3)),
     "styles": st.one_of(st.dictionaries(st.sampled_from(["clip", "Bad Name", "all", "x"]),
                                         st.one_of(SIDE, YAML_VALUE), max_size=2), YAML_VALUE)},
    optional={"names": YAML_VALUE, "description": YAML_VALUE, "extra": YAML_VALUE})


@MORE
@given(doc=st.one_of(PROMPTS, YAML_VALUE))
def test_fuzz_prompt_yaml(sandbox, doc):
    path = Path(tempfile.mkdtemp(dir=sandbox / "runs")) / "p.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    run_cli(sandbox, ["prompts", "validate", str(path)])


def test_fuzz_case_count():
    """Runs last in this file: the number of CLI cases the fuzz tests above ran (reported with -s)."""
    print(f"\nfuzzed CLI cases: {CASES['n']}")
    assert CASES["n"] == 0 or CASES["n"] >= 300
