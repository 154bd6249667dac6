"""Build and fit a run config: model, datamodule and Trainer from ``class_path``/``init_args`` blocks.

This is what ``lightopt fit FILE`` runs and what every sweep trial runs. As in LightningCLI, a
top-level ``optimizer`` (and ``lr_scheduler``) replaces the module's ``configure_optimizers``;
they are built by the same code as :class:`lightopt.ConfigureOptimizersMixin`'s, so short class
names, ``interval`` defaults and ``tau`` from the run length behave the same.
"""

from __future__ import annotations

import contextlib
import logging
import types
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightning
import torch

from lightopt._compat import lightning_entry_points_read_once
from lightopt.sweep._imports import import_class

__all__ = ["Run", "build", "fit", "quiet_lightning", "torch_threads"]


@dataclass
class Run:
    """The objects a run config builds; ``datamodule`` is None when the module has its own loaders."""

    model: lightning.LightningModule
    datamodule: lightning.LightningDataModule | None
    trainer: lightning.Trainer


def build(
    config: Mapping[str, Any],
    *,
    seed: int | None = None,
    callbacks: Sequence[lightning.pytorch.Callback] = (),
    trainer_overrides: Mapping[str, Any] | None = None,
    trainer_defaults: Mapping[str, Any] | None = None,
) -> Run:
    """Seed, then instantiate the run config's model, datamodule and Trainer.

    ``seed`` (default: the config's ``seed_everything``, else 0) goes to
    ``lightning.seed_everything(seed, workers=True)`` before anything is built, so the same seed
    gives the same initial weights and data order. ``callbacks`` are appended to the file's;
    ``trainer_overrides`` replace the file's Trainer arguments, ``trainer_defaults`` fill in the ones it
    leaves out.
    """
    seed = config.get("seed_everything") if seed is None else seed
    lightning.seed_everything(0 if seed is None else seed, workers=True, verbose=False)
    model = _instantiate(config["model"])
    datamodule = _instantiate(config["data"]) if config.get("data") is not None else None
    if config.get("optimizer") is not None:
        replace_configure_optimizers(model, config["optimizer"], config.get("lr_scheduler"))
    kwargs = {**(trainer_defaults or {}), **(config.get("trainer") or {}), **(trainer_overrides or {})}
    file_callbacks = kwargs.get("callbacks") or []
    file_callbacks = file_callbacks if isinstance(file_callbacks, list) else [file_callbacks]
    kwargs["callbacks"] = [_instantiate(c) if isinstance(c, Mapping) else c for c in file_callbacks] + list(callbacks)
    logger = kwargs.get("logger")
    if isinstance(logger, Mapping):
        kwargs["logger"] = _instantiate(logger)
    elif isinstance(logger, list):
        kwargs["logger"] = [_instantiate(one) if isinstance(one, Mapping) else one for one in logger]
    with lightning_entry_points_read_once():  # 5 ms or more per Trainer otherwise
        trainer = lightning.Trainer(**kwargs)
    return Run(model, datamodule, trainer)


def fit(config: Mapping[str, Any], **kwargs: Any) -> Run:
    """:func:`build`, then ``trainer.fit``; returns the fitted :class:`Run`."""
    run = build(config, **kwargs)
    run.trainer.fit(run.model, datamodule=run.datamodule)
    return run


def replace_configure_optimizers(
    model: lightning.LightningModule, optimizer: Mapping[str, Any], lr_scheduler: Any = None
) -> None:
    """Give ``model`` a ``configure_optimizers`` that builds ``optimizer`` and ``lr_scheduler`` (LightningCLI's rule)."""
    from lightopt.mixin import _configure_optimizers

    def configure_optimizers(self: lightning.LightningModule) -> Any:
        return _configure_optimizers(self, optimizer, lr_scheduler)

    model.configure_optimizers = types.MethodType(configure_optimizers, model)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` inside the block (None: unchanged), restored after."""
    before = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's per-run info lines and its small-data warnings for many short runs."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [log.level for log in loggers]
    try:
        for log in loggers:
            log.setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*")
            warnings.filterwarnings("ignore", ".*is smaller than the logging interval.*")
            warnings.filterwarnings("ignore", ".*GPU available but not used.*")
            yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)


def _instantiate(config: Mapping[str, Any]) -> Any:
    cls = import_class(config["class_path"], "class_path")
    return cls(**(config.get("init_args") or {}))
