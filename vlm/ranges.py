"""The range of every numeric option, declared once: what `vlm` commands check before any work, what
`TrainConfig.resolved` checks, and what the pydantic schemas of experiment files and recipes build on.

    RANGES["epochs"]              Range(int, ge=1)
    check_option("lr", 0.0)       VlmError: --lr must be a finite number above 0, got 0.0.
    check_options(config_dict)    every entry that has a range (None entries: unset, skipped)
    RANGES["gamma"].annotated()   Annotated[float, Field(ge=0, allow_inf_nan=False)] for pydantic models

Torch-free and pydantic-free until `annotated()` is called, so the light commands stay light.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from vlm.errors import VlmError

SEED_MAX = 2**32 - 1  # numpy's seeds (np.random.seed) are 32-bit
IMAGE_SIZE_MAX = 1024  # MedMNIST+ tops out at 224 px; larger inputs only exhaust memory
BOOTSTRAP_MAX = 100_000  # CIs settle by 1000-10000 rounds; more only exhaust memory


@dataclass(frozen=True)
class Range:
    """A numeric option's type and bounds (`ge`/`le` inclusive, `gt` exclusive); floats must be finite."""

    kind: type  # int or float
    ge: float | None = None
    gt: float | None = None
    le: float | None = None

    def describe(self) -> str:
        """'a whole number of at least 1', 'a finite number between 0 and 1', ..."""
        what = "a whole number" if self.kind is int else "a finite number"
        if self.ge is not None and self.le is not None:
            return f"{what} between {_num(self.ge)} and {_num(self.le)}"
        parts = [f"of at least {_num(self.ge)}" if self.ge is not None else "",
                 f"above {_num(self.gt)}" if self.gt is not None else "",
                 f"of at most {_num(self.le)}" if self.le is not None else ""]
        return " ".join([what, *filter(None, parts)])

    def ok(self, value: Any) -> bool:
        """Whether `value` is of the kind (bools are not numbers) and within the bounds."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le))

    def annotated(self) -> Any:
        """The pydantic type of this range (`Annotated[int, Field(ge=..)]`), for schemas."""
        from typing import Annotated

        from pydantic import Field, StrictInt

        bounds = {k: v for k, v in (("ge", self.ge), ("gt", self.gt), ("le", self.le)) if v is not None}
        if self.kind is int:
            return Annotated[StrictInt, Field(**bounds)]
        return Annotated[float, Field(allow_inf_nan=False, **bounds)]


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


_COUNT = Range(int, ge=1)
_NONNEG_INT = Range(int, ge=0)
_POSITIVE = Range(float, gt=0)
_NONNEG = Range(float, ge=0)

# Option name (as in TrainConfig and the command functions) -> its range.
RANGES: dict[str, Range] = {
    "epochs": _COUNT, "batch_size": _COUNT, "eval_batch_size": _COUNT,
    "lr": _POSITIVE, "backbone_lr": _POSITIVE, "weight_decay": _NONNEG, "lr_gamma": _POSITIVE,
    "lr_milestones": _NONNEG, "warmup_epochs": _NONNEG, "gamma": _NONNEG,
    "threshold": Range(float, ge=0, le=1),
    "seed": Range(int, ge=0, le=SEED_MAX), "seeds": Range(int, ge=0, le=SEED_MAX),
    "patience": _NONNEG_INT, "n_bootstrap": Range(int, ge=0, le=BOOTSTRAP_MAX),
    "bootstrap": Range(int, ge=0, le=BOOTSTRAP_MAX),
    "image_size": Range(int, ge=8, le=IMAGE_SIZE_MAX),
    "slice_axis": Range(int, ge=0, le=2),
    "k": _COUNT, "shots": _COUNT, "val_shots": _COUNT, "per_class": _COUNT, "limit": _NONNEG_INT,
    "severity": Range(int, ge=1, le=5),
    "workers": _COUNT, "time": _COUNT, "time_limit": _COUNT, "array_parallelism": _COUNT,
    "gpus_per_job": _NONNEG_INT,
}
# Where an option's command-line name is not --NAME-WITH-DASHES.
FLAGS = {"n_bootstrap": "--bootstrap", "time_limit": "--time", "eval_batch_size": "--eval-batch-size"}


def flag_name(name: str) -> str:
    """The command-line spelling of an option: `weight_decay` -> `--weight-decay`."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def check_option(name: str, value: Any, flag: str | None = None) -> Any:
    """`value` unchanged when it is within `RANGES[name]` (each item, for a list); else a VlmError
    naming the option (`flag`, default `flag_name(name)`), its range and the value."""
    rng = RANGES[name]
    for item in value if isinstance(value, (list, tuple)) else (value,):
        if not rng.ok(item):
            raise VlmError(f"{flag or flag_name(name)} must be {rng.describe()}, got {item!r}.")
    return value


def check_options(values: Mapping[str, Any], flags: Mapping[str, str] | None = None,
                  skip: Iterable[str] = ()) -> None:
    """`check_option` of every entry of `values` that has a range and is set (not None)."""
    flags, skip = flags or {}, set(skip)
    for name, value in values.items():
        if name in RANGES and name not in skip and value is not None:
            check_option(name, value, flags.get(name))
