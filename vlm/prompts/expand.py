"""Validated prompt sets and their expansion: templates × class names (+ explicit prompts) -> prompt lists."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from vlm.errors import VlmError
from vlm.tasks import TaskSpec, get_task


@dataclass(frozen=True)
class PromptBlock:
    """Templates (each with a ``{label}`` placeholder) and explicit prompts per class."""

    templates: tuple[str, ...] = ()
    prompts: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def expand(self, cls: str, names: Sequence[str]) -> list[str]:
        """Filled-in templates (template-major, then names) followed by the explicit prompts, no duplicates."""
        filled = [t.format(label=n) for t in self.templates for n in names]
        return list(dict.fromkeys(filled + list(self.prompts.get(cls, ()))))


@dataclass(frozen=True)
class PromptStyle:
    """One named way of prompting a dataset.

    `names` holds, per class, the names that fill ``{label}`` (top-level or style names, plus the
    style's synonyms). Single-label styles keep their prompts in `positive`; multi-label styles also
    have `negative` (the "finding absent" side of each label's pair).
    """

    name: str
    description: str
    names: dict[str, tuple[str, ...]]
    positive: PromptBlock
    negative: PromptBlock | None = None

    @property
    def is_pairs(self) -> bool:
        """True for a multi-label style (positive/negative prompt pairs)."""
        return self.negative is not None

    def expand_class(self, cls: str, side: str = "positive") -> list[str]:
        """The prompts of class (label) `cls` on `side` ("positive", or "negative" for pairs)."""
        block = self.positive if side == "positive" else self.negative
        if block is None:
            raise VlmError(f"Prompt style '{self.name}' has no {side} prompts.")
        return block.expand(cls, self.names[cls])


@dataclass(frozen=True, eq=False)
class PromptSet:
    """A validated prompt-set file.

    - `expand(style)` (binary / multi-class / ordinal): one list of prompts per class, in class order.
    - `expand_pairs(style)` (multi-label): one ``(positive prompts, negative prompts)`` pair per label.
    """

    dataset: str
    classes: list[str]
    styles: dict[str, PromptStyle]
    path: Path
    description: str = ""
    names: dict[str, list[str]] = field(default_factory=dict)

    @property
    def task(self) -> TaskSpec:
        """The dataset's TaskSpec."""
        return get_task(self.dataset)

    @property
    def style_names(self) -> list[str]:
        """Style names in file order."""
        return list(self.styles)

    @property
    def is_multi_label(self) -> bool:
        """True when the dataset is multi-label (styles hold prompt pairs)."""
        return self.task.kind == "multi-label"

    def resolve_styles(self, spec: str | Sequence[str]) -> list[str]:
        """Style names from a name, a comma list ("clip,descriptive"), a list of those, or "all"."""
        items = [spec] if isinstance(spec, str) else list(spec)
        wanted = [s.strip() for item in items for s in str(item).split(",") if s.strip()]
        available = ", ".join(self.style_names)
        if not wanted:
            raise VlmError(f"No prompt style given for {self.dataset}; available: {available} (or 'all').")
        if "all" in wanted:
            return self.style_names
        for name in wanted:
            if name not in self.styles:
                close = difflib.get_close_matches(name, self.style_names, n=1, cutoff=0.6)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise VlmError(f"Unknown prompt style '{name}' in {self.path}.{hint} "
                               f"Available: {available} (or 'all').")
        return list(dict.fromkeys(wanted))

    def _style(self, style: str) -> PromptStyle:
        if style not in self.styles:
            names = self.resolve_styles(style)  # raises for unknown names
            if len(names) != 1:
                raise VlmError(f"Expand one prompt style at a time, not '{style}'.")
            style = names[0]
        return self.styles[style]

    def expand(self, style: str) -> list[list[str]]:
        """Single-label kinds: the fully filled-in prompts of each class, in class order."""
        if self.is_multi_label:
            raise VlmError(f"{self.dataset} is multi-label: use expand_pairs() for (positive, negative) prompts.")
        s = self._style(style)
        return [s.expand_class(c) for c in self.classes]

    def expand_pairs(self, style: str) -> list[tuple[list[str], list[str]]]:
        """Multi-label: one (positive prompts, negative prompts) pair per label, in label order."""
        if not self.is_multi_label:
            raise VlmError(f"{self.dataset} is {self.task.kind}, not multi-label: use expand().")
        s = self._style(style)
        return [(s.expand_class(c, "positive"), s.expand_class(c, "negative")) for c in self.classes]

    def counts(self, style: str) -> list[int] | list[tuple[int, int]]:
        """Prompts per class (multi-label: (positive, negative) per label)."""
        if self.is_multi_label:
            return [(len(p), len(n)) for p, n in self.expand_pairs(style)]
        return [len(p) for p in self.expand(style)]

    def n_prompts(self, style: str) -> int:
        """All expanded prompts of a style (multi-label: positive and negative)."""
        return sum(sum(c) if isinstance(c, tuple) else c for c in self.counts(style))

    def to_json(self, styles: str | Sequence[str] | None = None) -> dict[str, Any]:
        """``{"dataset", "classes", "styles": {NAME: [[prompts of class 0], ...]}}``; multi-label:
        each label is ``{"positive": [...], "negative": [...]}``. `styles` picks some (default all)."""
        names = self.style_names if styles is None else self.resolve_styles(styles)
        out: dict[str, Any] = {}
        for name in names:
            if self.is_multi_label:
                out[name] = [{"positive": p, "negative": n} for p, n in self.expand_pairs(name)]
            else:
                out[name] = self.expand(name)
        return {"dataset": self.dataset, "classes": list(self.classes), "styles": out}
