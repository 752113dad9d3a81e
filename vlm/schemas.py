"""pydantic (v2) schemas of the files the tool reads back (run specs, run records, experiment files) and
`validate`, which turns the first validation error into one VlmError line: `FILE[:LINE]: FIELD: message`,
the line found from the YAML node of the field (or its nearest parent) where the file is YAML.

Schema types come from `vlm.ranges` for numbers (`Number(name)`), and `Strict` text, flags and names
elsewhere, so `epochs: ten`, `size: big` and `lr: fast` are refused with the field and the value; unknown
keys are refused (`extra="forbid"`) with the keys allowed there (and the closest one, for a typo). Prompt
files and shots files keep their schemas beside their readers (`vlm.prompts.schema`, `vlm.fewshot.shots`).
"""

from __future__ import annotations

import difflib
import typing
from typing import Annotated, Any, Iterable, Literal, Mapping, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from pydantic import ValidationError, model_validator

from vlm.errors import VlmError
from vlm.ranges import RANGES

RECORD_SCHEMA_VERSION = 1  # records written before versions existed have none and read as version 1
SPEC_SCHEMA_VERSION = 1


# ----------------------------------------------------------------------------- types
def _number_text(value: Any) -> Any:
    """YAML reads `1e-3` as text: take numeric text as the number; refuse booleans (YAML's yes/no)."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"expected a number, got the text {value!r}") from None
    return value


def Number(name: str) -> Any:
    """The pydantic type of option `name` from its range in `vlm.ranges` (floats also from numeric text)."""
    rng = RANGES[name]
    base = rng.annotated()
    return base if rng.kind is int else Annotated[base, BeforeValidator(_number_text)]


Text = StrictStr
Flag = StrictBool
Count = Annotated[StrictInt, Field(ge=0)]


class Schema(BaseModel):
    """A schema that refuses unknown keys."""

    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------------------- run specs and records
class RunSpec(Schema):
    """spec.json of a resumable run folder: what `--resume` rebuilds the run from."""

    schema_version: Literal[1] = SPEC_SCHEMA_VERSION
    entry: Text
    flag: Text
    model: Text
    size: StrictInt
    config: dict[str, Any]
    weights: Optional[Text] = None
    pretrained: Optional[Flag] = None
    model_opts: Optional[dict[str, Any]] = None
    data_root: Optional[Text] = None
    mode: Optional[Text] = None
    options: Optional[dict[str, Any]] = None
    tags: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _mode_of_finetune(self) -> "RunSpec":
        if self.entry == "finetune" and not self.mode:
            raise ValueError("a finetune run needs its 'mode'")
        return self


_Value = Optional[float]
_Interval = Optional[Annotated[list[float], Field(min_length=2, max_length=2)]]


class RecordMetrics(BaseModel):
    """The metrics `vlm compare` reads from a record (others, such as per_class, pass through)."""

    model_config = ConfigDict(extra="allow")
    auc: _Value = None
    acc: _Value = None
    n: Optional[StrictInt] = None
    ece: _Value = None
    brier: _Value = None
    nll: _Value = None
    threshold: _Value = None
    auc_ci: _Interval = None
    acc_ci: _Interval = None
    ece_ci: _Interval = None
    brier_ci: _Interval = None
    nll_ci: _Interval = None


class RecordSchema(Schema):
    """record.json of a run (`vlm.results.RunRecord`), version `RECORD_SCHEMA_VERSION`."""

    schema_version: Literal[1] = RECORD_SCHEMA_VERSION
    method: Text
    model: Text
    dataset: Text
    size: StrictInt
    split: Literal["train", "val", "test"]
    metrics: RecordMetrics
    weights_id: Optional[Text] = None
    seed: Optional[StrictInt] = None
    config: dict[str, Any] = Field(default_factory=dict)
    timings: dict[str, Any] = Field(default_factory=dict)
    score_convention: Text = ""
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, Any] = Field(default_factory=dict)
    created: Text = ""
    status: Text = "finished"
    calibrated: Optional[dict[str, Any]] = None
    run_id: Text = ""
    path: Text = ""


# ----------------------------------------------------------------------------- errors
def field_name(loc: tuple) -> str:
    """('methods', 0, 'options', 'epochs') -> 'methods[0].options.epochs'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def line_of(loc: tuple, lines: Mapping[tuple, int] | None) -> int | None:
    """The YAML line of `loc`, or of its nearest parent that has one."""
    for n in range(len(loc), -1, -1):
        if lines and loc[:n] in lines:
            return lines[loc[:n]]
    return None


def _allowed(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys the schema takes at `loc` (a mapping inside `model`), for unknown-key messages."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        current = next((a for a in (fields[part].annotation, *_args(fields[part].annotation))
                        if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return list(getattr(current, "model_fields", {}))


def _args(hint: Any) -> tuple:
    return tuple(a for arg in typing.get_args(hint) for a in (arg, *_args(arg)))


# Parts of a pydantic error location that name a type tried (union members, validators), not a field.
_TYPE_TAGS = ("function-", "json-", "constrained-", "lax-", "nullable", "tagged-union", "list[", "dict[", "[key]")
_TYPE_NAMES = {"int", "str", "float", "bool", "list", "dict", "none"}


# Errors of a wrong container type, as the kind of YAML value wanted.
_SHAPES = {"dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
           "list_type": "a list"}


def _is_field(part: Any) -> bool:
    return isinstance(part, int) or not (str(part).startswith(_TYPE_TAGS) or str(part) in _TYPE_NAMES)


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """' (did you mean 'X'?)' for the option closest to a mistyped `word` (the same word in another case first),
    else ''."""
    options = list(options)
    lower = {o.lower(): o for o in options}
    close = [lower[word.lower()]] if word.lower() in lower else difflib.get_close_matches(word, options, 1, 0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def error_message(model: type[BaseModel], exc: ValidationError, what: str = "key") -> tuple[tuple, str, bool]:
    """(location, message, whether the message names the field itself) of the first error: unknown keys name
    the allowed ones, wrong types the value given."""
    errors = exc.errors()
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])  # a typo'd key explains the rest
    loc = tuple(p for p in first["loc"] if _is_field(p))
    kind, msg = first["type"], first["msg"].removeprefix("Value error, ")
    if kind in _SHAPES:
        value = first.get("input")
        return loc, f"must be {_SHAPES[kind]}, not {type(value).__name__}" + (
            f" {value!r}" if len(repr(value)) < 60 else ""), False
    if kind == "extra_forbidden":
        allowed = _allowed(model, loc[:-1])
        return loc, (f"unknown {what} '{loc[-1]}'" + did_you_mean(str(loc[-1]), allowed)
                     + (f"; allowed: {', '.join(allowed)}" if allowed else "")), True
    if kind == "missing":
        return loc, "is required", False
    value = first.get("input")
    shown = (f" (got {value!r})" if kind != "value_error" and not isinstance(value, (dict, list))
             and len(repr(value)) < 60 else "")
    return loc, f"{msg[0].lower()}{msg[1:]}{shown}", False


def validate(model: type[BaseModel], data: Any, source: str, *, lines: Mapping[tuple, int] | None = None,
             prefix: tuple = (), hint: str = "", what: str = "key") -> Any:
    """`model.model_validate(data)`, or a one-line VlmError `SOURCE[:LINE]: FIELD: message[; hint].`;
    `prefix` is where `data` sits in the file (for the field name and its line), `what` names its keys in
    unknown-key messages ("train option")."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        loc, message, named = error_message(model, exc, what)
        loc = prefix + loc
        line = line_of(loc, lines)
        where = f"{source}:{line}" if line else source
        field = "" if named else f"{field_name(loc)}: "
        raise VlmError(f"{where}: {field}{message}" + (f"; {hint}" if hint else "") + ".") from None
