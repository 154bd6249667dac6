"""A small foreign Lightning project for the range-test tests: an MLP regressing generated data.

Its own ``configure_optimizers`` (plain ``torch.optim.SGD`` at ``lr``) unless a run config's
``optimizer`` block replaces it; no lightopt import.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset


class Regression(pl.LightningDataModule):
    """``y = tanh(x @ w) + 0.1 * noise`` on 512 generated points of ``features`` inputs (fixed seed)."""

    def __init__(self, features: int = 8, batch_size: int = 32) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(512, features, generator=generator)
        w = torch.randn(features, 1, generator=generator)
        y = torch.tanh(x @ w) + 0.1 * torch.randn(512, 1, generator=generator)
        self.train_set = TensorDataset(x[:448], y[:448])
        self.val_set = TensorDataset(x[448:], y[448:])
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=64)


class SmallMLP(pl.LightningModule):
    def __init__(self, features: int = 8, hidden: int = 32, lr: float = 0.01) -> None:
        super().__init__()
        self.lr = lr
        self.net = torch.nn.Sequential(torch.nn.Linear(features, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)
