import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset, random_split


class SyntheticRegression(pl.LightningDataModule):
    """y = sin(x·w) plus noise, from a fixed generator."""

    def __init__(self, n_samples: int = 256, in_features: int = 8, batch_size: int = 32, noise: float = 0.05):
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage=None):
        g = torch.Generator().manual_seed(1234)
        x = torch.randn(self.hparams.n_samples, self.hparams.in_features, generator=g)
        w = torch.randn(self.hparams.in_features, generator=g)
        y = torch.sin(x @ w) + self.hparams.noise * torch.randn(self.hparams.n_samples, generator=g)
        self.train_set, self.val_set = random_split(TensorDataset(x, y), [0.75, 0.25], generator=g)

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size)
