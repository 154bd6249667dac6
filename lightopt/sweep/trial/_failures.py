"""A failing trial: a non-finite training loss, and the reason and log of a failure.

* :class:`LossCheck` (a Lightning callback) fails a trial whose training loss turns NaN or infinite.
* :func:`failure_reason` gives the one-line reason a trial records as ``fail_reason``;
  :func:`write_error_log` writes it with the traceback to ``<trial dir>/error.txt``.

The early stop of a sweep whose first trials all fail alike is the study's
(:class:`lightopt.sweep.study.FailureWatch`). Running out of memory is a failure like any other:
the trial's reason says so, and :class:`~lightopt.sweep.trial.TrialCleanup` frees the failed trial
(and CUDA's cache) before the next.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override

from lightopt import _validation

__all__ = ["ERROR_LOG", "LossCheck", "NonFiniteLossError", "failure_reason", "is_out_of_memory", "write_error_log"]

ERROR_LOG = "error.txt"
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
        if every is not None and not _validation.is_integer(every, low=1):
            raise ValueError(f"`every` must be an integer >= 1 or None, but got every={every!r}.")
        self.every = every
        self._bad: torch.Tensor | None = None  # ORed ~isfinite(loss), on the loss's device
        self._value: float | None = None  # a non-finite loss read on the host
        self._since = 0  # the step before the current checking window

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.every is None:
            cpu = trainer.strategy.root_device.type == "cpu" and trainer.world_size == 1
            self.every = 1 if cpu else _EVERY_ON_ACCELERATORS
        self._bad, self._value, self._since = None, None, trainer.global_step

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
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

    @override
    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._check(trainer)

    @override
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


def write_error_log(log_dir: str | Path | None, reason: str, trace: str | None) -> Path | None:
    """Write ``reason`` and ``trace`` to ``<log_dir>/error.txt``; returns its path (None without a log_dir)."""
    if not log_dir:
        return None
    path = Path(log_dir) / ERROR_LOG
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"{reason}\n\n{trace or 'no traceback: the trial ended without an exception'}\n", encoding="utf-8"
        )
    except OSError:
        return None  # the reason and the traceback are in the trial's attributes all the same
    return path
