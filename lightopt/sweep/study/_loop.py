"""One worker's trial loop: claim the next trial under the host lock, run it, record it; Ctrl-C safe.

This is the loop ``lightopt sweep run`` runs in its own process (``--workers 1``) and in each
child process (``--workers N``). It works over any Optuna storage, one ``study.optimize(n_trials=1)``
call per trial (so Optuna's heartbeat, ``catch``, callbacks and ``study.stop()`` work as usual):

1. Take the :class:`~lightopt.sweep.store.HostLock`; fail the RUNNING trials of this host whose
   worker died, enqueue the retries of trials stopped from outside, and count the trials: stop
   if ``total`` are counted. (Optuna fails other hosts' stale trials itself where the storage has
   a heartbeat.)
2. ``study.optimize`` asks for the next trial (an enqueued retry first); the objective's first act
   is to record this worker in the trial's ``worker`` attribute (unless the trial was created with
   it, as :class:`~lightopt.sweep.store.GuardedStorage` creates new trials) and release the lock, so
   that counting and creating a trial are one step for the workers of a host.
3. Optuna records the outcome: COMPLETE, PRUNED or FAIL.

Ctrl-C (SIGINT) and SIGTERM inside the objective raise ``KeyboardInterrupt`` there (Lightning turns it into
``SystemExit`` after its own shutdown, which is caught as the same thing); elsewhere it is held
until the storage writes in progress are done. The running trial is recorded FAIL with
``fail_reason: "interrupted"``, further SIGINTs are ignored while that is written, and
``KeyboardInterrupt`` is raised to the caller with a one-line message.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
from lightning.pytorch.utilities.exceptions import SIGTERMException
from optuna.trial import FrozenTrial

from lightopt._compat import stop_requested, study_storage
from lightopt.sweep.spec import RETRIES
from lightopt.sweep.store import (
    INTERRUPTED,
    HostLock,
    StorageError,
    StudyTally,
    on_this_host,
    one_look,
    worker_identity,
)
from lightopt.sweep.study._recovery import enqueue_retries, fail_dead_trials
from lightopt.sweep.study._stop_rule import FailureWatch
from lightopt.sweep.trial import TrialCleanup, TrialFailed

__all__ = ["Interrupt", "run_worker"]

TrialCallback = Callable[[optuna.Study, FrozenTrial], None]


class Interrupt:
    """SIGINT and SIGTERM handling for a worker's loop: an immediate ``KeyboardInterrupt`` only inside :meth:`running`.

    Outside it (storage writes) a signal only sets :attr:`interrupted` (and :attr:`signal`, its
    name). After the first one, further SIGINTs are ignored until the block exits. During a fit,
    Lightning's own SIGTERM handler runs first and stops the fit at the next step
    (``SIGTERMException``); this handler then leaves it to Lightning. Only the main thread can
    install it; elsewhere it does nothing.

    Example:
        >>> with Interrupt() as interrupt:
        ...     interrupt.interrupted
        False
    """

    def __init__(self) -> None:
        self.interrupted = False
        self.signal: str | None = None
        self._live = False
        self._previous: dict[int, Any] = {}
        self._installed = False
        self._on_int, self._on_term = self._handler, self._term_handler  # one object each: see _term_handler

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = {
                signal.SIGINT: signal.signal(signal.SIGINT, self._on_int),
                signal.SIGTERM: signal.signal(signal.SIGTERM, self._on_term),
            }
            self._installed = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)

    def _handler(self, signum: int, frame: Any) -> None:
        self.stop("SIGINT")
        if self._live:
            raise KeyboardInterrupt

    def _term_handler(self, signum: int, frame: Any) -> None:
        if signal.getsignal(signal.SIGTERM) is not self._on_term:
            return  # called by Lightning's handler during a fit, which stops the fit itself
        self.stop("SIGTERM")
        if self._live:
            raise KeyboardInterrupt

    def stop(self, by: str = "SIGINT") -> None:
        """Mark the loop interrupted (by the signal named ``by``) and ignore further SIGINTs."""
        self.interrupted = True
        self.signal = self.signal or by
        if self._installed:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """The trial's own code: SIGINT raises ``KeyboardInterrupt`` here."""
        self._live = True
        try:
            yield
        finally:
            self._live = False
            if self._installed and not self.interrupted:
                signal.signal(signal.SIGINT, self._on_int)  # Lightning leaves SIGINT ignored after an interrupt


def run_worker(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    *,
    total: int,
    lock: str | Path,
    timeout: float | None = None,
    callbacks: Sequence[TrialCallback] = (),
    should_stop: Callable[[], bool] | None = None,
    failures: FailureWatch | None = None,
    retries: int = RETRIES,
) -> int:
    """Run trials until the study counts ``total`` (see :func:`~lightopt.sweep.store.counted`); returns how many ran.

    ``timeout`` (seconds) and ``should_stop()`` stop starting new trials, and so does
    ``study.stop()``; ``callbacks`` go to ``study.optimize``. The objective's
    :class:`~lightopt.sweep.trial.TrialFailed` and ``optuna.TrialPruned`` are recorded and the
    loop goes on; any other exception is recorded as FAIL (with ``fail_reason`` and ``traceback``)
    and raised. Ctrl-C raises ``KeyboardInterrupt`` after the trial is recorded. ``failures`` stops
    the loop when the first trials all fail the same way (its ``stopped`` says why). Each finished
    trial is freed at once (:class:`~lightopt.sweep.trial.TrialCleanup`). A trial whose worker
    died is retried up to ``retries`` times (:func:`~lightopt.sweep.study.fail_dead_trials`).
    """
    started = time.monotonic()
    me = worker_identity()
    host_lock = HostLock(lock)
    ran = 0
    cleanup = TrialCleanup()
    tally = StudyTally(study)
    callbacks = [*callbacks, *([failures] if failures is not None else []), cleanup]
    with Interrupt() as interrupt, cleanup:
        while not interrupt.interrupted:
            if timeout is not None and time.monotonic() - started >= timeout:
                break
            if should_stop is not None and should_stop():
                break
            host_lock.acquire()
            try:
                if not _room_for_one(study, total, tally, retries):
                    break
                looked = getattr(study_storage(study), "stale_trials_looked_for", None)
                if looked is not None:
                    looked()  # study.optimize's own look would find what _room_for_one's found: skipped
                try:
                    study.optimize(
                        _Claimed(objective, me, host_lock, interrupt, cleanup.started),
                        n_trials=1,
                        catch=(TrialFailed,),
                        callbacks=[_Callbacks(callbacks)],
                        gc_after_trial=False,
                    )
                except Exception as error:  # Optuna turns a failed final write into an AssertionError
                    failure = _storage_failure(error)
                    if failure is not None and failure is not error:
                        raise failure from None
                    raise
            finally:
                host_lock.release()
            ran += 1
            if stop_requested(study):
                break
    if interrupt.interrupted:
        by = " (SIGTERM)" if interrupt.signal == "SIGTERM" else ""
        raise KeyboardInterrupt(f"stopped{by} before the next trial; the study is intact")
    return ran


def _storage_failure(error: BaseException | None) -> StorageError | None:
    """The :class:`StorageError` that ``error`` is, or arose while handling (None if none)."""
    for _ in range(8):
        if error is None or isinstance(error, StorageError):
            return error
        error = error.__cause__ or error.__context__
    return None


def _room_for_one(study: optuna.Study, total: int, tally: StudyTally, retries: int) -> bool:
    """Recover dead workers' trials, enqueue retries; whether fewer than ``total`` are counted.

    ``tally`` answers from the trials that changed since the last call, so this costs the same at
    any size of the study. Optuna's own heartbeat check runs at the start of every trial
    (``study.optimize``); it is run here too, before counting, only while a trial of another host
    (or of no recorded worker) is running, the only trials that nothing but the heartbeat can fail,
    so that such a trial is retried at once, and a study is not taken for full while one is
    stale; ``study.optimize``'s own look, which would follow at once, is then skipped
    (``GuardedStorage.stale_trials_looked_for``). The trials of this host are checked by process
    instead (:func:`fail_dead_trials`).
    """
    tally.update()
    if (
        any(not on_this_host(t.user_attrs.get("worker") or {}) for t in tally.running)
        and getattr(study_storage(study), "get_heartbeat_interval", lambda: None)() is not None
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # other hosts' dead workers, after the grace period
        tally.update()
    if fail_dead_trials(study, tally.running, retries):
        tally.update()
    if tally.counted >= total:
        return False
    enqueue_retries(study, tally.unretried, retries)  # not counted until they run: WAITING trials do not count
    return True


def _same_worker(recorded: Any, me: dict[str, Any]) -> bool:
    """Whether the ``worker`` attribute ``recorded`` names this process (its host, pid and start time)."""
    return isinstance(recorded, dict) and all(recorded.get(key) == value for key, value in me.items())


class _Callbacks:
    """``callbacks`` as one Optuna callback: Optuna deep-copies the finished trial once per callback it calls.

    They share one read of the study (:func:`~lightopt.sweep.store.one_look`): on a database the
    progress line's tally, TensorBoard's study run and the failure watch refresh Optuna's cache once
    after the trial, not once each. The loop's own count is read again under the host lock.
    """

    def __init__(self, callbacks: Sequence[TrialCallback]) -> None:
        self.callbacks = list(callbacks)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        with one_look():
            for callback in self.callbacks:
                callback(study, trial)


class _Claimed:
    """The objective as the worker runs it: claim the trial, free the lock, turn Ctrl-C into a recorded reason."""

    def __init__(
        self,
        objective: Callable[[optuna.Trial], float],
        me: dict[str, Any],
        lock: HostLock,
        interrupt: Interrupt,
        started: Callable[[], None],
    ) -> None:
        self.objective, self.me, self.lock, self.interrupt, self.started = objective, me, lock, interrupt, started

    def __call__(self, trial: optuna.Trial) -> float:
        if not _same_worker(trial.user_attrs.get("worker"), self.me):  # created by GuardedStorage with it already
            trial.set_user_attr("worker", self.me)  # an enqueued retry, or a storage without GuardedStorage
        self.lock.release()
        self.started()  # freeze what study.ask added (TrialCleanup.started)
        try:
            if self.interrupt.interrupted:
                raise KeyboardInterrupt
            with self.interrupt.running():
                return self.objective(trial)
        except (optuna.TrialPruned, TrialFailed, StorageError):
            raise  # recorded by Optuna; a storage that failed is reported as one line, nothing more is written
        except BaseException as exc:
            if isinstance(exc, SIGTERMException) and not self.interrupt.interrupted:
                self.interrupt.stop("SIGTERM")  # Lightning stopped the fit on SIGTERM (e.g. a cluster's scheduler)
                trial.set_user_attr("fail_reason", f"{INTERRUPTED} (SIGTERM)")
                raise KeyboardInterrupt(
                    f"trial {trial.number} recorded as failed (interrupted by SIGTERM); run "
                    f"the same command again to retry it"
                ) from None
            if self.interrupt.interrupted or isinstance(exc, KeyboardInterrupt):
                self.interrupt.stop()  # SystemExit from Lightning's own interrupt handling, or a KeyboardInterrupt
                by = " (SIGTERM)" if self.interrupt.signal == "SIGTERM" else ""
                trial.set_user_attr("fail_reason", f"{INTERRUPTED}{by}")
                raise KeyboardInterrupt(
                    f"trial {trial.number} recorded as failed (interrupted{' by SIGTERM' if by else ''}"
                    f"); run the same command again to retry it"
                ) from None
            if "fail_reason" not in trial.user_attrs:
                trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}"[:500])
                trial.set_user_attr("traceback", traceback.format_exc()[-8000:])
            if isinstance(exc, Exception):
                raise
            raise TrialFailed(trial.user_attrs["fail_reason"]) from None  # SystemExit and the like: a failed trial
