"""Build and fit a run config (see :mod:`lightopt.runconfig`), and the settings a sweep runs its fits under.

:func:`build` and :class:`Run` are :mod:`lightopt.runconfig`'s: the config is instantiated by
LightningCLI itself. :func:`fit` builds and fits; :func:`torch_threads` and :func:`quiet_lightning`
set the CPU threads and the log level of many short fits.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from lightopt.runconfig import Run, build

__all__ = ["Run", "build", "fit", "quiet_lightning", "torch_threads"]


def fit(config: Mapping[str, Any], **kwargs: Any) -> Run:
    """:func:`build`, then ``trainer.fit`` (with the config's ``ckpt_path``); returns the fitted :class:`Run`."""
    run = build(config, **kwargs)
    run.fit()
    return run


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
    loggers = [
        logging.getLogger(name)
        for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
    ]
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
