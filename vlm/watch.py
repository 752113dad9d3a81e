"""Ranking prompt files again whenever one of them is saved (`vlm prompts compare --watch`).

`watch_rankings(ranker, files, on_ranking, on_error)` ranks the files once, then once more after every
change: the `PromptRanker` keeps the split, the encoder (and whatever towers it has built), the image
embeddings and the text-embedding cache in memory, so a save costs the parse and the new prompts only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from vlm.errors import VlmError
from vlm.zeroshot import PromptRanker

DEBOUNCE_MS = 300  # changes closer together than this make one re-ranking


def prompt_changes(files: Sequence[str | os.PathLike], stop_event: Any = None) -> Iterator[set[Path]]:
    """The sets of `files` that changed, one set per burst of changes (watchfiles, `debounce` DEBOUNCE_MS).

    The files' folders are watched, not the files, so that editors and `sed -i`, which save by renaming a
    new file over the old one, are seen too. Ends on Ctrl-C or when `stop_event` is set.
    """
    import logging

    from watchfiles import watch

    logging.getLogger("watchfiles.main").setLevel(logging.ERROR)  # no "KeyboardInterrupt caught" on Ctrl-C
    wanted = {Path(f).resolve() for f in files}
    folders = sorted({p.parent for p in wanted})
    for changes in watch(*folders, watch_filter=lambda _change, path: Path(path).resolve() in wanted,
                         debounce=DEBOUNCE_MS, stop_event=stop_event, raise_interrupt=False):
        changed = {Path(path).resolve() for _, path in changes} & wanted
        if changed:
            yield changed


def watch_rankings(ranker: PromptRanker, files: Sequence[str | os.PathLike],
                   on_ranking: Callable[[list[dict[str, Any]]], None], on_error: Callable[[VlmError], None],
                   changes: Iterable[Any] | None = None) -> int:
    """Rank `files` now and after every item of `changes` (default: `prompt_changes(files)`); a file that does
    not parse (a VlmError) goes to `on_error` and the watch goes on. Ctrl-C ends it quietly. Returns the number
    of rankings shown."""
    shown = 0

    def rank() -> None:
        nonlocal shown
        try:
            rows = ranker.rank(files)
        except VlmError as exc:
            on_error(exc)
            return
        on_ranking(rows)
        shown += 1

    try:
        rank()
        for _ in changes if changes is not None else prompt_changes(files):
            rank()
    except KeyboardInterrupt:
        pass
    return shown
