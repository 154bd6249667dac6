"""The trials of a study that finished since the last look, found without reading the others.

A finished trial never changes again (Optuna refuses to update it), and a study's trial list
holds trial ``i`` at index ``i``. So a scan keeps a *frontier*: every trial below it is finished
and already seen, and each look examines only the trials from the frontier on (the few still
open, and the new ones). The sweep's tally (:mod:`lightopt.sweep.tally`) and TensorBoard's study
run (:class:`lightopt.tensorboard.StudyRun`) both follow a study this way.
"""

from __future__ import annotations

from collections.abc import Sequence

from optuna.trial import FrozenTrial

__all__ = ["FinishedScan"]


class FinishedScan:
    """The trials of a study that finished since the last :meth:`update`, found without looking at the others.

    Example:
        >>> import optuna
        >>> study = optuna.create_study()
        >>> scan = FinishedScan()
        >>> study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
        >>> [t.number for t in scan.update(study.get_trials(deepcopy=False))], scan.frontier
        ([0, 1, 2], 3)
        >>> scan.update(study.get_trials(deepcopy=False))
        []
    """

    def __init__(self) -> None:
        self.frontier = 0  # trials 0 .. frontier-1 are finished and were returned
        self._beyond: set[int] = set()  # finished trials past the frontier, already returned
        self.open: list[FrozenTrial] = []  # the unfinished trials at the last update

    def update(self, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        """The newly finished among ``trials`` (the study's whole list, numbered from 0), in number order."""
        if len(trials) < self.frontier or (self.frontier and trials[self.frontier - 1].number != self.frontier - 1):
            raise ValueError(f"`trials` must be a study's whole trial list in number order, but got {len(trials)} "
                             f"trials where {self.frontier} were seen before.")
        new, self.open = [], []
        for trial in trials[self.frontier:]:
            if not trial.state.is_finished():
                self.open.append(trial)
            elif trial.number not in self._beyond:
                new.append(trial)
                self._beyond.add(trial.number)
        while self.frontier in self._beyond:  # the finished prefix grows
            self._beyond.discard(self.frontier)
            self.frontier += 1
        return new
