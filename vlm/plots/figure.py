"""Figure plumbing shared by every plot: an Agg figure without pyplot, atomic PNG/SVG writes, short
labels and class colours."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from vlm.errors import VlmError
from vlm.files import atomic_write_bytes

FORMATS = {".png": "png", ".svg": "svg"}
_NAME_WIDTH = 28


def new_figure(width: float, height: float):
    """A constrained-layout matplotlib Figure on its own Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def check_out(out: str | os.PathLike) -> Path:
    """The output path, or a VlmError if its suffix is not a supported figure format."""
    path = Path(out)
    if path.suffix.lower() not in FORMATS:
        raise VlmError(f"Cannot tell the figure format of '{path.name}': use a .png or .svg file name.")
    return path


def save_figure(fig, out: str | os.PathLike, dpi: int = 150) -> Path:
    """Write a figure to `out` (PNG or SVG by suffix) through a temporary file and an atomic rename.

    SVG text is written as `<text>` elements (`svg.fonttype = "none"`), searchable and editable, not as
    glyph outlines.
    """
    import matplotlib

    path = check_out(out)
    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buf, format=FORMATS[path.suffix.lower()], dpi=dpi)
    return atomic_write_bytes(path, buf.getvalue())


def short(name: str, width: int = _NAME_WIDTH) -> str:
    """`name` cut to `width` characters with an ellipsis."""
    return name if len(name) <= width else name[: width - 1] + "…"


def class_colors(k: int) -> list:
    """`k` distinct colours (tab10, or tab20 beyond ten classes)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(k)]


def as_np(x: Any) -> np.ndarray:
    """A numpy array from a tensor (any device) or array-like."""
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
