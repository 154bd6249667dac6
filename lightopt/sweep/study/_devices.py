"""``--devices`` and ``--trials-per-device``: which device ids each worker of a sweep gets.

A sweep with ``--devices 0,1,2,3`` runs every trial in a worker process started with
``CUDA_VISIBLE_DEVICES`` set to its own ids before it imports torch, so the trial's code sees its
device as ``cuda:0`` (Optuna's FAQ does the same by hand, one process per GPU). The ids go to the
worker exactly as listed, whatever torch sees on the launching machine; ``--devices auto`` lists
every GPU torch sees (the entries of ``CUDA_VISIBLE_DEVICES`` when the scheduler set it).

How the ids are shared out (:func:`plan`):

1. A trial takes ``per_trial`` ids: 1, or N for a DDP trial (``strategy: ddp, devices: N``), whose
   ranks all see the same N ids and each train on ``cuda:<its rank>``. The list is cut into groups
   of ``per_trial`` consecutive ids (``0,1,2,3`` with 2-device trials: ``0,1`` and ``2,3``); a list
   that does not divide evenly is refused.
2. ``--trials-per-device K`` puts K workers on each group, so every listed device carries K trials
   (for DDP trials: K processes, one rank of each of K trials). There are ``groups x K`` slots.
3. ``--workers`` defaults to the number of slots. Given, it must be between the number of groups
   (fewer would leave listed ids idle) and the number of slots (more would put more than K trials
   on a device). Worker ``i`` gets group ``i mod groups``, so the groups fill evenly.

Each worker also gets :data:`DEVICES_ENV` (its ids as listed), which its trials record as their
``device`` attribute and which the progress line shows. Errors are ``ValueError`` with the
message the command line prints as its one line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from lightopt import _validation
from lightopt.sweep.trial import DEVICES_ENV, VISIBLE_ENV

__all__ = ["DeviceSlots", "parse_devices", "plan"]

_ID = re.compile(r"^(?:\d+|(?:GPU|MIG)-[0-9A-Za-z/:._-]+)$")  # an index, or a GPU or MIG UUID as nvidia-smi -L prints


@dataclass(frozen=True)
class DeviceSlots:
    """The device ids of a sweep's workers.

    ``groups`` of ``per_trial`` ids, each run by up to ``trials_per_device`` workers.

    Example:
        >>> slots = plan("0,1,2,3", trials_per_device=1, per_trial=2)
        >>> slots.groups, slots.workers, slots.environment(1)[VISIBLE_ENV]
        ((('0', '1'), ('2', '3')), 2, '2,3')
    """

    groups: tuple[tuple[str, ...], ...]
    trials_per_device: int
    workers: int

    @property
    def slots(self) -> int:
        """How many trials can run at once: groups x trials per device."""
        return len(self.groups) * self.trials_per_device

    def ids(self, worker: int) -> tuple[str, ...]:
        """The ids of worker ``worker`` (0-based): group ``worker mod groups``."""
        return self.groups[worker % len(self.groups)]

    def environment(self, worker: int) -> dict[str, str]:
        """The variables worker ``worker`` starts with: ``CUDA_VISIBLE_DEVICES`` and :data:`DEVICES_ENV`."""
        ids = ",".join(self.ids(worker))
        return {VISIBLE_ENV: ids, DEVICES_ENV: ids}


def parse_devices(text: str) -> tuple[str, ...]:
    """The ids of ``--devices``: ``"0,1,3"`` as listed, or ``"auto"``: every GPU torch sees.

    Example:
        >>> parse_devices("0, 1,3")
        ('0', '1', '3')
    """
    if not isinstance(text, str):
        raise TypeError(f"`--devices` must be a string such as '0,1' or 'auto', but got devices={text!r}.")
    if text.strip() == "auto":
        return _visible_gpus()
    ids = tuple(part.strip() for part in text.split(","))
    bad = [part for part in ids if not _ID.match(part)]
    if bad:
        raise ValueError(
            f"`--devices` must be 'auto' or device ids separated by commas (e.g. 0,1,2,3, or GPU UUIDs "
            f"as `nvidia-smi -L` prints them), but got devices={text!r}."
        )
    twice = sorted({part for part in ids if ids.count(part) > 1})
    if twice:
        raise ValueError(
            f"`--devices` lists {', '.join(twice)} more than once, but got devices={text!r}: list each "
            f"id once and give --trials-per-device to run several trials on one device."
        )
    return ids


def _visible_gpus() -> tuple[str, ...]:
    """The GPUs torch sees here, as ``CUDA_VISIBLE_DEVICES`` names them (when set) or as indices."""
    import torch

    count = torch.cuda.device_count()
    if count == 0:
        raise ValueError(
            "`--devices auto` found no GPU here (torch.cuda.device_count() is 0): list the ids, e.g. "
            "--devices 0,1, or leave --devices out to run on the CPU."
        )
    visible = [part.strip() for part in os.environ.get(VISIBLE_ENV, "").split(",") if part.strip()]
    return tuple(visible[:count]) if len(visible) >= count else tuple(str(index) for index in range(count))


def plan(
    devices: str | tuple[str, ...], *, trials_per_device: int = 1, per_trial: int = 1, workers: int | None = None
) -> DeviceSlots:
    """Share ``devices`` out between workers: see the module's docstring for the rule.

    ``per_trial`` is the ids one trial takes (:func:`lightopt.sweep.trial.trial_devices`);
    ``workers`` None means one per slot.

    Example:
        >>> plan("0,1", trials_per_device=2).workers
        4
        >>> plan("0,1", trials_per_device=2, workers=3).ids(2)
        ('0',)
    """
    ids = parse_devices(devices) if isinstance(devices, str) else tuple(devices)
    if not _validation.is_integer(trials_per_device, low=1):
        raise ValueError(
            f"`--trials-per-device` must be an integer >= 1, but got trials_per_device={trials_per_device!r}."
        )
    if per_trial > len(ids):
        raise ValueError(
            f"each trial takes {per_trial} devices (`trainer.devices`), but --devices lists "
            f"{len(ids)} ({','.join(ids)}): list at least {per_trial}, or lower `trainer.devices`."
        )
    if len(ids) % per_trial:
        raise ValueError(
            f"--devices {','.join(ids)} cannot be cut into groups of {per_trial} (each trial takes "
            f"{per_trial} devices, `trainer.devices`): list a multiple of {per_trial} ids."
        )
    groups = tuple(ids[start : start + per_trial] for start in range(0, len(ids), per_trial))
    slots = len(groups) * trials_per_device
    if workers is None:
        workers = slots
    elif not _validation.is_integer(workers) or not len(groups) <= workers <= slots:
        shared = f"{len(groups)} group(s) of {per_trial} device(s)" if per_trial > 1 else f"{len(groups)} device(s)"
        raise ValueError(
            f"`--workers` must be between {len(groups)} and {slots} with --devices {','.join(ids)} and "
            f"--trials-per-device {trials_per_device} ({shared}, at most {trials_per_device} trial(s) "
            f"each), but got workers={workers!r}: leave --workers out to run {slots}."
        )
    return DeviceSlots(groups, trials_per_device, workers)
