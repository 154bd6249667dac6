"""Crash safety for sweeps: who runs a trial, failing the trials of dead workers, retries, checkpoints.

Every RUNNING trial records the worker that runs it in ``trial.user_attrs["worker"]``: host name,
process id and the process's start time (so a reused pid is not taken for the dead worker).
Before each trial a worker fails at once every RUNNING trial of its own host whose process is
gone (``fail_reason: "worker died (pid 1234 on host h)"``); trials of other hosts are left to
Optuna's heartbeat, on storages that have one (``RDBStorage``). A trial stopped from outside (its
worker died, or Ctrl-C) is *retryable*: it does not count toward ``n_trials`` and is enqueued
again with the same parameters and seed (``user_attrs["retry_of"]``), resuming from its last
Lightning checkpoint (``<trial dir>/checkpoints/last.ckpt``) where one exists.

The check, the count and the creation of the next trial run under a lock file local to the host
(:class:`HostLock`), so workers of one machine never overshoot ``n_trials`` nor retry a trial twice.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from optuna.trial import FrozenTrial, TrialState

from lightopt._compat import study_storage

__all__ = [
    "DIED", "INTERRUPTED", "worker_identity", "process_alive", "HostLock", "lock_path", "fail_dead_trials",
    "is_retryable", "counted", "enqueue_retries", "checkpoint_callbacks", "last_checkpoint", "StartPoint",
]

# Optuna's heartbeat on database storages: a trial whose worker sent none for GRACE_PERIOD_S is failed.
HEARTBEAT_S = 60
GRACE_PERIOD_S = 180
DIED = "worker died"
INTERRUPTED = "interrupted"
CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"


def _start_time(pid: int) -> str | None:
    """The process's start time as ``"<boot id>:<clock ticks since boot>"`` (Linux), else None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except (OSError, IndexError):
        return None
    return f"{boot}:{int(fields[19])}"  # field 22 of stat; fields[0] is field 3


def worker_identity(pid: int | None = None) -> dict[str, Any]:
    """This process's ``{"host", "pid", "started"}``, as recorded in a RUNNING trial's ``worker`` attribute.

    Example:
        >>> me = worker_identity()
        >>> me["pid"] == os.getpid() and process_alive(me)
        True
    """
    pid = os.getpid() if pid is None else pid
    return {"host": socket.gethostname(), "pid": pid, "started": _start_time(pid)}


def process_alive(worker: Mapping[str, Any]) -> bool:
    """Whether the process ``worker`` (on this host) still runs: same pid, same start time."""
    pid = worker.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    started = worker.get("started")
    return started is None or _start_time(pid) in (None, started)


def lock_path(storage: str, study_name: str) -> Path:
    """The host-local lock file of a study: beside a journal file, else in the temp directory."""
    if "://" not in storage:
        return Path(f"{storage}.lightopt-lock")
    digest = hashlib.sha1(f"{storage}\n{study_name}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"lightopt-{digest}.lock"


class HostLock:
    """An exclusive lock on a file between the processes of this host; freed when its holder dies.

    ``fcntl.flock`` where there is one (POSIX); elsewhere Optuna's lock file, which another
    process breaks after its grace period if the holder died. Use it as a context manager, or
    :meth:`acquire` and :meth:`release` (which does nothing when not held).

    Example:
        >>> import tempfile
        >>> with HostLock(Path(tempfile.mkdtemp()) / "x.lock") as lock:
        ...     lock.held
        True
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.held = False
        self._file: Any = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:
            self._file = optuna.storages.journal.JournalFileOpenLock(str(self.path))
            self._file.acquire()
        else:
            self._file = open(self.path, "a")  # noqa: SIM115 - closed in release
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
        self.held = True

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if isinstance(self._file, optuna.storages.journal.JournalFileOpenLock):
            self._file.release()
        else:
            self._file.close()  # closing the file frees the flock

    def __enter__(self) -> HostLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _trial_id(study: optuna.Study, number: int) -> int:
    storage = study_storage(study)
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def fail_dead_trials(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> list[int]:
    """Fail every RUNNING trial of this host whose worker process is gone; returns their numbers.

    Each gets ``fail_reason: "worker died (pid P on host H)"``. Call it under :class:`HostLock`.
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
        storage.set_trial_user_attr(trial_id, "fail_reason", f"{DIED} (pid {worker.get('pid')} on host {host})")
        try:
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # finished meanwhile
        failed.append(trial.number)
    return failed


def is_retryable(trial: FrozenTrial) -> bool:
    """A FAIL trial stopped from outside: its worker died or was interrupted, or the heartbeat failed it."""
    if trial.state != TrialState.FAIL or "worker" not in trial.user_attrs:
        return False
    reason = trial.user_attrs.get("fail_reason")
    return reason is None or reason.startswith((DIED, INTERRUPTED))


def counted(trials: Sequence[FrozenTrial]) -> int:
    """How many trials count toward ``n_trials``: all but the retryable and the WAITING ones.

    Example:
        >>> counted([])
        0
    """
    return sum(1 for t in trials if t.state != TrialState.WAITING and not is_retryable(t))


def enqueue_retries(study: optuna.Study, trials: Sequence[FrozenTrial]) -> list[int]:
    """Enqueue one retry of every retryable trial not yet retried; returns the retried numbers.

    The retry gets the same ``params`` and ``seed``, ``retry_of`` (the failed trial's number),
    ``retry_reason`` (its ``fail_reason``; Optuna's heartbeat leaves none) and ``resume_from`` (its
    last checkpoint, or None). Call it under :class:`HostLock`.
    """
    done = {t.user_attrs.get("retry_of") for t in trials}
    retried = []
    for trial in trials:
        if not is_retryable(trial) or trial.number in done:
            continue
        reason = trial.user_attrs.get("fail_reason") or "no heartbeat from its worker within the grace period"
        attrs: dict[str, Any] = {"retry_of": trial.number, "retry_reason": reason, "resume_from": _resume_point(trial)}
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


def checkpoint_callbacks(config: Mapping[str, Any], trial_dir: str | Path) -> list[Callback]:
    """``[ModelCheckpoint(save_last=True)]`` into ``<trial_dir>/checkpoints``, or ``[]``.

    It keeps the latest epoch's checkpoint and a copy named ``last.ckpt`` (Lightning writes
    ``last.ckpt`` only when it saves a top-k checkpoint, so ``save_top_k`` stays 1).

    Nothing when the config sets ``trainer.enable_checkpointing: false`` or lists its own
    ``ModelCheckpoint`` (whose ``last.ckpt``, with ``save_last``, is then the resume point).

    Example:
        >>> checkpoint_callbacks({"trainer": {"enable_checkpointing": False}}, "runs/s/trial_0000")
        []
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
    return [ModelCheckpoint(dirpath=str(Path(trial_dir) / CHECKPOINT_DIR), save_last=True)]


class StartPoint(Callback):
    """Records where ``fit`` started (``epoch``, ``global_step``): 0 and 0, or a resumed checkpoint's."""

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.global_step: int | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.epoch, self.global_step = trainer.current_epoch, trainer.global_step
