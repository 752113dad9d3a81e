"""An experiment worker: claim the next job of a `vlm run` session, run it (or resume it), repeat.

Every way `vlm run` spreads jobs ends in `work(session, ...)`: called in the `vlm run` process itself,
in N worker processes (`python -m vlm.worker SESSION.json WORKER`), or in submitit tasks (local or
SLURM), which get the `Session` pickled. Claims (`vlm.claims`) make sure a job runs once; a job whose
worker died is claimed again and continues in its own run folder from `last.pt` when its method kind
can resume (`vlm.methods`), else starts over. Each job appends its output to a log file in
`RUNS/logs/`; a job that raises is marked failed there and the worker goes on with the next one.
While it runs, its progress (epochs, encodings, its results) goes to `RUNS/.claims/<key>.events`
(`vlm.jobprogress`), which `vlm run` reads to show it.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Iterator

from vlm.claims import HEARTBEAT_S, HOST, STALE_AFTER_S, Claim, Claims
from vlm.errors import exception_summary
from vlm.jobprogress import EventWriter, JobReporter, events_path
from vlm.methods import Job, Method, get_method
from vlm.results import RECORD_FILE, on_new_run_dir

LOGS_DIR = "logs"
POLL_S = 1.0


@dataclass
class Session:
    """One `vlm run` call: its jobs and how to run them; what each of its workers gets."""

    runs_dir: str
    jobs: list[Job]
    data_root: str | None = None
    device: str = "auto"
    cache_dir: str | None = None
    threads: int | None = None  # torch threads per worker (None: torch's default)
    heartbeat_s: float = HEARTBEAT_S
    stale_after_s: float = STALE_AFTER_S
    poll_s: float = POLL_S
    id: str = field(default_factory=lambda: datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6])

    def claims(self) -> Claims:
        return Claims(self.runs_dir, stale_after_s=self.stale_after_s)

    def save(self, path: Path) -> Path:
        """Write the session as JSON (for worker processes)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1, default=str))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Session":
        data = json.loads(Path(path).read_text())
        jobs = [Job(Method(**{**j["method"], "datasets": _tuple(j["method"]["datasets"])}), j["dataset"], j["size"],
                    j["seed"]) for j in data.pop("jobs")]
        return cls(jobs=jobs, **data)


def _tuple(value: list | None) -> tuple | None:
    return tuple(value) if value is not None else None


def log_path(runs_dir: str | os.PathLike, job: Job) -> Path:
    """RUNS/logs/<method>_<dataset>_<size>px_seed<seed>_<key>.log: the job's output, every attempt appended."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", job.method.name)
    return Path(runs_dir) / LOGS_DIR / f"{name}_{job.dataset}_{job.size}px_seed{job.seed}_{job.key[:8]}.log"


def work(session: Session, worker: str = "0", max_jobs: int | None = None, wait: bool = True, start: int = 0,
         capture: bool = True) -> int:
    """Claim and run jobs of `session` until none is left to claim; returns how many this worker ran.

    Args:
        worker: a name for the claims and logs.
        max_jobs: stop after this many (a SLURM array task runs one).
        wait: when every unfinished job is held by another worker, wait (and take over the jobs of workers
            that die) until each is done or failed; otherwise return at once.
        start: the index of the job to try first (array task i tries job i first).
        capture: send the process's stdout/stderr to the job's log while it runs (worker processes).
    """
    if session.threads:
        import torch

        torch.set_num_threads(session.threads)
    claims = session.claims()
    order = session.jobs[start:] + session.jobs[:start]
    ran = 0
    while max_jobs is None or ran < max_jobs:
        taken = next(((job, c) for job in order if (c := _try(claims, job, session, worker)) is not None), None)
        if taken is None:
            if not wait or all_settled(claims, session.jobs):
                break
            time.sleep(session.poll_s)
            continue
        run_claimed(session, claims, *taken, capture=capture)
        ran += 1
    return ran


def _try(claims: Claims, job: Job, session: Session, worker: str) -> Claim | None:
    if not claims.claimable(claims.read(job.key)):  # cheap check before the claim itself
        return None
    return claims.try_claim(job.key, job.label, session=session.id, worker=worker)


def all_settled(claims: Claims, jobs: list[Job]) -> bool:
    """Every job's claim is done or failed."""
    return all((c := claims.read(job.key)) is not None and c.state in ("done", "failed") for job in jobs)


def run_claimed(session: Session, claims: Claims, job: Job, claim: Claim, *, capture: bool = True) -> Claim:
    """Run (or resume) a claimed job with a heartbeat and its log; mark the claim done, failed or interrupted."""
    from vlm.experiments import finished_jobs, run_job
    from vlm.training import SPEC_FILE, TrainingInterrupted

    log = log_path(session.runs_dir, job)
    log.parent.mkdir(parents=True, exist_ok=True)
    claim = claims.update(claim, log=str(log)) or claim
    folder = Path(claim.run_dir) if claim.run_dir else None
    if folder is not None and job.key in finished_jobs(session.runs_dir):  # its worker died after the last record
        return claims.update(claim, state="done") or claim
    resumable = (folder is not None and (folder / SPEC_FILE).is_file() and not (folder / RECORD_FILE).is_file()
                 and get_method(job.method.kind).resume is not None)
    run_dirs: list[Path] = []

    def remember(path: Path) -> None:
        if not run_dirs:
            claims.update(claim, run_dir=str(path))
        run_dirs.append(path)

    events = EventWriter(events_path(session.runs_dir, job.key))
    events.start(job.label)
    reporter = JobReporter(events)
    with _heartbeat(claims, claim, session.heartbeat_s), _output(log, capture) as out:
        out.write(f"=== {job.label} · key {job.key} · attempt {claim.attempt} · {HOST} pid {os.getpid()} · "
                  f"worker {claim.worker} · {datetime.now().isoformat(timespec='seconds')}"
                  + (f" · resuming {folder}" if resumable else "") + "\n")
        out.flush()
        try:
            with on_new_run_dir(remember):
                run_job(job, runs_dir=session.runs_dir, data_root=session.data_root, device=session.device,
                        cache_dir=session.cache_dir, resume_dir=folder if resumable else None, progress=reporter)
        except (KeyboardInterrupt, TrainingInterrupted):
            out.write("=== interrupted\n")
            claims.update(claim, state="interrupted")
            raise
        except Exception as exc:  # noqa: BLE001 - a failed job is reported, the others go on
            out.write(traceback.format_exc() + "=== failed\n")
            reporter.send("failed", error=exception_summary(exc))
            return claims.update(claim, state="failed", error=exception_summary(exc)) or replace(claim, state="failed")
        out.write("=== done\n")
    reporter.send("done", results=job_results(run_dirs or ([folder] if folder else [])))
    return claims.update(claim, state="done") or replace(claim, state="done")


def job_results(run_dirs: list[Path]) -> list[dict]:
    """The scored records in a job's run folders: name (the experiment's method name, or the record's
    label), split, AUC and ACC."""
    results = []
    for path in run_dirs:
        try:
            record = json.loads((path / RECORD_FILE).read_text())
        except (OSError, ValueError):
            continue
        metrics, config = record.get("metrics") or {}, record.get("config") or {}
        results.append({"name": config.get("experiment_method") or config.get("style") or record.get("method"),
                        "split": record.get("split"), "auc": metrics.get("auc"), "acc": metrics.get("acc")})
    return results


@contextmanager
def _heartbeat(claims: Claims, claim: Claim, every_s: float) -> Iterator[None]:
    """Touch the claim every `every_s` seconds from a thread while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            claims.touch(claim)

    thread = threading.Thread(target=beat, name=f"heartbeat-{claim.key}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextmanager
def _output(log: Path, capture: bool) -> Iterator:
    """The job's log, opened for appending; with `capture`, file descriptors 1 and 2 point at it meanwhile."""
    with open(log, "a") as out:
        if not capture:
            yield out
            return
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        try:
            yield out
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def main(argv: list[str]) -> int:
    """`python -m vlm.worker SESSION.json [WORKER]`: one worker process of `vlm run --workers N`."""
    session = Session.load(argv[0])
    try:
        work(session, argv[1] if len(argv) > 1 else "0")
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
