"""Job claims: one file per job, `RUNS/.claims/<key>.claim`, so that workers (and `vlm run` calls) never
run a job twice.

A claim is created with `os.open(O_CREAT | O_EXCL)`: of two claimers exactly one succeeds. It holds
the job key and label, host, pid, start time, session, attempt, log file and (once the job made one)
its run folder, and a `state`:

    running      its worker touches the file every `HEARTBEAT_S` (the mtime is the heartbeat)
    done         the job wrote its records (kept, so that no later claimer runs it again)
    failed       the job raised; final for the `vlm run` calls now running (`reset` clears it at start)
    interrupted  Ctrl-C: claimable at once, and the job resumes from its run folder's last.pt

A `running` claim is stale when its process is gone: same host and pid not alive, or (any host) a
heartbeat older than `stale_after_s`. Replacing a stale claim, and every change to a claim after it
was created, happens under an exclusive `fcntl.flock` on `RUNS/.claims/.lock`, with the staleness
checked again under the lock: two recoverers never both win, and a fresh claim is never replaced
(every owner change is token-checked, so a worker that lost its claim cannot overwrite the new one).
A job whose worker died `max_crashes` times while running it is marked failed instead.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Iterator

from vlm.files import HOST, pid_alive

CLAIMS_DIR = ".claims"
LOCK_FILE = ".lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0
MAX_CRASHES = 3  # a job whose worker died this often is marked failed instead of claimed again


@dataclass(frozen=True)
class Claim:
    """The content of one claim file (`mtime` is read from the file, not stored in it)."""

    key: str
    label: str = ""
    state: str = "running"
    host: str = ""
    pid: int = 0
    started: float = 0.0
    token: str = ""
    session: str = ""
    worker: str = ""
    attempt: int = 1
    crashes: int = 0  # times a worker died while running it
    run_dir: str | None = None
    log: str | None = None
    error: str | None = None
    mtime: float = 0.0

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("mtime")
        return json.dumps(data, indent=1)


class Claims:
    """The claim files of one runs folder."""

    def __init__(self, runs_dir: str | os.PathLike, *, stale_after_s: float = STALE_AFTER_S,
                 max_crashes: int = MAX_CRASHES) -> None:
        self.folder = Path(runs_dir) / CLAIMS_DIR
        self.folder.mkdir(parents=True, exist_ok=True)
        self.stale_after_s = stale_after_s
        self.max_crashes = max_crashes

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.claim"

    @contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive lock on the folder's lock file (held while a claim is checked and changed)."""
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def read(self, key: str) -> Claim | None:
        """The claim of `key`, None when there is none. A file being written (not yet JSON) reads as a
        `running` claim of an unknown process: only its mtime can make it stale."""
        path = self.path(key)
        try:
            mtime = path.stat().st_mtime
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return Claim(key=key, mtime=mtime)
        known = {k: v for k, v in data.items() if k in Claim.__dataclass_fields__}
        return Claim(**{**known, "key": key, "mtime": mtime})

    def is_stale(self, claim: Claim, now: float | None = None) -> bool:
        """A `running` claim whose process is gone (dead pid on this host, or no heartbeat for `stale_after_s`)."""
        if claim.state != "running":
            return False
        if claim.host == HOST and claim.pid and not pid_alive(claim.pid):
            return True
        return (now if now is not None else time.time()) - claim.mtime > self.stale_after_s

    def claimable(self, claim: Claim | None) -> bool:
        """No claim, an interrupted one, or a stale running one."""
        return claim is None or claim.state == "interrupted" or self.is_stale(claim)

    def try_claim(self, key: str, label: str = "", *, session: str = "", worker: str = "") -> Claim | None:
        """Claim job `key` for this process: a new claim, or one that replaced an interrupted/stale claim
        (keeping its run folder, so the job resumes there). None when someone else holds the job or it is
        done or failed."""
        mine = Claim(key=key, label=label, host=HOST, pid=os.getpid(), started=time.time(),
                     token=uuid.uuid4().hex, session=session, worker=worker)
        if self._create(mine):
            return mine
        with self.lock():
            old = self.read(key)
            if old is None:  # released meanwhile
                return mine if self._create(mine) else None
            if not self.claimable(old):
                return None
            crashes = old.crashes + (old.state == "running")
            if crashes >= self.max_crashes:
                self._write(replace(old, state="failed", session=session, crashes=crashes,
                                    error=f"its worker died {crashes} times while running it"))
                return None
            mine = replace(mine, attempt=old.attempt + 1, crashes=crashes, run_dir=old.run_dir, log=old.log)
            self._write(mine)
        return mine

    def update(self, claim: Claim, **changes: Any) -> Claim | None:
        """Change this process's claim (state, run_dir, log, error); None if the claim is no longer its own."""
        with self.lock():
            current = self.read(claim.key)
            if current is None or current.token != claim.token:
                return None
            self._write(replace(current, **changes))
        return self.read(claim.key)

    def release(self, claim: Claim) -> bool:
        """Remove this process's claim (a job given back unrun); False if it is no longer its own."""
        with self.lock():
            current = self.read(claim.key)
            if current is None or current.token != claim.token:
                return False
            self.path(claim.key).unlink()
            return True

    def touch(self, claim: Claim) -> bool:
        """The heartbeat: refresh the claim's mtime while it is still this process's."""
        current = self.read(claim.key)
        if current is None or current.token != claim.token:
            return False
        os.utime(self.path(claim.key))
        return True

    def reset(self, keys: Iterable[str], finished: Callable[[], Collection[str]]) -> list[str]:
        """At the start of a `vlm run` of the jobs `keys` (those without a finished record): remove their
        failed claims (so they are tried again) and their done claims whose records are gone. `finished()`
        lists the job keys with a finished record now; it is read under the lock (a worker marks its claim
        done under the lock after writing the record), so a job that finished meanwhile keeps its claim.
        Returns the keys cleared."""
        cleared = []
        with self.lock():
            claims = [c for c in map(self.read, keys) if c is not None and c.state in ("failed", "done")]
            done_now = set(finished()) if any(c.state == "done" for c in claims) else set()
            for claim in claims:
                if claim.state == "failed" or claim.key not in done_now:
                    self.path(claim.key).unlink()
                    cleared.append(claim.key)
        return cleared

    def _create(self, claim: Claim) -> bool:
        try:
            fd = os.open(self.path(claim.key), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(claim.to_json())
            f.flush()
            os.fsync(f.fileno())
        return True

    def _write(self, claim: Claim) -> None:
        """Replace a claim file atomically (callers hold the lock)."""
        tmp = self.folder / f".{claim.key}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(claim.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path(claim.key))
