"""A regression task with a swappable backbone, written the LightningCLI way (subclass mode)."""

import lightning.pytorch as pl
import torch.nn.functional as F
from torch import nn


class MLPBackbone(nn.Module):
    def __init__(self, in_features: int = 8, hidden: int = 32, depth: int = 1):
        super().__init__()
        layers, width = [], in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.Tanh()]
            width = hidden
        self.layers = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, x):
        return self.layers(x)


class RegressionTask(pl.LightningModule):
    def __init__(self, net: nn.Module, dropout: float = 0.0):
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(net.out_features, 1))

    def forward(self, x):
        return self.head(self.net(x)).squeeze(-1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train/loss", loss, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("valid_loss", F.mse_loss(self(x), y), prog_bar=True)
