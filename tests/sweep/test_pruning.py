"""PruningCallback in real Trainer runs: steps, several validations per epoch, pruning, missing metrics."""

from __future__ import annotations

import math

import lightning as L
import optuna
import pytest
import torch

from examples.digits import DigitsDataModule, DigitsMLP
from lightopt.callbacks import EarlyStopping
from lightopt.sweep import MetricNotLoggedError, PruningCallback
from tests.sweep.helpers import PruneAt


def _fit(callbacks, tmp_path, batch_size=64, model=None, max_epochs=2, **trainer):
    L.seed_everything(0, verbose=False)
    model = model or DigitsMLP(hidden=16)
    trainer = L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=callbacks,
        max_epochs=max_epochs,
        **trainer,
    )
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=batch_size))
    return trainer, model


def _trial(pruner=None):
    return optuna.create_study(pruner=pruner or optuna.pruners.NopPruner()).ask()


def test_two_validations_per_epoch_report_comparable_rounds(tmp_path):
    steps = {}
    for batch_size in (32, 128):
        trial = _trial()
        callback = PruningCallback(trial, "val_loss")
        _fit([callback], tmp_path, batch_size=batch_size, val_check_interval=0.5, limit_train_batches=8)
        steps[batch_size] = sorted(trial.storage.get_trial(trial._trial_id).intermediate_values)
        assert callback.pruned is None and callback.best == min(v for _, v in callback.history)
    assert steps[32] == steps[128] == [1, 2, 3, 4]  # 2 epochs x 2 validations, sanity check not counted


def test_examples_seen_as_step(tmp_path):
    trial = _trial()
    callback = PruningCallback(trial, "val_loss", report_at="examples")
    _fit([callback], tmp_path, batch_size=100, limit_train_batches=3)
    assert [step for step, _ in callback.history] == [300, 600]


def test_pruned_trial_stops_cleanly_and_keeps_best_weights(tmp_path):
    trial = _trial(PruneAt(0, 2))
    pruning = PruningCallback(trial, "val_loss")
    early_stopping = EarlyStopping("val_loss", patience=100)
    trainer, model = _fit([pruning, early_stopping], tmp_path, val_check_interval=0.5, max_epochs=5)
    assert pruning.pruned == 2 and trainer.should_stop
    assert trainer.global_step == 16  # validations every 8 of 17 batches: stopped at the second one, mid-epoch 0
    assert early_stopping.best_score.item() == pytest.approx(pruning.best)
    validated = trainer.validate(model, datamodule=DigitsDataModule(), verbose=False)[0]["val_loss"]
    assert validated == pytest.approx(pruning.best, rel=1e-6)  # the best weights were restored


def test_missing_metric_lists_the_logged_ones(tmp_path):
    with pytest.raises(MetricNotLoggedError, match=r"'val_los' was not logged .*logged metrics: .*val_acc, val_loss"):
        _fit([PruningCallback(_trial(), "val_los")], tmp_path)


def test_nan_metric_stops_as_failure(tmp_path):
    class Diverging(DigitsMLP):
        def validation_step(self, batch, batch_idx):
            self.log("val_loss", torch.tensor(math.nan))

    callback = PruningCallback(_trial(), "val_loss")
    trainer, _ = _fit([callback], tmp_path, model=Diverging(hidden=8))
    assert callback.failure == "val_loss is nan at step 1" and trainer.global_step == 17


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"monitor": ""}, TypeError, "`monitor` must name a logged metric"),
        ({"monitor": "val_loss", "report_at": "epoch"}, ValueError, "`report_at` must be one of"),
        ({"monitor": "val_loss", "mode": "minimize"}, ValueError, "`mode` must be one of 'min', 'max'"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        PruningCallback(None, **kwargs)
