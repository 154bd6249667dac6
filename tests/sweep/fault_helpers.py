"""Modules and processes for the fault tests: trials that end their own process, state a mid-epoch resume lacks."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from examples.digits import DigitsMLP

ROOT = Path(__file__).resolve().parents[2]


class DyingMLP(DigitsMLP):
    """DigitsMLP whose first training step ends its process: ``os._exit``, a segfault or ``sys.exit``."""

    def __init__(self, how: str = "os._exit", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.how = how

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        if self.how == "os._exit":
            os._exit(3)
        if self.how == "segfault":
            ctypes.string_at(0)  # reads address 0: SIGSEGV, as a crashing extension does
        if self.how == "sys.exit":
            sys.exit(3)
        return super().training_step(batch, batch_idx)


class EpochStateMLP(DigitsMLP):
    """Builds a counter in ``on_train_epoch_start`` (a mid-epoch resume skips that hook) and stalls on request.

    From global step ``stall_step`` on, while ``stall_file`` exists, each training step touches
    ``stalled_file`` and waits. ``epoch_state=False``: the counter is not used (the example's own
    hooks only).
    """

    def __init__(
        self, stall_file: str = "", stall_step: int = 0, stalled_file: str = "", epoch_state: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.stall_file, self.stall_step, self.stalled_file = stall_file, stall_step, stalled_file
        self.epoch_state = epoch_state

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._batches_this_epoch = 0

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        if self.epoch_state:
            self._batches_this_epoch += 1
        while self.stall_file and self.global_step >= self.stall_step and Path(self.stall_file).exists():
            Path(self.stalled_file).touch()
            time.sleep(0.05)
        return super().training_step(batch, batch_idx)


# Takes a study journal's lock as lightopt writes it (holder's host, pid, start time) without importing
# lightopt (seconds of torch): ``python -c HOLD_LOCK JOURNAL [PARTIAL]``; with PARTIAL, also writes that
# partial record to the journal, as a writer killed mid-write leaves it. Prints "held", then sleeps.
HOLD_LOCK = """
import json, os, socket, sys, time
stat = open('/proc/self/stat', 'rb').read().rsplit(b')', 1)[1].split()
boot = open('/proc/sys/kernel/random/boot_id').read().strip()
me = {'host': socket.gethostname(), 'pid': os.getpid(), 'started': f'{boot}:{int(stat[19])}', 'token': 't'}
fd = os.open(os.path.abspath(sys.argv[1]) + '.lock', os.O_CREAT | os.O_EXCL | os.O_WRONLY)
os.write(fd, (json.dumps(me) + '\\n').encode()); os.close(fd)
if len(sys.argv) > 2:
    with open(sys.argv[1], 'ab') as f:
        f.write(sys.argv[2].encode()); f.flush()
print('held', flush=True); time.sleep(600)
"""


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def lightopt(*args: str, cwd: Path | None = None, timeout: float = 180, **popen: Any) -> subprocess.CompletedProcess:
    """``python -m lightopt ARGS`` run to its end; stdout and stderr as text."""
    return subprocess.run(
        [sys.executable, "-m", "lightopt", *args],
        cwd=cwd or ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


def start(*args: str, cwd: Path | None = None, **popen: Any) -> subprocess.Popen:
    """``python -m lightopt ARGS`` started; stdout and stderr piped as text unless ``popen`` says otherwise."""
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **popen}
    return subprocess.Popen([sys.executable, "-m", "lightopt", *args], cwd=cwd or ROOT, env=env(), **options)


def python(code: str, *args: str, cwd: Path | None = None) -> subprocess.Popen:
    """A Python process running ``code`` with ``args``, with stdout piped (it prints when it is ready to be killed)."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=cwd or ROOT, env=env(), stdout=subprocess.PIPE, text=True
    )


def wait_for(condition: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def children_of(pid: int) -> list[int]:
    """The pids of process ``pid``'s direct children (none once it has gone)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
