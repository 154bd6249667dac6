"""``--workers N``: N worker processes on one study, this one and N - 1 children; progress and clean-up here.

The process that runs ``lightopt sweep run`` is worker 0: it runs
:func:`~lightopt.sweep.study.run_worker`, the loop a single worker runs, while N - 1 children
(``multiprocessing``'s spawn context, so nothing of the parent's torch state is shared) open the
same study on the same storage and run the same loop. A child's sampler gets its own seed
(``derive_seed(the study's, the worker's index)``, the sweep's one seed scheme) so that seeded
samplers do not draw the same parameters in every worker. Children send their progress lines to
the parent through a queue; a thread of the parent prints them as they arrive, between its own.

The storage reaches the children through multiprocessing's pipe, never a command line: a database
URL keeps its password (the parent prints it redacted only).

Ctrl-C and SIGTERM: in a terminal every process gets SIGINT; the parent also forwards it to the
children and sets their stop event. Each worker records its running trial as FAIL with
``fail_reason: "interrupted"`` and stops; a child still alive after :data:`GRACE_S` seconds is
killed, and its trial is then failed by the parent, as after a crash. A child starts with both
signals ignored (so an interrupt during its imports prints no traceback) and, outside its trial
loop, only notes them. A child whose parent is gone stops before its next trial.

A child that dies (``kill -9``, the OOM killer) is reaped at once and its trial, no longer RUNNING
for anyone, is retried by a live worker (the parent finishes any left when the children are gone).

With ``--devices`` (:func:`~lightopt.sweep.study.plan`) every worker is a child, started with its
``CUDA_VISIBLE_DEVICES`` already in its environment (this process has imported torch, and may have
touched CUDA, so it runs no trial itself); this process prints the progress, rewrites the
study's TensorBoard run after each trial, and treats SIGTERM as Ctrl-C, so a scheduler's SIGTERM
records every running trial as interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import queue as queue_module
import signal
import threading
import time
from typing import Any, TextIO

import optuna

from lightopt._compat import stop_requested
from lightopt.sweep.spec import SweepConfigError, SweepFile, derive_seed
from lightopt.sweep.store import HostLock, StorageError, lock_path, optuna_quiet, study_dir
from lightopt.sweep.study._board import StudyRun
from lightopt.sweep.study._devices import DeviceSlots
from lightopt.sweep.study._loop import run_worker
from lightopt.sweep.study._open import open_study
from lightopt.sweep.study._prestart import signals_ignored, take_prestarted
from lightopt.sweep.study._progress import Progress
from lightopt.sweep.study._recovery import fail_dead_trials
from lightopt.sweep.study._stop_rule import FailureWatch
from lightopt.sweep.trial import DeviceObjective, Objective, assigned_devices, release_device, torch_threads

__all__ = ["run_workers", "GRACE_S"]

GRACE_S = 20.0  # how long Ctrl-C waits for the children to record their trials before killing them


def run_workers(
    study: optuna.Study,
    sweep: SweepFile,
    workers: int,
    *,
    out: TextIO,
    total: int,
    storage: str,
    timeout: float | None = None,
    threads: int | None = 1,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    slots: DeviceSlots | None = None,
    retries: int | None = None,
    start: float | None = None,
) -> int:
    """Run ``study`` here and in ``workers - 1`` children until it counts ``total`` trials; returns how many ran.

    With ``slots`` (``--devices``) all ``workers`` are children, each on its device ids.

    ``storage`` is the journal file path or database URL of ``study`` (with its password), which
    every child opens. A child's error (a bad metric, an exception outside a trial) stops the
    others and is raised here as :class:`~lightopt.sweep.spec.SweepConfigError` (a storage failure
    as :class:`~lightopt.sweep.store.StorageError`); Ctrl-C raises ``KeyboardInterrupt``.
    ``retries``: see :func:`~lightopt.sweep.study.run_worker` (default ``study.retries``).
    ``start``: the ``time.monotonic()`` instant every worker's progress line counts its elapsed time
    from (default: now): one clock for all. Children prestarted by the command line
    (:func:`~lightopt.sweep.study.prestart_workers`) are used when there are ``workers - 1`` of them.
    """
    spec = sweep.study
    retries = spec.retries if retries is None else retries
    context = multiprocessing.get_context("spawn")
    ready = None if slots else take_prestarted(workers - 1)  # started with the command, imported by now
    messages = ready.messages if ready else context.Queue()
    stop = ready.stop if ready else context.Event()
    start = time.monotonic() if start is None else start
    args = dict(
        sweep=sweep,
        total=total,
        storage=storage,
        study_name=study.study_name,
        timeout=timeout,
        threads=threads,
        sampler=sampler,
        pruner=pruner,
        parent=os.getpid(),
        stop=stop,
        retries=retries,
        start=start,
    )
    children = (
        ready.children
        if ready
        else [
            context.Process(
                target=_child, args=(messages, index), kwargs=args, name=f"lightopt-worker-{index}", daemon=True
            )
            for index in range(0 if slots else 1, workers)
        ]
    )
    printing = threading.Lock()

    def emit(line: str) -> None:
        with printing:
            print(line, file=out, flush=True)

    pump = _Pump(messages, children, emit)
    lock = lock_path(storage, study.study_name)
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    ran, interrupted = 0, False
    directory = study_dir(spec.log_dir, study.study_name)
    loop = dict(total=total, lock=lock, timeout=timeout, should_stop=pump.failed.is_set, retries=retries)
    started = time.monotonic()
    try:
        with signals_ignored():  # the children inherit it: no traceback from an interrupt during their imports
            for index, child in enumerate(children if not ready else ()):
                _start_child(child, index, slots)
        if ready:
            ready.send(_child, args)
        pump.start()
        if slots:  # every worker is a child, on its devices
            ran = _watch(study, children, pump, StudyRun(directory, storage=storage))
        else:
            ran = run_worker(
                study,
                Objective(sweep, directory),
                **loop,
                callbacks=[Progress(_Lines(emit), total, spec.metric, start), StudyRun(directory, storage=storage)],
                failures=FailureWatch(spec.stop_after_same_failures),
            )
        while any(child.is_alive() for child in children):  # their last trials
            for child in children:
                child.join(timeout=0.2)
        left = None if timeout is None else timeout - (time.monotonic() - started)
        finish_here = not slots  # with --devices this process runs no trial: its CUDA state is not a worker's
        if (
            finish_here
            and not pump.errors
            and not pump.interrupted
            and not stop_requested(study)
            and (left is None or left > 0)
        ):
            loop["timeout"] = left  # the trials of children that died, if any are left
            ran += run_worker(
                study,
                Objective(sweep, directory),
                **loop,
                callbacks=[Progress(_Lines(emit), total, spec.metric, start), StudyRun(directory, storage=storage)],
            )
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the children are told below; shut down without a second one
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        interrupted = True
        stop.set()
        _wait(children)
    except BaseException:
        stop.set()
        _wait(children)
        raise
    finally:
        _stop(children)
        pump.finish()
        with HostLock(lock):  # children killed mid-trial: none stays RUNNING
            fail_dead_trials(study, retries=retries)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if pump.errors:
        kind, text = pump.errors[0]
        raise (StorageError if kind == "storage" else SweepConfigError)(text)
    if interrupted or pump.interrupted:
        raise KeyboardInterrupt(
            "the running trials were recorded as failed (interrupted); run the same command again to retry them"
        )
    return ran + pump.ran


class _Lines:
    """A text stream that hands each complete line to ``emit``."""

    def __init__(self, emit: Any) -> None:
        self.emit, self.buffer = emit, ""

    def write(self, text: str) -> None:
        self.buffer += text
        while "\n" in self.buffer:
            line, self.buffer = self.buffer.split("\n", 1)
            if line.strip():
                self.emit(line)

    def flush(self) -> None:
        pass


class _Pump(threading.Thread):
    """Prints the children's progress lines as they come; on a child's error, tells everyone to stop."""

    def __init__(self, messages: Any, children: list[Any], emit: Any) -> None:
        super().__init__(name="lightopt-workers-pump", daemon=True)
        self.messages, self.children, self.emit = messages, children, emit
        self.ran, self.errors, self.interrupted = 0, [], False
        self.failed, self._done = threading.Event(), threading.Event()

    def run(self) -> None:
        told: set[int] = set()
        while not self._done.is_set() or not self.messages.empty():
            self._reap(told)
            try:
                kind, text = self.messages.get(timeout=0.2)
            except queue_module.Empty:
                continue
            if kind == "trial":
                self.ran += 1
                self.emit(text)
            elif kind in ("error", "storage"):
                self.errors.append((kind, text))
                self.failed.set()
                _signal_all(self.children, signal.SIGINT)  # the others stop too, recording their trials
            elif kind == "interrupted":
                self.interrupted = True

    def _reap(self, told: set[int]) -> None:
        """Wait for children that exited (no zombie stays), and say which died without a word."""
        for child in self.children:
            if child.pid is None or child.pid in told or child.is_alive():  # is_alive() reaps an exited child
                continue
            told.add(child.pid)
            index = child.name.rpartition("-")[2]  # lightopt-worker-<index>
            code = child.exitcode
            if code is not None and code < 0 and not self.interrupted and not self.failed.is_set():
                name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
                self.emit(f"worker {index} (pid {child.pid}) was killed ({name}); its trial will be retried")

    def finish(self) -> None:
        self._done.set()
        if self.is_alive():
            self.join()


def _child(
    messages: Any,
    index: int,
    *,
    sweep: SweepFile,
    total: int,
    storage: str,
    study_name: str,
    timeout: float | None,
    threads: int | None,
    sampler: Any,
    pruner: Any,
    parent: int,
    stop: Any,
    retries: int,
    start: float | None = None,
) -> None:
    """One worker process: the single-worker loop, its progress lines sent to the parent."""
    noted = []  # outside the trial loop a signal is only noted; the loop's own handler takes over inside it
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, frame: noted.append(signum))
    spec = sweep.study
    if sampler is None:
        sweep = dataclasses.replace(sweep, study=_reseeded(spec, index))
    else:
        sampler.reseed_rng()

    def should_stop() -> bool:
        return bool(noted) or stop.is_set() or os.getppid() != parent

    try:
        with optuna_quiet(), torch_threads(threads):
            if should_stop():
                raise KeyboardInterrupt
            study, _ = open_study(sweep, storage, study_name, sampler=sampler, pruner=pruner)
            directory = study_dir(spec.log_dir, study_name)
            objective, callbacks = _on_devices(Objective(sweep, directory))
            run_worker(
                study,
                objective,
                total=total,
                lock=lock_path(storage, study_name),
                timeout=timeout,
                callbacks=[
                    Progress(_Lines(lambda line: messages.put(("trial", line))), total, spec.metric, start),
                    *callbacks,
                ],
                should_stop=should_stop,
                failures=FailureWatch(spec.stop_after_same_failures),
                retries=retries,
            )
            if noted or stop.is_set():
                raise KeyboardInterrupt
    except KeyboardInterrupt as interrupt:
        messages.put(("interrupted", str(interrupt)))
        raise SystemExit(130) from None
    except StorageError as error:
        messages.put(("storage", f"worker {index}: {error}"))
        raise SystemExit(1) from None
    except Exception as error:
        messages.put(
            (
                "error",
                f"worker {index}: {type(error).__name__}: {error}"
                if not isinstance(error, ValueError)
                else f"worker {index}: {error}",
            )
        )
        raise SystemExit(1) from None


def _start_child(child: Any, index: int, slots: DeviceSlots | None) -> None:
    """Start child ``index`` (0-based among the children); with ``slots``, with its device ids in its environment.

    The spawn context starts a fresh interpreter with this process's environment, so the ids are
    set here around the start (and restored after): they are in place before the child imports torch.
    """
    if slots is None:
        child.start()
        return
    saved = {key: os.environ.get(key) for key in slots.environment(index)}
    os.environ.update(slots.environment(index))
    try:
        child.start()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _watch(study: optuna.Study, children: list[Any], pump: _Pump, board: StudyRun) -> int:
    """This process's part when every worker is a child: wait for them, rewriting ``board`` after each trial.

    SIGTERM (a scheduler's) is handled as Ctrl-C while waiting: the children are told to record
    their trials. Returns 0: the children's trials are counted by ``pump``.
    """

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = (
        signal.signal(signal.SIGTERM, interrupt) if threading.current_thread() is threading.main_thread() else None
    )
    seen = 0
    try:
        while any(child.is_alive() for child in children):
            for child in children:
                child.join(timeout=0.2)
            if pump.ran != seen:
                seen = pump.ran
                board.write(study)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _on_devices(objective: Any) -> tuple[Any, list[Any]]:
    """In a ``--devices`` worker: the objective whose trials record their device, and the callback that frees it."""
    ids = assigned_devices()
    if ids is None:
        return objective, []
    return DeviceObjective(objective, ids), [release_device]


def _reseeded(spec: Any, index: int) -> Any:
    """The study block with the sampler's seed derived for worker ``index`` (:func:`~lightopt.sweep.spec.derive_seed`;
    worker 0 keeps the single-worker seed)."""
    if index == 0:
        return spec
    seed = spec.sampler.get("seed", spec.seed)
    return dataclasses.replace(
        spec, sampler={**spec.sampler, "seed": None if seed is None else derive_seed(seed, index)}
    )


def _signal_all(children: list[Any], signum: int) -> None:
    for child in children:
        if child.is_alive() and child.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)


def _wait(children: list[Any]) -> None:
    """Tell the children to stop (SIGINT) and give them GRACE_S seconds to record their trials."""
    _signal_all(children, signal.SIGINT)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and any(child.is_alive() for child in children):
        time.sleep(0.1)


def _stop(children: list[Any]) -> None:
    """No stragglers: join the children, killing any still alive."""
    for child in children:
        if child.pid is None:
            continue
        child.join(timeout=1.0)
        if child.is_alive():
            child.kill()
            child.join()
