"""The progress of a `vlm run` matrix: every job's view (from its events file), an overall count and an ETA.

`MatrixProgress.update(done=..., failed=...)` is called with the claims' verdicts (`vlm.launch.MatrixStatus`)
each time `vlm run` polls them; it reads what the running jobs wrote since (`vlm.jobprogress`), whichever
worker or machine runs them, and returns the log lines to print: a job's start, its epoch rows and
encodings, its end followed by a line with the overall count, elapsed time and ETA.

The ETA: a training job's length is its elapsed time scaled by how far its epochs are; any other running
job (and a training job before 2% of it) counts the mean length of the jobs finished in this call, or a
quarter more than it has run already when it outlasted that mean; jobs not started yet count the mean
each; the sum is shared by the workers. No estimate (None) before there is a measure.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable, Iterable, Sequence

from vlm.jobprogress import EventReader, JobView, clock_text, events_path

MIN_FRACTION = 0.02  # below this a job's own progress says nothing about its length


class MatrixProgress:
    """The jobs of one `vlm run` call, `jobs` as (key, label) in matrix order, run by `workers` at once."""

    def __init__(self, runs_dir: str | os.PathLike, jobs: Sequence[tuple[str, str]], workers: int = 1,
                 clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.start = clock()
        self.workers = max(1, workers)
        width = len(str(len(jobs)))
        self.keys = [key for key, _ in jobs]
        self.labels = dict(jobs)
        self.views = {key: JobView(label, tag=f"[{i + 1:>{width}}/{len(jobs)}] ") for i, (key, label) in enumerate(jobs)}
        self.readers = {key: EventReader(events_path(runs_dir, key)) for key in self.keys}

    @property
    def total(self) -> int:
        return len(self.keys)

    def count(self, state: str) -> int:
        return sum(v.state == state for v in self.views.values())

    def running(self) -> list[JobView]:
        """The views of the jobs running now, in matrix order."""
        return [v for v in (self.views[k] for k in self.keys) if v.state == "running"]

    def update(self, done: Iterable[str] = (), failed: dict[str, str | None] | None = None) -> list[str]:
        """Read the new events; `done` and `failed` (label -> error) are the claims' verdicts. Returns the new
        log lines."""
        lines: list[str] = []
        for key in self.keys:
            view = self.views[key]
            for event in self.readers[key].read():
                if event.get("t", 0) < self.start - 1:
                    continue  # an earlier call's attempt
                lines += view.feed(event)
                if event.get("stage") in ("done", "failed"):
                    lines.append(self.summary())
        done, failed = set(done), failed or {}
        for key, view in self.views.items():  # verdicts without their events (a worker that died, an old writer)
            label = self.labels[key]
            if view.state in ("done", "failed") or (label not in done and label not in failed):
                continue
            verdict = {"stage": "done"} if label in done else {"stage": "failed", "error": failed[label]}
            lines += view.feed({"t": self.clock(), **verdict}) + [self.summary()]
        return lines

    def finished(self) -> float:
        """Jobs done or failed, plus the fractions of the running ones."""
        return self.count("done") + self.count("failed") + sum(v.fraction() or 0.0 for v in self.running())

    def elapsed(self) -> float:
        return self.clock() - self.start

    def eta(self) -> float | None:
        """Seconds until every job is done (see the module doc), None when there is no measure yet."""
        now = self.clock()
        ended = [v.ended - v.started for v in self.views.values()
                 if v.state == "done" and v.started is not None and v.ended is not None]
        estimates = {}
        for view in self.running():
            fraction, spent = view.fraction(), now - (view.started or now)
            if view.epochs and fraction is not None and fraction >= MIN_FRACTION:
                estimates[id(view)] = spent / fraction
        typical = statistics.fmean(ended) if ended else (statistics.fmean(estimates.values()) if estimates else None)
        remaining = 0.0
        for view in self.running():
            length, spent = estimates.get(id(view), typical), now - (view.started or now)
            if length is None:
                return None
            remaining += length - spent if length > spent else 0.25 * spent
        waiting = self.count("waiting")
        if waiting:
            if typical is None:
                return None
            remaining += waiting * typical
        return remaining / min(self.workers, max(1, waiting + len(self.running())))

    def summary(self) -> str:
        """'2 of 5 jobs done · 1 failed · elapsed 3:10 · ETA 4:20'."""
        failed = self.count("failed")
        left = self.total - self.count("done") - failed
        eta = self.eta() if left else 0.0
        return (f"{self.count('done')} of {self.total} jobs done" + (f" · {failed} failed" if failed else "")
                + f" · elapsed {clock_text(self.elapsed())}"
                + ("" if not left else f" · ETA {clock_text(eta) if eta is not None else 'unknown yet'}"))
