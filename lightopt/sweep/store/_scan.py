"""The trials of a study that finished since the last look, found without reading the others.

A finished trial never changes again (Optuna refuses to update it), and a study's trials are
numbered 0, 1, 2, ... So a scan keeps a *frontier*: every trial below it is finished and already
seen. Each look reads only the trials from the frontier on (the few still open, and the new
ones) from the storage, one by one (:func:`trials_from`), instead of the study's whole list:
reading the whole list costs about a microsecond per trial of the study, several times per trial
of the sweep. The sweep's tally (:mod:`lightopt.sweep.store._tally`) and TensorBoard's study run
(:class:`lightopt.sweep.study.StudyRun`) both follow a study this way.

On a database each look refreshes Optuna's cache with a query (and a query per relation when
trials changed). Within :func:`one_look` the first look at a study refreshes it and the others
read what it brought: after each trial the progress line, TensorBoard's study run and the
failure watch share one look; the worker loop's count looks again, under the host lock.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence

import optuna
from optuna.trial import FrozenTrial

from lightopt._compat import cached_trials_from, study_storage

__all__ = ["FinishedScan", "one_look", "trials_from"]

_LOOKED: contextvars.ContextVar[set[tuple[int, int]] | None] = contextvars.ContextVar("lightopt_looked", default=None)


@contextlib.contextmanager
def one_look() -> Iterator[None]:
    """Within this block :func:`trials_from` reads each study's storage once: later reads see what the first one read.

    On a database (Optuna's cache in front of an ``RDBStorage``) the first read refreshes the cache
    and the later ones read the cache without a query; so the block must not span writes whose
    effect a later read in it must see. Elsewhere (a journal, in memory) every read reads the
    storage as before. Blocks nest (the outer one counts).

    Example:
        >>> study = optuna.create_study()
        >>> study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
        >>> with one_look():
        ...     [t.number for t in trials_from(study, 0)]
        [0, 1]
    """
    if _LOOKED.get() is not None:
        yield
        return
    token = _LOOKED.set(set())
    try:
        yield
    finally:
        _LOOKED.reset(token)


def trials_from(study: optuna.Study, start: int, study_id: int | None = None) -> list[FrozenTrial]:
    """``study``'s trials numbered ``start`` and up, read one by one (not copied).

    Each costs a look-up by number and one read of the trial. On a database (Optuna's cache in
    front of an ``RDBStorage``) they come instead from the cache, refreshed by one query for the
    trials not yet seen finished (:func:`lightopt._compat.cached_trials_from`): one round trip
    however many changed, where reading them one by one took a query per look-up and six per
    trial not finished. ``study_id`` saves a look-up.

    Example:
        >>> study = optuna.create_study()
        >>> study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
        >>> [t.number for t in trials_from(study, 1)]
        [1, 2]
    """
    storage = study_storage(study)
    study_id = storage.get_study_id_from_name(study.study_name) if study_id is None else study_id
    looked, key = _LOOKED.get(), (id(storage), study_id)
    refresh = looked is None or key not in looked
    cached = cached_trials_from(storage, study_id, start, refresh)  # a database: one query for all that changed
    if looked is not None:
        looked.add(key)
    if cached is not None:
        return cached
    trials = []
    while True:
        try:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, start + len(trials))
        except KeyError:
            return trials
        trials.append(storage.get_trial(trial_id))


class FinishedScan:
    """The trials of a study that finished since the last look, found without looking at the others.

    :meth:`read` reads them from the study's storage from the frontier on; :meth:`update` takes
    the study's whole trial list instead (a first look, or a test).

    Example:
        >>> study = optuna.create_study()
        >>> scan = FinishedScan()
        >>> study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
        >>> [t.number for t in scan.read(study)], scan.frontier, scan.total
        ([0, 1, 2], 3, 3)
        >>> scan.update(study.get_trials(deepcopy=False))
        []
    """

    def __init__(self) -> None:
        self.frontier = 0  # trials 0 .. frontier-1 are finished and were returned
        self.total = 0  # trials in the study at the last look
        self._beyond: set[int] = set()  # finished trials past the frontier, already returned
        self.open: list[FrozenTrial] = []  # the unfinished trials at the last look
        self._study_id: tuple[optuna.Study, int] | None = None

    def read(self, study: optuna.Study) -> list[FrozenTrial]:
        """The newly finished trials of ``study``, in number order, read from the frontier on."""
        if self._study_id is None or self._study_id[0] is not study:
            self._study_id = (study, study_storage(study).get_study_id_from_name(study.study_name))
        return self._update_tail(trials_from(study, self.frontier, self._study_id[1]))

    def update(self, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        """The newly finished among ``trials`` (the study's whole list, numbered from 0), in number order."""
        if len(trials) < self.frontier or (self.frontier and trials[self.frontier - 1].number != self.frontier - 1):
            raise ValueError(
                f"`trials` must be a study's whole trial list in number order, but got {len(trials)} "
                f"trials where {self.frontier} were seen before."
            )
        return self._update_tail(trials[self.frontier :])

    def _update_tail(self, tail: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        if tail and tail[0].number != self.frontier:
            raise ValueError(f"`tail` must start at trial {self.frontier}, but starts at trial {tail[0].number}.")
        new, self.open = [], []
        self.total = self.frontier + len(tail)
        for trial in tail:
            if not trial.state.is_finished():
                self.open.append(trial)
            elif trial.number not in self._beyond:
                new.append(trial)
                self._beyond.add(trial.number)
        while self.frontier in self._beyond:  # the finished prefix grows
            self._beyond.discard(self.frontier)
            self.frontier += 1
        return new
