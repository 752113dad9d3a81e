"""Files on disk: atomic writes, content digests, and the NaN-safe number helper used when writing JSON.

An atomic write goes through `.NAME.HOST-PID.XXXX.tmp` in the target folder, fsynced, renamed over the
target, then the folder is fsynced (so the rename survives a power cut). The file gets the user's umask (as
`open` would give it), not mkstemp's 0600. Temp files a killed writer left behind (its process gone on this
host, or older than `STALE_TMP_S`) are removed by the next atomic write to that folder.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import socket
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlm.errors import VlmError

if TYPE_CHECKING:
    import numpy as np


HOST = socket.gethostname()
STALE_TMP_S = 3600.0  # a temp file of another host (or of unknown origin) this old is stale
_HOST_TAG = re.sub(r"[^A-Za-z0-9-]+", "-", HOST)
_TMP = re.compile(r"^\..+\.tmp$")
_TMP_OWNER = re.compile(r"\.(?P<host>[A-Za-z0-9-]*)-(?P<pid>\d+)\.[^.]+\.tmp$")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@lru_cache(maxsize=1)
def file_mode() -> int:
    """The mode `open` gives a new file under the process's umask (0o666 & ~umask)."""
    try:
        with open("/proc/self/status") as f:
            mask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def clean_stale_temp(folder: Path, now: float | None = None) -> list[Path]:
    """Remove the atomic-write temp files in `folder` that a killed writer left behind; returns them."""
    now = time.time() if now is None else now
    removed = []
    try:
        entries = [e for e in os.scandir(folder) if _TMP.match(e.name) and e.is_file(follow_symlinks=False)]
    except OSError:
        return removed
    for entry in entries:
        owner = _TMP_OWNER.search(entry.name)
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_TMP_S
        except OSError:
            continue
        dead = owner is not None and owner["host"] == _HOST_TAG and not pid_alive(int(owner["pid"]))
        if dead or old:
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed


def fsync_folder(folder: Path) -> None:
    """fsync a folder, so that a rename into it is durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder, an atomic rename and a folder fsync;
    stale temp files of the folder are removed first. A VlmError when the folder cannot be written."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temp(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_HOST_TAG}-{os.getpid()}.", suffix=".tmp")
    except OSError as exc:
        raise VlmError(f"Cannot write to {path.parent}: {exc.strerror}.") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), file_mode())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise VlmError(f"Cannot write {path}: {exc.strerror or exc}.") from None
        raise
    fsync_folder(path.parent)
    return path


def check_writable_folder(folder: str | os.PathLike, what: str = "Folder") -> None:
    """A VlmError unless `folder` is a writable folder or can be made as one (checked before long work, so that
    a run does not fail after minutes of encoding)."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise VlmError(f"{what} {folder} cannot be made: {probe} is a file, not a folder.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise VlmError(f"{what} {folder} cannot be written: {probe} is not writable for this user.")


def check_new_file(path: str | os.PathLike, *, force: bool = False, option: str = "the output") -> None:
    """A VlmError when `path` exists (unless `force`), is a folder, or cannot be written; before any work."""
    path = Path(path)
    if path.is_dir():
        raise VlmError(f"{option} {path} is a folder; give a file name.")
    if path.exists() and not force:
        raise VlmError(f"{option} {path} exists: pass --force to overwrite it, or give another file name.")
    check_writable_folder(path.parent, f"The folder of {option} {path},")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """`np.save` through `atomic_write_bytes`."""
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(array))
    return atomic_write_bytes(path, buf.getvalue())


def load_npy(path: str | os.PathLike, what: str = "scores") -> np.ndarray:
    """A saved .npy array of real floating-point numbers (scores, logits); a VlmError naming the file when it
    is missing, unreadable, holds pickled objects or holds anything but real floats (complex, integers, text)."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise VlmError(f"{what.capitalize()} file {path} not found" + (" (it is a folder)." if path.is_dir() else "."))
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        pickled = "pickle" in str(exc).lower()
        raise VlmError(f"{path} holds pickled Python objects, which are never loaded; save the {what} as a numeric "
                       f"array (np.save with a float dtype)." if pickled else
                       f"{path} is not a readable .npy array ({exc}).") from None
    except (OSError, EOFError) as exc:
        raise VlmError(f"{path} is not a readable .npy array ({exc}).") from None
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.floating):
        dtype = getattr(array, "dtype", type(array).__name__)
        raise VlmError(f"{path} holds {dtype} values; {what} must be real floating-point numbers.")
    return array


@lru_cache(maxsize=64)
def _digest_cached(path: str, algorithm: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a whole file (`sha256`, `md5`, ...), memoised per path, size and mtime."""
    p = Path(path).resolve()
    st = p.stat()
    return _digest_cached(str(p), algorithm, st.st_size, st.st_mtime_ns)


def finite_or_none(value: Any) -> float | None:
    """`float(value)`, or None for None, nan and ±inf (numbers as strict JSON and tables want them)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
