"""The curves that compare a sweep's trials in TensorBoard, added to every trial's Trainer.

:func:`trial_curves` gives :func:`~lightopt.sweep.trial.fit_trial` one callback,
:class:`TrialCurves`, which

* adds Lightning's ``LearningRateMonitor`` (learning rate and momentum, tags such as ``lr-SGD`` and
  ``lr-SGD-momentum``) unless the Trainer has one already (from the config's ``trainer.callbacks``
  or the module's ``configure_callbacks``), and unless the trial logs nowhere (``logger: false``);
* logs the study's metric against training examples seen, as ``<metric>/by_examples`` (e.g.
  ``val_loss/by_examples``) in the trial's own TensorBoard run after every validation round: the
  axis that ``report_at: examples`` prunes on, so the curves of trials with different batch sizes
  line up. The count is the trial's :class:`~lightopt.sweep.trial.PruningCallback`'s (kept in
  its checkpoints, so a resumed trial goes on counting);
* makes short trials log a training curve: where an epoch has fewer training batches than
  ``log_every_n_steps`` and the config leaves that at Lightning's default (50), the trial logs
  every ``max(1, batches // 4)`` steps instead, about four points an epoch. Where the config sets
  ``trainer.log_every_n_steps`` itself, its value is kept and the trial warns, as Lightning does
  outside a sweep (the sweep silences Lightning's own warning).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from lightopt.sweep.trial._pruning import PruningCallback

__all__ = ["BY_EXAMPLES", "TrialCurves", "TrialLearningRateMonitor", "has_lr_monitor", "trial_curves"]

#: The suffix of the tag of the study metric against examples seen: ``val_loss/by_examples``.
BY_EXAMPLES = "by_examples"

#: Points an epoch a short trial's training curve gets at least, where lightopt chooses its log interval.
POINTS_PER_EPOCH = 4


def trial_curves(config: Mapping[str, Any], pruning: PruningCallback, logger: Logger | None) -> list[Callback]:
    """The callbacks :func:`~lightopt.sweep.trial.fit_trial` adds for ``config``'s trial.

    ``pruning`` is the trial's pruning callback (its example count is the by-examples axis);
    ``logger`` the trial's TensorBoard logger (the by-examples curve goes there only).
    """
    trainer = config.get("trainer") if isinstance(config, Mapping) else None
    every = trainer.get("log_every_n_steps") if isinstance(trainer, Mapping) else None
    return [TrialCurves(pruning, logger, log_every_n_steps=every)]


def has_lr_monitor(callbacks: Any) -> bool:
    """Whether one of ``callbacks`` is a ``LearningRateMonitor`` (of ``lightning.pytorch`` or ``pytorch_lightning``)."""
    return any(
        cls.__name__ == "LearningRateMonitor" and cls.__module__.startswith(("lightning.", "pytorch_lightning."))
        for callback in callbacks
        for cls in type(callback).__mro__
    )


class TrialLearningRateMonitor(LearningRateMonitor):
    """``LearningRateMonitor(log_momentum=True)`` that logs no momentum where no optimizer has one.

    Lightning's would warn in every trial of, e.g., an AdaGrad sweep and log a momentum of 0.
    """

    def __init__(self) -> None:
        super().__init__(log_momentum=True)

    @override
    def on_train_start(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        self.log_momentum = any(
            "momentum" in optimizer.defaults or "betas" in optimizer.defaults for optimizer in trainer.optimizers
        )
        super().on_train_start(trainer, *args, **kwargs)


class TrialCurves(Callback):
    """Learning-rate and momentum curves, the metric by examples seen, and a log interval that logs (module docstring).

    Args:
        pruning: the trial's :class:`~lightopt.sweep.trial.PruningCallback`: its ``monitor`` is
            the metric, its ``examples`` the step of ``<monitor>/by_examples``.
        logger: the trial's TensorBoard logger; nothing is logged by examples where it is not
            among the Trainer's loggers (``logger: false``).
        log_every_n_steps: the config's ``trainer.log_every_n_steps`` (``None``: not set), which is kept.

    Example:
        >>> from lightopt.sweep.trial import PruningCallback
        >>> curves = TrialCurves(PruningCallback(None, "val_loss"), None)
        >>> curves.tag
        'val_loss/by_examples'
    """

    def __init__(self, pruning: PruningCallback, logger: Logger | None, log_every_n_steps: int | None = None) -> None:
        self.pruning, self.logger, self.log_every_n_steps = pruning, logger, log_every_n_steps
        self.tag = f"{pruning.monitor}/{BY_EXAMPLES}"

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Here the config's, the bridged and the module's (configure_callbacks) callbacks are all attached;
        # Lightning calls the hooks of trainer.callbacks as the list is then, so the monitor gets every later one.
        if stage == "fit" and trainer.loggers and not has_lr_monitor(trainer.callbacks):
            trainer.callbacks.append(TrialLearningRateMonitor())

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        batches, every = trainer.num_training_batches, trainer.log_every_n_steps
        if not trainer.loggers or trainer.fast_dev_run or not every or not math.isfinite(batches) or batches >= every:
            return
        if self.log_every_n_steps is None:  # Lightning's default: one that logs a curve
            trainer.log_every_n_steps = max(1, int(batches) // POINTS_PER_EPOCH)
        else:  # the sweep filters Lightning's warning out (lightopt.sweep.trial._build.quiet_lightning): say it here
            rank_zero_warn(
                f"trainer.log_every_n_steps={every} (the config's) exceeds the {int(batches)} training "
                "batches of an epoch, so this trial logs training steps rarely or never; lower it, or "
                "leave it out and lightopt chooses one that logs.",
                category=UserWarning,
            )

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self.logger is None:
            return
        if not any(logger is self.logger for logger in trainer.loggers):
            return
        value = trainer.callback_metrics.get(self.pruning.monitor)
        if value is None:  # the pruning callback says why
            return
        self.logger.log_metrics({self.tag: float(value)}, step=self.pruning.examples)
