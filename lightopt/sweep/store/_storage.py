"""The study's storage as a sweep uses it: every trial findable by recovery, a database outage ridden out.

:class:`GuardedStorage` wraps the Optuna storage that a sweep opens (a journal file, or a database
through Optuna's cache) and changes three things:

1. A trial is created with its worker's identity already in it (``user_attrs["worker"]``: host,
   pid, start time). A bare Optuna trial gets it only from the objective's first write, so a
   worker that died (or lost its database) between the two left a RUNNING trial that nothing
   could attribute to a dead process: it counted toward ``n_trials`` forever.
2. Errors that a database gives while it restarts or while the network drops (``transient``, e.g.
   :func:`lightopt.sweep.store._database.is_transient`) are retried with exponential backoff for up to
   ``retry_for`` seconds, with one line on stderr when the outage starts and one when it ends.
   After that a :class:`StorageError` says so in one line, and every later call fails at once.
   A trial whose creation was cut off is looked up by a token before it is created again, so a
   retry never makes a second one; a missed heartbeat is not retried (the next one comes soon).
3. On a database, no read of what Optuna's cache already holds as it is: the trial ``study.ask``
   has just created, a trial once read finished (:meth:`GuardedStorage.get_trial`), and Optuna's
   look for stale trials right after the worker loop's own
   (:meth:`GuardedStorage.stale_trials_looked_for`). On a journal file, a read of the trials in
   one state (the pruner's, ``study.ask``'s) reads what changed since the last, not every trial
   (:class:`~lightopt.sweep.store._index.StateIndex`).

:class:`StorageError` is every storage fault a user must hear about in one line (a full disk, a
deleted or read-only journal, a database that stayed away).
"""

from __future__ import annotations

import copy
import datetime
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Container
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from lightopt._compat import created_trial, heartbeat_base, rdb_set_trial_user_attrs, remember_finished
from lightopt.sweep.store._index import StateIndex
from lightopt.sweep.store._processes import worker_identity

__all__ = ["StorageError", "GuardedStorage", "OUTAGE_S", "stderr_line"]

OUTAGE_S = 120.0
"""How long a database may stay unreachable before the sweep stops (below Optuna's heartbeat grace period,
so that other machines do not take the running trials for dead meanwhile)."""

_FORWARDED = (
    "create_new_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "set_trial_param",
    "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id",
    "get_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_n_trials",
    "get_best_trial",
    "get_trial_params",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "check_trial_is_updatable",
)


BaseHeartbeat = heartbeat_base()


class StorageError(RuntimeError):
    """The study's storage failed in a way the sweep cannot go on from; the message is one line for the user."""


def stderr_line(text: str) -> None:
    """Print one line on stderr (the default way storages tell the user what they do)."""
    print(text, file=sys.stderr, flush=True)


class GuardedStorage(BaseStorage, BaseHeartbeat):
    """``inner`` with trials created already attributed to their worker, and transient errors retried.

    Args:
        inner: the Optuna storage.
        described: how messages name it (a path, or a URL without its password).
        transient: whether an error is worth retrying (None: none is).
        retry_for: seconds of retries before :class:`StorageError` (the outage bound).
        notify: where the outage lines go (default stderr).
        explain: the one-line reason of an error in those lines (default: its type and first line).
    """

    def __init__(
        self,
        inner: BaseStorage,
        described: str,
        *,
        transient: Callable[[BaseException], bool] | None = None,
        retry_for: float = OUTAGE_S,
        notify: Callable[[str], None] = stderr_line,
        explain: Callable[[BaseException], str] | None = None,
    ) -> None:
        if retry_for < 0:
            raise ValueError(f"`retry_for` must be >= 0, but got retry_for={retry_for!r}.")
        self.inner, self.described = inner, described
        self.transient, self.retry_for, self.notify = transient, retry_for, notify
        self.explain = explain or _reason
        self._state = threading.Lock()
        self._outage: float | None = None  # when the current outage began (monotonic)
        self._gave_up: str | None = None
        self._fresh: int | None = None  # the trial this process just created, not written since
        self._stale_looked = False  # the caller has just looked for stale trials: Optuna's next look is skipped
        self._index = StateIndex(inner) if isinstance(inner, optuna.storages.JournalStorage) else None

    def __getattr__(self, name: str) -> Any:  # anything else the inner storage offers (e.g. RDBStorage.engine)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    # -- heartbeat: forwarded where the inner storage has one -----------------------------------------------------
    def get_heartbeat_interval(self) -> int | None:
        return self.inner.get_heartbeat_interval() if isinstance(self.inner, BaseHeartbeat) else None

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self.inner.get_heartbeat_stale_trial_callback() if isinstance(self.inner, BaseHeartbeat) else None

    def record_heartbeat(self, trial_id: int) -> None:
        if not isinstance(self.inner, BaseHeartbeat) or self._gave_up:
            return
        try:
            self.inner.record_heartbeat(trial_id)
        except Exception as error:
            if self.transient is None or not self.transient(error):
                raise
            self._outage_began(error)  # the next heartbeat comes soon; the main thread does the waiting

    def stale_trials_looked_for(self) -> None:
        """The caller has just failed the study's stale trials, or knows there can be none: skip the next look.

        ``study.optimize`` looks for stale trials (``_get_stale_trial_ids``, a query) at the start of
        every trial; lightopt's worker loop looks just before it, and only where one can be there
        (a running trial of another host), so Optuna's look that follows is answered "none".
        """
        self._stale_looked = True

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        if self._stale_looked:
            self._stale_looked = False
            return []
        return self._call("_get_stale_trial_ids", study_id)

    def remove_session(self) -> None:
        self.inner.remove_session()

    # -- trials carry their worker from the start ---------------------------------------------------------------
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is not None:  # an enqueued (WAITING) or added trial: nobody runs it yet
            return self._call("create_new_trial", study_id, template_trial)
        token = uuid.uuid4().hex
        template = FrozenTrial(
            number=-1,
            state=TrialState.RUNNING,
            value=None,
            values=None,
            datetime_start=datetime.datetime.now(),
            datetime_complete=None,
            params={},
            distributions={},
            user_attrs={"worker": {**worker_identity(), "claim": token}},
            system_attrs={},
            intermediate_values={},
            trial_id=-1,
        )
        attempts = 0

        def create() -> int:
            nonlocal attempts
            attempts += 1
            if attempts > 1:  # the first attempt may have committed before its connection dropped
                for trial in self.inner.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                    if (trial.user_attrs.get("worker") or {}).get("claim") == token:
                        return self.inner.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            return self.inner.create_new_trial(study_id, template)

        trial_id = self._retry(create)
        self._fresh = trial_id
        return trial_id

    def get_trial(self, trial_id: int) -> FrozenTrial:
        """The trial; on a database, without a read where Optuna's cache already holds it as it is.

        ``study.ask`` reads the trial it has just created back from the storage: the copy Optuna's
        cache kept when creating it is the same while nothing was written to it. A trial read
        finished stays in the cache (a finished trial never changes), so that the sweep's next
        look at the study does not read it again (``lightopt._compat.remember_finished``).
        """
        if trial_id == self._fresh:
            self._fresh = None
            trial = created_trial(self.inner, trial_id)
            if trial is not None:
                return trial
        trial = self._call("get_trial", trial_id)
        remember_finished(self.inner, trial)
        return trial

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        """The study's trials; on a journal file, those in one state without walking the study (:class:`StateIndex`)."""
        if self._index is not None and isinstance(states, (tuple, list, set, frozenset)) and len(states) == 1:
            index, (state,) = self._index, states
            trials = self._retry(lambda: index.read(study_id, state))
            if trials is not None:
                return copy.deepcopy(trials) if deepcopy else trials
        return self._call("get_all_trials", study_id, deepcopy=deepcopy, states=states)

    def delete_study(self, study_id: int) -> None:
        self._call("delete_study", study_id)
        if self._index is not None:
            self._index.forget(study_id)

    def set_trial_user_attrs(self, trial_id: int, attrs: dict[str, Any]) -> None:
        """Several user attributes of a trial: on a database one transaction, not one per attribute."""

        self._fresh = None

        def write() -> None:
            if not rdb_set_trial_user_attrs(self.inner, trial_id, attrs):
                for key, value in attrs.items():
                    self.inner.set_trial_user_attr(trial_id, key, value)

        self._retry(write)

    # -- everything else: forwarded, retried through outages ----------------------------------------------------
    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self.inner, name)
        return self._retry(lambda: method(*args, **kwargs))

    def _retry(self, call: Callable[[], Any]) -> Any:
        delay = 0.25
        while True:
            if self._gave_up:
                raise StorageError(self._gave_up)
            try:
                result = call()
            except Exception as error:
                if self.transient is None or not self.transient(error):
                    raise
                began = self._outage_began(error)
                waited = time.monotonic() - began
                if waited >= self.retry_for:
                    self._gave_up = (
                        f"the database {self.described} stayed unreachable for {waited:.0f} s "
                        f"({self.explain(error)}): stopped. The trials recorded so far are kept; run the same "
                        f"command again once it is back (a trial cut off is retried)"
                    )
                    raise StorageError(self._gave_up) from None
                time.sleep(min(delay, self.retry_for - waited) * (0.75 + 0.5 * random.random()))
                delay = min(delay * 2, 8.0)
                continue
            self._outage_ended()
            return result

    def _outage_began(self, error: BaseException) -> float:
        with self._state:
            if self._outage is None:
                self._outage = time.monotonic()
                self.notify(
                    f"database {self.described} unreachable ({self.explain(error)}); retrying for up to "
                    f"{self.retry_for:g} s"
                )
            return self._outage

    def _outage_ended(self) -> None:
        if self._outage is None:
            return
        with self._state:
            if self._outage is not None:
                self.notify(f"database {self.described} reachable again after {time.monotonic() - self._outage:.1f} s")
                self._outage = None


def _forward(name: str) -> Callable[..., Any]:
    if name.startswith("set_trial_"):

        def method(self: GuardedStorage, *args: Any, **kwargs: Any) -> Any:
            self._fresh = None  # written: the copy kept at its creation is out of date
            return self._call(name, *args, **kwargs)

    else:

        def method(self: GuardedStorage, *args: Any, **kwargs: Any) -> Any:
            return self._call(name, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    return method


for _name in _FORWARDED:
    setattr(GuardedStorage, _name, _forward(_name))
GuardedStorage.__abstractmethods__ = frozenset()  # every abstract method is forwarded above


def _reason(error: BaseException) -> str:
    """The first line of ``error`` (or of the driver error beneath Optuna's wrapper), at most 200 characters."""
    cause = error.__cause__ if isinstance(error, optuna.exceptions.StorageInternalError) and error.__cause__ else error
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return (f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__)[:200]
