"""The one rule for "better" in a study's direction, the best trial, and the one trial-directory name.

Every place that compares values (the running tally, the end-of-sweep summary, the study's
TensorBoard run, the pruning callback's best value, ``sweep reproduce``'s spread, ``sweep best --seeds``'s
candidates) asks :func:`is_better`; with several objectives, every place that needs the Pareto front asks
:func:`pareto_front` (:func:`dominates`); every place that names a trial's folder asks :func:`trial_dir`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from lightopt.sweep.store._outcomes import is_copied

__all__ = [
    "TRIAL_DIR",
    "best_of",
    "best_trial",
    "dominates",
    "is_better",
    "is_minimize",
    "minimizes",
    "objective_names",
    "pareto_front",
    "top_trials",
    "trial_dir",
]

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
    """Whether ``study`` minimizes its value (with several objectives: its first, the one trials are pruned on)."""
    return study.directions[0] == optuna.study.StudyDirection.MINIMIZE


def minimizes(study: optuna.Study) -> tuple[bool, ...]:
    """Whether ``study`` minimizes each of its objectives: one entry per objective."""
    return tuple(d == optuna.study.StudyDirection.MINIMIZE for d in study.directions)


def objective_names(study: optuna.Study) -> list[str]:
    """The metric of each of ``study``'s objectives, as the sweep recorded them (``value``, ``value_1``... if not)."""
    recorded = study.user_attrs.get("lightopt", {})
    names = recorded.get("metrics") or ([recorded["metric"]] if recorded.get("metric") else None)
    if not names or len(names) != len(study.directions):
        names = study.metric_names or None
    if not names:
        names = ["value"] if len(study.directions) == 1 else [f"value_{i}" for i in range(len(study.directions))]
    return list(names)


def dominates(values: Sequence[float], other: Sequence[float], minimize: Sequence[bool]) -> bool:
    """Whether ``values`` Pareto-dominates ``other``: no worse in any objective, strictly better in one.

    Example:
        >>> dominates([1.0, 2.0], [1.0, 3.0], (True, True)), dominates([1.0, 3.0], [2.0, 2.0], (True, True))
        (True, False)
    """
    better = False
    for value, against, low in zip(values, other, minimize):
        if is_better(against, value, low):
            return False
        better = better or is_better(value, against, low)
    return better


def pareto_front(
    trials: Iterable[FrozenTrial], minimize: Sequence[bool], front: Sequence[FrozenTrial] = ()
) -> list[FrozenTrial]:
    """The COMPLETE trials of ``trials`` and ``front`` that no other dominates, by number (Optuna's ``best_trials``).

    Trials copied from another study (``study.warm_start``) are left out, as :func:`best_of` leaves
    them out: the front is made of trials run in this study. Trials with equal values are all on the
    front, as in Optuna. ``front`` (an earlier result) lets a caller add the trials that finished
    since without going over the others again.

    Example:
        >>> from optuna.trial import create_trial
        >>> trials = [create_trial(values=v) for v in ([1.0, 3.0], [2.0, 2.0], [2.0, 4.0])]
        >>> for number, trial in enumerate(trials):
        ...     trial.number = number
        >>> [t.number for t in pareto_front(trials, (True, True))]
        [0, 1]
    """
    kept = list(front)
    for trial in trials:
        if trial.state != TrialState.COMPLETE or trial.values is None or is_copied(trial):
            continue
        if any(dominates(other.values, trial.values, minimize) for other in kept):
            continue
        kept = [other for other in kept if not dominates(trial.values, other.values, minimize)] + [trial]
    return sorted(kept, key=lambda t: t.number)


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
    """The best COMPLETE trial run in this study (ties: the lower number), or None; only that trial is copied.

    A study with several objectives has no single best trial: see :func:`pareto_front`; this raises ``ValueError``.
    """
    if len(study.directions) > 1:
        raise ValueError(f"study {study.study_name!r} has several objectives: its best trials are a Pareto front.")
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
