"""Optuna's plots of a study drawn in a process of its own, which reads the study from its storage.

Drawing builds matplotlib's figures and fonts and a display copy of every trial, and the
allocator keeps that peak: in a worker that has imported Lightning, the first drawing of a
20-trial study added 58 MiB that stayed, three drawings of 3,000 trials 110 MiB, more as the
study grows. :class:`Drawing` starts a Python process running this module's ``_main`` instead:
it opens the storage (the sweep's journal file or database, read as any other reader does),
draws into ``<study_dir>/plots/`` as the worker would, writes one JSON line and exits. The
worker goes on with its trials meanwhile and collects the result at a later trial (or waits, for
the final drawing). The storage's URL, password included, goes through the child's standard
input, never its command line.

The child ignores Ctrl-C (it ends by itself within its drawing time; the worker waits for it when
it stops) and writes its output into files, not pipes, so that a chatty drawing never blocks.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Drawing", "DrawingResult"]

WAIT_S = 300.0  # the longest a worker waits for a drawing when it must (the final one, or when it stops)


@dataclass(frozen=True)
class DrawingResult:
    drawn: list[Path]  # the PNG files written, in the study's plots folder
    finished: int  # finished trials in the study as the drawing read it
    seconds: float  # the drawing's wall time, from its start to its end (not to when the worker saw it end)
    cpu_s: float  # its CPU time (user + system), imports and reading the study included
    pid: int  # the process that drew
    error: str | None = None  # one line when it could not draw
    peak_mib: float | None = None  # the drawing process's peak resident memory (None: drawn in the worker)


class Drawing:
    """One drawing of ``study_name``'s plots from ``storage`` into ``out``, in a child process started now."""

    def __init__(self, storage: str, study_name: str, out: str | Path) -> None:
        self.started = time.time()
        self._stdout = tempfile.TemporaryFile()  # noqa: SIM115 - closed in result()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in result()
        # lightopt importable even where it is not installed: its folder goes last on the path, shadowing nothing
        root = str(Path(__file__).resolve().parents[3])
        start = f"import sys; sys.path.append({root!r}); from {__name__} import _main; sys.exit(_main())"
        self._process = subprocess.Popen(
            [sys.executable, "-c", start], stdin=subprocess.PIPE, stdout=self._stdout, stderr=self._stderr
        )
        request = {"storage": storage, "study": study_name, "out": str(out)}
        assert self._process.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # a child that died at once: result() says why
            self._process.stdin.write(json.dumps(request).encode())  # far below a pipe's buffer: never blocks
            self._process.stdin.close()

    def result(self, wait: bool = False) -> DrawingResult | None:
        """The drawing's result once its process has ended (None while it runs, unless ``wait``)."""
        if wait:
            try:
                self._process.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        elif self._process.poll() is None:
            return None
        seconds = time.time() - self.started  # until it was seen to end; its own end time where it says it
        self._stdout.seek(0)
        self._stderr.seek(0)
        out, err = self._stdout.read().decode(errors="replace"), self._stderr.read().decode(errors="replace")
        self._stdout.close()
        self._stderr.close()
        try:
            report = json.loads(out.strip().splitlines()[-1])
        except (IndexError, ValueError):
            lines = [line for line in err.strip().splitlines() if line.strip()]
            code = self._process.returncode
            why = (
                f"the drawing process was killed (signal {-code})"
                if code < 0
                else lines[-1]
                if lines
                else f"the drawing process exited with status {code}"
            )
            return DrawingResult([], 0, seconds, 0.0, self._process.pid, why)
        drawn, pid = [Path(p) for p in report["drawn"]], self._process.pid
        seconds = max(0.0, min(seconds, report.get("ended", math.inf) - self.started))  # not the wait for a poll
        return DrawingResult(
            drawn, report["finished"], seconds, report["cpu_s"], pid, report.get("error"), report.get("peak_mib")
        )


def _main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    request = json.loads(sys.stdin.read())
    report: dict[str, Any] = {"drawn": [], "finished": 0, "cpu_s": 0.0}
    try:
        import matplotlib

        matplotlib.use("Agg")
        import optuna

        from lightopt.sweep.store import open_storage, optuna_quiet
        from lightopt.sweep.study._board import draw_plots

        out = Path(request["out"])
        with optuna_quiet():
            storage, _ = open_storage(request["storage"], out.parent, create=False)
            study = optuna.load_study(study_name=request["study"], storage=storage)
            drawn, report["finished"] = draw_plots(study, out)
            report["drawn"] = [str(p) for p in drawn]
    except Exception as error:  # the worker says it in one line and goes on with its trials
        report["error"] = f"{type(error).__name__}: {error}".splitlines()[0]
    with contextlib.suppress(OSError):
        times = os.times()
        report["cpu_s"] = times.user + times.system
    with contextlib.suppress(ImportError):  # no resource module on Windows
        import resource

        report["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    report["ended"] = time.time()
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
