"""SIGTERM handled like Ctrl-C, and blocks that an interrupt waits for.

`terminate_as_interrupt()`: inside the block SIGTERM raises `Terminated` (a KeyboardInterrupt), so that a
run stopped by `kill`, a job scheduler or a container runtime keeps its resumable state and says how to
continue, as Ctrl-C does. `deferred_interrupts()`: a SIGINT or SIGTERM that arrives inside the block is
delivered when it ends (a checkpoint and its epoch log are written together, never half). Both do nothing
outside the main thread, where Python cannot install signal handlers.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would raise KeyboardInterrupt."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises `Terminated` inside the block; the previous handler is restored after it."""
    if not _main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block has run; then the first one that came is delivered to the
    handlers in force before the block."""
    if not _main_thread():
        yield
        return
    pending: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum)) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        if pending:
            signal.raise_signal(pending[0])
