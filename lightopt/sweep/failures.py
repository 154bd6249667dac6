"""Failing trials: a non-finite training loss, the reason and log of a failure, and the early stop of a sweep.

* :class:`LossCheck` (a Lightning callback) fails a trial whose training loss turns NaN or infinite.
* :func:`failure_reason` gives the one-line reason a trial records as ``fail_reason``;
  :func:`write_error_log` writes it with the traceback to ``<trial dir>/error.txt``.
* :class:`FailureWatch` (an Optuna callback) stops the sweep when its first trials all failed
  the same way (:func:`failure_signature`).

Running out of memory is a failure like any other: the trial's reason says so, and
:class:`lightopt.sweep.memory.TrialCleanup` frees the failed trial (and CUDA's cache) before the next.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "FailureWatch", "LossCheck", "NonFiniteLossError", "ERROR_LOG", "STOP_AFTER_SAME_FAILURES", "RETRIES",
    "check_stop_after", "check_retries",
    "failure_reason", "failure_signature", "is_out_of_memory", "write_error_log",
]

ERROR_LOG = "error.txt"
# Three identical failures in a row, with nothing else before them: one is a fluke (an unlucky
# learning rate), two can be a coincidence, three at the start of a sweep are almost always the
# code or the file. It costs at most three trials, and `0` turns the stop off.
STOP_AFTER_SAME_FAILURES = 3
# A trial whose worker process died (os._exit, a segfault in an extension, the kernel's OOM killer)
# runs again this many times with the same parameters: once catches a machine's bad moment; a trial
# that kills its process every time then counts as failed ("its worker died 2 times") and the sweep
# goes on. `study.retries` sets it; Ctrl-C and SIGTERM never use it up.
RETRIES = 1
# Numbers in a reason (sizes, steps, values, addresses, nan and inf) differ from trial to trial.
_NUMBER = re.compile(r"0x[0-9a-fA-F]+|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?\b(?:nan|inf)\b")
# Without a sync per step, an accelerator's loss is checked this often (Lightning's log_every_n_steps).
_EVERY_ON_ACCELERATORS = 50


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class LossCheck(Callback):
    """Fail the fit when the training loss returned by ``training_step`` is NaN or infinite.

    On a CPU in one process the loss is checked after every step: ``math.isfinite(loss.item())``
    costs about a microsecond against milliseconds per step (a tensor op such as
    ``torch.isfinite`` costs tens), and the error names the step and the value. Elsewhere a
    check reads the value back to the host (a GPU sync; in DDP a collective too), so each step
    only ORs ``~isfinite(loss)`` into a flag on the device, and the flag is read every ``every``
    steps, before each validation round and at the end of each training epoch. Every rank reads
    it at the same steps and all stop together.

    Raises :class:`NonFiniteLossError`, so the trial fails with that reason. A loss that Lightning
    does not see (manual optimization returning nothing) is not checked.

    Args:
        every: steps between checks; ``None``: 1 on a CPU with one process, else 50.

    Example:
        >>> LossCheck(every=10).every
        10
    """

    def __init__(self, every: int | None = None) -> None:
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ValueError(f"`every` must be an integer >= 1 or None, but got every={every!r}.")
        self.every = every
        self._bad: torch.Tensor | None = None  # ORed ~isfinite(loss), on the loss's device
        self._value: float | None = None  # a non-finite loss read on the host
        self._since = 0  # the step before the current checking window

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.every is None:
            cpu = trainer.strategy.root_device.type == "cpu" and trainer.world_size == 1
            self.every = 1 if cpu else _EVERY_ON_ACCELERATORS
        self._bad, self._value, self._since = None, None, trainer.global_step

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            pass
        elif self.every == 1 and loss.device.type == "cpu" and loss.numel() == 1:
            value = loss.item()
            if not math.isfinite(value):
                self._value = value
        else:
            bad = ~torch.isfinite(loss.detach()).all()
            self._bad = bad if self._bad is None else self._bad | bad
        if trainer.global_step - self._since >= self.every:
            self._check(trainer)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check(trainer)

    def _check(self, trainer: Trainer) -> None:
        value = self._value
        bad = value is not None or (self._bad is not None and bool(self._bad))
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        since, step = self._since, trainer.global_step
        self._bad, self._value, self._since = None, None, step
        if not bad:
            return
        if value is not None and step == since + 1:
            raise NonFiniteLossError(f"training loss is {value} at step {step}")
        raise NonFiniteLossError(f"training loss became NaN or infinite between steps {since + 1} and {step}")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is running out of host or device memory."""
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def failure_reason(error: BaseException) -> str:
    """The one-line ``fail_reason`` of a trial that raised ``error``: its type and first line.

    Example:
        >>> failure_reason(ValueError("bad lr 0.5\\nmore detail"))
        'ValueError: bad lr 0.5'
        >>> failure_reason(MemoryError())
        'out of memory (MemoryError)'
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    message = lines[0][:500] if lines else ""
    kind = f"out of memory ({type(error).__name__})" if is_out_of_memory(error) else type(error).__name__
    return f"{kind}: {message}" if message else kind


def failure_signature(reason: str | None) -> str | None:
    """``reason`` with its numbers (and nan, inf) replaced by ``#``: equal for failures of the same kind.

    Example:
        >>> failure_signature("training loss is nan at step 12") == failure_signature("training loss is inf at step 3")
        True
    """
    return None if reason is None else _NUMBER.sub("#", reason)


def write_error_log(log_dir: str | Path | None, reason: str, trace: str | None) -> Path | None:
    """Write ``reason`` and ``trace`` to ``<log_dir>/error.txt``; returns its path (None without a log_dir)."""
    if not log_dir:
        return None
    path = Path(log_dir) / ERROR_LOG
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{reason}\n\n{trace or 'no traceback: the trial ended without an exception'}\n",
                        encoding="utf-8")
    except OSError:
        return None  # the reason and the traceback are in the trial's attributes all the same
    return path


def check_stop_after(where: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{where}` must be an integer >= 0 (0: never stop), but got "
                         f"{where.rpartition('.')[2]}={value!r}.")


def check_retries(where: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{where}` must be an integer >= 0 (0: a trial whose worker died is not run again), but "
                         f"got {where.rpartition('.')[2]}={value!r}.")


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
        if signature is None or (self._first is not None
                                 and signature != failure_signature(self._first.user_attrs.get("fail_reason"))):
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
