"""Optuna pruning for any LightningModule, on Lightning's public callback API only."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

__all__ = ["PruningCallback", "MetricNotLoggedError"]

_REPORT_AT = ("validation_round", "examples")


class MetricNotLoggedError(ValueError):
    """The monitored metric is not among the metrics the module logs."""


class PruningCallback(Callback):
    """Report the monitored metric to an Optuna trial after each validation round and stop if pruned.

    After every validation round (not the sanity check) global rank 0 reads ``monitor`` from
    ``trainer.callback_metrics``, calls ``trial.report(value, step)`` and ``trial.should_prune()``,
    and broadcasts the decision, so every rank sets ``trainer.should_stop`` together and the fit
    ends as any early stop does: loggers are closed, checkpoints written, and
    :class:`lightopt.callbacks.EarlyStopping` restores the best weights. The caller then raises
    ``optuna.TrialPruned`` (see :attr:`pruned`); lightopt's sweep objective does.

    ``step``, chosen to compare across trials that differ in batch size:

    * ``"validation_round"``: 1 after the first validation round, 2 after the second, ... With
      ``val_check_interval=0.5`` there are two rounds per epoch, at the same fractions of an
      epoch whatever the batch size.
    * ``"examples"``: training examples seen so far on all ranks (the size of each batch's first
      tensor, times the world size).

    Its state (the round and example counts, the history) is saved in Lightning checkpoints, so a
    fit resumed with ``ckpt_path`` goes on counting steps and re-reports the earlier values to its
    trial. A value that is NaN or infinite stops the fit too, with :attr:`failure` set. Reporting goes
    through ``trial.report``, so every Optuna storage works; non-zero ranks may pass ``trial=None``.

    Args:
        trial: the Optuna trial (only global rank 0 uses it).
        monitor: the logged metric, e.g. ``"val_loss"``.
        report_at: ``"validation_round"`` or ``"examples"``.
        mode: ``"min"`` or ``"max"``, for :attr:`best`.

    Attributes:
        history: ``[(step, value), ...]`` reported so far (rank 0).
        best: the best reported value (``None`` before the first round).
        pruned: the step at which the trial was pruned, or ``None``.
        failure: why the fit was stopped as failed (a non-finite value), or ``None``.

    Raises:
        MetricNotLoggedError: ``monitor`` is not logged; the message lists the logged metrics.

    Example:
        >>> import optuna
        >>> study = optuna.create_study(pruner=optuna.pruners.NopPruner())
        >>> callback = PruningCallback(study.ask(), monitor="val_loss", report_at="examples")
        >>> callback.report_at, callback.best
        ('examples', None)
    """

    def __init__(
        self, trial: optuna.Trial | None, monitor: str, report_at: str = "validation_round", mode: str = "min"
    ) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(f"`monitor` must name a logged metric such as 'val_loss', but got monitor={monitor!r}.")
        if report_at not in _REPORT_AT:
            raise ValueError(f"`report_at` must be one of 'validation_round', 'examples', but got report_at={report_at!r}.")
        if mode not in ("min", "max"):
            raise ValueError(f"`mode` must be one of 'min', 'max', but got mode={mode!r}.")
        self.trial, self.monitor, self.report_at, self.mode = trial, monitor, report_at, mode
        self.history: list[tuple[int, float]] = []
        self.best: float | None = None
        self.pruned: int | None = None
        self.failure: str | None = None
        self._rounds = 0
        self._examples = 0

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.report_at == "examples":  # a validation-round count needs no per-batch work
            self._examples += _batch_size(batch) * trainer.world_size

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._rounds += 1
        step = self._rounds if self.report_at == "validation_round" else self._examples
        decision = ("continue", None)
        if trainer.is_global_zero:
            decision = self._decide(trainer, step)
        decision = trainer.strategy.broadcast(decision, src=0)
        if decision[0] == "missing":
            raise MetricNotLoggedError(decision[1])
        if decision[0] == "prune":
            self.pruned = step
            trainer.should_stop = True
        elif decision[0] == "fail":
            self.failure = decision[1]
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"rounds": self._rounds, "examples": self._examples, "history": list(self.history), "best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from a checkpoint: the step count goes on, and the trial gets the earlier reports."""
        self._rounds = state_dict.get("rounds", 0)
        self._examples = state_dict.get("examples", 0)
        self.history = [(int(step), float(value)) for step, value in state_dict.get("history", [])]
        self.best = state_dict.get("best")
        if self.trial is not None:
            for step, value in self.history:
                self.trial.report(value, step)

    def _decide(self, trainer: Trainer, step: int) -> tuple[str, str | None]:
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            logged = ", ".join(sorted(metrics)) or "none"
            return "missing", (
                f"`study.metric` must be a metric the module logs, but {self.monitor!r} was not logged after "
                f"validation round {self._rounds}; logged metrics: {logged}."
            )
        value = float(torch.as_tensor(metrics[self.monitor]).item())
        if not math.isfinite(value):
            return "fail", f"{self.monitor} is {value} at step {step}"
        self.history.append((step, value))
        if self.best is None or (value < self.best if self.mode == "min" else value > self.best):
            self.best = value
        if self.trial is None:
            return "continue", None
        self.trial.report(value, step)
        return ("prune", None) if self.trial.should_prune() else ("continue", None)


def _batch_size(batch: Any) -> int:
    """The length of the first tensor in ``batch`` (tensors, tuples, lists, dicts), or 0."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, Sequence) and not isinstance(batch, str):
        for item in batch:
            size = _batch_size(item)
            if size:
                return size
    return 0
