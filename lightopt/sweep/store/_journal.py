"""The study journal file: Optuna's journal format, with a lock that names its holder and a tail that is never damaged.

A sweep's default storage is ``optuna.storages.JournalStorage`` over one append-only file of JSON
lines. :class:`JournalFile` is Optuna's ``JournalFileBackend`` (same format, same readers) with
what a sweep killed at any moment needs and Optuna's backend lacks:

* **The lock records its holder.** Optuna's locks are an empty file or a link whose holder nobody
  knows: a process killed while holding one makes every later writer wait for the grace period, and
  a link made from a relative path (as Optuna makes it from the path as given) points nowhere from its
  own folder, so Optuna never even sees its age and waits forever at full CPU. :class:`JournalLock`
  writes the holder's host, pid and start time into ``<journal>.lock`` (absolute paths only), breaks
  the lock of a holder of this host that is gone at once, and says so on stderr; a live holder, or
  one on another host, is waited for with a line that says whom the sweep waits for (another host's
  lock older than :data:`GRACE_S` is broken). A link left by Optuna's own lock is honoured the same
  way: a dangling one at once, a live one after the grace period. Both kinds exclude each other, so
  an Optuna script may share the file.
* **No record follows a partial one.** Opening the file checks that it ends with a complete
  record; a tail cut short by a crash or a full disk, or garbage appended to it, is cut off, its
  bytes kept in ``<journal>.cut-<time>``, and one line says so. Every append checks the last byte
  under the lock, and a write that fails (no space left) is undone, so the file never holds a
  partial line that a later append would bury.
* **Failures are one line** (:class:`~lightopt.sweep.store.StorageError`): a full disk, a
  read-only file, a journal deleted while the sweep ran.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
import time
import uuid
from collections.abc import Callable, Generator
from typing import Any

from optuna.storages.journal import JournalFileBackend

from lightopt.sweep.store._processes import describe_worker, process_alive, worker_identity
from lightopt.sweep.store._storage import StorageError, stderr_line

__all__ = ["JournalFile", "JournalLock", "GRACE_S", "LOCK_SUFFIX"]

GRACE_S = 30.0
"""How old a lock of another host (or Optuna's, which names no holder) must be before it is broken.
A writer holds the lock for one append, milliseconds."""
LOCK_SUFFIX = ".lock"  # Optuna's, so that Optuna's own locks and lightopt's exclude each other
_UNFINISHED_S = 5.0  # a lock file without its holder's line yet: its holder died between create and write
_TELL_AFTER_S = 2.0  # wait this long in silence, then say what the sweep waits for
_TELL_EVERY_S = 30.0


class JournalLock:
    """An exclusive lock on a journal file between processes and hosts, taken back from a dead holder.

    It has the two methods of Optuna's journal file locks (``acquire``, ``release``).

    Args:
        journal: the journal file's path (made absolute).
        notify: where the lines about breaking or waiting go (default stderr).
        grace_s: see :data:`GRACE_S`.

    Example:
        >>> import tempfile
        >>> lock = JournalLock(os.path.join(tempfile.mkdtemp(), "study.journal"))
        >>> lock.acquire(), json.load(open(lock.path))["pid"] == os.getpid()
        (True, True)
        >>> lock.release(); os.path.exists(lock.path)
        False
    """

    def __init__(
        self, journal: str | os.PathLike[str], notify: Callable[[str], None] = stderr_line, grace_s: float = GRACE_S
    ) -> None:
        self.path = os.path.abspath(os.fspath(journal)) + LOCK_SUFFIX
        self.notify, self.grace_s = notify, grace_s
        self._mine: bytes | None = None

    def acquire(self) -> bool:
        mine = (json.dumps({**worker_identity(), "token": uuid.uuid4().hex}) + "\n").encode()
        began = time.monotonic()
        told = None
        delay = 0.001
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pass
            except OSError as error:
                raise StorageError(
                    f"cannot take the study journal's lock {self.path}: {error.strerror}; the folder must be writable"
                ) from None
            else:
                try:
                    os.write(fd, mine)
                except BaseException:
                    os.close(fd)
                    os.unlink(self.path)
                    raise
                os.close(fd)
                self._mine = mine
                return True
            seen, holder, stale = self._inspect()
            if stale:
                self._break(seen, holder)
                continue
            if (
                seen is not None
                and time.monotonic() - began >= _TELL_AFTER_S
                and (told is None or time.monotonic() - told >= _TELL_EVERY_S)
            ):
                told = time.monotonic()
                self.notify(
                    f"waiting for the study journal's lock {self.path}, held by {holder} ({told - began:.0f} s so far)"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def release(self) -> None:
        mine, self._mine = self._mine, None
        if mine is not None and _read(self.path) == mine:  # not ours any more only if it was broken as stale
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def _inspect(self) -> tuple[bytes | None, str, bool]:
        """``(what the lock holds, who holds it, whether that holder is gone)``; None: no lock right now."""
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return None, "", False
        age = time.time() - info.st_mtime
        if stat.S_ISLNK(info.st_mode):  # Optuna's own lock: a link to the journal, no holder recorded
            seen = _read(self.path)
            if not os.path.exists(self.path):
                return seen, "Optuna's lock, a link to a path that does not exist (left by a killed process)", True
            return seen, f"an Optuna process (a lock with no holder recorded, {age:.0f} s old)", age > self.grace_s
        seen = _read(self.path)
        try:
            holder = json.loads(seen or b"")
            if not isinstance(holder, dict):
                raise ValueError
        except ValueError:
            return seen, f"a process that has not written its name yet ({age:.0f} s)", age > _UNFINISHED_S
        if holder.get("host") == socket.gethostname():
            if process_alive(holder):
                return seen, f"{describe_worker(holder)} (running)", False
            return seen, f"{describe_worker(holder)}, which is gone", True
        return seen, f"{describe_worker(holder)}, {age:.0f} s ago", age > self.grace_s

    def _break(self, seen: bytes | None, holder: str) -> None:
        """Move the stale lock aside (checking it is still the one judged stale) and say so."""
        aside = f"{self.path}.{uuid.uuid4().hex}.broken"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # released, or broken by another process, meanwhile
        if _read(aside) != seen:  # a new holder took it in between: give it back
            with contextlib.suppress(OSError):
                os.link(aside, self.path, follow_symlinks=False)
            os.unlink(aside)
            return
        os.unlink(aside)
        self.notify(f"broke the study journal's lock {self.path}: its holder, {holder}")


def _read(path: str) -> bytes | None:
    """A lock's content: the file's bytes, or a link's target; None if there is none."""
    try:
        if os.path.islink(path):
            return os.readlink(path).encode()
        with open(path, "rb") as f:
            return f.read(4096)
    except OSError:
        return None


class JournalFile(JournalFileBackend):
    """Optuna's journal file backend with a holder-naming lock and a tail that is checked and never built on.

    Args:
        path: the journal file (made absolute); created when missing.
        notify: where the lines about a repaired tail or a broken lock go (default stderr).

    Raises :class:`~lightopt.sweep.store.StorageError` when the file cannot be created, read or
    (when damaged) repaired.
    """

    def __init__(self, path: str | os.PathLike[str], notify: Callable[[str], None] = stderr_line) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.notify = notify
        lock = JournalLock(self.path, notify)
        try:
            super().__init__(self.path, lock_obj=lock)
        except OSError as error:
            raise StorageError(f"cannot create the study journal {self.path}: {error.strerror}") from None
        try:
            self._lock.acquire()
        except StorageError:  # a read-only folder: reading works; a damaged file cannot be repaired here
            self._lock = _NoWrites(self.path)
            self._check(repair=False)
            return
        try:
            self._check(repair=True)
        finally:
            self._lock.release()

    def _check(self, repair: bool) -> None:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise StorageError(f"the study journal {self.path} was deleted while it was opened") from None
        except OSError as error:
            raise StorageError(f"cannot read the study journal {self.path}: {error.strerror}") from None
        if repair:
            self._repair(data)
        elif _complete_prefix(data)[0] != len(data):
            raise StorageError(
                f"the study journal {self.path} ends with a damaged record and its folder is read-only: "
                f"make it writable and run again to repair it"
            ) from None

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        try:
            yield from super().read_logs(log_number_from)
        except FileNotFoundError:
            raise StorageError(self._deleted()) from None
        except OSError as error:
            raise StorageError(f"cannot read the study journal {self.path}: {error.strerror}") from None
        except ValueError:  # a damaged record with more after it: written by something other than lightopt
            raise StorageError(
                f"the study journal {self.path} has a damaged record followed by others; run the "
                f"same command again to cut the file back to its last complete record"
            ) from None

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode()
        self._lock.acquire()
        try:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND)  # never O_CREAT: a deleted journal stays deleted
            except FileNotFoundError:
                raise StorageError(self._deleted()) from None
            except OSError as error:
                raise StorageError(
                    f"cannot write the study journal {self.path}: {error.strerror}; make it writable "
                    f"and run the same command again (nothing recorded is lost)"
                ) from None
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":  # a partial record: never build on it
                    self._repair(os.pread(fd, size, 0))
                    size = os.fstat(fd).st_size
                self._write(fd, data, size)
            finally:
                os.close(fd)
        finally:
            self._lock.release()

    def _write(self, fd: int, data: bytes, size: int) -> None:
        """Append ``data`` whole, or undo the part written and raise StorageError."""
        try:
            done = 0
            while done < len(data):
                done += os.write(fd, data[done:])
            os.fsync(fd)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            full = error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
            what = "no space left on its device" if full else error.strerror
            raise StorageError(
                f"cannot write the study journal {self.path}: {what}. Nothing recorded before is "
                f"lost; {'free some space and ' if full else ''}run the same command again (the "
                f"trial cut off is retried)"
            ) from None

    def _repair(self, data: bytes) -> None:
        """Cut ``data`` (the file, read under the lock) back to its last complete record, keeping a copy of the rest."""
        end, records = _complete_prefix(data)
        if end == len(data):
            return
        copy = f"{self.path}.cut-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        try:
            with open(copy, "xb") as f:
                f.write(data[end:])
            os.truncate(self.path, end)
        except OSError as error:
            raise StorageError(
                f"the study journal {self.path} ends with a damaged record (its last "
                f"{len(data) - end} bytes) and cannot be repaired: {error.strerror}"
            ) from None
        self.notify(
            f"the study journal {self.path} ended with {len(data) - end} bytes that are not a complete record "
            f"(a write cut short): cut them off and kept them in {copy}; its {records} records before are "
            f"intact"
        )

    def _deleted(self) -> str:
        return (
            f"the study journal {self.path} was deleted while the sweep ran: stopped without writing more; restore "
            f"it from a copy to keep its trials, or run again to start the study afresh"
        )


class _NoWrites:
    """The lock of a journal in a read-only folder: every write attempt says why it cannot be made."""

    def __init__(self, path: str) -> None:
        self.path = path

    def acquire(self) -> bool:
        raise StorageError(
            f"cannot write the study journal {self.path}: its folder is read-only; make it writable "
            f"and run the same command again (nothing recorded is lost)"
        )

    def release(self) -> None:
        pass


def _complete_prefix(data: bytes) -> tuple[int, int]:
    """``(bytes, records)`` of the longest run of complete records at the start of ``data``."""
    end = records = 0
    while end < len(data):
        newline = data.find(b"\n", end)
        if newline < 0 or not _is_record(data[end:newline]):
            break
        end, records = newline + 1, records + 1
    return end, records


def _is_record(line: bytes) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and "op_code" in record
