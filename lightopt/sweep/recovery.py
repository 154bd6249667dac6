"""Crash safety for sweeps: who runs a trial, failing the trials of dead workers, retries, checkpoints.

Every RUNNING trial records the worker that runs it in ``trial.user_attrs["worker"]``: host name,
process id and the process's start time (so a reused pid is not taken for the dead worker;
:mod:`lightopt.sweep.processes`), from the moment it is created
(:class:`~lightopt.sweep.storage.GuardedStorage`).
Before each trial a worker fails at once every RUNNING trial of its own host whose process is
gone (``fail_reason: "worker died (pid 1234 on host h)"``); trials of other hosts are left to
Optuna's heartbeat, on storages that have one (``RDBStorage``). A trial stopped from outside (its
worker died, or Ctrl-C) is *retryable*: it does not count toward ``n_trials`` and is enqueued
again with the same parameters and seed (``user_attrs["retry_of"]``), resuming from its last
Lightning checkpoint (``<trial dir>/checkpoints/last.ckpt``) where one exists. A trial whose worker
died ``study.retries`` times (1 by default) is not retried again: a trial that kills its own process
(``os._exit``, a segfault, the OOM killer) counts as failed, "its worker died 2 times", and the sweep
goes on.

The check, the count and the creation of the next trial run under a lock file local to the host
(:class:`HostLock`), so workers of one machine never overshoot ``n_trials`` nor retry a trial twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from optuna.trial import FrozenTrial, TrialState

from lightopt._compat import study_storage
from lightopt.sweep.database import redact
from lightopt.sweep.failures import RETRIES
from lightopt.sweep.journal import JournalLock
from lightopt.sweep.processes import describe_worker, process_alive, worker_identity
from lightopt.sweep.storage import StorageError, stderr_line

__all__ = [
    "DIED", "INTERRUPTED", "worker_identity", "process_alive", "HostLock", "lock_path", "fail_dead_trials",
    "is_retryable", "counted", "enqueue_retries", "checkpoint_callbacks", "last_checkpoint", "fallbacks", "StartPoint",
]

# Optuna's heartbeat on database storages: a trial whose worker sent none for GRACE_PERIOD_S is failed.
HEARTBEAT_S = 60
GRACE_PERIOD_S = 180
DIED = "worker died"
INTERRUPTED = "interrupted"
CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"
EPOCH_END = "epoch-end"  # the end-of-epoch checkpoint kept beside last.ckpt when validation runs mid-epoch


def lock_path(storage: str, study_name: str) -> Path:
    """The host-local lock file of a study: beside a journal file, else in the temp directory.

    A database URL gives the same lock with or without its password (workers may be handed either).
    """
    if "://" not in storage:
        return Path(f"{os.path.abspath(storage)}.lightopt-lock")
    digest = hashlib.sha1(f"{redact(storage)}\n{study_name}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"lightopt-{digest}.lock"


class HostLock:
    """An exclusive lock on a file between the processes of this host; freed when its holder dies.

    ``fcntl.flock`` (freed by the kernel when its holder dies, however it dies); the holder writes
    its pid into the file, and a process that waits longer than a moment says on stderr whom it
    waits for. Where there is no ``fcntl`` (Windows), lightopt's journal lock, which breaks the lock
    of a dead holder. Use it as a context manager, or :meth:`acquire` and :meth:`release` (which
    does nothing when not held). A lock file that cannot be opened is a
    :class:`~lightopt.sweep.storage.StorageError`.

    Example:
        >>> import tempfile
        >>> with HostLock(Path(tempfile.mkdtemp()) / "x.lock") as lock:
        ...     lock.held
        True
    """

    def __init__(self, path: str | Path, notify: Callable[[str], None] = stderr_line) -> None:
        self.path = Path(path).absolute()
        self.notify = notify
        self.held = False
        self._fd: int | None = None
        self._fallback: JournalLock | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:
            self._fallback = JournalLock(self.path, self.notify)
            self._fallback.acquire()
            self.held = True
            return
        self._fd = _open_lock_file(self.path)
        try:
            began, told = time.monotonic(), None
            while True:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    pass
                if time.monotonic() - began >= 2.0 and (told is None or time.monotonic() - told >= 30.0):
                    told = time.monotonic()
                    holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "?"
                    self.notify(f"waiting for the host lock {self.path}, held by pid {holder} (another worker of "
                                f"this study claiming its trial; {told - began:.0f} s so far)")
                time.sleep(0.01)
            with contextlib.suppress(OSError):  # a read-only lock file still locks; it just names nobody
                os.ftruncate(self._fd, 0)
                os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(self._fd)
            self._fd = None
            raise
        self.held = True

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self._fallback is not None:
            self._fallback.release()
        elif self._fd is not None:
            os.close(self._fd)  # closing the file frees the flock
            self._fd = None

    def __enter__(self) -> HostLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _open_lock_file(path: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except PermissionError:
            return os.open(path, os.O_RDONLY)  # flock works on a file opened for reading
    except OSError as error:
        raise StorageError(f"cannot open the host lock {path}: {error.strerror}; its folder and file must be "
                           f"writable (or the file at least readable)") from None


def _trial_id(study: optuna.Study, number: int) -> int:
    storage = study_storage(study)
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def fail_dead_trials(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None,
                     retries: int = RETRIES) -> list[int]:
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
    """How many trials count toward ``n_trials``: all but the retryable and the WAITING ones.

    Example:
        >>> counted([])
        0
    """
    return sum(1 for t in trials if t.state != TrialState.WAITING and not is_retryable(t))


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
            "retry_of": trial.number, "retry_reason": reason or "no heartbeat from its worker within the grace period",
            "resume_from": _resume_point(trial), "deaths": trial.user_attrs.get("deaths", 0) + died,
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


def last_checkpoint(trial_dir: str | Path) -> Path | None:
    """``<trial_dir>/checkpoints/last.ckpt`` if it exists."""
    path = Path(trial_dir) / CHECKPOINT_DIR / LAST
    return path if path.is_file() else None


def fallbacks(checkpoint: str | Path) -> list[str | None]:
    """Where a retry goes on from when resuming ``checkpoint`` fails: the end-of-epoch checkpoint beside it, then the start.

    Example:
        >>> fallbacks("runs/s/trial_0001/checkpoints/last.ckpt")  # no end-of-epoch checkpoint there
        [None]
    """
    epoch_end = Path(checkpoint).parent / f"{EPOCH_END}.ckpt"
    return ([str(epoch_end)] if epoch_end.is_file() and epoch_end != Path(checkpoint) else []) + [None]


def checkpoint_callbacks(config: Mapping[str, Any], trial_dir: str | Path) -> list[Callback]:
    """``[ModelCheckpoint(save_last=True)]`` into ``<trial_dir>/checkpoints``, or ``[]``.

    It keeps the latest validation round's checkpoint and a copy named ``last.ckpt`` (Lightning
    writes ``last.ckpt`` only when it saves a top-k checkpoint, so ``save_top_k`` stays 1). When
    validation runs inside epochs (``val_check_interval`` other than 1.0), ``last.ckpt`` may be a
    mid-epoch checkpoint, which some modules cannot resume from (state built in an epoch-start
    hook); a second callback then keeps the last end-of-epoch checkpoint as ``epoch-end.ckpt``,
    the fallback of :func:`fallbacks`.

    Nothing when the config sets ``trainer.enable_checkpointing: false`` or lists its own
    ``ModelCheckpoint`` (whose ``last.ckpt``, with ``save_last``, is then the resume point).

    Example:
        >>> checkpoint_callbacks({"trainer": {"enable_checkpointing": False}}, "runs/s/trial_0000")
        []
        >>> len(checkpoint_callbacks({"trainer": {"val_check_interval": 0.5}}, "runs/s/trial_0000"))
        2
    """
    trainer = config.get("trainer") or {}
    if trainer.get("enable_checkpointing") is False:
        return []
    callbacks = trainer.get("callbacks") or []
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
    for callback in callbacks:
        path = callback.get("class_path", "") if isinstance(callback, Mapping) else type(callback).__name__
        if path.rsplit(".", 1)[-1] == "ModelCheckpoint":
            return []
    directory = str(Path(trial_dir) / CHECKPOINT_DIR)
    kept: list[Callback] = [ModelCheckpoint(dirpath=directory, save_last=True)]
    if trainer.get("val_check_interval", 1.0) not in (None, 1.0):
        kept.append(_EpochEndCheckpoint(dirpath=directory, filename=EPOCH_END, save_on_train_epoch_end=True,
                                        enable_version_counter=False))
    return kept


class _EpochEndCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` saving at each epoch's end, with a state key of its own beside the main one."""

    @property
    def state_key(self) -> str:
        return self._generate_state_key(epoch_end=True, every_n_epochs=self._every_n_epochs)


class StartPoint(Callback):
    """Records where ``fit`` started (``epoch``, ``global_step``): 0 and 0, or a resumed checkpoint's."""

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.global_step: int | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.epoch, self.global_step = trainer.current_epoch, trainer.global_step
