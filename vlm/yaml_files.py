"""Reading the YAML files the tool takes (prompt sets, experiment files): the data, and the line of every
field, so that every error can point at `file:line`.

`read_yaml(path, what)` refuses duplicate mapping keys (PyYAML would keep the last one silently) and turns a
missing file, a folder, non-UTF-8 text and syntax errors into one-line VlmErrors; `lines` maps each field
path (a tuple of keys and list indices) to its 1-based line. Light: PyYAML only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vlm.errors import VlmError


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser when PyYAML has it: ~10x faster
    """SafeLoader that refuses duplicate mapping keys."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # unhashable key: let the base constructor report it
            break
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}' (first given on line {first})", key_node.start_mark)
        seen[key] = key_node.start_mark.line + 1
    return yaml.constructor.BaseConstructor.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def index_lines(node: yaml.Node | None, prefix: tuple = (), lines: dict[tuple, int] | None = None) -> dict[tuple, int]:
    """Each field path (tuple of keys / indices) of a composed document -> its 1-based line (the key's line)."""
    lines = {} if lines is None else lines
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = prefix + (str(key_node.value),)
            lines.setdefault(path, key_node.start_mark.line + 1)
            index_lines(value_node, path, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.setdefault(prefix + (i,), item.start_mark.line + 1)
            index_lines(item, prefix + (i,), lines)
    return lines


def read_yaml(path: Path, what: str) -> tuple[Any, dict[tuple, int]]:
    """The document of a YAML file and its line index; a one-line VlmError naming `what` ("prompt file")."""
    if path.is_dir():
        raise VlmError(f"{path} is a folder; pass the {what} (YAML) itself.")
    if not path.is_file():
        raise VlmError(f"{path}: no such {what}.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise VlmError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
    except OSError as exc:
        raise VlmError(f"{path}: cannot be read ({exc.strerror}).") from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = ": ".join(p for p in (exc.context, exc.problem) if p)
        raise VlmError(f"{path}: {where}YAML syntax error: {problem}.") from None
    except yaml.YAMLError as exc:
        raise VlmError(f"{path}: YAML syntax error: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()
    return data, index_lines(node)
