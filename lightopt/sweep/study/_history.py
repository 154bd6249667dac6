"""The scalars of TensorBoard's study run, built trial by trial as trials finish.

Two axes, as :class:`~lightopt.sweep.study.StudyRun` documents them: by trial number
(``study/trial_value``, ``study/best_value``: best over the trials numbered up to the step) and
by the order trials finished (``study/trials_complete|pruned|failed``,
``study/best_value_by_time``: step k is the k-th trial to finish, its wall time that trial's end).

:class:`StudyHistory` turns the trials that finished since its last call into the events to
append, so each trial costs the same whatever the size of the study:

* By number, a step is written once every trial up to it has finished (a *frontier*): the best
  so far at a step never changes afterwards, so nothing is rewritten. With several workers a
  step waits for the trials still running below it (a few per worker).
* By finish order, a new trial nearly always finished after every trial written (its end is
  later than the last look at the storage). When it did not (another machine's clock, or a
  trial whose end was recorded just after a look), it belongs before some written steps: the
  events then restart at its step, a ``SessionLog.START`` that makes TensorBoard drop the points
  from that step on, followed by those points again. That costs the trials finished since, not
  the study.

Trials copied from another study (``study.warm_start``) were not run here: they have no point
and are not counted. Fed all trials at once, a fresh history gives the whole run, the same points that the
incremental events leave TensorBoard with.

With several objectives there is no best value: each complete trial's values are
``study/trial_value/<metric>`` (by number), and ``study/pareto_front_size`` (by number: the
front of the trials numbered up to the step) and ``study/pareto_front_size_by_time`` (by finish
order) take the place of the best value.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from tensorboard.compat.proto import event_pb2, summary_pb2

from lightopt.sweep.store import FinishedScan, dominates, is_better, is_copied

__all__ = ["StudyHistory", "restart_event"]

_STATES = ("COMPLETE", "PRUNED", "FAIL")


def restart_event(step: int) -> event_pb2.Event:
    """A ``SessionLog.START`` at ``step``: TensorBoard drops every point it holds at ``step`` or later."""
    return event_pb2.Event(
        wall_time=time.time(), step=step, session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)
    )


class StudyHistory:
    """The study run's scalar events, trial by trial (``minimize``: the study's direction).

    With several objectives ``minimize`` has one entry per objective and ``names`` names their metrics.

    Example:
        >>> import optuna
        >>> study = optuna.create_study()
        >>> study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
        >>> history = StudyHistory(minimize=True)
        >>> len(history.add(study.get_trials(deepcopy=False)))  # 3 by number, 3 by finish order
        6
        >>> history.add(study.get_trials(deepcopy=False))
        []
    """

    def __init__(self, minimize: bool | Sequence[bool], names: Sequence[str] = ()) -> None:
        self.minimize = minimize
        self.several = not isinstance(minimize, bool) and len(minimize) > 1
        if not isinstance(minimize, bool) and not self.several:
            self.minimize = bool(minimize[0])
        self.names = list(names) or [f"value_{i}" for i in range(len(minimize) if self.several else 1)]
        self.scan = FinishedScan()
        self._waiting: dict[int, FrozenTrial] = {}  # finished past the number frontier
        # (end, value, best so far); with several objectives (end, values, Pareto front so far)
        self._by_number: list[tuple[float, Any, Any]] = []
        self._order: list[tuple[float, int]] = []  # (end, number) in finish order
        self._outcomes: list[tuple[str, Any]] = []  # (state, value) in finish order
        self._by_order: list[tuple[float, tuple[int, int, int], Any]] = []  # (end, counts, best or front)

    def add(self, trials: Sequence[FrozenTrial]) -> list[event_pb2.Event]:
        """The events to append for the trials of ``trials`` (the study's whole list) that finished since."""
        return self._events(self.scan.update(trials))

    def read(self, study: optuna.Study) -> list[event_pb2.Event]:
        """The events to append for the trials of ``study`` that finished since, read from the scan's frontier on."""
        return self._events(self.scan.read(study))

    def _events(self, new: list[FrozenTrial]) -> list[event_pb2.Event]:
        if not new:
            return []
        first_number = len(self._by_number)
        for trial in new:
            self._waiting[trial.number] = trial
        while len(self._by_number) in self._waiting:
            trial = self._waiting.pop(len(self._by_number))
            value = self._value(trial)
            best = self._by_number[-1][2] if self._by_number else None
            self._by_number.append((_ended(trial), value, self._better(best, value)))
        written = len(self._order)
        first_index = written
        for trial in sorted(new, key=lambda t: (_ended(t), t.number)):
            key = (_ended(trial), trial.number)
            index = bisect.bisect_right(self._order, key)
            self._order.insert(index, key)
            self._outcomes.insert(index, ("COPIED" if is_copied(trial) else trial.state.name, self._value(trial)))
            first_index = min(first_index, index)
        self._recount(first_index)
        events = []
        if first_index < written:  # a trial finished before points already written: restart from its step
            step = first_index + 1
            events.append(restart_event(step))
            first_number = min(first_number, step)
        events += [self._number_event(n) for n in range(first_number, len(self._by_number))]
        events += [self._order_event(i) for i in range(first_index, len(self._order))]
        return events

    def _value(self, trial: FrozenTrial) -> Any:
        """A COMPLETE trial's value (with several objectives: its values as a tuple), else None.

        None too for a copy from another study (``study.warm_start``): it was not run here.
        """
        if trial.state != TrialState.COMPLETE or trial.values is None or is_copied(trial):
            return None
        return tuple(trial.values) if self.several else trial.values[0]

    def _better(self, best: Any, value: Any) -> Any:
        if self.several:  # the Pareto front of the values so far, a new tuple of value tuples
            front = best or ()
            if value is None or any(dominates(other, value, self.minimize) for other in front):
                return best
            return (*(other for other in front if not dominates(value, other, self.minimize)), value)
        if value is None or best is None:
            return best if value is None else value
        return value if is_better(value, best, self.minimize) else best

    def _recount(self, start: int) -> None:
        """Recompute the finish-order rows from index ``start`` on."""
        del self._by_order[start:]
        counts, best = (self._by_order[-1][1], self._by_order[-1][2]) if self._by_order else ((0, 0, 0), None)
        for (end, _), (state, value) in zip(self._order[start:], self._outcomes[start:]):
            counts = tuple(c + (state == name) for c, name in zip(counts, _STATES))
            best = self._better(best, value)
            self._by_order.append((end, counts, best))

    def _number_event(self, number: int) -> event_pb2.Event:
        end, value, best = self._by_number[number]
        if self.several:
            values = [(f"study/trial_value/{name}", v) for name, v in zip(self.names, value or ())]
            if best is not None:
                values.append(("study/pareto_front_size", len(best)))
            return _scalars(values, end, number)
        values = [("study/trial_value", value)] if value is not None else []
        if best is not None:
            values.append(("study/best_value", best))
        return _scalars(values, end, number)

    def _order_event(self, index: int) -> event_pb2.Event:
        end, (complete, pruned, failed), best = self._by_order[index]
        values = [("study/trials_complete", complete), ("study/trials_pruned", pruned), ("study/trials_failed", failed)]
        if best is not None:
            tag = "study/pareto_front_size_by_time" if self.several else "study/best_value_by_time"
            values.append((tag, len(best) if self.several else best))
        return _scalars(values, end, index + 1)


def _ended(trial: FrozenTrial) -> float:
    moment = trial.datetime_complete or trial.datetime_start
    return moment.timestamp() if moment is not None else time.time()


def _scalars(values: list[tuple[str, float]], wall_time: float, step: int) -> event_pb2.Event:
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=t, simple_value=float(v)) for t, v in values])
    return event_pb2.Event(wall_time=wall_time, step=step, summary=summary)
