"""Optuna's own log lines, silenced while lightopt prints its progress lines instead."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import optuna

__all__ = ["optuna_quiet"]


@contextlib.contextmanager
def optuna_quiet() -> Iterator[None]:
    """Optuna's per-trial log lines (and failure tracebacks) are replaced by lightopt's progress lines."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)
