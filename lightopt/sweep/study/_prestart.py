"""``--workers N``: the N - 1 child processes start with the command, so they are ready when the sweep starts.

``lightopt sweep run FILE --workers N`` (without ``--devices``) calls :func:`prestart_workers` right after
parsing its arguments, before it imports torch and Lightning or reads FILE. Each child (a
``multiprocessing`` spawn child, as before, so nothing of a parent's torch state is shared) imports
what a worker needs (lightopt's worker modules, hence torch and Lightning, jsonargparse, and,
best-effort, the modules of FILE's ``class_path`` entries) while the parent does its own
start-up, then waits. :func:`~lightopt.sweep.study.run_workers` takes the waiting children
(:func:`take_prestarted`) and sends each its work (the study, the storage, the sampler, ...) through a pipe;
the child then runs the worker loop run_workers sends, exactly as a child started there would.
Before, the children were started only when the sweep began: on a short sweep the parent ran every
trial while its one child was still importing torch (issue 15: all 20 trials of digits_lr.yaml in
one process).

Early spawn was chosen over a pre-imported fork server (``set_forkserver_preload``) for now: with
one child (``--workers 2``) both import the same once more beside the parent (measured on 2 busy
cores: all ready after 12.0 s by early spawn, 10.5 s by a fork server), and early spawn keeps the
spawn start method the workers had (no fork of a process that imported torch; signals and
environment as before) and leaves no server process to stop after a usage error. A fork server
imports once for all children, so it is the better choice for ``--workers 3`` and more (two
children: 16.3 s against 10.5 s; benchmarks/README.md).

Signals and clean-up: a child starts with SIGINT and SIGTERM ignored (Ctrl-C while it imports
prints no traceback) and keeps them ignored while it waits; it stops waiting, without a word, when
the pipe closes (its parent exited or died), when the stop event is set, or when its parent
changes. Children that never got work are killed by :func:`close_prestarted` (the command line calls it when
it ends, for any reason: a usage error exits 2 with its one line and leaves no process behind);
they have touched no study. Once a child has its work, :func:`~lightopt.sweep.study.run_workers`
owns it, as any child it started. A child that finished its work exits at once (``os._exit`` after
flushing its queue and streams): the interpreter's teardown of torch and Lightning took seconds on
a busy machine, and the parent waits for its children before it draws the study's plots.

``LIGHTOPT_PRESTART=0`` turns this off (the children then start with the sweep, as before); the
benchmark ``benchmarks/workers.py`` uses it to compare.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = [
    "PRESTART_ENV",
    "Prestarted",
    "close_prestarted",
    "prestart_workers",
    "signals_ignored",
    "take_prestarted",
    "user_modules",
]

PRESTART_ENV = "LIGHTOPT_PRESTART"

_pool: Prestarted | None = None


class Prestarted:
    """Children ``1 .. N-1`` of a ``--workers N`` sweep, importing or waiting for their work.

    ``messages`` and ``stop`` are the queue and event :func:`~lightopt.sweep.study.run_workers`
    uses with them: a child can only inherit them at its start.
    """

    def __init__(self, workers: int, files: Sequence[str] = ()) -> None:
        context = multiprocessing.get_context("spawn")
        self.messages, self.stop = context.Queue(), context.Event()
        self.children: list[Any] = []
        self._pipes: list[Any] = []
        self.sent = False
        with signals_ignored():  # the children inherit it: no traceback from an interrupt during their imports
            for index in range(1, workers):
                reader, writer = context.Pipe(duplex=False)
                child = context.Process(
                    target=_wait_for_work,
                    name=f"lightopt-worker-{index}",
                    daemon=True,
                    args=(reader, self.messages, self.stop, index, os.getpid(), tuple(files)),
                )
                child.start()
                reader.close()  # the child's end: its EOF is this process's end closing
                self.children.append(child)
                self._pipes.append(writer)

    @property
    def workers(self) -> int:
        """N: the children and this process."""
        return len(self.children) + 1

    def send(self, target: Any, work: dict[str, Any]) -> None:
        """Give every child its work: it calls ``target(messages, index, stop=stop, **work)`` (no ``work["stop"]``).

        ``target`` is pickled by reference: :func:`~lightopt.sweep.study.run_workers` sends its child's loop.
        """
        work = {key: value for key, value in work.items() if key != "stop"}
        self.sent = True
        for pipe in self._pipes:
            try:
                pipe.send((target, work))
            except (BrokenPipeError, OSError):  # the child died already: run_workers reaps it and says so
                pass
            finally:
                pipe.close()

    def close(self) -> None:
        """End children that never got their work (they touched no study): kill, reap. Idempotent."""
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.close()
        if self.sent:
            return  # run_workers owns them
        self.stop.set()
        for child in self.children:
            if child.pid is not None and child.exitcode is None:
                child.kill()  # still importing, with signals ignored: SIGKILL is the only prompt way
        for child in self.children:
            if child.pid is not None:
                child.join()


def prestart_workers(workers: int | None, files: Sequence[str] = ()) -> Prestarted | None:
    """Start the ``workers - 1`` children of a sweep now (nothing for fewer than 2, or with ``LIGHTOPT_PRESTART=0``).

    ``files`` (the sweep file and ``--config`` files) name the user's modules the children import
    while they wait. A second call replaces the first's children.
    """
    global _pool
    close_prestarted()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 2 or os.environ.get(PRESTART_ENV) == "0":
        return None
    _pool = Prestarted(workers, files)
    return _pool


def take_prestarted(children: int) -> Prestarted | None:
    """The prestarted children if there are ``children`` of them (then the caller owns them), else None.

    Children of another count are closed: the sweep starts its own.
    """
    global _pool
    pool, _pool = _pool, None
    if pool is None:
        return None
    if len(pool.children) != children:
        pool.close()
        return None
    return pool


def close_prestarted() -> None:
    """End the prestarted children no sweep took (see :meth:`Prestarted.close`)."""
    global _pool
    pool, _pool = _pool, None
    if pool is not None:
        pool.close()


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM inside the block: children started there inherit it (no traceback mid-import)."""
    saved = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def _wait_for_work(reader: Any, messages: Any, stop: Any, index: int, parent: int, files: tuple[str, ...]) -> None:
    """A prestarted child: import, wait for the work, run it as a child that run_workers started would."""
    with contextlib.suppress(Exception):  # best effort: a trial imports them again and reports a failure
        _preload()
    _import_quietly(user_modules(files))
    while True:
        if stop.is_set() or os.getppid() != parent:
            return
        try:
            if reader.poll(0.5):
                target, work = reader.recv()
                break
        except (EOFError, OSError):  # the parent closed its end: no sweep for this child
            return
    reader.close()
    code = 0
    try:
        target(messages, index, stop=stop, **work)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    _exit_now(messages, code)


def _exit_now(messages: Any, code: int) -> None:
    """Exit without the interpreter's teardown of torch and Lightning (seconds on a busy machine; the parent waited).

    Everything the worker wrote is written by then: Optuna's storage writes are synchronous and each
    trial's loggers are closed at the end of its fit; the queue to the parent and the standard
    streams are flushed here first.
    """
    import sys

    messages.close()
    messages.join_thread()  # the feeder thread has handed every message to the pipe
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _preload() -> None:
    """Import what every worker needs before its first trial: the study's loop, a trial's fit (torch, Lightning)
    and the run config's builder (jsonargparse, Lightning's CLI)."""
    from lightopt.runconfig import build
    from lightopt.sweep.study._runner import run_sweep
    from lightopt.sweep.study._workers import run_workers
    from lightopt.sweep.trial import fit_trial

    del build, run_sweep, run_workers, fit_trial


def _import_quietly(modules: Sequence[str]) -> None:
    """Import what can be imported; a failure is the trial's to report (it imports them again)."""
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except Exception:  # best effort: the parent reports a bad class path as one line
            continue


def user_modules(files: Sequence[str]) -> list[str]:
    """The modules of the ``class_path`` entries of the YAML ``files`` (unreadable files and refused modules left out).

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "s.yaml"
        >>> _ = f.write_text("model: {class_path: examples.digits.DigitsMLP}\\nx: {class_path: os.system}\\n")
        >>> user_modules([str(f)])
        ['examples.digits']
    """
    from lightopt.runconfig import REFUSED_MODULES, read_yaml

    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            path = node.get("class_path")
            if isinstance(path, str) and "." in path.strip("."):
                module = path.rpartition(".")[0]
                if (
                    module.split(".", 1)[0] not in REFUSED_MODULES
                    and not module.startswith("_")
                    and module not in found
                ):
                    found.append(module)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for file in files:
        try:
            walk(read_yaml(file)[0])
        except Exception:  # the parent reads the file and reports what is wrong with it
            continue
    return found
