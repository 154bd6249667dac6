"""Reads of a journal study filtered by one state, at the cost of what changed since the last, not of its size.

Optuna's ``JournalStorage`` answers ``get_all_trials(states=...)`` by walking every trial of the
study. A sweep makes two such reads per trial: Optuna's percentile (median) pruner reads the
complete trials at every report, and ``study.ask`` looks for waiting trials. Past a few thousand
trials those walks were most of what grew in a sweep's cost per trial on a journal file
(``benchmarks/README.md``, "The journal's growth, traced"). Optuna's cache in front of a database
has no such index either, but there a read costs a query whatever it filters, so this is used
on journal files only.

:class:`StateIndex` keeps, for each study, the finished trials below a frontier (the lowest
trial number not finished) in lists by state, in number order, and the trials from the frontier
on by number. A read re-reads the trials not finished (through the storage, by id) and reads the
trials created since the last read; a finished trial never changes, so it is read once. A read
costs the open trials, the new ones and the trials past the frontier, not the study. When more
than ``limit`` trials are open (many enqueued trials waiting), re-reading them one by one would
cost more than Optuna's walk, and the read is left to it. A trial that joins the finished ones
shares its attributes' strings with the trials before it
(:func:`lightopt._compat.share_strings`): the storage keeps every trial in memory.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from lightopt._compat import share_strings

__all__ = ["StateIndex"]


@dataclass
class _Study:
    frontier: int = 0  # trials numbered below it are finished, and in ``done``
    done: dict[TrialState, list[FrozenTrial]] = field(default_factory=dict)
    later: dict[int, FrozenTrial] = field(default_factory=dict)  # the trials from the frontier on, by number
    ids: dict[int, int] = field(default_factory=dict)  # the trial ids of those not finished, by number
    seen: int = 0  # trials numbered below it have been read


class StateIndex:
    """A study's trials by state, kept up to date by reading only what can have changed.

    Args:
        storage: the storage to read (Optuna's ``JournalStorage``: its ``get_trial`` returns the
            trial it holds, not a copy, and a look-up by number costs no walk).
        limit: the most trials not finished that a read re-reads one by one.

    Example:
        >>> import optuna
        >>> study = optuna.create_study()
        >>> study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
        >>> index = StateIndex(study._storage)
        >>> [t.number for t in index.read(study._study_id, optuna.trial.TrialState.COMPLETE)]
        [0, 1, 2]
    """

    def __init__(self, storage: BaseStorage, limit: int = 32) -> None:
        self.storage, self.limit = storage, limit
        self._lock = threading.Lock()
        self._studies: dict[int, _Study] = {}

    def read(self, study_id: int, state: TrialState) -> list[FrozenTrial] | None:
        """The study's trials in ``state``, in number order (a new list of the trials as the storage holds them).

        None when more than ``limit`` trials are open: the caller walks the study instead.
        """
        with self._lock:
            study = self._studies.setdefault(study_id, _Study())
            if len(study.ids) > self.limit:
                return None
            for number, trial_id in list(study.ids.items()):
                self._keep(study, number, trial_id, self.storage.get_trial(trial_id))
            while True:
                try:
                    trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, study.seen)
                except KeyError:
                    break
                self._keep(study, study.seen, trial_id, self.storage.get_trial(trial_id))
                study.seen += 1
            while study.frontier in study.later and study.frontier not in study.ids:
                trial = study.later.pop(study.frontier)
                share_strings(trial)  # kept for good, by the storage and here
                study.done.setdefault(trial.state, []).append(trial)
                study.frontier += 1
            return [*study.done.get(state, ()), *(t for t in study.later.values() if t.state == state)]

    def forget(self, study_id: int) -> None:
        """Drop what is kept of a study (deleted)."""
        with self._lock:
            self._studies.pop(study_id, None)

    @staticmethod
    def _keep(study: _Study, number: int, trial_id: int, trial: FrozenTrial) -> None:
        study.later[number] = trial
        if trial.state.is_finished():
            study.ids.pop(number, None)
        else:
            study.ids[number] = trial_id
