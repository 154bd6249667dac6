"""A module for the DDP tests: each rank writes down what it trained with and saw; one rank can break."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from examples.digits import DigitsMLP


class RecordingMLP(DigitsMLP):
    """DigitsMLP that writes ``<record_dir>/<run>_rank<R>.json`` at the end of its fit (``run``: the log folder's name).

    The record holds the rank, its pid, the world size, the optimizer's ``lr`` and ``momentum``, the
    global step the fit stopped at and ``val_loss`` after each validation round on this rank. Rank
    ``broken_rank`` of the run named ``broken_run`` raises in its first training step.
    """

    def __init__(
        self, record_dir: str = ".", broken_rank: int | None = None, broken_run: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.record_dir, self.broken_rank, self.broken_run = record_dir, broken_rank, broken_run
        self.val_losses: list[float] = []

    def _run_name(self) -> str:
        return Path(self.trainer.default_root_dir).name

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        if self.global_rank == self.broken_rank and self._run_name() == self.broken_run:
            raise RuntimeError(f"rank {self.global_rank} broken on purpose")
        return super().training_step(batch, batch_idx)

    def on_validation_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.val_losses.append(float(self.trainer.callback_metrics["val_loss"]))

    def on_fit_end(self) -> None:
        group = self.trainer.optimizers[0].param_groups[0]
        record = {
            "rank": self.global_rank,
            "pid": os.getpid(),
            "world_size": self.trainer.world_size,
            "lr": group["lr"],
            "momentum": group["momentum"],
            "global_step": self.trainer.global_step,
            "val_losses": self.val_losses,
        }
        path = Path(self.record_dir) / f"{self._run_name()}_rank{self.global_rank}.json"
        path.write_text(json.dumps(record))
