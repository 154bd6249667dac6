"""Create or resume a study from a sweep file and run its trials, one line of progress per trial.

Storage: by default an Optuna journal file, ``<log_dir>/<study name>/study.journal``
(``JournalStorage`` over :class:`~lightopt.sweep.journal.JournalFile`, Optuna's file backend with a
lock that names its holder and a tail that is never built on when damaged): one append-only file,
no server, safe for several processes on one machine, so later multi-worker runs share it as is. SQLite
would also be embedded, but concurrent writers there meet "database is locked". Any Optuna
database URL (``sqlite:///...``, ``postgresql://...``) or a path to a journal file may be given
instead. Either is wrapped in :class:`~lightopt.sweep.storage.GuardedStorage` (trials created with
their worker recorded; a database outage retried for a bounded time).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from lightopt.sweep import recovery
from lightopt.sweep.build import torch_threads
from lightopt.sweep.coordinates import config_values
from lightopt.sweep.config import StudySpec, SweepConfigError, SweepFile, check_threads, check_timeout
from lightopt.sweep.devices import plan
from lightopt.sweep.distributed import trial_devices
from lightopt.sweep.failures import FailureWatch
from lightopt.sweep.locate import JOURNAL_NAME, best_trial, open_storage, optuna_quiet, study_dir
from lightopt.sweep.objective import Objective
from lightopt.sweep.processes import process_alive
from lightopt.sweep.resume import check_resume, describe_space
from lightopt.sweep.tally import StudyTally, best_of
from lightopt.sweep.worker import run_worker
from lightopt.sweep.workers import run_workers
from lightopt.tensorboard import StudyRun

__all__ = ["SweepResult", "run_sweep", "open_storage", "open_study", "study_dir", "best_trial", "JOURNAL_NAME"]

_optuna_quiet = optuna_quiet  # the name the worker modules import


@dataclass(frozen=True)
class SweepResult:
    study: optuna.Study
    study_dir: Path
    storage: str
    ran: int
    stopped: str | None = None  # why the sweep stopped early (its trials all failed the same way)


def open_study(
    sweep: SweepFile,
    storage_url: str | None = None,
    name: str | None = None,
    *,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> tuple[optuna.Study, str]:
    """Create the sweep's study, or load it when it exists (same direction, metric and search space required).

    ``sampler``/``pruner`` objects replace the file's ``study.sampler``/``study.pruner``.
    """
    spec = sweep.study
    name = name or spec.name
    url = storage_url if storage_url is not None else spec.storage
    storage, described = open_storage(url, study_dir(spec.log_dir, name), where="--storage" if storage_url else "study.storage",
                                       file=None if storage_url else sweep.path)
    check_resume(storage, name, sweep)  # before anything is written
    study = optuna.create_study(
        storage=storage, study_name=name, direction=spec.direction, load_if_exists=True,
        sampler=sampler or spec.make_sampler(sweep.search), pruner=pruner or spec.make_pruner(),
    )
    with warnings.catch_warnings():  # Optuna calls it experimental; optuna-dashboard then names the objective
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([spec.metric])
    study.set_user_attr("lightopt", {"metric": spec.metric, "seed": spec.seed, "file": sweep.path,
                                     "space": describe_space(sweep.search)})
    return study, described


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
    > 1 runs the trials in that many processes (:mod:`lightopt.sweep.workers`), one torch thread
    each unless ``threads`` says otherwise. Trials left RUNNING by a dead worker of this machine are
    failed and retried (:mod:`lightopt.sweep.recovery`); Ctrl-C records the running trial and
    raises ``KeyboardInterrupt``. ``devices`` (``"0,1"`` or ``"auto"``) and ``trials_per_device``
    place the workers' trials on devices (:mod:`lightopt.sweep.devices`); ``workers`` then defaults
    to one per slot.
    """
    out = sys.stdout if out is None else out
    spec = sweep.study
    if spec is None:
        raise SweepConfigError("the file has no `study` block: add one (name, metric, n_trials, ...) to sweep.", sweep.path)
    total = spec.n_trials if n_trials is None else n_trials
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise SweepConfigError(f"`--n-trials` must be an integer >= 1, but got n_trials={total!r}.")
    try:
        check_timeout("--timeout", timeout)
        check_threads("--threads", threads)
    except ValueError as error:
        raise SweepConfigError(str(error)) from None
    slots = _device_slots(sweep, devices, trials_per_device, workers)
    workers = slots.workers if slots is not None else 1 if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SweepConfigError(f"`--workers` must be an integer >= 1, but got workers={workers!r}.")
    timeout = spec.timeout if timeout is None else timeout
    name = study_name or spec.name
    threads = spec.threads if threads is None else threads
    if workers > 1 and threads is None:
        threads = 1  # N workers on N cores
    url = storage if storage is not None else spec.storage
    with _optuna_quiet(), torch_threads(threads):
        study, described = open_study(sweep, storage, name, sampler=sampler, pruner=pruner)
        directory = study_dir(spec.log_dir, name)
        lock = recovery.lock_path(described, name)
        with recovery.HostLock(lock):
            _clean_scratch(directory)
            for trial in recovery.fail_dead_trials(study, retries=spec.retries):
                reason = study.trials[trial].user_attrs.get("fail_reason", "")
                if recovery.is_retryable(study.trials[trial]):
                    print(f"trial {trial} was left RUNNING by a worker that died: recorded as failed; it will be "
                          "retried (from its last checkpoint if it has one)", file=out, flush=True)
                else:  # it killed its worker every time (os._exit, a segfault, the OOM killer)
                    print(f"trial {trial} was left RUNNING by a worker that died: recorded as failed, {reason} "
                          "(study.retries sets how often it is retried)", file=out, flush=True)
        already = recovery.counted(study.get_trials(deepcopy=False))
        remaining = total - already
        if sampler is None and (already > 0 or "://" in described):
            study.sampler = spec.make_sampler(sweep.search, seed=run_sampler_seed(spec, already, "://" in described))
        limit = f", or for {timeout:g} s (timeout)" if timeout is not None and remaining > 0 else ""
        print(f"study {name!r}: {already} trial(s) in {described}; running up to {max(remaining, 0)} more "
              f"(n_trials={total}){limit}; logs in {directory}", file=out, flush=True)
        started = time.monotonic()
        watch = board = None
        if remaining <= 0:
            ran = 0
        elif workers > 1 or slots is not None:
            # the children get the URL with its password, through multiprocessing's pipe (never a command line)
            real = url if url is not None and "://" in url else described
            ran = run_workers(study, sweep, workers, out=out, total=total, storage=real, timeout=timeout,
                              threads=threads, sampler=sampler, pruner=pruner, slots=slots, retries=spec.retries)
        else:
            progress = _Progress(out, total, spec.metric)
            watch = FailureWatch(spec.stop_after_same_failures)
            board = StudyRun(directory)  # TensorBoard's study-level run, appended after each trial
            ran = run_worker(study, Objective(sweep, directory), total=total, lock=lock, timeout=timeout,
                             callbacks=[progress, board], failures=watch, retries=spec.retries)
        if ran:
            (board or StudyRun(directory)).write(study, plots=True)
        if board is not None:
            board.close()
    view = f"lightopt tensorboard {sweep.path}" if sweep.path and name == spec.name and storage is None else None
    print(summary(study, spec.metric, directory, described, view), file=out, flush=True)
    stopped = watch.stopped if watch is not None else None
    if stopped:
        print(stopped, file=out, flush=True)
    elif timeout is not None and 0 <= ran < remaining and time.monotonic() - started >= timeout:
        print(f"the timeout ({timeout:g} s) stopped the run: {ran} of the {remaining} trials it could run ran; "
              f"the same command goes on", file=out, flush=True)
    return SweepResult(study, directory, described, ran, stopped)


def _device_slots(sweep: SweepFile, devices: str | None, trials_per_device: int | None, workers: int | None) -> Any:
    """``--devices`` shared out between the workers (:func:`lightopt.sweep.devices.plan`), or None without it."""
    if devices is None:
        if trials_per_device is not None:
            raise SweepConfigError("`--trials-per-device` needs --devices: add --devices 0,1,... (or auto) to place "
                                   "trials on devices, or leave --trials-per-device out.")
        return None
    try:
        return plan(devices, trials_per_device=1 if trials_per_device is None else trials_per_device,
                    per_trial=trial_devices(sweep.run.get("trainer")), workers=workers)
    except (TypeError, ValueError) as error:
        raise SweepConfigError(str(error)) from None


def _clean_scratch(directory: Path) -> None:
    """Remove the plot-drawing scratch folders (``plots/.drawing-<pid>-*``) of processes that are gone (killed mid-draw)."""
    for scratch in (directory / "plots").glob(".drawing-*"):
        pid = scratch.name.split("-")[1]
        if scratch.is_dir() and not (pid.isdigit() and process_alive({"pid": int(pid)})):
            shutil.rmtree(scratch, ignore_errors=True)


def run_sampler_seed(spec: StudySpec, already: int, shared: bool) -> int | None:
    """The sampler's seed for a run that finds ``already`` trials in its study (None: unseeded).

    A new study on the embedded storage keeps the file's seed, so a one-worker sweep draws the same
    parameters every time. A resumed study mixes in the trial count, or a seeded random sampler would
    draw its first parameters again; a shared database (``shared``) also mixes in the host and process,
    since machines that start the same file together find the same count and would otherwise all draw
    the same parameters.

    Example:
        >>> from lightopt.sweep.config import StudySpec
        >>> spec = StudySpec(name="s", sampler={"name": "random", "seed": 3})
        >>> run_sampler_seed(spec, 0, False), run_sampler_seed(spec, 5, False) == run_sampler_seed(spec, 5, False)
        (3, True)
    """
    seed = spec.sampler.get("seed", spec.seed)
    if seed is None or (already == 0 and not shared):
        return seed
    entropy = [seed, already] + ([zlib.crc32(socket.gethostname().encode()), os.getpid()] if shared else [])
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def summary(study: optuna.Study, metric: str, directory: Path | None, storage: str | None,
            view: str | None = None) -> str:
    """The end-of-sweep report: counts, the best trial with its parameters and seed, where the logs are.

    ``view`` is the command that opens the logs in TensorBoard (default: TensorBoard's own on ``directory``).
    """
    trials = study.get_trials(deepcopy=False)
    counts = _counts(trials)
    lines = [f"study {study.study_name!r}: {len(trials)} trials: {counts['COMPLETE']} complete, "
             f"{counts['PRUNED']} pruned, {counts['FAIL']} failed"]
    best = best_of(trials, study.direction == optuna.study.StudyDirection.MINIMIZE)
    if best is None:
        lines.append("no completed trial yet")
    else:
        lines.append(f"best trial {best.number}: {metric}={best.value:.6g}  seed={best.user_attrs.get('seed')}")
        converted = config_values(best.params, best.user_attrs.get("config"))  # h sampled, α trained with
        lines += [f"  {key}: {value!r}" + (f"  ({key.partition(':')[0]} = {converted[key]!r})" if key in converted else "")
                  for key, value in best.params.items()]
        if best.user_attrs.get("log_dir"):
            lines.append(f"  logs: {best.user_attrs['log_dir']}")
    if directory is not None:
        lines.append(f"logs: {directory} (view: {view or f'tensorboard --logdir {directory}'})")
    if storage is not None:
        lines.append(f"storage: {storage}")
    return "\n".join(lines)


class _Progress:
    """One line after each trial: its outcome, the counts so far, the best value, the time elapsed.

    The counts and the best come from a :class:`~lightopt.sweep.tally.StudyTally`, so a line costs
    the same in a study of ten trials and of ten thousand.
    """

    def __init__(self, out: TextIO, total: int, metric: str) -> None:
        self.out, self.total, self.metric = out, total, metric
        self.start = time.perf_counter()
        self.tally: StudyTally | None = None

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.tally is None or self.tally.study is not study:
            self.tally = StudyTally(study)
        tally = self.tally
        tally.update()
        counts = tally.counts
        done = tally.done  # a trial retried after a crash counts once
        if trial.state == TrialState.COMPLETE:
            outcome = f"complete {self.metric}={trial.value:.4g}"
        elif trial.state == TrialState.PRUNED:
            outcome = f"pruned at step {trial.user_attrs.get('pruned_at', '?')}"
        else:
            outcome = f"failed: {trial.user_attrs.get('fail_reason', 'see the log')}"[:160]
        best = tally.best
        best_text = f"best {best.value:.4g} (trial {best.number})" if best else "best -"
        device = trial.user_attrs.get("device")  # --devices: the ids the trial ran on
        where = f" on device{'s' if ',' in device else ''} {device}" if device else ""
        print(
            f"[{done}/{self.total}] trial {trial.number}{where} {outcome} | {counts['COMPLETE']} complete, "
            f"{counts['PRUNED']} pruned, {counts['FAIL']} failed | {best_text} | "
            f"{time.perf_counter() - self.start:.1f} s",
            file=self.out, flush=True,
        )


def _counts(trials: list[FrozenTrial]) -> dict[str, int]:
    counts = {state.name: 0 for state in TrialState}
    for trial in trials:
        counts[trial.state.name] += 1
    return counts
