"""Figure plumbing shared by every plot: an Agg figure without pyplot, atomic PNG/SVG writes, short
labels and class colours."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
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
    glyph outlines. Titles too wide for the figure are broken at their " · " first (`fit_titles`).
    """
    import matplotlib

    path = check_out(out)
    fit_titles(fig)
    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buf, format=FORMATS[path.suffix.lower()], dpi=dpi)
    return atomic_write_bytes(path, buf.getvalue())


def fit_titles(fig, margin: float = 6.0) -> None:
    """Break the figure's suptitle and axes titles at their " · " separators where a line would reach past
    the figure's edge (constrained layout makes room for titles but never shortens them); a part wider than
    the figure by itself gets a smaller font."""
    fig.draw_without_rendering()  # the layout, so that the titles sit where they will be drawn
    renderer = fig.canvas.get_renderer()
    for title in [getattr(fig, "_suptitle", None), *(ax.title for ax in fig.axes)]:
        if title is None or not title.get_text():
            continue
        box = title.get_window_extent(renderer)
        centre = (box.x0 + box.x1) / 2
        room = 2 * min(centre, fig.bbox.width - centre) - 2 * margin

        def fits(line: str) -> bool:
            title.set_text(line)
            return title.get_window_extent(renderer).width <= room

        text, lines = title.get_text(), []
        if fits(text):
            continue
        for line in text.split("\n"):
            parts = line.split(" · ")
            current = parts[0]
            for part in parts[1:]:
                if fits(current + " · " + part):
                    current += " · " + part
                else:
                    lines.append(current)
                    current = part
            lines.append(current)
        title.set_text("\n".join(lines))
        width = title.get_window_extent(renderer).width
        if width > room:  # a part alone is wider than the figure: a smaller font
            title.set_fontsize(max(5.0, title.get_fontsize() * room / width))


def one_model(runs: Sequence[Any], flag: str, what: str, model: str | None) -> tuple[list[Any], int]:
    """The `what` ("zero-shot", "few-shot") records of `flag` run with `model` (its recorded id or the --model
    name the run was given, kept as config `model_name`) and their one size; VlmErrors say how to choose when
    several models or sizes are there."""
    models = sorted({r.model for r in runs})
    if model is not None:
        runs = [r for r in runs if model in (r.model, r.config.get("model_name"))]
        if not runs:
            raise VlmError(f"No {what} runs of {flag} with model '{model}'; models there: {', '.join(models)}.")
    elif len(models) > 1:
        raise VlmError(f"{what.capitalize()} runs of {flag} use several models ({', '.join(models)}): pick one "
                       f"with --model.")
    sizes = sorted({int(r.size) for r in runs})
    if len(sizes) > 1:
        raise VlmError(f"{what.capitalize()} runs of {flag} at several sizes ({', '.join(map(str, sizes))}): pick "
                       f"one with --size.")
    return list(runs), sizes[0]


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
