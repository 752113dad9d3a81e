"""Progress on the status console: live bars on a terminal, one plain line per event elsewhere.

What is shown comes from `vlm.jobprogress` (one job's view) and `vlm.matrix_progress` (a `vlm run`
matrix). On a terminal a rich Live area at the bottom holds the overall bar with its ETA (`vlm run`)
and each running job's bar (epoch, batches, loss, best so far; or encoding), drawn to the console's
width: labels fold onto more lines, numbers are never cut, a bar takes only the room left. The lines the
events make (a job's start, its epoch rows and encodings, its end and the overall count) are printed
above the area and stay. Elsewhere (a pipe, a file, CI) only those lines are printed, one per event and
never wrapped, with no bars and no control codes.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.text import Text

from vlm.jobprogress import JobReporter, JobView, clock_text

MIN_BAR, MAX_BAR = 10, 40


def _bar(fraction: float, width: int) -> Text:
    """A bar of `width` cells: '━' done, '─' to go (readable without colours too)."""
    filled = int(round(max(0.0, min(1.0, fraction)) * width))
    return Text.assemble(("━" * filled, "bar.complete"), ("─" * (width - filled), "bar.back"))


def bar_line(prefix: str, fraction: float | None, suffix: str, width: int, indent: str = "  ") -> list[Text]:
    """`prefix ━━━━──── suffix` in `width` cells: the bar gets what the texts leave (10 to 40 cells); when
    less is left it goes on a line of its own. Without a fraction, the texts alone."""
    if fraction is None:
        return [Text(" · ".join(t for t in (prefix, suffix) if t))]
    texts = " ".join(t for t in (prefix, suffix) if t)
    room = width - cell_len(prefix) - cell_len(suffix) - 2
    if room >= MIN_BAR:
        return [Text.assemble(prefix + " ", _bar(fraction, min(room, MAX_BAR)), " " + suffix)]
    return [Text(texts), Text.assemble(indent, _bar(fraction, max(MIN_BAR, min(MAX_BAR, width - len(indent)))))]


def job_lines(view: JobView, width: int, *, header: bool = True, title: str | None = None) -> list[Text]:
    """A running job: its tag and label (folded to the width), then its phase with a bar, counts and stats."""
    lines = [Text(f"{view.tag}{view.label}", style="bold")] if header else []
    spent = f"{clock_text(time.time() - view.started)}" if view.started else ""
    suffix = " · ".join(s for s in (view.counter(), view.stats, spent) if s)
    phase = title if title and view.phase.startswith("encoding") else view.phase
    fraction = view.done / view.total if view.total else None
    return lines + bar_line(("  " if header else "") + phase, fraction, suffix, width, indent="    ")


class _Area:
    """The live area: whatever `render(width)` returns, redrawn to the console's width."""

    def __init__(self, render: Callable[[int], list[Text]]) -> None:
        self.render = render

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self.render(options.max_width)


class StatusDisplay:
    """A live area on a terminal console; elsewhere nothing live. `print_lines` prints event lines above it
    (when `keep_lines`), as plain lines off a terminal."""

    def __init__(self, console: Console, render: Callable[[int], list[Text]], *, keep_lines: bool = True,
                 enabled: bool = True) -> None:
        self.console, self.render, self.keep_lines, self.enabled = console, render, keep_lines, enabled
        self.live: Live | None = None

    def __enter__(self) -> "StatusDisplay":
        if self.enabled and self.console.is_terminal:
            self.live = Live(_Area(self.render), console=self.console, refresh_per_second=4, transient=True)
            self.live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def print_lines(self, lines: list[str]) -> None:
        if not (self.enabled and self.keep_lines):
            return
        for line in lines:
            if self.live is not None:
                self.console.print(line, markup=False, highlight=False)
            else:
                self.console.print(line, markup=False, highlight=False, soft_wrap=True)


class JobProgress(JobReporter):
    """One job's display, fed in this process: `vlm train`/`finetune` (progress=bar, embed_progress=bar.embed)
    and the encoding bars of zero-shot, prompt ranking and robustness (`encode_progress`)."""

    def __init__(self, console: Console, label: str, *, keep_lines: bool = True, title: str | None = None,
                 enabled: bool = True) -> None:
        super().__init__(self._take, every_s=0.2)
        self.view = JobView(label)
        self.display = StatusDisplay(console, lambda width: job_lines(self.view, width, header=False, title=title)
                                     if self.view.phase else [], keep_lines=keep_lines, enabled=enabled)

    def __enter__(self) -> "JobProgress":
        self.display.__enter__()
        self._take({"t": time.time(), "stage": "start", "label": self.view.label})
        return self

    def __exit__(self, *exc: Any) -> None:
        self.display.__exit__(*exc)

    def _take(self, event: dict[str, Any]) -> None:
        self.display.print_lines(self.view.feed(event))


class TrainProgress(JobProgress):
    """The display of one training run: epoch rows kept, the batch bar live (rank 0 only under torchrun)."""

    def __init__(self, console: Console, label: str) -> None:
        from vlm.training.distributed import is_main_process

        super().__init__(console, label, enabled=is_main_process())


def encode_progress(console: Console, description: str) -> tuple[JobProgress, Any]:
    """A transient encoding bar titled `description` and the callback (`progress=`) that drives it."""
    bar = JobProgress(console, description, keep_lines=False, title=description)
    return bar, bar.embed


def matrix_lines(tracker: Any, width: int) -> list[Text]:
    """The live area of `vlm run`: the overall bar (jobs done, elapsed, ETA), then every running job."""
    eta = tracker.eta()
    done, failed = tracker.count("done"), tracker.count("failed")
    suffix = (f"{done + failed}/{tracker.total} jobs" + (f" ({failed} failed)" if failed else "")
              + f" · {clock_text(tracker.elapsed())} · ETA {clock_text(eta) if eta is not None else 'unknown'}")
    lines = bar_line("all", tracker.finished() / max(tracker.total, 1), suffix, width)
    for view in tracker.running():
        lines += job_lines(view, width)
    return lines
