"""Files on disk: atomic writes, content digests, and the NaN-safe number helper used when writing JSON."""

from __future__ import annotations

import hashlib
import io
import math
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlm.errors import VlmError

if TYPE_CHECKING:
    import numpy as np


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise VlmError(f"Cannot write to {path.parent}: {exc.strerror}.") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
