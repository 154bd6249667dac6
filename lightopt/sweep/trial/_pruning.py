"""Optuna pruning for any LightningModule, through Lightning's callback hooks.

Two protocols, one mechanism (rank 0 reports, decides and broadcasts the decision to every rank):

====================  ===================================  =====================================
                      :class:`PruningCallback`             :class:`PyTorchLightningPruningCallback`
                      (lightopt's)                         (optuna-integration's constructor)
====================  ===================================  =====================================
arguments             ``trial, monitor, report_at, mode``  ``trial, monitor``
step reported         validation round (1, 2, ...) or      ``current_epoch`` (0, 1, ...)
                      training examples seen
pruned, one process   ``trainer.should_stop``: the fit     ``optuna.TrialPruned`` raised out of
                      ends cleanly; the caller reads       ``trainer.fit`` (Lightning runs
                      :attr:`~PruningCallback.pruned`      ``on_exception``)
                      and raises ``optuna.TrialPruned``
pruned, DDP           the same, on every rank              every rank stops; the caller calls
                                                           ``check_pruned()``, which raises
metric not logged     :class:`MetricNotLoggedError`        a warning; nothing reported
metric NaN or inf     the fit stops, ``failure`` says why  reported as it is
====================  ===================================  =====================================

**Every strategy on one machine.** With a single device and with ``ddp`` (Lightning starts the
other ranks as copies of the script; this process is rank 0) the callback object the caller holds
is the one that decided. With ``ddp_spawn``, ``ddp_fork`` and ``ddp_notebook`` the fit runs in
worker processes and the caller's object never sees their state: rank 0 therefore also writes the
decision to the trial (user attributes ``pruned_at`` and ``pruning_failure``), and :attr:`pruned`
and :attr:`failure` read them back from the trial's storage. An ``InMemoryStorage`` lives in the
caller's memory, out of the workers' reach, so that combination is refused at ``setup`` with a
message that names the fix (``strategy="ddp"``, or a storage processes share such as
``JournalStorage`` or an RDB URL). Reports (``trial.report``) go through the storage in every case.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override

from lightopt import _compat
from lightopt.sweep.store import is_better
from lightopt.sweep.trial._first_objective import INTERMEDIATE_ATTR, should_prune_first

__all__ = ["MetricNotLoggedError", "PruningCallback", "PyTorchLightningPruningCallback"]

#: Trial user attributes where rank 0 records a decision, for callers in another process.
PRUNED_AT_ATTR = "pruned_at"
FAILURE_ATTR = "pruning_failure"

_STRATEGIES = {"spawn": "strategy 'ddp_spawn'", "fork": "strategy 'ddp_fork' or 'ddp_notebook'"}

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
    Under ``ddp_spawn``/``ddp_fork``/``ddp_notebook`` see the module docstring: :attr:`pruned` and
    :attr:`failure` are read back from the trial, while :attr:`history` and :attr:`best` stay in the
    worker processes (the trial's intermediate values hold the reports).

    In a study with several objectives (``trial.study.directions``), where Optuna refuses
    ``trial.report`` and ``trial.should_prune``, ``monitor`` (the first metric) is pruned on all
    the same: each value goes into the trial's user attribute ``intermediate_values`` and the
    study's pruner decides on a single-objective view of the study
    (:mod:`lightopt.sweep.trial._first_objective`). ``others`` are the other objectives' metrics,
    read at each round; :attr:`at_best` holds their values at the round where ``monitor`` was best.

    Args:
        trial: the Optuna trial (only global rank 0 uses it).
        monitor: the logged metric, e.g. ``"val_loss"``.
        report_at: ``"validation_round"`` or ``"examples"``.
        mode: ``"min"`` or ``"max"``, for :attr:`best`.
        others: further logged metrics read at each round (a missing one raises as ``monitor`` does).
        defer_pruned: leave the trial's ``pruned_at`` attribute to the caller, who writes it with its
            other attributes after the fit (one storage write fewer per pruned trial); a decision
            made in spawned worker processes is still written, since the caller reads it from the trial.

    Attributes:
        history: ``[(step, value), ...]`` reported so far (rank 0).
        best: the best reported value (``None`` before the first round).
        at_best: ``others``' values at the round of :attr:`best` (``{}`` before the first round).
        pruned: the step at which the trial was pruned, or ``None``.
        failure: why the fit was stopped as failed (a non-finite value), or ``None``.

    Raises:
        MetricNotLoggedError: ``monitor`` is not logged; the message lists the logged metrics.
        ValueError: at ``setup``, the strategy runs the fit in worker processes and the trial's
            storage is an ``InMemoryStorage``; the message says what to use instead.

    Example:
        >>> import optuna
        >>> study = optuna.create_study(pruner=optuna.pruners.NopPruner())
        >>> callback = PruningCallback(study.ask(), monitor="val_loss", report_at="examples")
        >>> callback.report_at, callback.best
        ('examples', None)
    """

    def __init__(
        self,
        trial: optuna.Trial | None,
        monitor: str,
        report_at: str = "validation_round",
        mode: str = "min",
        others: Sequence[str] = (),
        *,
        defer_pruned: bool = False,
    ) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(f"`monitor` must name a logged metric such as 'val_loss', but got monitor={monitor!r}.")
        if report_at not in _REPORT_AT:
            raise ValueError(
                f"`report_at` must be one of 'validation_round', 'examples', but got report_at={report_at!r}."
            )
        if mode not in ("min", "max"):
            raise ValueError(f"`mode` must be one of 'min', 'max', but got mode={mode!r}.")
        if isinstance(others, str) or not all(isinstance(name, str) and name for name in others):
            raise TypeError(f"`others` must be a sequence of metric names, but got others={others!r}.")
        self.trial, self.monitor, self.report_at, self.mode = trial, monitor, report_at, mode
        self.others = tuple(others)
        self.defer_pruned = defer_pruned
        self._spawned = False  # this copy runs in a spawned worker process: the caller reads the decision back
        self.at_best: dict[str, float] = {}
        self.history: list[tuple[int, float]] = []
        self.best: float | None = None
        self._pruned: int | None = None
        self._failure: str | None = None
        self._rounds = 0
        self._examples = 0
        self._set_up = False

    @property
    @override
    def state_key(self) -> str:
        """Checkpoint key: the class name, ``monitor`` and ``report_at``."""
        return self._generate_state_key(monitor=self.monitor, report_at=self.report_at)

    @property
    def examples(self) -> int:
        """Training examples seen so far on all ranks, whatever ``report_at`` (x of ``<monitor>/by_examples``)."""
        return self._examples

    @property
    def pruned(self) -> int | None:
        """The step at which the trial was pruned, or ``None`` (read from the trial if a worker process decided)."""
        if self._fitted_elsewhere():
            return _compat.stored_user_attrs(self.trial).get(PRUNED_AT_ATTR)
        return self._pruned

    @property
    def failure(self) -> str | None:
        """Why the fit was stopped as failed, or ``None`` (read from the trial if a worker process decided)."""
        if self._fitted_elsewhere():
            return _compat.stored_user_attrs(self.trial).get(FAILURE_ATTR)
        return self._failure

    def _fitted_elsewhere(self) -> bool:
        """Whether this object is the caller's copy of a callback that ran in worker processes."""
        return not self._set_up and isinstance(self.trial, optuna.Trial)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._set_up = True  # this process runs the hooks (a spawned worker sets its own copy)
        method = _compat.worker_start_method(trainer)
        self._spawned = method is not None
        if stage != "fit" or not isinstance(self.trial, optuna.Trial) or method is None:
            return
        if isinstance(self.trial.storage, optuna.storages.InMemoryStorage):
            strategy = _STRATEGIES.get(method, f"start_method={method!r}")
            raise ValueError(
                f"{type(self).__name__} cannot record a decision made in the worker processes of "
                f"{strategy} in an in-memory Optuna storage, which lives in the parent process; "
                "use strategy='ddp', or a storage that processes share, e.g. optuna.storages.JournalStorage("
                "optuna.storages.journal.JournalFileBackend('study.log')) or storage='sqlite:///study.db'."
            )

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._examples += _batch_size(batch) * trainer.world_size  # whatever report_at: see examples

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._rounds += 1
        step = self._step(trainer)
        decision = ("continue", None)
        if trainer.is_global_zero:
            decision = self._decide(trainer, step)
        decision = trainer.strategy.broadcast(decision, src=0)
        if decision[0] == "missing":
            self._missing(decision[1])
        elif decision[0] == "prune":
            self._pruned = step
            trainer.should_stop = True
            self._pruned_now(trainer, step)
        elif decision[0] == "fail":
            self._failure = decision[1]
            trainer.should_stop = True

    def _step(self, trainer: Trainer) -> int:
        return self._rounds if self.report_at == "validation_round" else self._examples

    def _missing(self, message: str) -> None:
        raise MetricNotLoggedError(message)

    def _pruned_now(self, trainer: Trainer, step: int) -> None:
        """Called on every rank once the trial is pruned at ``step`` (the fit stops after this round)."""

    @override
    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("callbacks", {})
        legacy = type(self).__qualname__  # the key before the callback had a state_key of its own
        if self.state_key not in states and legacy in states:
            self.load_state_dict(states[legacy])

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "rounds": self._rounds,
            "examples": self._examples,
            "history": list(self.history),
            "best": self.best,
            "at_best": dict(self.at_best),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from a checkpoint: the step count goes on, and the trial gets the earlier reports."""
        self._rounds = state_dict.get("rounds", 0)
        self._examples = state_dict.get("examples", 0)
        self.history = [(int(step), float(value)) for step, value in state_dict.get("history", [])]
        self.best = state_dict.get("best")
        self.at_best = dict(state_dict.get("at_best", {}))
        if self.trial is not None and self._several_objectives():
            self._record_reports()
        elif self.trial is not None:
            for step, value in self.history:
                self.trial.report(value, step)

    def _decide(self, trainer: Trainer, step: int) -> tuple[str, str | None]:
        metrics = trainer.callback_metrics
        for name in (self.monitor, *self.others):
            if name not in metrics:
                logged = ", ".join(sorted(metrics)) or "none"
                return "missing", (
                    f"`study.metric` must be a metric the module logs, but {name!r} was not logged after "
                    f"validation round {self._rounds}; logged metrics: {logged}."
                )
        values = {name: float(torch.as_tensor(metrics[name]).item()) for name in (self.monitor, *self.others)}
        for name, value in values.items():
            if not math.isfinite(value) and self._stop_on_non_finite:
                failure = f"{name} is {value} at step {step}"
                if self.trial is not None:
                    self.trial.set_user_attr(FAILURE_ATTR, failure)
                return "fail", failure
        value = values.pop(self.monitor)
        self.history.append((step, value))
        if is_better(value, self.best, self.mode == "min"):
            self.best = value
            self.at_best = values
        if self.trial is None:
            return "continue", None
        if self._several_objectives():  # Optuna refuses trial.report: the first metric's own record
            self._record_reports()
            prune = should_prune_first(self.trial)
        else:
            self.trial.report(value, step)
            prune = self.trial.should_prune()
        if not prune:
            return "continue", None
        if not self.defer_pruned or self._spawned:
            self.trial.set_user_attr(PRUNED_AT_ATTR, step)  # the caller may be another process: see pruned
        return "prune", None

    _stop_on_non_finite = True

    def _several_objectives(self) -> bool:
        return isinstance(self.trial, optuna.Trial) and len(self.trial.study.directions) > 1

    def _record_reports(self) -> None:
        """The reports so far, in the trial's user attribute ``intermediate_values`` (several objectives)."""
        self.trial.set_user_attr(INTERMEDIATE_ATTR, {str(step): value for step, value in self.history})


class PyTorchLightningPruningCallback(PruningCallback):
    """optuna-integration's ``PyTorchLightningPruningCallback(trial, monitor)``, on lightopt's mechanism.

    Code written for ``optuna_integration.PyTorchLightningPruningCallback`` ports by changing the
    import, with the behaviour it relies on: ``trial.report(value, step=current_epoch)`` after each
    validation round; in one process, ``optuna.TrialPruned`` raised out of ``trainer.fit`` into the
    objective when the trial is pruned; under DDP every rank stops and :meth:`check_pruned` raises
    ``optuna.TrialPruned`` after ``trainer.fit``; a ``monitor`` that is not logged gives a warning,
    not an error. See the module docstring for the comparison with :class:`PruningCallback`.

    Differences from optuna-integration's callback:
        * Any storage works under ``ddp`` (not only an RDB storage); under ``ddp_spawn``,
          ``ddp_fork`` and ``ddp_notebook`` any storage but ``InMemoryStorage`` (theirs: RDB only).
        * Reports go through ``trial.report`` on rank 0 in every case (no copy in system attributes),
          and the decision is kept in the trial's user attribute ``pruned_at`` (the epoch).
        * The state (rounds, history) is saved in checkpoints, as :class:`PruningCallback`'s.
        * In a study with several objectives it prunes on ``monitor`` with the study's pruner, as
          :class:`PruningCallback` does (theirs fails: Optuna refuses ``trial.report`` there).

    Example:
        >>> import optuna
        >>> trial = optuna.create_study().ask()
        >>> callback = PyTorchLightningPruningCallback(trial, monitor="val_acc")
        >>> callback.monitor, callback.check_pruned()
        ('val_acc', None)
    """

    _stop_on_non_finite = False  # optuna-integration reports the value as it is

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        super().__init__(trial, monitor)
        self._raise = False

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # One process: TrialPruned goes out of trainer.fit. Several: every rank stops; check_pruned().
        self._raise = trainer.world_size == 1 and _compat.worker_start_method(trainer) is None

    @override
    def _step(self, trainer: Trainer) -> int:
        return trainer.current_epoch

    @override
    def _missing(self, message: str) -> None:
        warnings.warn(
            f"The metric {self.monitor!r} is not in the evaluation logs for pruning; nothing was reported. {message}",
            stacklevel=2,
        )

    @override
    def _pruned_now(self, trainer: Trainer, step: int) -> None:
        if self._raise:
            raise optuna.TrialPruned(f"Trial was pruned at epoch {step}.")

    def check_pruned(self) -> None:
        """Raise ``optuna.TrialPruned`` if the trial was pruned; call it right after ``trainer.fit``.

        Needed under DDP, where the fit stops on every rank instead of raising; harmless otherwise.
        """
        pruned = self.pruned
        if pruned is not None:
            raise optuna.TrialPruned(f"Trial was pruned at epoch {pruned}.")


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
