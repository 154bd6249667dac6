"""The host lock: one process of this machine at a time claims a study's next trial.

The check for dead workers' trials, the count and the creation of the next trial run under a lock
file local to the host (:class:`HostLock`), so the workers of one machine never overshoot
``n_trials`` nor retry a trial twice. :func:`lock_path` says where a study's lock file lives.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightopt.sweep.store._database import redact
from lightopt.sweep.store._journal import JournalLock
from lightopt.sweep.store._storage import StorageError, stderr_line

__all__ = ["HostLock", "lock_path"]


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
    :class:`~lightopt.sweep.store.StorageError`.

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
                    self.notify(
                        f"waiting for the host lock {self.path}, held by pid {holder} (another worker of "
                        f"this study claiming its trial; {told - began:.0f} s so far)"
                    )
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
        raise StorageError(
            f"cannot open the host lock {path}: {error.strerror}; its folder and file must be "
            f"writable (or the file at least readable)"
        ) from None
