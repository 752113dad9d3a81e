"""A running job's progress as events: what `vlm run` and `vlm train` show while a job runs.

A job reports through a `JobReporter`: training events (`vlm.training.TrainEvent`), encoding passes (the
progress callbacks of `vlm.embeddings`), and its end. Each report is a small dict, an *event*, handed to
a sink: under `vlm run` every worker appends them as JSON lines to `RUNS/.claims/<job key>.events`
(`EventWriter`, a fresh file per attempt), and the `vlm run` process reads them back (`EventReader`),
whichever process or machine runs the job; `vlm train` feeds them to its display directly. Batch and
encoding events are sent at most every `every_s` seconds; epochs, tests and ends always.

`JobView` folds one job's events into what a display shows (phase, bar, epoch rows, results) and the
log lines they make; `vlm.matrix_progress` adds the overall count and ETA of a matrix. There is no rich
here: `vlm.commands.progress` draws views as live bars or prints their lines.

Events (each also has "t", seconds since the epoch, and "stage"):

    start   {"label"}                            an attempt of the job begins
    train   {"epoch", "epochs", "batches"}       the training loop starts (epoch: the epochs already done)
    encode  {"what", "unit", "done", "total"}    encoding images (done so far; total 0: all cached)
    batch   {"epoch", "epochs", "batch", "batches", "loss"}
    epoch   {"epoch", "epochs", "loss", "val_auc", "best_auc", "best_epoch", "seconds"}
    test    {"best_epoch"}                       scoring the test split with the best epoch
    done    {"results": [{"name", "auc", "acc"}]}
    failed  {"error"}
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

EVENTS_SUFFIX = ".events"
Sink = Callable[[dict[str, Any]], None]


def events_path(runs_dir: str | os.PathLike, key: str) -> Path:
    """RUNS/.claims/<key>.events: the events of the job's current attempt."""
    from vlm.claims import CLAIMS_DIR

    return Path(runs_dir) / CLAIMS_DIR / f"{key}{EVENTS_SUFFIX}"


def clock_text(seconds: float | None) -> str:
    """'0:42', '12:05', '1:02:03'; '?' for None."""
    if seconds is None:
        return "?"
    s = int(round(max(seconds, 0.0)))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# ----------------------------------------------------------------------------- writing
class EncodeReporter:
    """The `progress` of `vlm.embeddings.image_embeddings`: describe, set_total, then advances."""

    def __init__(self, reporter: "JobReporter") -> None:
        self.reporter = reporter
        self.what, self.unit = "", "images"
        self.done, self.total = 0.0, 0

    def describe(self, what: str, unit: str) -> None:
        self.what, self.unit = what, unit

    def set_total(self, total: int) -> None:
        self.done, self.total = 0.0, int(total)
        self._send(throttle=False)
        if not total:
            self.what = ""

    def __call__(self, advance: float) -> None:
        self.done += advance
        self._send(throttle=self.done < self.total - 1e-6)

    def _send(self, throttle: bool) -> None:
        self.reporter.send("encode", throttle, what=self.what, unit=self.unit, done=round(self.done, 3),
                           total=self.total)


class JobReporter:
    """A job's reports as events to `sink`; call it with `TrainEvent`s, give `embed` to the encoders."""

    def __init__(self, sink: Sink, every_s: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self.sink, self.every_s, self.clock = sink, every_s, clock
        self._last = float("-inf")
        self.embed = EncodeReporter(self)

    def send(self, stage: str, throttle: bool = False, **fields: Any) -> None:
        """Hand one event to the sink; a throttled one only if `every_s` passed since the last."""
        now = self.clock()
        if throttle:
            if now - self._last < self.every_s:
                return
            self._last = now
        self.sink({"t": now, "stage": stage, **fields})

    def __call__(self, event: Any) -> None:
        """A `vlm.training.TrainEvent`."""
        if event.stage == "start":
            self.send("train", epoch=event.epoch, epochs=event.epochs, batches=event.batches)
        elif event.stage == "batch":
            self.send("batch", True, epoch=event.epoch, epochs=event.epochs, batch=event.batch,
                      batches=event.batches, loss=event.loss)
        elif event.stage == "epoch":
            self.send("epoch", epoch=event.epoch, epochs=event.epochs, loss=event.loss, val_auc=event.val_auc,
                      best_auc=event.best_auc, best_epoch=event.best_epoch, seconds=round(event.seconds, 3))
        elif event.stage == "test":
            self.send("test", best_epoch=event.best_epoch)


class EventWriter:
    """The sink of a worker: appends events as JSON lines to a file that `start` makes anew."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def start(self, label: str, t: float | None = None) -> None:
        """Replace the file (a new inode, so readers start over) with the attempt's start event."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"t": time.time() if t is None else t, "stage": "start", "label": label}) + "\n")
        os.replace(tmp, self.path)

    def __call__(self, event: dict[str, Any]) -> None:
        line = (json.dumps(event, default=str) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write with O_APPEND: lines of one writer never interleave
        finally:
            os.close(fd)


class EventReader:
    """Reads the events appended to a file since the last call; a replaced file is read from its start."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.inode: int | None = None
        self.offset = 0
        self.partial = b""

    def read(self) -> list[dict[str, Any]]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        if stat.st_ino != self.inode:
            self.inode, self.offset, self.partial = stat.st_ino, 0, b""
        if stat.st_size <= self.offset:
            return []
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()  # an unfinished last line waits for the next read
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events


# ----------------------------------------------------------------------------- reading
@dataclass
class JobView:
    """What one job is doing, folded from its events, and the log lines those events make."""

    label: str
    tag: str = ""  # "[2/5] " in a matrix
    state: str = "waiting"  # waiting, running, done, failed
    started: float | None = None
    ended: float | None = None
    phase: str = ""  # "epoch 3/10", "encoding breastmnist test", "scoring test"
    done: float = 0.0
    total: float | None = None  # the current bar's total (None: no bar)
    unit: str = ""
    stats: str = ""  # "loss 0.4412 · best 0.8123 @ 2"
    epoch: int = 0
    epochs: int = 0
    best: str = ""
    results: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    _encode_t0: float = 0.0

    def feed(self, event: dict[str, Any]) -> list[str]:
        """Take one event; returns the log lines it makes (epoch rows, encodings, the end)."""
        stage, t = event.get("stage"), float(event.get("t", time.time()))
        handler = getattr(self, f"_on_{stage}", None)
        return handler(event, t) if handler is not None else []

    def _on_start(self, e: dict[str, Any], t: float) -> list[str]:
        self.label = e.get("label") or self.label
        self.state, self.started, self.ended = "running", t, None
        self.phase, self.total, self.stats, self.best, self.results, self.error = "starting", None, "", "", [], None
        return [f"{self.tag}{self.label}"]

    def _on_train(self, e: dict[str, Any], t: float) -> list[str]:
        self.epoch, self.epochs = int(e["epoch"]), int(e["epochs"])
        self.phase, self.done, self.total, self.unit = f"epoch {self.epoch + 1}/{self.epochs}", 0, e["batches"], ""
        return [f"{self.tag}  resuming after epoch {self.epoch} of {self.epochs}"] if self.epoch else []

    def _on_encode(self, e: dict[str, Any], t: float) -> list[str]:
        what, unit, done, total = e.get("what") or "images", e.get("unit") or "images", float(e["done"]), int(e["total"])
        if not total:
            return [f"{self.tag}  {what}: embeddings from the cache"] if e.get("what") else []
        if done == 0:
            self._encode_t0 = t
        self.phase, self.done, self.total, self.unit = f"encoding {what}", done, total, unit
        if done >= total - 1e-6:
            self.total = None
            return [f"{self.tag}  encoded {what}: {total} {unit} in {t - self._encode_t0:.1f} s"]
        return []

    def _on_batch(self, e: dict[str, Any], t: float) -> list[str]:
        self.epoch, self.epochs = int(e["epoch"]) - 1, int(e["epochs"])
        self.phase, self.done, self.total, self.unit = f"epoch {e['epoch']}/{self.epochs}", e["batch"], e["batches"], ""
        self.stats = " · ".join(s for s in (f"loss {_num(e.get('loss'))}", self.best) if s)
        return []

    def _on_epoch(self, e: dict[str, Any], t: float) -> list[str]:
        self.epoch, self.epochs = int(e["epoch"]), int(e["epochs"])
        width = len(str(self.epochs))
        new_best = e.get("best_epoch") == self.epoch
        self.best = f"best {_num(e.get('best_auc'))} @ {e.get('best_epoch')}"
        self.phase, self.total, self.stats = f"epoch {self.epoch}/{self.epochs} done", None, self.best
        return [f"{self.tag}  epoch {self.epoch:>{width}}/{self.epochs}  loss {_num(e.get('loss'))}  val AUC "
                f"{_num(e.get('val_auc'))}{' *' if new_best else '  '}  {self.best}  {float(e.get('seconds', 0)):.1f}s"]

    def _on_test(self, e: dict[str, Any], t: float) -> list[str]:
        self.phase, self.total = f"scoring test with epoch {e.get('best_epoch')}", None
        self.epoch = self.epochs
        return []

    def _on_done(self, e: dict[str, Any], t: float) -> list[str]:
        self.state, self.ended, self.total, self.results = "done", t, None, list(e.get("results") or [])
        return [f"{self.tag}  done in {clock_text(t - (self.started or t))}" + results_text(self.results)]

    def _on_failed(self, e: dict[str, Any], t: float) -> list[str]:
        self.state, self.ended, self.total, self.error = "failed", t, None, e.get("error")
        return [f"{self.tag}  failed after {clock_text(t - (self.started or t))}: {self.error}"]

    def fraction(self) -> float | None:
        """How far the job is (0..1), from its epochs or its encoding bar; None when it cannot tell."""
        if self.state in ("done", "failed"):
            return 1.0
        if self.epochs:
            within = self.done / self.total if self.total and self.phase.startswith("epoch") else 0.0
            return min(1.0, (self.epoch + within) / self.epochs)
        if self.total:
            return min(1.0, self.done / self.total)
        return None

    def counter(self) -> str:
        """'12/18', '96/156 images' for the current bar."""
        if not self.total:
            return ""
        done = int(self.done + 1e-6)
        return f"{done}/{int(self.total)}" + (f" {self.unit}" if self.unit else "")


def results_text(results: list[dict[str, Any]]) -> str:
    """' · test AUC 0.812 · ACC 0.790', or per result ' · clip: AUC 0.812 ACC 0.790; ...'."""
    if not results:
        return ""
    if len(results) == 1:
        r = results[0]
        return f" · {r.get('split', 'test')} AUC {_num(r.get('auc'), 3)} · ACC {_num(r.get('acc'), 3)}"
    return " · " + "; ".join(f"{r.get('name')}: AUC {_num(r.get('auc'), 3)} ACC {_num(r.get('acc'), 3)}"
                             for r in results)
