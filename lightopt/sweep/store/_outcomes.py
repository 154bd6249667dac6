"""What a stopped trial's record means: died or interrupted (retryable), and what counts toward ``n_trials``.

Every RUNNING trial records the worker that runs it in ``trial.user_attrs["worker"]``: host name,
process id and the process's start time (:mod:`lightopt.sweep.store._processes`), from the moment
it is created (:class:`~lightopt.sweep.store.GuardedStorage`). A trial stopped from outside (its
worker died, or Ctrl-C) is *retryable*: it does not count toward ``n_trials`` and is run again
with the same parameters and seed (see :mod:`lightopt.sweep.study`'s recovery). Only Optuna is
imported here, so reading a study back (``lightopt sweep show``) shares these rules without torch.
"""

from __future__ import annotations

from collections.abc import Sequence

from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "COPIED_FROM",
    "DIED",
    "ENQUEUED",
    "GRACE_PERIOD_S",
    "HEARTBEAT_S",
    "INTERRUPTED",
    "WARM_START",
    "counted",
    "is_copied",
    "is_retryable",
]

# Optuna's heartbeat on database storages: a trial whose worker sent none for GRACE_PERIOD_S is failed.
HEARTBEAT_S = 60
GRACE_PERIOD_S = 180
DIED = "worker died"
INTERRUPTED = "interrupted"
# The user attribute of a trial copied from another study by `study.warm_start`: {"study": NAME, "trial": NUMBER}.
# It was not run in this study (no config, no logs): it informs the sampler, never counts toward
# `n_trials`, and is never the study's best trial (see `best_of`).
COPIED_FROM = "copied_from"
# The user attribute of a trial that `study.enqueue` set: the entry's label ("#1", or the run config's path).
ENQUEUED = "enqueued"
# The study's user attribute that records its warm start, done once: {"study", "storage", "copied", "skipped"}.
WARM_START = "warm_start"


def is_copied(trial: FrozenTrial) -> bool:
    """Whether ``trial`` was copied from another study (``study.warm_start``) rather than run in its own."""
    return COPIED_FROM in trial.user_attrs


def is_retryable(trial: FrozenTrial) -> bool:
    """A FAIL trial stopped from outside: its worker died or was interrupted, or the heartbeat failed it.

    Not one whose worker died as often as ``retries`` allows (see :func:`fail_dead_trials`).
    """
    if trial.state != TrialState.FAIL or "worker" not in trial.user_attrs:
        return False
    reason = trial.user_attrs.get("fail_reason")
    if reason is None:  # Optuna's heartbeat failed it: its worker, on another host, died
        return trial.user_attrs.get("retries_left", 1) > 0
    return reason.startswith((DIED, INTERRUPTED))


def counted(trials: Sequence[FrozenTrial]) -> int:
    """How many trials count toward ``n_trials``: all but the retryable, the WAITING and the copied ones.

    Example:
        >>> counted([])
        0
    """
    return sum(1 for t in trials if t.state != TrialState.WAITING and not is_retryable(t) and not is_copied(t))
