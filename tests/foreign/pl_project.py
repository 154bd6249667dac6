"""A module and datamodule written against the `pytorch_lightning` package, as many repositories are."""

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset


class LitAutoEncoder(pl.LightningModule):
    def __init__(self, bottleneck: int = 2, lr: float = 1e-2):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, bottleneck))
        self.decoder = torch.nn.Sequential(torch.nn.Linear(bottleneck, 12), torch.nn.ReLU(), torch.nn.Linear(12, 6))

    def training_step(self, batch, batch_idx):
        (x,) = batch
        loss = torch.nn.functional.mse_loss(self.decoder(self.encoder(x)), x)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        (x,) = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.decoder(self.encoder(x)), x))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class RandomVectors(pl.LightningDataModule):
    def __init__(self, batch_size: int = 32):
        super().__init__()
        self.batch_size = batch_size
        self.data = TensorDataset(torch.randn(128, 6, generator=torch.Generator().manual_seed(3)))

    def train_dataloader(self):
        return DataLoader(self.data, batch_size=self.batch_size)

    def val_dataloader(self):
        return DataLoader(self.data, batch_size=64)


class NoValidation(pl.LightningModule):
    """Trains on its own loader and never validates (no validation_step), as many quick experiments do."""

    def __init__(self, lr: float = 0.1):
        super().__init__()
        self.layer = torch.nn.Linear(6, 6)
        self.lr = lr

    def training_step(self, batch, batch_idx):
        (x,) = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), x)
        self.log("train_loss", loss)
        return loss

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(64, 6)), batch_size=16)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)
