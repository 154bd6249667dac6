"""A worker's own devices under ``--devices``: which ids it was given, recorded on its trials and freed after each.

The study shares the ids out (:func:`lightopt.sweep.study.plan`) and starts each worker with
:data:`VISIBLE_ENV` and :data:`DEVICES_ENV` set; here a worker reads them back
(:func:`assigned_devices`), its trials record them (:class:`DeviceObjective`) and the device's
memory is freed after each trial (:func:`release_device`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from lightopt.sweep.trial._memory import free_memory

__all__ = ["DEVICES_ENV", "VISIBLE_ENV", "DeviceObjective", "assigned_devices", "release_device"]

VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"
#: The ids a worker was given by ``--devices``, as listed (``"2"``, ``"2,3"``); unset outside such a worker.
DEVICES_ENV = "LIGHTOPT_DEVICES"


def assigned_devices(environ: Mapping[str, str] | None = None) -> tuple[str, ...] | None:
    """The ids this worker was given by ``--devices`` (from :data:`DEVICES_ENV`), or None outside such a worker.

    Example:
        >>> assigned_devices({DEVICES_ENV: "2,3"}), assigned_devices({})
        (('2', '3'), None)
    """
    value = (os.environ if environ is None else environ).get(DEVICES_ENV)
    return tuple(value.split(",")) if value else None


class DeviceObjective:
    """A worker's objective whose trials record its device ids in their ``device`` attribute (``"2"``, ``"2,3"``)."""

    def __init__(self, objective: Any, ids: tuple[str, ...]) -> None:
        self.objective, self.device = objective, ",".join(ids)

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("device", self.device)
        return self.objective(trial)


def release_device(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna callback: after every trial, return this worker's cached device memory to the device.

    Each worker's process holds its own CUDA cache, and with ``--trials-per-device`` above 1 another
    process trains on the same device: memory a finished (or out-of-memory) trial left cached would
    be memory the other one cannot have.
    """
    free_memory()
