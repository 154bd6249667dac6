"""A classifier for LightningCLI(Model, DataModule): fixed classes, its own configure_optimizers."""

import torch
import torch.nn.functional as F
from lightning import LightningDataModule, LightningModule
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Blobs(LightningDataModule):
    def __init__(self, batch_size: int = 16, n: int = 192):
        super().__init__()
        self.batch_size, self.n = batch_size, n

    def setup(self, stage=None):
        g = torch.Generator().manual_seed(0)
        labels = torch.randint(0, 3, (self.n,), generator=g)
        points = torch.randn(self.n, 2, generator=g) * 0.7 + torch.eye(3, 2)[labels] * 2
        self.train, self.val = TensorDataset(points[:144], labels[:144]), TensorDataset(points[144:], labels[144:])

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=64)


class BlobClassifier(LightningModule):
    def __init__(self, hidden: int = 8, lr: float = 0.05):
        super().__init__()
        self.save_hyperparameters()
        self.model = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.model(x), y)
        self.log("loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.model(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(-1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
