"""Reading a prompt-set file (YAML, with line numbers) and validating it into a `PromptSet`.

Two layers. The pydantic models (`PromptFile`, `SingleLabelStyle`, `PairStyle`, `PromptSide`) give the
file's shape: types, required and unknown keys, style names, non-empty text (a prompt written as a number
or a boolean is an error, not text). The checks after them need the dataset: the classes against
medmnist.INFO, class keys, the templates' placeholders, styles with nothing to say.
Every problem is a `VlmError` of the form ``FILE: FIELD (line N): message``.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import BaseModel, BeforeValidator, PlainValidator, StrictStr, ValidationError

from vlm.errors import VlmError
from vlm.prompts.expand import PromptBlock, PromptSet, PromptStyle
from vlm.schemas import Schema, did_you_mean, error_message
from vlm.tasks import TaskSpec, get_task
from vlm.yaml_files import read_yaml

PLACEHOLDERS = ("label",)
SIDES = ("positive", "negative")
SIDE_KEYS = ("templates", "prompts")
_STYLE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


# ----------------------------------------------------------------------------- the file's shape
def _text(value: Any) -> str:
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise ValueError(f"must be a non-empty string (quote it if it is a number), not {value!r}")


def _class_name(value: Any) -> str:
    """Class names as text; an int as its digits (the `0:` / `[0, 1]` class names of retinamnist)."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else _text(value)


def _style_name(value: Any) -> str:
    name = _class_name(value)
    if not _STYLE_NAME.match(name) or name == "all":
        raise ValueError(f"bad style name {value!r}: use lower-case letters, digits, '-' and '_' (and not 'all')")
    return name


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Text = Annotated[str, PlainValidator(_text)]
ClassName = Annotated[str, PlainValidator(_class_name)]
StyleName = Annotated[str, PlainValidator(_style_name)]
Texts = Annotated[list[Text], BeforeValidator(_one_or_many)]  # a list of strings, or one string
ClassMap = Optional[dict[ClassName, Texts]]  # class (label) name -> strings


class PromptSide(Schema):
    """Templates (with a `{label}` placeholder) and explicit prompts per class: a single-label style, or one
    side of a multi-label style's positive/negative pair."""

    templates: Optional[list[Text]] = None
    prompts: ClassMap = None


class SingleLabelStyle(PromptSide):
    """A style of a binary, multi-class or ordinal dataset."""

    description: Optional[StrictStr] = None
    names: ClassMap = None
    synonyms: ClassMap = None


class PairStyle(Schema):
    """A style of a multi-label dataset: per label, prompts for the finding present and absent."""

    description: Optional[StrictStr] = None
    positive: PromptSide
    negative: PromptSide
    names: ClassMap = None
    synonyms: ClassMap = None


class PromptFile(Schema):
    """The top level of a prompt file; its styles are checked against the dataset's kind afterwards."""

    dataset: StrictStr
    description: Optional[StrictStr] = None
    classes: list[ClassName]
    names: ClassMap = None
    styles: dict[StyleName, Any]


# ----------------------------------------------------------------------------- messages
class _Checker:
    """Raises `VlmError("FILE: FIELD (line N): message")`."""

    def __init__(self, path: Path, lines: dict[tuple, int]):
        self.path = path
        self.lines = lines

    @staticmethod
    def field_name(fld: tuple) -> str:
        out = ""
        for part in fld:
            if isinstance(part, int):
                out += f"[{part}]"
            elif _PLAIN_KEY.match(part):
                out += f".{part}" if out else part
            else:
                out += f"['{part}']"
        return out or "(top level)"

    def line(self, fld: tuple) -> int | None:
        for n in range(len(fld), 0, -1):
            if fld[:n] in self.lines:
                return self.lines[fld[:n]]
        return None

    def fail(self, fld: tuple, message: str) -> None:
        line = self.line(fld)
        where = f" (line {line})" if line else ""
        raise VlmError(f"{self.path}: {self.field_name(fld)}{where}: {message}")

    def parse(self, model: type[BaseModel], raw: Any, fld: tuple = (), what: str = "key") -> Any:
        """`model.model_validate(raw)`, or the first error as `fail` at its field."""
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            loc, message, _ = error_message(model, exc, what)
            self.fail(fld + loc, message + ("" if message.endswith((".", "?)")) else "."))


# ----------------------------------------------------------------------------- checks that need the dataset
def _class_keys(c: _Checker, fld: tuple, mapping: dict[str, list[str]] | None, classes: list[str],
                what: str) -> dict[str, list[str]]:
    for key in mapping or {}:
        if key not in classes:
            plural = "classes" if what == "class" else f"{what}s"
            c.fail(fld + (key,), f"unknown {what} '{key}'{did_you_mean(key, classes)}; the {plural} are: "
                                 f"{', '.join(map(repr, classes))}.")
    return mapping or {}


def _check_template(c: _Checker, fld: tuple, template: str) -> None:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        c.fail(fld, f"template {template!r} has malformed braces ({exc}); write a literal brace as {{{{ or }}}}.")
    found = False
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if name not in PLACEHOLDERS:
            c.fail(fld, f"template {template!r} has an unknown placeholder {{{name}}}; "
                        f"the only placeholder is {{label}}.")
        if spec or conv:
            c.fail(fld, f"template {template!r}: write the placeholder as plain {{label}}.")
        found = True
    if not found:
        c.fail(fld, f"template {template!r} has no {{label}} placeholder (use `prompts:` for fixed sentences).")


def _check_classes(c: _Checker, classes: list[str], task: TaskSpec) -> None:
    labels = list(task.labels)
    dup = [x for i, x in enumerate(classes) if x in classes[:i]]
    if dup:
        c.fail(("classes",), f"class {dup[0]!r} is listed twice.")
    if classes == labels:
        return
    missing = [x for x in labels if x not in classes]
    extra = [x for x in classes if x not in labels]
    moved = [f"{x!r} at index {i} (INFO index {labels.index(x)})"
             for i, x in enumerate(classes) if x in labels and labels.index(x) != i]
    parts = []
    if missing:
        parts.append("missing " + ", ".join(map(repr, missing)))
    if extra:
        parts.append("extra " + ", ".join(f"{x!r}{did_you_mean(x, missing)}" for x in extra))
    if moved:
        parts.append("index mismatch " + ", ".join(moved))
    c.fail(("classes",), f"do not match medmnist.INFO['{task.flag}'] labels {labels}: " + "; ".join(parts) + ".")


def _block(c: _Checker, fld: tuple, side: PromptSide, classes: list[str], *, pair: str | None) -> PromptBlock:
    templates = side.templates or []
    for i, t in enumerate(templates):
        _check_template(c, fld + ("templates", i), t)
    prompts = _class_keys(c, fld + ("prompts",), side.prompts, classes, "label" if pair else "class")
    for cls, items in prompts.items():
        for i, p in enumerate(items):
            if _PLACEHOLDER.search(p):
                c.fail(fld + ("prompts", cls, i), f"explicit prompt {p!r} holds a placeholder; explicit prompts are "
                                                  f"used as written (put it under `templates:`).")
    what = f"{pair} " if pair else ""
    if not templates and not any(prompts.values()):
        c.fail(fld, f"empty {'side' if pair else 'style'}: give {what}templates and/or prompts.")
    if not templates:
        for cls in classes:
            if not prompts.get(cls):
                c.fail(fld + ("prompts",), f"{'label' if pair else 'class'} {cls!r} has no {what}prompts "
                                           f"(and there are no templates).")
    return PromptBlock(tuple(templates), {k: tuple(v) for k, v in prompts.items()})


def _check_style_keys(c: _Checker, fld: tuple, raw: Any, task: TaskSpec) -> None:
    """The mistakes of writing one kind of style for the other kind of dataset, named as such."""
    multi = task.kind == "multi-label"
    if raw is None or raw == {}:
        c.fail(fld, "empty style: give " + ("positive: and negative:" if multi else "templates and/or prompts") + ".")
    if not isinstance(raw, dict):
        return  # the schema names the type
    wrong = SIDE_KEYS if multi else SIDES
    for key in raw:
        if key in wrong and multi:
            c.fail(fld + (key,), f"{task.flag} is multi-label: put templates and prompts under positive: and negative:.")
        if key in wrong:
            c.fail(fld + (key,), f"'{key}:' is for multi-label datasets; {task.flag} is {task.kind}: "
                                 f"give templates and/or prompts.")
    if multi:
        for side in SIDES:
            if side not in raw:
                c.fail(fld, f"multi-label style needs both positive: and negative: ({side}: is missing).")
            if raw[side] is None or raw[side] == {}:
                c.fail(fld + (side,), f"empty {side} side: give templates and/or prompts.")


def _style(c: _Checker, name: str, raw: Any, task: TaskSpec, classes: list[str],
           top_names: dict[str, list[str]]) -> PromptStyle:
    fld = ("styles", name)
    multi = task.kind == "multi-label"
    _check_style_keys(c, fld, raw, task)
    style = c.parse(PairStyle if multi else SingleLabelStyle, raw, fld, what="style key")
    what = "label" if multi else "class"
    style_names = _class_keys(c, fld + ("names",), style.names, classes, what)
    synonyms = _class_keys(c, fld + ("synonyms",), style.synonyms, classes, what)
    names = {cls: tuple(dict.fromkeys((style_names.get(cls) or top_names.get(cls) or [cls]) + synonyms.get(cls, [])))
             for cls in classes}
    description = (style.description or "").strip()
    if not multi:
        return PromptStyle(name, description, names, _block(c, fld, style, classes, pair=None))
    positive, negative = (_block(c, fld + (side,), getattr(style, side), classes, pair=side) for side in SIDES)
    return PromptStyle(name, description, names, positive, negative)


def validate_prompt_set(path: str | Path, dataset: str | None = None) -> PromptSet:
    """Read and check a prompt-set file (optionally: that it is for `dataset`); return the PromptSet.

    Every problem raises a one-line `VlmError` naming the file, the field and (where known) the line.
    """
    path = Path(path)
    data, lines = read_yaml(path, "prompt file")
    c = _Checker(path, lines)
    if not isinstance(data, dict):
        c.fail((), "a prompt file is a YAML mapping with keys dataset, classes and styles"
                   + (" (the file is empty)." if data is None else f", not a {type(data).__name__}."))
    top = c.parse(PromptFile, data, what="top-level key")
    try:
        task = get_task(top.dataset)
    except VlmError as exc:
        c.fail(("dataset",), str(exc))
    if dataset is not None and get_task(dataset).flag != task.flag:
        c.fail(("dataset",), f"the file is for '{task.flag}', but it was given for '{get_task(dataset).flag}'.")
    _check_classes(c, top.classes, task)
    if not top.styles:
        c.fail(("styles",), "must be a non-empty mapping from style name to style.")
    multi = task.kind == "multi-label"
    names = _class_keys(c, ("names",), top.names, top.classes, "label" if multi else "class")
    styles = {name: _style(c, name, raw, task, top.classes, names) for name, raw in top.styles.items()}
    return PromptSet(dataset=task.flag, classes=top.classes, styles=styles, path=path,
                     description=(top.description or "").strip(), names=names)
