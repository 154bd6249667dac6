"""A trial's checkpoints: where a retried trial resumes from, and where its fit started.

A trial keeps ``<trial dir>/checkpoints/last.ckpt`` (:func:`checkpoint_callbacks`); a retry of a
trial whose worker died resumes from it (:func:`last_checkpoint`), and when that resume fails,
from the end-of-epoch checkpoint beside it, else from the start (:func:`fallbacks`).
:class:`StartPoint` records where the fit started.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from typing_extensions import override

__all__ = ["CHECKPOINT_DIR", "EPOCH_END", "LAST", "StartPoint", "checkpoint_callbacks", "fallbacks", "last_checkpoint"]

CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"
EPOCH_END = "epoch-end"  # the end-of-epoch checkpoint kept beside last.ckpt when validation runs mid-epoch


def last_checkpoint(trial_dir: str | Path) -> Path | None:
    """``<trial_dir>/checkpoints/last.ckpt`` if it exists."""
    path = Path(trial_dir) / CHECKPOINT_DIR / LAST
    return path if path.is_file() else None


def fallbacks(checkpoint: str | Path) -> list[str | None]:
    """Where a retry resumes when resuming ``checkpoint`` fails: the end-of-epoch checkpoint beside it, then the start.

    Example:
        >>> fallbacks("runs/s/trial_0001/checkpoints/last.ckpt")  # no end-of-epoch checkpoint there
        [None]
    """
    epoch_end = Path(checkpoint).parent / f"{EPOCH_END}.ckpt"
    return ([str(epoch_end)] if epoch_end.is_file() and epoch_end != Path(checkpoint) else []) + [None]


def checkpoint_callbacks(config: Mapping[str, Any], trial_dir: str | Path) -> list[Callback]:
    """``[ModelCheckpoint(save_last=True)]`` into ``<trial_dir>/checkpoints``, or ``[]``.

    It keeps the latest validation round's checkpoint and a copy named ``last.ckpt`` (Lightning
    writes ``last.ckpt`` only when it saves a top-k checkpoint, so ``save_top_k`` stays 1). When
    validation runs inside epochs (``val_check_interval`` other than 1.0), ``last.ckpt`` may be a
    mid-epoch checkpoint, which some modules cannot resume from (state built in an epoch-start
    hook); a second callback then keeps the last end-of-epoch checkpoint as ``epoch-end.ckpt``,
    the fallback of :func:`fallbacks`.

    Nothing when the config sets ``trainer.enable_checkpointing: false`` or lists its own
    ``ModelCheckpoint`` (whose ``last.ckpt``, with ``save_last``, is then the resume point).

    Example:
        >>> checkpoint_callbacks({"trainer": {"enable_checkpointing": False}}, "runs/s/trial_0000")
        []
        >>> len(checkpoint_callbacks({"trainer": {"val_check_interval": 0.5}}, "runs/s/trial_0000"))
        2
    """
    trainer = config.get("trainer") or {}
    if trainer.get("enable_checkpointing") is False:
        return []
    callbacks = trainer.get("callbacks") or []
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
    for callback in callbacks:
        path = callback.get("class_path", "") if isinstance(callback, Mapping) else type(callback).__name__
        if path.rsplit(".", 1)[-1] == "ModelCheckpoint":
            return []
    directory = str(Path(trial_dir) / CHECKPOINT_DIR)
    kept: list[Callback] = [ModelCheckpoint(dirpath=directory, save_last=True)]
    if trainer.get("val_check_interval", 1.0) not in (None, 1.0):
        kept.append(
            _EpochEndCheckpoint(
                dirpath=directory, filename=EPOCH_END, save_on_train_epoch_end=True, enable_version_counter=False
            )
        )
    return kept


class _EpochEndCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` saving at each epoch's end, with a state key of its own beside the main one."""

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(epoch_end=True, every_n_epochs=self._every_n_epochs)


class StartPoint(Callback):
    """Records where ``fit`` started (``epoch``, ``global_step``): 0 and 0, or a resumed checkpoint's."""

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.global_step: int | None = None

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.epoch, self.global_step = trainer.current_epoch, trainer.global_step
