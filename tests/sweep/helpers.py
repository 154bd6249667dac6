"""Shared pieces of the sweep tests: a small sweep file, a deterministic pruner, a module that breaks."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna
import yaml

from examples.digits import DigitsMLP


def sweep_dict(log_dir: Path, **study: Any) -> dict[str, Any]:
    """A digits sweep whose trials take a fraction of a second: MLP, 4 batches, 2 epochs."""
    return {
        "study": {
            "name": "s",
            "n_trials": 3,
            "sampler": {"name": "random", "seed": 0},
            "pruner": "none",
            "threads": 1,
            "log_dir": str(log_dir),
            **study,
        },
        "model": {"class_path": "examples.digits.DigitsMLP", "init_args": {"hidden": 16}},
        "data": {"class_path": "examples.digits.DigitsDataModule", "init_args": {"batch_size": 64}},
        "trainer": {"max_epochs": 2, "limit_train_batches": 4, "enable_checkpointing": False, "accelerator": "cpu"},
        "optimizer": {"class_path": "lightopt.optim.SGD", "init_args": {"lr": 0.1, "momentum": 0.9}},
        "search": {
            "optimizer.init_args.lr": {"low": 0.01, "high": 0.5, "log": True},
            "data.init_args.batch_size": {"choices": [32, 64]},
        },
    }


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class PruneAt(optuna.pruners.BasePruner):
    """Prunes trial ``number`` once it has reported step ``step``; never any other trial."""

    def __init__(self, number: int, step: int) -> None:
        self.number, self.step = number, step

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number == self.number and (trial.last_step or 0) >= self.step


class BreakableMLP(DigitsMLP):
    """DigitsMLP that raises in its first training step when ``broken``."""

    def __init__(self, broken: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.broken = broken

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        if self.broken:
            raise RuntimeError("broken on purpose")
        return super().training_step(batch, batch_idx)


class StallingMLP(DigitsMLP):
    """DigitsMLP whose training steps wait from epoch ``stall_epoch`` on while the file ``stall_file`` exists.

    A trial of it stays RUNNING, with the checkpoints of its earlier epochs written, until the test
    kills or interrupts its worker, sends it SIGTERM, or removes the file.
    """

    def __init__(self, stall_file: str = "", stall_epoch: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stall_file, self.stall_epoch = stall_file, stall_epoch

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        while (
            self.stall_file
            and self.current_epoch >= self.stall_epoch
            and Path(self.stall_file).exists()
            and not self.trainer.received_sigterm
        ):  # Lightning stops the fit after this step on SIGTERM
            time.sleep(0.05)
        return super().training_step(batch, batch_idx)


def load_journal(path: Path, name: str = "s") -> optuna.Study:
    """The study ``name`` in the journal file at ``path``, opened with Optuna alone (no lightopt in between)."""
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    return optuna.load_study(study_name=name, storage=storage)
