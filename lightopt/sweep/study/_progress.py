"""The sweep's progress line: one line after each trial, its outcome, the counts so far, the best, the time."""

from __future__ import annotations

import time
from typing import TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState

from lightopt.sweep.store import ENQUEUED, StudyTally, objective_names

__all__ = ["Progress"]


class Progress:
    """One line after each trial: its outcome, the counts so far, the best value, the time elapsed.

    The counts and the best come from a :class:`~lightopt.sweep.store.StudyTally`, so a line costs
    the same in a study of ten trials and of ten thousand. With several objectives a complete trial
    shows each metric's value, and the best is the size of the Pareto front with its trials' numbers.
    """

    def __init__(self, out: TextIO, total: int, metric: str, start: float | None = None) -> None:
        self.out, self.total, self.metric = out, total, metric
        self.start = time.monotonic() if start is None else start  # the sweep's: one clock for every worker
        self.tally: StudyTally | None = None

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.tally is None or self.tally.study is not study:
            self.tally = StudyTally(study)
        tally = self.tally
        tally.update()
        counts = tally.counts
        done = tally.done  # a trial retried after a crash counts once
        several = len(trial.values or ()) > 1
        if trial.state == TrialState.COMPLETE and several:
            names = objective_names(study)
            outcome = "complete " + ", ".join(f"{n}={v:.4g}" for n, v in zip(names, trial.values))
        elif trial.state == TrialState.COMPLETE:
            outcome = f"complete {self.metric}={trial.value:.4g}"
        elif trial.state == TrialState.PRUNED:
            outcome = f"pruned at step {trial.user_attrs.get('pruned_at', '?')}"
        else:
            outcome = f"failed: {trial.user_attrs.get('fail_reason', 'see the log')}"[:160]
        best = tally.best
        best_text = f"best {best.value:.4g} (trial {best.number})" if best else "best -"
        if len(tally.minimizes) > 1:
            front = [str(t.number) for t in tally.front]
            shown = ", ".join(front[:8]) + (", ..." if len(front) > 8 else "")
            plural = "s" if len(front) != 1 else ""
            best_text = f"Pareto front: {len(front)} trial{plural} ({shown})" if front else "best -"
        device = trial.user_attrs.get("device")  # --devices: the ids the trial ran on
        where = f" on device{'s' if ',' in device else ''} {device}" if device else ""
        if trial.user_attrs.get(ENQUEUED):  # a setting from study.enqueue
            where = f" (study.enqueue {trial.user_attrs[ENQUEUED]}){where}"
        print(
            f"[{done}/{self.total}] trial {trial.number}{where} {outcome} | {counts['COMPLETE']} complete, "
            f"{counts['PRUNED']} pruned, {counts['FAIL']} failed | {best_text} | "
            f"{time.monotonic() - self.start:.1f} s",
            file=self.out,
            flush=True,
        )
