"""A user's own Optuna script with pruning, as people write it: ``study.optimize`` over ``trainer.fit``.

``python tests/sweep/pruning_script.py OUT STRATEGY DEVICES STORAGE [PROTOCOL ...]`` runs, for each
protocol (``lightopt``: lightopt's ``PruningCallback``; ``optuna-integration``: the
optuna-integration-style ``PyTorchLightningPruningCallback``; both by default),
a study of two trials whose pruner prunes trial 0 at step 1, and writes ``OUT/result.json``: each
trial's state and intermediate steps, or the error that ended the study. ``STORAGE`` is ``memory``
or ``journal``. Under ``ddp`` Lightning starts rank 1 as this script again; it runs its own
in-memory study in step with rank 0's and writes nothing.
"""

from __future__ import annotations

import json
import os
import sys

import lightning.pytorch as pl
import optuna
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightopt.sweep import PruningCallback, PyTorchLightningPruningCallback


class PruneTrialZero(optuna.pruners.BasePruner):
    """Prunes trial 0 once it reported step 1 or later; never trial 1."""

    def prune(self, study, trial):
        return trial.number == 0 and (trial.last_step or 0) >= 1


class Net(pl.LightningModule):
    def __init__(self, lr):
        super().__init__()
        self.lr = lr
        self.layer = torch.nn.Linear(8, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 8, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)


def objective_for(protocol, strategy, devices, root):
    def objective(trial):
        lr = trial.suggest_float("lr", 1e-3, 1e-1, log=True)
        if protocol == "lightopt":
            pruning = PruningCallback(trial, "val_loss")
        else:
            pruning = PyTorchLightningPruningCallback(trial, monitor="val_loss")
        trainer = pl.Trainer(
            strategy=strategy,
            devices=devices,
            accelerator="cpu",
            max_epochs=3,
            callbacks=[pruning],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            default_root_dir=root,
        )
        trainer.fit(Net(lr), train_dataloaders=loader(), val_dataloaders=loader())
        if protocol == "lightopt":
            if pruning.pruned is not None:
                raise optuna.TrialPruned(f"pruned at step {pruning.pruned}")
        else:
            pruning.check_pruned()
        return trainer.callback_metrics["val_loss"].item()

    return objective


PROTOCOLS = ("lightopt", "optuna-integration")


def run(out, strategy, devices, storage_kind, protocols=PROTOCOLS):
    rank = int(os.environ.get("LOCAL_RANK", 0))
    results = {}
    for protocol in protocols:
        storage = None
        if storage_kind == "journal" and rank == 0:
            backend = optuna.storages.journal.JournalFileBackend(os.path.join(out, f"{protocol}.log"))
            storage = optuna.storages.JournalStorage(backend)
        study = optuna.create_study(
            storage=storage, pruner=PruneTrialZero(), sampler=optuna.samplers.RandomSampler(seed=0)
        )
        try:
            study.optimize(objective_for(protocol, strategy, devices, out), n_trials=2)
            error = None
        except Exception as exc:  # the study stops at the first failed trial
            error = f"{type(exc).__name__}: {exc}"
        results[protocol] = {
            "states": [t.state.name for t in study.trials],
            "steps": [sorted(t.intermediate_values) for t in study.trials],
            "error": error,
        }
    if rank == 0:
        with open(os.path.join(out, "result.json"), "w") as file:
            json.dump(results, file)
    return results


if __name__ == "__main__":
    out, strategy, devices, storage_kind = sys.argv[1:5]
    run(out, strategy, int(devices), storage_kind, tuple(sys.argv[5:]) or PROTOCOLS)
