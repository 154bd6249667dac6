"""``configure_optimizers`` built from a LightningModule's constructor arguments."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from lightopt.runconfig import optimizers_from_config

__all__ = ["ConfigureOptimizersMixin"]


class ConfigureOptimizersMixin:
    """Build the optimizer and schedules a LightningModule declares as ``optimizer`` and ``lr_scheduler``.

    Put it before ``LightningModule`` in the bases, give ``__init__`` the two arguments and call
    ``self.save_hyperparameters()``; ``configure_optimizers`` reads ``self.hparams``. Both are plain
    dicts in LightningCLI's form, so ``hparams.yaml``, ``load_from_checkpoint`` and sweeps (which set
    e.g. ``model.init_args.optimizer.init_args.lr``) see the same settings:

    ``optimizer``: ``{"class_path": "lightopt.optim.SGD", "init_args": {"lr": 0.1, "momentum": 0.9}}``
        Any ``torch.optim.Optimizer``, including lightopt's second-order ones (Lightning passes the
        closure they need). ``"no_decay_bias_and_norm": True`` puts biases and the parameters of
        modules whose class name contains ``Norm`` into groups with ``weight_decay=0`` (the book
        penalizes "only the weights of the affine transformation", §7.1).
    ``lr_scheduler``: ``{"class_path": "lightopt.schedules.LinearDecay", "init_args": {"tau": 500}}``
        or a list of such dicts (e.g. LinearDecay beside MomentumSchedule), or None. Optional keys,
        as in Lightning's scheduler config: ``interval`` (default: the class's ``interval``
        attribute, "step" for lightopt schedules, else "epoch"), ``frequency``, ``monitor``
        (``ReduceLROnPlateau`` defaults to "val_loss"; LightningCLI's ``lightning.pytorch.cli.ReduceLROnPlateau``
        to its ``monitor`` init arg), ``strict``, ``name``. An init arg that is
        itself a ``class_path`` dict (``WarmupThen``'s ``after``) becomes a callable of the optimizer.

    A schedule that takes ``tau`` (``LinearDecay``) and is given none gets the run's length:
    ``self.trainer.estimated_stepping_batches`` optimizer steps for ``interval="step"`` (less
    ``warmup_steps`` when nested in ``WarmupThen``), ``max_epochs`` for ``"epoch"``, divided by
    ``frequency``. Class paths may be short names when unambiguous (``"LinearDecay"``,
    ``"StepLR"``; ``"SGD"`` is both lightopt's and torch's, so give the full path).

    Partial dicts, as sweeps and LightningCLI's ``--model.optimizer.init_args.lr=0.05`` produce:
    a dict without ``class_path`` updates the ``__init__`` default (``{"init_args": {"lr": 0.05}}``
    changes only ε), and keys beside the ones above are init args (``{..., "lr": 0.05}``). Leave
    LightningCLI's own top-level ``--optimizer``/``--lr_scheduler`` unset: they replace this.

    Override :meth:`optimizer_param_groups` for per-layer groups with their own ``lr``, etc.

    Example:
        >>> import lightning as L, torch
        >>> from lightopt import ConfigureOptimizersMixin
        >>> class Net(ConfigureOptimizersMixin, L.LightningModule):
        ...     def __init__(self, optimizer: dict, lr_scheduler: dict | None = None):
        ...         super().__init__()
        ...         self.save_hyperparameters()
        ...         self.layer = torch.nn.Linear(4, 2)
        >>> net = Net(optimizer={"class_path": "lightopt.optim.SGD", "init_args": {"lr": 0.1, "momentum": 0.9}},
        ...           lr_scheduler={"class_path": "LinearDecay", "init_args": {"tau": 100}})
        >>> config = net.configure_optimizers()
        >>> type(config["optimizer"]).__name__, config["lr_scheduler"]["interval"]
        ('SGD', 'step')
    """

    def optimizer_param_groups(self) -> list[dict[str, Any]]:
        """The param groups to optimize; override for per-layer settings.

        Each group is ``{"params": [...], **overrides}``, e.g. ``{"params": self.head.parameters(),
        "lr": 0.01}``; keys a group leaves out take the optimizer's ``init_args``. The default is one
        group of every parameter that requires a gradient.
        """
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def configure_optimizers(self) -> Any:
        optimizer_config = self._optimization_config("optimizer")
        if optimizer_config is None:
            raise ValueError(
                f"{type(self).__name__} has no `optimizer` in self.hparams: add an `optimizer` argument to __init__ "
                "(a dict with `class_path` and `init_args`) and call self.save_hyperparameters()."
            )
        return optimizers_from_config(self, optimizer_config, self._optimization_config("lr_scheduler"))

    def _optimization_config(self, name: str) -> Any:
        """``self.hparams[name]``; a dict without ``class_path`` updates the ``__init__`` default."""
        config = getattr(self, "hparams", {}).get(name)
        parameter = inspect.signature(type(self).__init__).parameters.get(name)
        default = None if parameter is None else parameter.default
        if isinstance(config, Mapping) and "class_path" not in config and isinstance(default, Mapping):
            init_args = {**(default.get("init_args") or {}), **(config.get("init_args") or {})}
            config = {**default, **config, "init_args": init_args}
        return config
