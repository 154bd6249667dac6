"""Argument checks shared by lightopt's public classes.

Every check raises before any side effect, names the argument, the valid range and the value
received, in the form "`momentum` must be in [0, 1), but got momentum=1.2.".
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any


def check_number(name: str, value: Any) -> float:
    """Return ``value`` as a float, or raise ``TypeError`` if it is not a real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, but got {name}={value!r} ({type(value).__name__}).")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"`{name}` must not be NaN, but got {name}={value}.")
    return value


def check_range(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Check ``low <= value <= high`` (bounds optional, inclusiveness per side)."""
    value = check_number(name, value)
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high:
        raise ValueError(f"`{name}` must be {_describe(low, high, low_inclusive, high_inclusive)}, but got {name}={value!r}.")
    return value


def check_int(name: str, value: Any, low: int | None = None) -> int:
    """Check that ``value`` is an integer, at least ``low`` when given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer, but got {name}={value!r} ({type(value).__name__}).")
    if low is not None and value < low:
        raise ValueError(f"`{name}` must be an integer >= {low}, but got {name}={value}.")
    return int(value)


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Check that ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {listed}, but got {name}={value!r}.")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False, but got {name}={value!r} ({type(value).__name__}).")
    return value


def _describe(low: float | None, high: float | None, low_inclusive: bool, high_inclusive: bool) -> str:
    if low is not None and high is not None:
        return f"in {'[' if low_inclusive else '('}{low:g}, {high:g}{']' if high_inclusive else ')'}"
    if low is not None:
        return f"{'>=' if low_inclusive else '>'} {low:g}"
    return f"{'<=' if high_inclusive else '<'} {high:g}"
