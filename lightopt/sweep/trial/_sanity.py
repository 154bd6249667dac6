"""Lightning's sanity check once per study and process: later trials of the study skip it.

The sanity check (a couple of validation batches before training) is there to catch a broken
``validation_step`` before a long epoch. In a sweep every trial runs the same validation code, so
once a trial of a study has finished its fit in this process, later trials get
``num_sanity_val_steps=0`` as a Trainer default (a file that sets ``num_sanity_val_steps`` keeps
its own value). A trial's result does not depend on it: Lightning runs the check inside
``lightning.pytorch.utilities.seed.isolate_rng``, which puts the global random states back.
"""

from __future__ import annotations

from typing import Any

__all__ = ["sanity_check_defaults", "sanity_check_passed"]

# studies (keys: their log directories) with a finished fit in this process
_PASSED: set[str] = set()


def sanity_check_defaults(key: str) -> dict[str, Any]:
    """Trainer defaults for a trial of study ``key``: no sanity check once a fit of the study finished here.

    Example:
        >>> sanity_check_defaults("/tmp/a-study-with-no-fit-yet")
        {}
    """
    return {"num_sanity_val_steps": 0} if key in _PASSED else {}


def sanity_check_passed(key: str) -> None:
    """Record that a fit of study ``key`` finished (its sanity check, if it ran one, passed)."""
    _PASSED.add(key)
