"""Reading a prompt-set file (YAML, with line numbers) and validating it into a `PromptSet`.

Every problem is a `VlmError` of the form ``FILE: FIELD (line N): message``.
"""

from __future__ import annotations

import difflib
import re
import string
from pathlib import Path
from typing import Any, Iterable

from vlm.errors import VlmError
from vlm.prompts.expand import PromptBlock, PromptSet, PromptStyle
from vlm.tasks import TaskSpec, get_task
from vlm.yaml_files import read_yaml

PLACEHOLDERS = ("label",)
TOP_KEYS = ("dataset", "description", "classes", "names", "styles")
STYLE_KEYS = ("description", "templates", "prompts", "names", "synonyms")
MULTI_LABEL_STYLE_KEYS = ("description", "positive", "negative", "names", "synonyms")
SIDE_KEYS = ("templates", "prompts")
SIDES = ("positive", "negative")
_STYLE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


# ----------------------------------------------------------------------------- reading YAML
def _read_yaml(path: Path) -> tuple[Any, dict[tuple, int]]:
    return read_yaml(path, "prompt file")


# ----------------------------------------------------------------------------- validation
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


def _hint(word: str, options: Iterable[str]) -> str:
    options = list(options)
    lower = {o.lower(): o for o in options}
    close = [lower[word.lower()]] if word.lower() in lower else difflib.get_close_matches(word, options, 1, 0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _as_str(value: Any, numbers: bool = True) -> str | None:
    """Text as itself; with `numbers`, an int as its digits (class names `0:` / `[0, 1]` of retinamnist)."""
    if isinstance(value, str):
        return value
    if numbers and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _str_list(c: _Checker, fld: tuple, value: Any, *, single_ok: bool = False, what: str = "strings",
              numbers: bool = False) -> list[str]:
    """A list of non-empty strings (one string too with `single_ok`); numbers only where `numbers` (class names):
    a prompt, template or name written as a number or a boolean is an error, not text."""
    if single_ok and _as_str(value, numbers) is not None:
        value = [value]
    if not isinstance(value, list):
        c.fail(fld, f"must be a list of {what}" + (" (or one string)" if single_ok else "")
               + f", not {type(value).__name__} {value!r}.")
    out = []
    for i, item in enumerate(value):
        s = _as_str(item, numbers)
        if s is None or not s.strip():
            c.fail(fld + (i,), f"must be a non-empty string (quote it if it is a number), not {item!r}.")
        out.append(s.strip())
    return out


def _class_map(c: _Checker, fld: tuple, value: Any, classes: list[str], *, single_ok: bool,
               what: str = "class") -> dict[str, list[str]]:
    """A mapping class -> list of strings; keys must be class names."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        c.fail(fld, f"must be a mapping from {what} name to a list of strings, not {type(value).__name__}.")
    out: dict[str, list[str]] = {}
    for key, item in value.items():
        k = _as_str(key)
        if k is None or k not in classes:
            plural = "classes" if what == "class" else f"{what}s"
            c.fail(fld + (str(key),), f"unknown {what} '{key}'{_hint(str(key), classes)}; "
                                      f"the {plural} are: {', '.join(map(repr, classes))}.")
        out[k] = _str_list(c, fld + (k,), item, single_ok=single_ok)
    return out


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
        parts.append("extra " + ", ".join(f"{x!r}{_hint(x, missing)}" for x in extra))
    if moved:
        parts.append("index mismatch " + ", ".join(moved))
    c.fail(("classes",), f"do not match medmnist.INFO['{task.flag}'] labels {labels}: " + "; ".join(parts) + ".")


def _block(c: _Checker, fld: tuple, raw: dict, classes: list[str], *, side: str | None) -> PromptBlock:
    templates = _str_list(c, fld + ("templates",), raw.get("templates") or [], what="templates")
    for i, t in enumerate(templates):
        _check_template(c, fld + ("templates", i), t)
    prompts = _class_map(c, fld + ("prompts",), raw.get("prompts"), classes, single_ok=True,
                         what="label" if side else "class")
    for cls, items in prompts.items():
        for i, p in enumerate(items):
            if _PLACEHOLDER.search(p):
                c.fail(fld + ("prompts", cls, i), f"explicit prompt {p!r} holds a placeholder; explicit prompts are "
                                                  f"used as written (put it under `templates:`).")
    what = f"{side} " if side else ""
    if not templates and not any(prompts.values()):
        c.fail(fld, f"empty {'side' if side else 'style'}: give {what}templates and/or prompts.")
    if not templates:
        for cls in classes:
            if not prompts.get(cls):
                c.fail(fld + ("prompts",), f"{'label' if side else 'class'} {cls!r} has no {what}prompts "
                                           f"(and there are no templates).")
    return PromptBlock(tuple(templates), {k: tuple(v) for k, v in prompts.items()})


def _style(c: _Checker, fld: tuple, raw: Any, task: TaskSpec, classes: list[str],
           top_names: dict[str, list[str]]) -> PromptStyle:
    multi = task.kind == "multi-label"
    if raw is None or raw == {}:
        c.fail(fld, "empty style: give " + ("positive: and negative:" if multi else "templates and/or prompts") + ".")
    if not isinstance(raw, dict):
        c.fail(fld, f"a style must be a mapping, not {type(raw).__name__}.")
    allowed = MULTI_LABEL_STYLE_KEYS if multi else STYLE_KEYS
    for key in raw:
        if key in allowed:
            continue
        if key in SIDES:
            c.fail(fld + (key,), f"'{key}:' is for multi-label datasets; {task.flag} is {task.kind}: "
                                 f"give templates and/or prompts.")
        if key in SIDE_KEYS:
            c.fail(fld + (key,), f"{task.flag} is multi-label: put templates and prompts under positive: and negative:.")
        c.fail(fld + (str(key),), f"unknown style key '{key}'{_hint(str(key), allowed)}; allowed: {', '.join(allowed)}.")
    description = raw.get("description") or ""
    if not isinstance(description, str):
        c.fail(fld + ("description",), "must be a string.")
    style_names = _class_map(c, fld + ("names",), raw.get("names"), classes, single_ok=True,
                             what="label" if multi else "class")
    synonyms = _class_map(c, fld + ("synonyms",), raw.get("synonyms"), classes, single_ok=True,
                          what="label" if multi else "class")
    names = {cls: tuple(dict.fromkeys((style_names.get(cls) or top_names.get(cls) or [cls]) + synonyms.get(cls, [])))
             for cls in classes}
    name = fld[-1]
    if not multi:
        return PromptStyle(name, description.strip(), names, _block(c, fld, raw, classes, side=None))
    blocks = {}
    for side in SIDES:
        if side not in raw:
            c.fail(fld, f"multi-label style needs both positive: and negative: ({side}: is missing).")
        side_raw = raw[side]
        if side_raw is None or side_raw == {}:
            c.fail(fld + (side,), f"empty {side} side: give templates and/or prompts.")
        if not isinstance(side_raw, dict):
            c.fail(fld + (side,), f"must be a mapping with templates and/or prompts, not {type(side_raw).__name__}.")
        for key in side_raw:
            if key not in SIDE_KEYS:
                c.fail(fld + (side, str(key)), f"unknown key '{key}'{_hint(str(key), SIDE_KEYS)}; "
                                               f"allowed: {', '.join(SIDE_KEYS)}.")
        blocks[side] = _block(c, fld + (side,), side_raw, classes, side=side)
    return PromptStyle(name, description.strip(), names, blocks["positive"], blocks["negative"])


def validate_prompt_set(path: str | Path, dataset: str | None = None) -> PromptSet:
    """Read and check a prompt-set file (optionally: that it is for `dataset`); return the PromptSet.

    Every problem raises a one-line `VlmError` naming the file, the field and (where known) the line.
    """
    path = Path(path)
    data, lines = _read_yaml(path)
    c = _Checker(path, lines)
    if not isinstance(data, dict):
        c.fail((), "a prompt file is a YAML mapping with keys dataset, classes and styles"
                   + (" (the file is empty)." if data is None else f", not a {type(data).__name__}."))
    for key in data:
        if key not in TOP_KEYS:
            c.fail((str(key),), f"unknown top-level key '{key}'{_hint(str(key), TOP_KEYS)}; "
                                f"allowed: {', '.join(TOP_KEYS)}.")
    for key in ("dataset", "classes", "styles"):
        if key not in data:
            c.fail((), f"missing required key '{key}'.")

    flag = _as_str(data["dataset"])
    if flag is None:
        c.fail(("dataset",), "must be a dataset flag such as pneumoniamnist.")
    try:
        task = get_task(flag)
    except VlmError as exc:
        c.fail(("dataset",), str(exc))
    if dataset is not None and get_task(dataset).flag != task.flag:
        c.fail(("dataset",), f"the file is for '{task.flag}', but it was given for '{get_task(dataset).flag}'.")
    description = data.get("description") or ""
    if not isinstance(description, str):
        c.fail(("description",), "must be a string.")

    classes = _str_list(c, ("classes",), data["classes"], what="class names", numbers=True)
    _check_classes(c, classes, task)
    multi = task.kind == "multi-label"
    names = _class_map(c, ("names",), data.get("names"), classes, single_ok=True, what="label" if multi else "class")

    raw_styles = data["styles"]
    if not isinstance(raw_styles, dict) or not raw_styles:
        c.fail(("styles",), "must be a non-empty mapping from style name to style.")
    styles: dict[str, PromptStyle] = {}
    for name, raw in raw_styles.items():
        sname = _as_str(name)
        if sname is None or not _STYLE_NAME.match(sname) or sname == "all":
            c.fail(("styles", str(name)), f"bad style name {name!r}: use lower-case letters, digits, '-' and '_' "
                                          f"(and not 'all').")
        styles[sname] = _style(c, ("styles", sname), raw, task, classes, names)
    return PromptSet(dataset=task.flag, classes=classes, styles=styles, path=path,
                     description=description.strip(), names=names)
