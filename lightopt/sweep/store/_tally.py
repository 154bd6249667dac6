"""A study's running tally: counts per state, the best trial, the open trials, kept from what changed.

A sweep asks the same questions after every trial: how many trials count toward ``n_trials``,
how many completed, pruned or failed, which is best, which are still running, which stopped
trials wait for a retry. Answered from ``study.trials`` they cost a deep copy of every trial
(with its recorded config) each time, so a sweep's own bookkeeping grew with the study.

:class:`~lightopt.sweep.store._scan.FinishedScan` finds the trials that finished since it last looked. A
finished trial never changes again (Optuna refuses to update it), and a study's trials are
numbered 0, 1, 2, ..., so the scan keeps a *frontier*: every trial below it is finished and
already seen. Each look reads from the storage only the trials from the frontier on: the ones
still open (a few per worker) and the new ones. :class:`StudyTally` adds the finished trials
into its counts as they come.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from lightopt.sweep.store._best import best_of, is_minimize, minimizes, pareto_front
from lightopt.sweep.store._outcomes import is_copied, is_retryable
from lightopt.sweep.store._scan import FinishedScan

__all__ = ["StudyTally"]


class StudyTally:
    """What the sweep reports and decides on after each trial, updated from the trials that changed.

    :meth:`update` reads the study's trials from the scan's frontier on and adds the newly finished ones;
    the attributes then describe the whole study, every worker's trials included:
    :attr:`counts` per state name, :attr:`total`, :attr:`best`, :attr:`running`, :attr:`counted`
    (the trials that count toward ``n_trials``, as :func:`~lightopt.sweep.store.counted`
    defines them), :attr:`front` (with several objectives, the Pareto front; :attr:`best` is then
    None) and :attr:`unretried` (stopped trials with no retry yet). Trials copied from another
    study (``study.warm_start``) are only in :attr:`copied` and :attr:`total`. Each update reads
    the open and the new trials, whatever the size of the study.

    Example:
        >>> study = optuna.create_study(direction="maximize")
        >>> study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=4)
        >>> tally = StudyTally(study)
        >>> tally.update()
        >>> tally.counts["COMPLETE"], tally.counted, tally.best.number == study.best_trial.number
        (4, 4, True)
    """

    def __init__(self, study: optuna.Study) -> None:
        self.study = study
        self.minimize = is_minimize(study)
        self.minimizes = minimizes(study)
        self.best: FrozenTrial | None = None
        self.front: list[FrozenTrial] = []
        self.total = 0
        self._scan = FinishedScan()
        self._finished = {state.name: 0 for state in TrialState if state.is_finished()}
        self._retryable: dict[int, FrozenTrial] = {}  # finished and retryable, not yet seen retried
        self._retried: set[int] = set()  # numbers named by a finished trial's ``retry_of``
        self._retryable_total = 0  # finished retryable trials: they do not count toward ``n_trials``
        self.counts: dict[str, int] = {state.name: 0 for state in TrialState}
        self.running: list[FrozenTrial] = []
        self.counted = 0
        self.unretried: list[FrozenTrial] = []
        self.copied = 0

    def update(self, trials: Sequence[FrozenTrial] | None = None) -> None:
        """Bring the tally up to date: from ``trials`` (the study's whole list), else from its storage.

        Without ``trials`` only the trials from the scan's frontier on are read.
        """
        new = self._scan.read(self.study) if trials is None else self._scan.update(trials)
        for trial in new:
            if is_copied(trial):
                self.copied += 1
                continue
            self._finished[trial.state.name] += 1
            retry_of = trial.user_attrs.get("retry_of")
            if retry_of is not None:
                self._retried.add(retry_of)
            if is_retryable(trial):
                self._retryable[trial.number] = trial
                self._retryable_total += 1
        if len(self.minimizes) > 1:
            self.front = pareto_front(new, self.minimizes, self.front)
        else:
            self.best = best_of(new, self.minimize, self.best)
        self.total = self._scan.total
        opened = self._scan.open
        self.counts = {**dict.fromkeys(self.counts, 0), **self._finished}
        for trial in opened:
            self.counts[trial.state.name] += 1
        self.running = [t for t in opened if t.state == TrialState.RUNNING]
        self.counted = self.total - self.counts["WAITING"] - self._retryable_total - self.copied
        retried = self._retried | {t.user_attrs.get("retry_of") for t in opened}
        for number in [n for n in self._retryable if n in self._retried]:
            del self._retryable[number]  # retried by a finished trial: never again a candidate
        self.unretried = [t for n, t in self._retryable.items() if n not in retried]

    @property
    def done(self) -> int:
        """Finished trials that count toward ``n_trials``."""
        return self.counted - self.counts["RUNNING"]
