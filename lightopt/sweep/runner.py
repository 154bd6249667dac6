"""Create or resume a study from a sweep file and run its trials, one line of progress per trial.

Storage: by default an Optuna journal file, ``<log_dir>/<study name>/study.journal``
(``JournalStorage(JournalFileBackend(...))``): one append-only file, no server, safe for several
processes on one machine (it takes a file lock), so later multi-worker runs share it as is. SQLite
would also be embedded, but concurrent writers there meet "database is locked". Any Optuna
database URL (``sqlite:///...``, ``postgresql://...``) or a path to a journal file may be given
instead.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from lightopt.sweep.build import torch_threads
from lightopt.sweep.config import SweepConfigError, SweepFile, check_threads, check_timeout
from lightopt.sweep.objective import Objective, TrialFailed
from lightopt.tensorboard import StudyRun

__all__ = ["SweepResult", "run_sweep", "open_storage", "open_study", "study_dir", "JOURNAL_NAME"]

JOURNAL_NAME = "study.journal"


@dataclass(frozen=True)
class SweepResult:
    study: optuna.Study
    study_dir: Path
    storage: str
    ran: int


def study_dir(log_dir: str | Path, name: str) -> Path:
    """Where a study's trial logs (``trial_NNNN/``) and default journal file live."""
    return Path(log_dir) / name


def open_storage(
    url: str | None, default_dir: Path, *, create: bool = True, where: str = "study.storage", file: str | None = None
) -> tuple[BaseStorage, str]:
    """The storage for ``url`` (None: the default journal file under ``default_dir``) and its description.

    ``create=False`` refuses to make a new file (for ``show`` and ``best``). Raises
    :class:`SweepConfigError` naming ``where`` when it cannot be opened.
    """
    if url is None or "://" not in url:
        path = default_dir / JOURNAL_NAME if url is None else Path(url)
        if not create and not path.is_file():
            raise SweepConfigError(f"`{where}`: no study journal at {path}; give the sweep file or --storage.", file)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = optuna.storages.journal.JournalFileBackend(str(path))
            return optuna.storages.JournalStorage(backend), str(path)
        except OSError as error:
            raise SweepConfigError(f"`{where}` cannot be opened: {error}", file) from None
    try:
        return optuna.storages.RDBStorage(url), url
    except Exception as error:  # noqa: BLE001 - drivers raise their own types; all mean "unreachable"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SweepConfigError(f"`{where}` {url!r} cannot be opened: {reason}", file) from None


def open_study(
    sweep: SweepFile,
    storage_url: str | None = None,
    name: str | None = None,
    *,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> tuple[optuna.Study, str]:
    """Create the sweep's study, or load it when it exists (same direction required).

    ``sampler``/``pruner`` objects replace the file's ``study.sampler``/``study.pruner``.
    """
    spec = sweep.study
    name = name or spec.name
    url = storage_url if storage_url is not None else spec.storage
    storage, described = open_storage(url, study_dir(spec.log_dir, name), where="--storage" if storage_url else "study.storage",
                                       file=None if storage_url else sweep.path)
    study = optuna.create_study(
        storage=storage, study_name=name, direction=spec.direction, load_if_exists=True,
        sampler=sampler or spec.make_sampler(sweep.search), pruner=pruner or spec.make_pruner(),
    )
    if study.direction.name.lower() != spec.direction:
        raise SweepConfigError(
            f"`study.direction` must match the stored study {name!r}, which is {study.direction.name.lower()}, "
            f"but got direction={spec.direction!r}.", sweep.path, "study.direction",
        )
    study.set_user_attr("lightopt", {"metric": spec.metric, "seed": spec.seed, "file": sweep.path})
    return study, described


def run_sweep(
    sweep: SweepFile,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    workers: int = 1,
    out: TextIO | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    threads: int | None = None,
) -> SweepResult:
    """Run the sweep's study up to ``n_trials`` trials in all (default ``study.n_trials``).

    Trials recorded by earlier runs count, whatever their state, so running again resumes.
    ``timeout`` (seconds, default ``study.timeout``) stops starting new trials. Prints one line per
    trial to ``out`` (default stdout) and a summary at the end. ``sampler``/``pruner`` objects
    replace the file's (e.g. a custom pruner); ``threads`` replaces ``study.threads``.
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
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SweepConfigError(f"`--workers` must be an integer >= 1, but got workers={workers!r}.")
    if workers > 1:
        raise SweepConfigError(f"`--workers` > 1 is not yet supported, but got workers={workers}; use --workers 1.")
    timeout = spec.timeout if timeout is None else timeout
    name = study_name or spec.name
    threads = spec.threads if threads is None else threads
    with _optuna_quiet(), torch_threads(threads):
        study, described = open_study(sweep, storage, name, sampler=sampler, pruner=pruner)
        directory = study_dir(spec.log_dir, name)
        already = len(study.trials)
        remaining = total - already
        print(f"study {name!r}: {already} trial(s) in {described}; running up to {max(remaining, 0)} more "
              f"(n_trials={total}); logs in {directory}", file=out, flush=True)
        if remaining > 0:
            progress = _Progress(out, total, spec.metric)
            board = StudyRun(directory)  # TensorBoard's study-level run, rewritten after each trial
            study.optimize(
                Objective(sweep, directory), n_trials=remaining, timeout=timeout, catch=(TrialFailed,),
                callbacks=[optuna.study.MaxTrialsCallback(total, states=None), progress, board], gc_after_trial=False,
            )
            board.write(study, plots=True)
    ran = len(study.trials) - already
    print(summary(study, spec.metric, directory, described), file=out, flush=True)
    return SweepResult(study, directory, described, ran)


def summary(study: optuna.Study, metric: str, directory: Path | None, storage: str | None) -> str:
    """The end-of-sweep report: counts, the best trial with its parameters and seed, where the logs are."""
    counts = _counts(study.trials)
    lines = [f"study {study.study_name!r}: {len(study.trials)} trials: {counts['COMPLETE']} complete, "
             f"{counts['PRUNED']} pruned, {counts['FAIL']} failed"]
    best = best_trial(study)
    if best is None:
        lines.append("no completed trial yet")
    else:
        lines.append(f"best trial {best.number}: {metric}={best.value:.6g}  seed={best.user_attrs.get('seed')}")
        lines += [f"  {key}: {value!r}" for key, value in best.params.items()]
        if best.user_attrs.get("log_dir"):
            lines.append(f"  logs: {best.user_attrs['log_dir']}")
    if directory is not None:
        lines.append(f"logs: {directory} (tensorboard --logdir {directory})")
    if storage is not None:
        lines.append(f"storage: {storage}")
    return "\n".join(lines)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best COMPLETE trial, or None."""
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not complete:
        return None
    pick = min if study.direction == optuna.study.StudyDirection.MINIMIZE else max
    return pick(complete, key=lambda t: (t.value, -t.number) if pick is max else (t.value, t.number))


class _Progress:
    """One line after each trial: its outcome, the counts so far, the best value, the time elapsed."""

    def __init__(self, out: TextIO, total: int, metric: str) -> None:
        self.out, self.total, self.metric = out, total, metric
        self.start = time.perf_counter()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trials = study.trials
        counts = _counts(trials)
        done = sum(counts[s] for s in ("COMPLETE", "PRUNED", "FAIL"))
        if trial.state == TrialState.COMPLETE:
            outcome = f"complete {self.metric}={trial.value:.4g}"
        elif trial.state == TrialState.PRUNED:
            outcome = f"pruned at step {trial.user_attrs.get('pruned_at', '?')}"
        else:
            outcome = f"failed: {trial.user_attrs.get('fail_reason', 'see the log')}"[:160]
        best = best_trial(study)
        best_text = f"best {best.value:.4g} (trial {best.number})" if best else "best -"
        print(
            f"[{done}/{self.total}] trial {trial.number} {outcome} | {counts['COMPLETE']} complete, "
            f"{counts['PRUNED']} pruned, {counts['FAIL']} failed | {best_text} | "
            f"{time.perf_counter() - self.start:.1f} s",
            file=self.out, flush=True,
        )


def _counts(trials: list[FrozenTrial]) -> dict[str, int]:
    counts = {state.name: 0 for state in TrialState}
    for trial in trials:
        counts[trial.state.name] += 1
    return counts


@contextlib.contextmanager
def _optuna_quiet() -> Iterator[None]:
    """Optuna's per-trial log lines (and failure tracebacks) are replaced by lightopt's progress lines."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


