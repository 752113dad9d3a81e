"""`vlm run` across workers: each job once, failures reported, dead workers' jobs resumed, submitit local."""

from __future__ import annotations

import collections
import re
import json
import textwrap
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from cli import app
from conftest import write_synthetic
from vlm.claims import HOST, Claim, Claims
from vlm.errors import VlmError
from vlm.experiments import JOB_KEY, LaunchSettings, load_experiment
from vlm.launch import executor_parameters, run_matrix
from vlm.results import load_runs
from vlm.worker import Session, log_path, run_claimed

runner = CliRunner()
FAST = {"poll_s": 0.1, "heartbeat_s": 0.2}

MATRIX = """\
name: tiny
seeds: [0, 1]
datasets: [breastmnist, retinamnist]
methods:
  - name: cnn
    kind: train
    model: small-cnn
    options: {epochs: 1, batch_size: 16, n_bootstrap: 0}
"""


@pytest.fixture
def exp_file(tmp_path):
    for flag in ("breastmnist", "retinamnist"):
        write_synthetic(tmp_path, flag, n=(32, 8, 8))
    path = tmp_path / "exp.yaml"
    path.write_text(MATRIX)
    return path


def records_per_job(runs) -> collections.Counter:
    return collections.Counter(r.config[JOB_KEY] for r in load_runs(runs))


def run_cli(exp_file, runs, *extra: str):
    result = runner.invoke(app, ["run", str(exp_file), "--runs-dir", str(runs), "--data-root", str(exp_file.parent),
                                 "--device", "cpu", "--json", *extra])
    return result, json.loads(result.stdout) if result.stdout.strip() else None


def test_two_workers_run_each_job_once(exp_file, tmp_path):
    runs = tmp_path / "runs"
    result, summary = run_cli(exp_file, runs, "--workers", "2")
    assert result.exit_code == 0, result.output
    keys = [job.key for job in load_experiment(exp_file).jobs()]
    assert records_per_job(runs) == {key: 1 for key in keys}
    claims = Claims(runs)
    assert all(claims.read(key).state == "done" and claims.read(key).attempt == 1 for key in keys)
    assert len(summary["ran"]) == 4 and summary["failed"] == []
    assert len(list((runs / "logs").glob("worker-*.log"))) == 2
    again = run_cli(exp_file, runs, "--workers", "2")[1]
    assert again["ran"] == [] and again["skipped"] == 4


def test_a_failed_job_is_reported_and_the_others_finish(exp_file, tmp_path):
    (exp_file.parent / "retinamnist.npz").unlink()  # the retinamnist jobs fail: no data file
    runs = tmp_path / "runs"
    result, summary = run_cli(exp_file, runs)
    assert result.exit_code == 1
    assert len(summary["ran"]) == 2 and len(records_per_job(runs)) == 2
    assert sorted(f["job"] for f in summary["failed"]) == ["cnn · retinamnist 28px · seed 0",
                                                            "cnn · retinamnist 28px · seed 1"]
    failure = summary["failed"][0]
    assert "VlmError" in failure["error"]
    log = open(failure["log"]).read()
    assert "Traceback" in log and "=== failed" in log

    write_synthetic(exp_file.parent, "retinamnist", n=(32, 8, 8))  # fixed: the next `vlm run` retries them
    result, summary = run_cli(exp_file, runs)
    assert result.exit_code == 0 and len(summary["ran"]) == 2 and len(records_per_job(runs)) == 4


def test_a_dead_workers_job_resumes_in_its_run_folder(tmp_path):
    from vlm.training import TrainConfig, train

    write_synthetic(tmp_path, "breastmnist", n=(32, 8, 8))
    path = tmp_path / "exp.yaml"
    path.write_text(MATRIX.replace("seeds: [0, 1]", "seeds: [0]").replace("[breastmnist, retinamnist]", "[breastmnist]")
                    .replace("epochs: 1", "epochs: 2"))
    exp = load_experiment(path)
    job = exp.jobs()[0]
    runs = tmp_path / "runs"
    # A worker trained epoch 1 of 2, then died (kill -9): its claim names the run folder, its pid is gone.
    half = train("breastmnist", "small-cnn", config=TrainConfig(epochs=2, batch_size=16, n_bootstrap=0, seed=0,
                                                                device="cpu"),
                 data_root=tmp_path, runs_dir=runs, max_epochs_this_call=1)
    claims = Claims(runs)
    claims.path(job.key).write_text(Claim(job.key, job.label, host=HOST, pid=2**22 + 1, token="dead",
                                          run_dir=str(half.run_dir)).to_json())
    session, status = run_matrix(exp, runs_dir=runs, data_root=tmp_path, device="cpu", session_options=FAST)
    assert status.done == [job.label] and records_per_job(runs) == {job.key: 1}
    record = load_runs(runs)[0]
    assert record.path == str(half.run_dir) and record.config["epochs_run"] == 2
    assert claims.read(job.key).attempt == 2 and f"resuming {half.run_dir}" in log_path(runs, job).read_text()


def test_a_job_whose_worker_died_after_its_record_is_not_rerun(exp_file, tmp_path):
    exp = load_experiment(exp_file)
    job = exp.jobs()[0]
    runs = tmp_path / "runs"
    run_matrix(exp, runs_dir=runs, data_root=exp_file.parent, device="cpu", session_options=FAST)
    done = Claims(runs).read(job.key)
    # The worker wrote the record, then died before marking its claim done.
    Claims(runs).path(job.key).write_text(replace(done, state="running", pid=2**22 + 1, token="dead").to_json())
    session = Session(runs_dir=str(runs), jobs=[job], data_root=str(exp_file.parent), device="cpu", **FAST)
    claims = session.claims()
    claim = claims.try_claim(job.key, job.label)
    assert run_claimed(session, claims, job, claim).state == "done"
    assert records_per_job(runs)[job.key] == 1 and log_path(runs, job).read_text().count("=== cnn") == 1


def test_local_launcher_runs_the_matrix_through_submitit(exp_file, tmp_path):
    runs = tmp_path / "runs"
    result, summary = run_cli(exp_file, runs, "--launcher", "local", "--workers", "2")
    assert result.exit_code == 0, result.output
    assert len(summary["ran"]) == 4 and set(records_per_job(runs).values()) == {1}
    assert list((runs / ".submitit").iterdir())  # submitit's own job folders and logs


class FakeSlurm:
    """submitit.AutoExecutor stand-in: keeps the parameters and runs the array tasks here (those in `lost`
    are 'killed by SLURM' before they start)."""

    lost: set[int] = set()
    made: list["FakeSlurm"] = []

    def __init__(self, folder, cluster):
        self.cluster, self.params = cluster, {}
        FakeSlurm.made.append(self)

    def update_parameters(self, **params):
        self.params.update(params)

    def map_array(self, fn, *iterables):
        return [FakeJob(None if i in self.lost else fn(*args), f"42_{i}") for i, args in enumerate(zip(*iterables))]


class FakeJob:
    def __init__(self, result, job_id):
        self.result, self.job_id = result, job_id

    def done(self):
        return True

    def exception(self):
        return None


def test_slurm_launcher_submits_one_array_task_per_job(exp_file, tmp_path, monkeypatch):
    import submitit

    monkeypatch.setattr(submitit, "AutoExecutor", FakeSlurm)
    monkeypatch.setattr(FakeSlurm, "lost", {0})
    runs = tmp_path / "runs"
    result, summary = run_cli(exp_file, runs, "--launcher", "slurm", "--partition", "gpu", "--time", "5")
    executor = FakeSlurm.made[-1]
    assert executor.cluster == "slurm" and executor.params["slurm_partition"] == "gpu"
    assert executor.params["timeout_min"] == 5 and executor.params["gpus_per_node"] == 1
    first = load_experiment(exp_file).jobs()[0]
    assert result.exit_code == 1 and summary["left"] == [first.label] and len(summary["ran"]) == 3
    assert records_per_job(runs).get(first.key) is None

    monkeypatch.setattr(FakeSlurm, "lost", set())  # `vlm run` again: only the lost job is submitted
    result, summary = run_cli(exp_file, runs, "--launcher", "slurm")
    assert result.exit_code == 0 and summary["ran"] == [first.label] and set(records_per_job(runs).values()) == {1}


def test_launch_settings_from_file_and_options(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(MATRIX + textwrap.dedent("""\
        launch: {launcher: slurm, partition: gpu, gpus_per_job: 2, time: 30, array_parallelism: 4}
        """))
    exp = load_experiment(path)
    assert exp.launch == LaunchSettings(launcher="slurm", partition="gpu", gpus_per_job=2, time=30,
                                        array_parallelism=4)
    settings = exp.launch.merged(partition="a100", time=None)
    assert settings.partition == "a100" and settings.time == 30
    params = executor_parameters(settings, Session(runs_dir=str(tmp_path), jobs=exp.jobs()))
    assert params["slurm_partition"] == "a100" and params["gpus_per_node"] == 2 and params["timeout_min"] == 30
    assert params["slurm_array_parallelism"] == 4
    with pytest.raises(VlmError, match="launcher: input should be 'local' or 'slurm' \\(got 'pbs'\\)"):
        exp.launch.merged(launcher="pbs")


@pytest.mark.parametrize("launch,needle", [
    ("launch: {workers: two}", ":9: launch.workers: input should be a valid integer (got 'two')"),
    ("launch: {gpus: 1}", ":9: unknown key 'gpus'"),
    ("launch: {launcher: pbs}", ":9: launch.launcher: input should be 'local' or 'slurm' (got 'pbs')"),
])
def test_bad_launch_keys_name_the_line(tmp_path, launch, needle):
    path = tmp_path / "exp.yaml"
    path.write_text(MATRIX + launch + "\n")
    with pytest.raises(VlmError) as exc:
        load_experiment(path)
    assert str(path) + needle in str(exc.value)


def test_run_shows_each_jobs_epochs_the_eta_and_ends_with_the_comparison(exp_file, tmp_path):
    result = runner.invoke(app, ["run", str(exp_file), "--runs-dir", str(tmp_path / "runs"), "--data-root",
                                 str(exp_file.parent), "--device", "cpu"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()  # not a terminal: one plain line per event
    assert "\x1b" not in result.stdout and "…" not in result.stdout
    assert lines[0].startswith("tiny: 4 of 4 jobs to run")
    assert lines[1] == "[1/4] cnn · breastmnist 28px · seed 0"
    assert re.fullmatch(r"\[1/4\]   epoch 1/1  loss \d\.\d{4}  val AUC \d\.\d{4} \*  best \d\.\d{4} @ 1  \d+\.\ds",
                        lines[2])
    assert re.fullmatch(r"\[1/4\]   done in \d:\d\d · test AUC \d\.\d{3} · ACC \d\.\d{3}", lines[3])
    assert re.fullmatch(r"1 of 4 jobs done · elapsed \d:\d\d · ETA \d:\d\d", lines[4])
    assert re.match(r"4 of 4 jobs done · elapsed \d:\d\d$", lines[16])
    table = result.stdout[result.stdout.index("tiny: test results in"):]
    assert table.count("│ cnn (train small-cnn)") == 2  # split in two at 80 columns: one table per dataset
    assert "breastmnist 28px test" in table and "retinamnist 28px test" in table


def test_workers_progress_comes_from_their_event_files(exp_file, tmp_path):
    result, summary = run_cli(exp_file, tmp_path / "runs", "--workers", "2")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stderr.splitlines() if "epoch 1/1" in line]
    assert sorted(row[:5] for row in rows) == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]  # every job's epoch, from 2 processes
    assert len(summary["comparison"]["rows"]) == 1 and summary["comparison"]["columns"]
