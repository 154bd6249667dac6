"""Which process is which: a worker's identity (host, pid, start time) and whether it still runs.

lightopt records this identity wherever a process holds something that others must be able to
take back when it dies: a RUNNING trial (``user_attrs["worker"]``), the study journal's lock
(:mod:`lightopt.sweep.store._journal`) and the host lock (:class:`lightopt.sweep.store.HostLock`).
The start time makes a reused pid harmless, and a zombie (a child that exited but was not yet
waited for by its parent) counts as dead.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from lightopt import _validation

__all__ = ["worker_identity", "process_alive", "on_this_host", "describe_worker"]


def _stat(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (field 3 first), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_time(pid: int) -> str | None:
    """The process's start time as ``"<boot id>:<clock ticks since boot>"`` (Linux), else None."""
    fields = _stat(pid)
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        return None
    return None if fields is None or len(fields) < 20 else f"{boot}:{int(fields[19])}"  # field 22 of stat


def worker_identity(pid: int | None = None) -> dict[str, Any]:
    """This process's ``{"host", "pid", "started"}``, as lightopt records it.

    Example:
        >>> me = worker_identity()
        >>> me["pid"] == os.getpid() and process_alive(me)
        True
    """
    pid = os.getpid() if pid is None else pid
    return {"host": socket.gethostname(), "pid": pid, "started": _start_time(pid)}


def on_this_host(worker: Mapping[str, Any]) -> bool:
    """Whether ``worker`` was recorded by a process of this host."""
    return worker.get("host") == socket.gethostname()


def process_alive(worker: Mapping[str, Any]) -> bool:
    """Whether the process ``worker`` (of this host) still runs: same pid, same start time, not a zombie.

    Example:
        >>> process_alive({"pid": 2**22 + 7})  # above Linux's pid_max
        False
    """
    pid = worker.get("pid")
    if not _validation.is_integer(pid, low=1):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    fields = _stat(pid)
    if fields is not None and fields[0] in (b"Z", b"X"):  # exited; only its parent's wait is missing
        return False
    started = worker.get("started")
    return started is None or _start_time(pid) in (None, started)


def describe_worker(worker: Mapping[str, Any]) -> str:
    """``"pid 1234 on host h"``.

    Example:
        >>> describe_worker({"pid": 1234, "host": "h"})
        'pid 1234 on host h'
    """
    return f"pid {worker.get('pid')} on host {worker.get('host')}"
