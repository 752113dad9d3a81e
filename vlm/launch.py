"""`vlm run` across workers: here, in N worker processes, or through submitit (local or SLURM).

    run_matrix(exp, runs_dir=..., settings=LaunchSettings(workers=2))          # 2 processes, one GPU each
    run_matrix(exp, runs_dir=..., settings=LaunchSettings(launcher="slurm", partition="gpu"))

No scheduler of our own: the jobs of a call form a `Session`; every worker runs `vlm.worker.work`
("claim the next job, run it") and the claim files decide who runs what, so workers, submitit tasks
and separate `vlm run` calls on one runs folder share the matrix safely.

- one worker: `work` in this process;
- `workers=N`: N `python -m vlm.worker` processes; with GPUs each sees one (`CUDA_VISIBLE_DEVICES`,
  round robin), on the CPU each gets `cores // N` torch threads. A worker that dies is replaced; its
  job is claimed again and resumes from its run folder;
- `launcher="local"`: N tasks of submitit's `LocalExecutor`, each a looping worker (one GPU each,
  round robin; on the CPU `cores // N` threads each);
- `launcher="slurm"`: a submitit job array, one task per job (`gpus_per_job`, `time` minutes,
  `partition`, at most `array_parallelism` at once). A task that SLURM kills leaves a stale claim:
  the next `vlm run` takes the job over (after the heartbeat timeout) and resumes it.

The caller watches through `on_status(MatrixStatus)`, read from the claim files every `poll_s`.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import vlm
from vlm.claims import CLAIMS_DIR
from vlm.errors import VlmError
from vlm.experiments import Experiment, LaunchSettings, finished_jobs, pending_jobs
from vlm.worker import LOGS_DIR, Session, work

SUBMITIT_DIR = ".submitit"


@dataclass
class JobFailure:
    """A failed job: its label, log file and the error's first line."""

    job: str
    log: str | None
    error: str | None


@dataclass
class MatrixStatus:
    """Where the jobs of a session stand, from their claims."""

    done: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)  # "label (host pid N, worker W)"
    failed: list[JobFailure] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # not claimed yet, interrupted, or held by a dead worker
    problems: list[str] = field(default_factory=list)  # submitit tasks that failed, with their log

    @property
    def total(self) -> int:
        return len(self.done) + len(self.running) + len(self.failed) + len(self.left)


StatusCallback = Callable[[MatrixStatus], None]


def matrix_status(session: Session) -> MatrixStatus:
    """Read each job's claim: done, running, failed or left."""
    claims, status = session.claims(), MatrixStatus()
    now = time.time()
    for job in session.jobs:
        claim = claims.read(job.key)
        if claim is None or claim.state == "interrupted" or claims.is_stale(claim, now):
            status.left.append(job.label)
        elif claim.state == "done":
            status.done.append(job.label)
        elif claim.state == "failed":
            status.failed.append(JobFailure(job.label, claim.log, claim.error))
        else:
            status.running.append(f"{job.label} ({claim.host} pid {claim.pid}, worker {claim.worker})")
    return status


def run_matrix(
    exp: Experiment,
    *,
    runs_dir: str | os.PathLike,
    data_root: str | os.PathLike | None = None,
    device: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    settings: LaunchSettings | None = None,
    on_status: StatusCallback | None = None,
    session_options: dict[str, Any] | None = None,
) -> tuple[Session, MatrixStatus]:
    """Run every job of `exp` that has no finished record, as `settings` says; returns the session (its
    jobs) and their final status. Failed jobs do not stop the others. `session_options` set Session
    fields such as `poll_s`, `heartbeat_s` and `stale_after_s`."""
    settings = settings or exp.launch
    settings.check()
    todo = pending_jobs(exp, runs_dir)
    absolute = (lambda p: str(Path(p).resolve()) if p else None)  # workers may start in another folder
    session = Session(runs_dir=absolute(runs_dir), jobs=todo, data_root=absolute(data_root), device=device,
                      cache_dir=absolute(cache_dir), **(session_options or {}))
    if not todo:
        return session, MatrixStatus()
    session.claims().reset([job.key for job in todo], lambda: finished_jobs(runs_dir).keys())
    emit = on_status or (lambda status: None)
    problems: list[str] = []
    if settings.launcher is not None:
        problems = _run_submitit(session, settings, emit)
    elif settings.workers == 1:
        _run_here(session, emit)
    else:
        _run_workers(session, settings.workers, emit)
    status = matrix_status(session)
    status.problems = problems
    emit(status)
    return session, status


def _gpus(device: str) -> list[str]:
    """The GPUs a worker may be given (what this process sees), none for --device cpu."""
    if device == "cpu":
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def _threads(workers: int) -> int:
    return max(1, len(os.sched_getaffinity(0)) // workers)


def _package_path() -> str:
    """PYTHONPATH for workers, so that they import this very `vlm`."""
    root = str(Path(vlm.__file__).resolve().parents[1])
    return os.pathsep.join([root] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))


def _run_here(session: Session, emit: StatusCallback) -> None:
    """One worker in this process; a thread reports the status meanwhile."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(session.poll_s):
            emit(matrix_status(session))

    watcher = threading.Thread(target=watch, name="vlm-run-status", daemon=True)
    watcher.start()
    try:
        work(session, "0", capture=False)
    finally:
        stop.set()
        watcher.join()


def _run_workers(session: Session, workers: int, emit: StatusCallback) -> None:
    """N `python -m vlm.worker` processes (one GPU each when there are GPUs); dead workers are replaced."""
    gpus = _gpus(session.device)
    if not gpus:
        session.threads = _threads(workers)
    runs = Path(session.runs_dir)
    session_file = session.save(runs / CLAIMS_DIR / f"session-{session.id}.json")
    (runs / LOGS_DIR).mkdir(parents=True, exist_ok=True)

    def spawn(i: int) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": _package_path()}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        else:
            env["OMP_NUM_THREADS"] = str(session.threads)
        with open(runs / LOGS_DIR / f"worker-{session.id}-{i}.log", "ab") as log:
            return subprocess.Popen([sys.executable, "-m", "vlm.worker", str(session_file), str(i)], env=env,
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    procs = {i: spawn(i) for i in range(min(workers, len(session.jobs)))}
    replacements = 0
    try:
        while procs:
            status = matrix_status(session)
            emit(status)
            for i, proc in list(procs.items()):
                if proc.poll() is None:
                    continue
                del procs[i]
                unfinished = status.left or status.running
                if proc.returncode != 0 and unfinished and replacements < len(session.jobs):
                    procs[i] = spawn(i)  # its job is claimed again (by this one or another worker)
                    replacements += 1
            time.sleep(session.poll_s)
    except KeyboardInterrupt:
        for proc in procs.values():
            proc.send_signal(signal.SIGINT)  # each marks its job interrupted, to resume next time
        for proc in procs.values():
            proc.wait()
        raise
    finally:
        session_file.unlink(missing_ok=True)


def executor_parameters(settings: LaunchSettings, session: Session) -> dict[str, Any]:
    """submitit `update_parameters` for the launcher (the local one's GPU is set per task)."""
    setup = [f"export PYTHONPATH={_package_path()}"]
    if settings.launcher == "slurm":
        return {"name": "vlm-run", "timeout_min": settings.time, "gpus_per_node": settings.gpus_per_job,
                "slurm_partition": settings.partition, "slurm_array_parallelism": settings.array_parallelism,
                "slurm_setup": setup}
    per_task = -(-len(session.jobs) // settings.workers)  # a local task runs this many jobs at most
    return {"timeout_min": settings.time * per_task, "setup": setup}


def array_task(session: Session, index: int) -> int:
    """One task of the SLURM array: job `index` (or, when it is taken, the next free one), then stop."""
    return work(session, str(index), max_jobs=1, wait=False, start=index)


def _run_submitit(session: Session, settings: LaunchSettings, emit: StatusCallback) -> list[str]:
    """Submit the workers through submitit and watch them; returns the tasks that failed, with their logs."""
    import submitit

    folder = Path(session.runs_dir) / SUBMITIT_DIR / "%j"
    params = executor_parameters(settings, session)
    if settings.launcher == "slurm":
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        executor.update_parameters(**params)
        jobs = executor.map_array(functools.partial(array_task, session), range(len(session.jobs)))
    else:
        executor = submitit.LocalExecutor(folder=folder)
        gpus = _gpus(session.device)
        n = min(settings.workers, len(session.jobs))
        if not gpus:
            session.threads = _threads(n)
        jobs = []
        for i in range(n):
            gpu = [int(gpus[i % len(gpus)])] if gpus and gpus[i % len(gpus)].isdigit() else []
            executor.update_parameters(**params, gpus_per_node=len(gpu), visible_gpus=gpu)
            jobs.append(executor.submit(work, session, str(i), None, True, i))
    try:
        while not all(job.done() for job in jobs):
            emit(matrix_status(session))
            time.sleep(session.poll_s)
    except KeyboardInterrupt:
        if settings.launcher == "slurm":
            raise _Detached(f"Stopped watching. The SLURM array {jobs[0].job_id.split('_')[0]} keeps running "
                            f"(scancel stops it); `vlm run` again shows what is left.") from None
        for job in jobs:
            job.cancel(check=False)  # SIGINT: the workers mark their jobs interrupted
        raise
    return [f"task {job.job_id}: {type(job.exception()).__name__} (log {job.paths.stderr})"
            for job in jobs if job.exception() is not None]


class _Detached(VlmError):
    exit_code = 130
