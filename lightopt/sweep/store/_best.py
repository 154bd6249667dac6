"""The one rule for "better" in a study's direction, the best trial, and the one trial-directory name.

Every place that compares values (the running tally, the end-of-sweep summary, the study's
TensorBoard run, the pruning callback's best value, ``sweep reproduce``'s spread, ``sweep best --seeds``'s
candidates) asks :func:`is_better`; every place that names a trial's folder asks :func:`trial_dir`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from lightopt.sweep.store._outcomes import is_copied

__all__ = ["TRIAL_DIR", "best_of", "best_trial", "is_better", "is_minimize", "top_trials", "trial_dir"]

#: The name of trial ``number``'s folder under the study's directory (TensorBoard run, checkpoints, error.txt).
TRIAL_DIR = "trial_{number:04d}"


def trial_dir(study_dir: str | Path, number: int) -> Path:
    """Trial ``number``'s folder: ``<study_dir>/trial_NNNN``.

    Example:
        >>> trial_dir("runs/s", 7).as_posix()
        'runs/s/trial_0007'
    """
    return Path(study_dir) / TRIAL_DIR.format(number=number)


def is_minimize(study: optuna.Study) -> bool:
    """Whether ``study`` minimizes its value."""
    return study.direction == optuna.study.StudyDirection.MINIMIZE


def is_better(value: float, best: float | None, minimize: bool) -> bool:
    """Whether ``value`` is strictly better than ``best`` (None: anything is) in the direction ``minimize`` says.

    Example:
        >>> is_better(1.0, 2.0, minimize=True), is_better(1.0, 2.0, minimize=False), is_better(1.0, None, True)
        (True, False, True)
    """
    if best is None:
        return True
    return value < best if minimize else value > best


def best_of(trials: Iterable[FrozenTrial], minimize: bool, best: FrozenTrial | None = None) -> FrozenTrial | None:
    """The best COMPLETE trial with a value among ``trials`` and ``best`` (ties: the lower number), or None.

    Trials copied from another study (``study.warm_start``, :func:`~lightopt.sweep.store.is_copied`)
    are never the best: the best trial is chosen among the trials run in this study, the ones with
    a run config and logs here. (Optuna's own ``study.best_trial`` and its samplers see them all.)

    Example:
        >>> from optuna.trial import create_trial
        >>> trials = [create_trial(value=v) for v in (3.0, 1.0, 1.0)]
        >>> for number, trial in enumerate(trials):
        ...     trial.number = number
        >>> best_of(trials, minimize=True).number, best_of(trials, minimize=False).number
        (1, 0)
    """
    for trial in trials:
        if trial.state != TrialState.COMPLETE or trial.value is None or is_copied(trial):
            continue
        if best is None:
            best = trial
            continue
        if is_better(trial.value, best.value, minimize) or (trial.value == best.value and trial.number < best.number):
            best = trial
    return best


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best COMPLETE trial run in this study (ties: the lower number), or None; only that trial is copied."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = best_of(complete, is_minimize(study))
    return None if best is None else copy.deepcopy(best)


def top_trials(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The ``k`` best COMPLETE trials with a value, best first, by :func:`best_of`'s rule (ties: the lower number).

    ``top_trials(study, 1)`` is ``[best_trial(study)]``; fewer than ``k`` when fewer are complete.

    Example:
        >>> study = optuna.create_study(direction="minimize")
        >>> for value in (3.0, 1.0, 2.0, 1.0):
        ...     study.add_trial(optuna.trial.create_trial(value=value))
        >>> [t.number for t in top_trials(study, 3)], best_trial(study).number
        ([1, 3, 2], 1)
    """
    left = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and not is_copied(t)
    ]
    minimize, top = is_minimize(study), []
    while left and len(top) < k:  # k is small (``sweep best --seeds``'s candidates): k passes of the one rule
        best = best_of(left, minimize)
        top.append(copy.deepcopy(best))
        left = [t for t in left if t is not best]
    return top
