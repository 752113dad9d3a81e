"""Rich progress bars of long commands: image encoding and training epochs (shown on the status console)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class EncodeProgress:
    """Drives a rich progress task from `image_embeddings(progress=...)` (set_total, then advances)."""

    def __init__(self, progress: Any, description: str, **fields: Any) -> None:
        self.progress = progress
        self.description = description
        self.fields = fields
        self.task: Any = None

    def set_total(self, total: int) -> None:
        if total:
            self.task = self.progress.add_task(self.description, total=total, **self.fields)

    def __call__(self, advance: int) -> None:
        if self.task is not None:
            self.progress.advance(self.task, advance)


def encode_progress(console: Console, description: str) -> tuple[Progress, EncodeProgress]:
    """A transient encoding bar and the callback that drives it."""
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=console, transient=True)
    return progress, EncodeProgress(progress, description)


class TrainProgress:
    """A rich progress bar per epoch (live loss, last val AUC) driven by `vlm.training` events."""

    def __init__(self, console: Console, label: str) -> None:
        self.label = label
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), console=console,
                                 transient=False)
        self.task: Any = None
        self.last = ""
        self.embed = EncodeProgress(self.progress, f"{label} encoding", stats="")

    def __enter__(self) -> "TrainProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def _stats(self, loss: float | None) -> str:
        return " · ".join(s for s in (f"loss {loss:.4f}" if loss is not None else "", self.last) if s)

    def __call__(self, event: Any) -> None:
        if event.stage == "batch":
            if self.task is None or event.batch == 1:
                self.task = self.progress.add_task(f"{self.label} epoch {event.epoch}/{event.epochs}",
                                                   total=event.batches, stats="")
            self.progress.update(self.task, completed=event.batch, stats=self._stats(event.loss))
        elif event.stage == "epoch":
            auc = "-" if event.val_auc is None else f"{event.val_auc:.4f}"
            best = "-" if event.best_auc is None else f"{event.best_auc:.4f}"
            self.last = f"val AUC {auc} (best {best} @ {event.best_epoch})"
            if self.task is not None:
                self.progress.update(self.task, stats=self._stats(event.loss))
        elif event.stage == "test":
            self.progress.add_task(f"{self.label} scoring test with epoch {event.best_epoch}", total=None, stats="")


def job_progress(console: Console) -> Progress:
    """The overall bar of `vlm run` (one step per job)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)
