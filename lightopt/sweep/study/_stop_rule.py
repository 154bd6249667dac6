"""The early stop of a sweep: its first trials all failed the same way, so the code or the file is at fault.

:class:`FailureWatch` (an Optuna callback) stops the sweep when the first ``study.stop_after_same_failures``
trials of a run all failed with the same :func:`failure_signature` (their reason with the numbers taken out).
"""

from __future__ import annotations

import re
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from lightopt.sweep.spec import STOP_AFTER_SAME_FAILURES, check_stop_after
from lightopt.sweep.trial import ERROR_LOG

__all__ = ["FailureWatch", "failure_signature"]

# Numbers in a reason (sizes, steps, values, addresses, nan and inf) differ from trial to trial.
_NUMBER = re.compile(r"0x[0-9a-fA-F]+|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?\b(?:nan|inf)\b")


def failure_signature(reason: str | None) -> str | None:
    """``reason`` with its numbers (and nan, inf) replaced by ``#``: equal for failures of the same kind.

    Example:
        >>> failure_signature("training loss is nan at step 12") == failure_signature("training loss is inf at step 3")
        True
    """
    return None if reason is None else _NUMBER.sub("#", reason)


class FailureWatch:
    """Optuna callback: stop the sweep when the trials of this run all failed alike.

    When the first ``stop_after`` trials of this run (and every one after them) failed with the
    same :func:`failure_signature`, it calls ``study.stop()`` and sets :attr:`stopped` to a
    message naming the reason and the first failure's log. ``stop_after=0`` never stops.

    Example:
        >>> FailureWatch(3).stopped is None
        True
    """

    def __init__(self, stop_after: int = STOP_AFTER_SAME_FAILURES) -> None:
        check_stop_after("stop_after", stop_after)
        self.stop_after = stop_after
        self.stopped: str | None = None
        self._first: FrozenTrial | None = None
        self._count = 0
        self._healthy = False  # a trial of this run that did not fail

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state != TrialState.FAIL:
            self._healthy = True
            return
        if self._healthy or self.stop_after == 0:
            return
        signature = failure_signature(trial.user_attrs.get("fail_reason"))
        if signature is None or (
            self._first is not None and signature != failure_signature(self._first.user_attrs.get("fail_reason"))
        ):
            self._healthy = True  # failures of different kinds: not one cause to report
            return
        self._first = self._first or trial
        self._count += 1
        if self._count >= self.stop_after:
            log = self._first.user_attrs.get("log_dir")
            where = f"; see {Path(log) / ERROR_LOG}" if log else ""
            self.stopped = (
                f"stopped the sweep: its first {self._count} trials all failed the same way: "
                f"{self._first.user_attrs['fail_reason']}{where}. Fix the cause and run again (the study resumes), "
                "or set `study.stop_after_same_failures: 0` to go on regardless."
            )
            study.stop()
