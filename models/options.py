"""Checks of architecture options (keyword arguments of `create_model`), shared by the architectures.

Each raises a one-line `ModelError` naming the model and the option.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from models.errors import ModelError


def reject_unknown(name: str, unknown: dict[str, Any], takes: Iterable[str] = ()) -> None:
    """Fail on options a factory does not take (`takes`: the ones it does; empty: none at all)."""
    if not unknown:
        return
    takes = tuple(takes)
    if not takes:
        raise ModelError(f"Model '{name}' takes no options (given: {', '.join(unknown)}).")
    raise ModelError(f"'{name}' got unknown option(s) {', '.join(sorted(unknown))}; it takes: {', '.join(takes)}.")


def unexpected_option(name: str, kwargs: dict[str, Any], err: TypeError) -> ModelError | None:
    """The ModelError for a library constructor's "unexpected keyword argument" TypeError, else None."""
    m = re.search(r"unexpected keyword argument '([^']+)'", str(err))
    if m and kwargs:
        return ModelError(f"Model '{name}' does not take option '{m.group(1)}' (given: {', '.join(kwargs)}).")
    return None


def check_choice(option: str, value: Any, choices: tuple) -> None:
    """Fail unless `value` is one of `choices`."""
    if value not in choices:
        raise ModelError(f"{option}={value!r} is not one of {', '.join(map(repr, choices))}.")


def int_tuple(option: str, value: Any, n: int, what: str) -> tuple[int, ...]:
    """`value` (an int, repeated n times, or n ints) as a tuple of n positive ints.

    `what` describes the n-int form in the message ("a pair of ints", "three ints (D, H, W)").
    """
    if isinstance(value, int) and not isinstance(value, bool):
        out = (value,) * n
    elif isinstance(value, (tuple, list)) and len(value) == n and all(isinstance(v, int) for v in value):
        out = tuple(int(v) for v in value)
    else:
        raise ModelError(f"{option}={value!r} must be an int or {what}.")
    if min(out) < 1:
        raise ModelError(f"{option}={value!r} must be positive.")
    return out
