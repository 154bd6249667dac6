"""A model-size study as people write one: a regression MLP whose width is searched, logging its size.

Its validation logs ``val_loss`` and ``n_params`` (the parameter count, constant over a fit), so a
study can trade the loss against the size. ``bad_lr`` makes a run clearly bad from its first
round (a learning rate of zero: the loss stays where it started), for pruning tests.
"""

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset


class SizedRegressor(L.LightningModule):
    def __init__(self, width: int = 4, lr: float = 0.05, frozen: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, width), torch.nn.Tanh(), torch.nn.Linear(width, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))
        self.log("n_params", float(sum(p.numel() for p in self.parameters())))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0 if self.hparams.frozen else self.hparams.lr, momentum=0.9)


class CurveData(L.LightningDataModule):
    def __init__(self, batch_size: int = 32):
        super().__init__()
        self.batch_size = batch_size
        generator = torch.Generator().manual_seed(5)
        x = torch.randn(192, 3, generator=generator)
        self.data = TensorDataset(x, torch.sin(x.sum(dim=1, keepdim=True)))

    def train_dataloader(self):
        return DataLoader(self.data, batch_size=self.batch_size)

    def val_dataloader(self):
        return DataLoader(self.data, batch_size=96)
