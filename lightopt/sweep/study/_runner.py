"""``lightopt sweep run``: create or resume a study from a sweep file and run its trials, one line per trial.

The pass, top to bottom: the flags are checked (:mod:`lightopt.sweep.spec`'s checks), a
``{range_test: true}`` entry gets its bounds (:func:`~lightopt.sweep.study.settle_range_test`: the
range test when the study is created, the recorded bounds after), the study is opened
(:func:`~lightopt.sweep.study.open_study`) under the host lock, dead workers' trials are
failed (:mod:`lightopt.sweep.study`'s recovery), a warm start copies another study's trials and
``study.enqueue`` queues known settings (:func:`~lightopt.sweep.study.warm_start`), the sampler
is reseeded for a resumed study, then the trial loop runs in this process
(:func:`~lightopt.sweep.study.run_worker`) or in worker processes
(:func:`~lightopt.sweep.study.run_workers`), each trial an
:class:`~lightopt.sweep.trial.Objective`; the study's TensorBoard run and the summary close it.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import optuna

from lightopt import _validation
from lightopt.sweep.spec import SweepConfigError, SweepFile, check_n_trials, check_threads, check_timeout
from lightopt.sweep.store import HostLock, counted, is_retryable, lock_path, optuna_quiet, process_alive, study_dir
from lightopt.sweep.study._board import StudyRun, sweeping
from lightopt.sweep.study._devices import plan
from lightopt.sweep.study._loop import run_worker
from lightopt.sweep.study._open import open_study, run_sampler_seed
from lightopt.sweep.study._progress import Progress
from lightopt.sweep.study._range_bounds import settle_range_test
from lightopt.sweep.study._recovery import fail_dead_trials
from lightopt.sweep.study._stop_rule import FailureWatch
from lightopt.sweep.study._summary import summary
from lightopt.sweep.study._warm import enqueue_settings, warm_start
from lightopt.sweep.study._workers import run_workers
from lightopt.sweep.trial import Objective, torch_threads, trial_devices

__all__ = ["SweepResult", "run_sweep"]


@dataclass(frozen=True)
class SweepResult:
    study: optuna.Study
    study_dir: Path
    storage: str
    ran: int
    stopped: str | None = None  # why the sweep stopped early (its trials all failed the same way)


def run_sweep(
    sweep: SweepFile,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    workers: int | None = None,
    out: TextIO | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    threads: int | None = None,
    devices: str | None = None,
    trials_per_device: int | None = None,
) -> SweepResult:
    """Run the sweep's study up to ``n_trials`` trials in all (default ``study.n_trials``).

    Trials recorded by earlier runs count, whatever their state, so running again resumes.
    ``timeout`` (seconds, default ``study.timeout``) stops starting new trials. Prints one line per
    trial to ``out`` (default stdout) and a summary at the end. ``sampler``/``pruner`` objects
    replace the file's (e.g. a custom pruner); ``threads`` replaces ``study.threads``. ``workers``
    > 1 runs the trials in that many processes (:func:`~lightopt.sweep.study.run_workers`), one torch thread
    each unless ``threads`` says otherwise. Trials left RUNNING by a dead worker of this machine are
    failed and retried (:func:`~lightopt.sweep.study.fail_dead_trials`); Ctrl-C records the running trial and
    raises ``KeyboardInterrupt``. ``devices`` (``"0,1"`` or ``"auto"``) and ``trials_per_device``
    place the workers' trials on devices (:func:`~lightopt.sweep.study.plan`); ``workers`` then defaults
    to one per slot.
    """
    out = sys.stdout if out is None else out
    spec = sweep.study
    if spec is None:
        raise SweepConfigError(
            "the file has no `study` block: add one (name, metric, n_trials, ...) to sweep.", sweep.path
        )
    total = spec.n_trials if n_trials is None else n_trials
    try:
        check_n_trials("--n-trials", total)
        check_timeout("--timeout", timeout)
        check_threads("--threads", threads)
    except ValueError as error:
        raise SweepConfigError(str(error)) from None
    slots = _device_slots(sweep, devices, trials_per_device, workers)
    workers = slots.workers if slots is not None else 1 if workers is None else workers
    if not _validation.is_integer(workers, low=1):
        raise SweepConfigError(f"`--workers` must be an integer >= 1, but got workers={workers!r}.")
    timeout = spec.timeout if timeout is None else timeout
    name = study_name or spec.name
    threads = spec.threads if threads is None else threads
    if workers > 1 and threads is None:
        threads = 1  # N workers on N cores
    url = storage if storage is not None else spec.storage
    with optuna_quiet(), torch_threads(threads):
        sweep, tested = settle_range_test(sweep, storage, name, out)  # a {range_test: true} entry's bounds
        study, described = open_study(sweep, storage, name, sampler=sampler, pruner=pruner, range_test=tested)
        directory = study_dir(spec.log_dir, name)
        lock = lock_path(described, name)
        with HostLock(lock):
            _clean_scratch(directory)
            for trial in fail_dead_trials(study, retries=spec.retries):
                reason = study.trials[trial].user_attrs.get("fail_reason", "")
                if is_retryable(study.trials[trial]):
                    print(
                        f"trial {trial} was left RUNNING by a worker that died: recorded as failed; it will be "
                        "retried (from its last checkpoint if it has one)",
                        file=out,
                        flush=True,
                    )
                else:  # it killed its worker every time (os._exit, a segfault, the OOM killer)
                    print(
                        f"trial {trial} was left RUNNING by a worker that died: recorded as failed, {reason} "
                        "(study.retries sets how often it is retried)",
                        file=out,
                        flush=True,
                    )
            copied = warm_start(study, sweep, storage)  # once, before the first trial; then the known settings
            if copied:
                print(copied, file=out, flush=True)
            enqueued = enqueue_settings(study, spec.enqueue)
            if enqueued:
                print(
                    f"study.enqueue: {len(enqueued)} setting(s) run first ({', '.join(enqueued)})", file=out, flush=True
                )
        already = counted(study.get_trials(deepcopy=False))
        remaining = total - already
        if sampler is None and (already > 0 or "://" in described):
            study.sampler = spec.make_sampler(sweep.search, seed=run_sampler_seed(spec, already, "://" in described))
        limit = f", or for {timeout:g} s (timeout)" if timeout is not None and remaining > 0 else ""
        print(
            f"study {name!r}: {already} trial(s) in {described}; running up to {max(remaining, 0)} more "
            f"(n_trials={total}){limit}; logs in {directory}",
            file=out,
            flush=True,
        )
        started = time.monotonic()
        watch = board = None
        # the children and the drawing processes get the URL with its password through a pipe, never a command line
        real = url if url is not None and "://" in url else described
        with sweeping(directory) as last:
            if remaining <= 0:
                ran = 0
            elif workers > 1 or slots is not None:
                ran = run_workers(
                    study,
                    sweep,
                    workers,
                    out=out,
                    total=total,
                    storage=real,
                    timeout=timeout,
                    threads=threads,
                    sampler=sampler,
                    pruner=pruner,
                    slots=slots,
                    retries=spec.retries,
                    start=started,
                )
            else:
                progress = Progress(out, total, spec.metric, started)
                watch = FailureWatch(spec.stop_after_same_failures)
                board = StudyRun(directory, storage=real)  # TensorBoard's study-level run, appended after each trial
                ran = run_worker(
                    study,
                    Objective(sweep, directory),
                    total=total,
                    lock=lock,
                    timeout=timeout,
                    callbacks=[progress, board],
                    failures=watch,
                    retries=spec.retries,
                )
            board = board or StudyRun(directory, storage=real)
            if last() and (ran or board.behind(study)):  # the last sweep of the study here draws the final plots
                board.write(study, plots=True)
        board.close()
    view = f"lightopt tensorboard {sweep.path}" if sweep.path and name == spec.name and storage is None else None
    print(summary(study, spec.metric, directory, described, view), file=out, flush=True)
    stopped = watch.stopped if watch is not None else None
    if stopped:
        print(stopped, file=out, flush=True)
    elif timeout is not None and 0 <= ran < remaining and time.monotonic() - started >= timeout:
        print(
            f"the timeout ({timeout:g} s) stopped the run: {ran} of the {remaining} trials it could run ran; "
            f"the same command goes on",
            file=out,
            flush=True,
        )
    return SweepResult(study, directory, described, ran, stopped)


def _device_slots(sweep: SweepFile, devices: str | None, trials_per_device: int | None, workers: int | None) -> Any:
    """``--devices`` shared out between the workers (:func:`~lightopt.sweep.study.plan`), or None without it."""
    if devices is None:
        if trials_per_device is not None:
            raise SweepConfigError(
                "`--trials-per-device` needs --devices: add --devices 0,1,... (or auto) to place "
                "trials on devices, or leave --trials-per-device out."
            )
        return None
    try:
        return plan(
            devices,
            trials_per_device=1 if trials_per_device is None else trials_per_device,
            per_trial=trial_devices(sweep.run.get("trainer")),
            workers=workers,
        )
    except (TypeError, ValueError) as error:
        raise SweepConfigError(str(error)) from None


def _clean_scratch(directory: Path) -> None:
    """Remove the plot-drawing scratch folders (``plots/.drawing-<pid>-*``) of processes gone (killed mid-draw)."""
    for scratch in (directory / "plots").glob(".drawing-*"):
        pid = scratch.name.split("-")[1]
        if scratch.is_dir() and not (pid.isdigit() and process_alive({"pid": int(pid)})):
            shutil.rmtree(scratch, ignore_errors=True)
