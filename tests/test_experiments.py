"""Experiment files: validation with file:line messages, `vlm run` runs what is missing."""

from __future__ import annotations

import json
import textwrap

import pytest
from typer.testing import CliRunner

from cli import app
from vlm.errors import VlmError
from vlm.experiments import JOB_KEY, finished_jobs, load_experiment

runner = CliRunner()

GOOD = """\
name: tiny
seeds: [0, 1]
datasets:
  - breastmnist
  - {flag: retinamnist, size: 28}
methods:
  - name: cnn
    kind: train
    model: small-cnn
    datasets: [breastmnist]
    options: {epochs: 1, batch_size: 16, n_bootstrap: 0}
"""


def write(tmp_path, text: str):
    path = tmp_path / "exp.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_matrix_expands_restricted_datasets_and_seeds(tmp_path):
    exp = load_experiment(write(tmp_path, GOOD + """\
  - name: probe
    kind: finetune
    model: resnet18
    mode: knn
"""))
    jobs = exp.jobs()
    assert [(j.method.name, j.dataset, j.seed) for j in jobs] == [
        ("cnn", "breastmnist", 0), ("cnn", "breastmnist", 1),
        ("probe", "breastmnist", 0), ("probe", "breastmnist", 1), ("probe", "retinamnist", 0), ("probe", "retinamnist", 1)]
    assert len({j.key for j in jobs}) == 6


@pytest.mark.parametrize("edit,needle", [
    (("seeds: [0, 1]", "seeds: [0, 1]\ncolour: red"), ":3: unknown key 'colour'"),
    (("  - breastmnist", "  - breastmnst"), ":4: Unknown dataset 'breastmnst'"),
    (("model: small-cnn", "model: smal-cnn"), ":9: Unknown model 'smal-cnn'"),
    (("epochs: 1,", "epochz: 1,"), ":11: unknown train option 'epochz'"),
    (("kind: train", "kind: training"), ":8: unknown kind 'training'"),
    (("size: 28}", "size: 512}"), ":5: retinamnist has no size 512"),
    (("datasets: [breastmnist]", "datasets: [pathmnist]"), ":10: pathmnist not in the experiment's datasets"),
])
def test_bad_files_name_the_line(tmp_path, edit, needle):
    path = write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(VlmError) as exc:
        load_experiment(path)
    assert str(path) + needle in str(exc.value)


def test_run_skips_finished_jobs_and_resumes(tmp_path, data_root):
    path = write(tmp_path, GOOD)
    runs = tmp_path / "runs"
    args = ["run", str(path), "--runs-dir", str(runs), "--data-root", str(data_root), "--device", "cpu", "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["ran"] == ["cnn · breastmnist 28px · seed 0", "cnn · breastmnist 28px · seed 1"]
    done = finished_jobs(runs)
    assert len(done) == 2 and all(r.config[JOB_KEY] == key for key, r in done.items())
    assert {r.seed for r in done.values()} == {0, 1}

    again = json.loads(runner.invoke(app, args).stdout)
    assert again["ran"] == [] and again["skipped"] == 2

    # An interrupted matrix: one job lost its record, so only that job runs again.
    lost = next(r for r in done.values() if r.seed == 1)
    (runs / lost.run_id / "record.json").unlink()
    resumed = json.loads(runner.invoke(app, args).stdout)
    assert resumed["ran"] == ["cnn · breastmnist 28px · seed 1"]


def test_run_bad_file_exit_2(tmp_path):
    path = write(tmp_path, GOOD.replace("kind: train", "kind: nope"))
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2 and "unknown kind 'nope'" in result.stderr and "Traceback" not in result.output
