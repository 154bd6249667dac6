"""Argument checks shared by lightopt's public classes, its config files and its command line.

Every check raises before any side effect, names the argument, the valid range and the value
received, in the form "`momentum` must be in [0, 1), but got momentum=1.2.". The predicates
(:func:`is_integer`, :func:`is_real`) hold the one rule of what counts as a number here (a bool
does not) for checks whose messages say more than "must be an integer"; :func:`check_known_keys`
is the one unknown-key check of config blocks, with :func:`did_you_mean`.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable
from typing import Any

__all__ = [
    "check_bool",
    "check_choice",
    "check_int",
    "check_known_keys",
    "check_number",
    "check_range",
    "did_you_mean",
    "is_integer",
    "is_real",
]


def is_integer(value: Any, low: int | None = None) -> bool:
    """Whether ``value`` is an integer (a bool is not), at least ``low`` when given.

    Example:
        >>> is_integer(3, low=1), is_integer(True), is_integer(0, low=1), is_integer(2.0)
        (True, False, False, False)
    """
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and (low is None or value >= low)


def is_real(value: Any) -> bool:
    """Whether ``value`` is a real number (a bool is not; NaN and infinities are).

    Example:
        >>> is_real(0.5), is_real(2), is_real(True), is_real("1")
        (True, True, False, False)
    """
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def did_you_mean(name: Any, candidates: Any) -> str:
    """`` Did you mean 'x'?`` for the closest candidate, or ``""``.

    Example:
        >>> did_you_mean("n_trails", ["n_trials", "seed"])
        " Did you mean 'n_trials'?"
    """
    close = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def check_known_keys(
    keys: Iterable[Any],
    known: Iterable[str],
    where: str | None = None,
    *,
    listed: str | None = None,
    named: bool = True,
) -> None:
    """Raise ``ValueError`` for the first of ``keys`` not in ``known``, with the closest known key and the list.

    ``where`` is the dotted key of the block (None: the top level); the message names the key
    (``"`study.n_trails` is not a known key. Did you mean 'n_trials'? Known keys: ..."``), or, with
    ``named=False``, the block (``"`search.lr` has an unknown key 'lg'. ..."``). ``listed`` replaces
    the list of known keys in the message.

    Example:
        >>> check_known_keys(["n_trails"], ["n_trials", "seed"], "study")
        Traceback (most recent call last):
        ...
        ValueError: `study.n_trails` is not a known key. Did you mean 'n_trials'? Known keys: n_trials, seed.
    """
    known = tuple(known)
    for key in keys:
        if key in known:
            continue
        if named:
            head = f"`{where}.{key}` is not a known key." if where else f"`{key}` is not a known key."
        else:
            head = f"`{where}` has an unknown key {key!r}."
        raise ValueError(f"{head}{did_you_mean(key, known)} Known keys: {listed or ', '.join(known)}.")


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
        raise ValueError(
            f"`{name}` must be {_describe(low, high, low_inclusive, high_inclusive)}, but got {name}={value!r}."
        )
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
