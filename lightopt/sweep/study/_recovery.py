"""Crash safety for a study: failing the trials of dead workers, and retrying them.

Before each trial a worker fails at once every RUNNING trial of its own host whose process is
gone (``fail_reason: "worker died (pid 1234 on host h)"``); trials of other hosts are left to
Optuna's heartbeat, on storages that have one (``RDBStorage``). A trial stopped from outside (its
worker died, or Ctrl-C) is *retryable* (:func:`~lightopt.sweep.store.is_retryable`): it does not
count toward ``n_trials`` and is enqueued again with the same parameters and seed
(``user_attrs["retry_of"]``), resuming from its last Lightning checkpoint
(:func:`~lightopt.sweep.trial.last_checkpoint`) where one exists. A trial whose worker died
``study.retries`` times (1 by default) is not retried again: a trial that kills its own process
(``os._exit``, a segfault, the OOM killer) counts as failed, "its worker died 2 times", and the
sweep goes on.

Both steps run under the :class:`~lightopt.sweep.store.HostLock`, so workers of one machine never
overshoot ``n_trials`` nor retry a trial twice.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from lightopt._compat import study_storage
from lightopt.sweep.spec import RETRIES
from lightopt.sweep.store import DIED, describe_worker, is_retryable, process_alive
from lightopt.sweep.trial import last_checkpoint

__all__ = ["enqueue_retries", "fail_dead_trials"]


def _trial_id(study: optuna.Study, number: int) -> int:
    storage = study_storage(study)
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def fail_dead_trials(
    study: optuna.Study, trials: Sequence[FrozenTrial] | None = None, retries: int = RETRIES
) -> list[int]:
    """Fail every RUNNING trial of this host whose worker process is gone (a zombie included); returns their numbers.

    Each gets ``fail_reason: "worker died (pid P on host H)"`` and will be retried, unless workers
    already died ``retries`` times on its parameters: then ``"its worker died N times (last: pid P on
    host H); not retried again"``, and it counts as a failed trial. Call it under :class:`HostLock`.
    """
    host = socket.gethostname()
    storage = study_storage(study)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if trials is None else trials:
        worker = trial.user_attrs.get("worker")
        if trial.state != TrialState.RUNNING or not isinstance(worker, Mapping) or worker.get("host") != host:
            continue
        if process_alive(worker):
            continue
        trial_id = _trial_id(study, trial.number)
        deaths = trial.user_attrs.get("deaths", 0) + 1
        if trial.user_attrs.get("retries_left", retries) <= 0:
            times = "1 time" if deaths == 1 else f"{deaths} times"
            reason = f"its worker died {times} (last: {describe_worker(worker)}); not retried again"
        else:
            reason = f"{DIED} ({describe_worker(worker)})"
        try:
            storage.set_trial_user_attr(trial_id, "fail_reason", reason)
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # finished meanwhile
        failed.append(trial.number)
    return failed


def enqueue_retries(study: optuna.Study, trials: Sequence[FrozenTrial], retries: int = RETRIES) -> list[int]:
    """Enqueue one retry of every retryable trial not yet retried; returns the retried numbers.

    The retry gets the same ``params`` and ``seed``, ``retry_of`` (the failed trial's number),
    ``retry_reason`` (its ``fail_reason``; Optuna's heartbeat leaves none), ``resume_from`` (its
    last checkpoint, or None), and the count of ``deaths`` on these parameters so far with the
    ``retries_left`` after it (an interruption uses none up). Call it under :class:`HostLock`.
    """
    done = {t.user_attrs.get("retry_of") for t in trials}
    retried = []
    for trial in trials:
        if not is_retryable(trial) or trial.number in done:
            continue
        reason = trial.user_attrs.get("fail_reason")
        died = reason is None or reason.startswith(DIED)
        left = trial.user_attrs.get("retries_left", retries) - died
        if left < 0:
            continue  # a heartbeat-failed trial with no retry left when `retries` is 0
        attrs: dict[str, Any] = {
            "retry_of": trial.number,
            "retry_reason": reason or "no heartbeat from its worker within the grace period",
            "resume_from": _resume_point(trial),
            "deaths": trial.user_attrs.get("deaths", 0) + died,
            "retries_left": left,
        }
        if "seed" in trial.user_attrs:
            attrs["seed"] = trial.user_attrs["seed"]
        study.enqueue_trial(dict(trial.params), user_attrs=attrs)
        retried.append(trial.number)
    return retried


def _resume_point(trial: FrozenTrial) -> str | None:
    """The trial's own last checkpoint, else the one it resumed from itself (a retry that died early)."""
    log_dir = trial.user_attrs.get("log_dir")
    own = last_checkpoint(log_dir) if log_dir else None
    if own is not None:
        return str(own)
    earlier = trial.user_attrs.get("resume_from")
    return earlier if earlier and Path(earlier).is_file() else None
