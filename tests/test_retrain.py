"""lightopt.retrain: Algorithms 7.2 (retrain on all data) and 7.3 (continue on all data)."""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import EarlyStopping as LightningEarlyStopping
from torch.utils.data import DataLoader, TensorDataset

from lightopt.callbacks import EarlyStopping
from lightopt.retrain import ContinueResult, continue_on_all_data, retrain_on_all_data

ERRORS = [5.0, 4.0, 3.0, 3.5, 2.9, 3.0, 3.1, 3.2, 3.3, 1.0]  # the book's sequence: i* = 5
QUIET = dict(
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    num_sanity_val_steps=0,
)
# Subtrain: 8 examples (4 batches of 2); validation: 2 examples (1 batch); all: 5 batches.
X = torch.arange(20.0).reshape(10, 2) / 10
SUBTRAIN, VALID = X[:8], X[8:]


class Data(LightningDataModule):
    """The method form of the data contract: ``train_plus_val_dataloader()``."""

    def train_dataloader(self):
        return DataLoader(TensorDataset(SUBTRAIN), batch_size=2)

    def val_dataloader(self):
        return DataLoader(TensorDataset(VALID), batch_size=2)

    def train_plus_val_dataloader(self):
        return DataLoader(TensorDataset(X), batch_size=2)


class FlaggedData(LightningDataModule):
    """The flag form, like ``DigitsDataModule(train_plus_val=True)``: a hyperparameter."""

    def __init__(self, train_plus_val=False, batch_size=3):
        super().__init__()
        self.save_hyperparameters()

    def train_dataloader(self):
        data = X if self.hparams.train_plus_val else SUBTRAIN
        return DataLoader(TensorDataset(data), batch_size=self.hparams.batch_size)

    def val_dataloader(self):
        return DataLoader(TensorDataset(VALID), batch_size=2)


class Model(LightningModule):
    """A real linear model; its logged validation value after step i is ``script[i]``."""

    def __init__(self, script=None, monitor="val_loss"):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.script, self.monitor = script, monitor
        self.initial = {k: v.clone() for k, v in self.state_dict().items()}
        self.trained_on = []
        self.validated_at = []

    def training_step(self, batch, batch_idx):
        self.trained_on.append(batch[0])
        return (self.layer(batch[0]) - 1).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.validated_at.append(self.global_step)
        self.log(self.monitor, self.script[self.global_step])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def first_run(tmp_path):
    """Algorithm 7.1 on the subtrain/valid split, validating after every step: i* = 5."""
    seed_everything(0)
    module = Model(script=[None, *ERRORS], monitor="val_error")
    early_stopping = EarlyStopping("val_error", patience=3)
    trainer = Trainer(
        default_root_dir=tmp_path,
        max_epochs=-1,
        val_check_interval=1,
        check_val_every_n_epoch=None,
        callbacks=[early_stopping],
        **QUIET,
    )
    trainer.fit(module, datamodule=Data())
    return module, early_stopping


def test_retrain_steps_runs_best_step_from_a_fresh_init(tmp_path):
    first, early_stopping = first_run(tmp_path)
    assert early_stopping.best_step == 5
    made = []

    def factory():
        made.append(Model())
        return made[-1]

    module, trainer = retrain_on_all_data(
        factory, Data(), early_stopping.best_step, trainer_kwargs=dict(default_root_dir=tmp_path, **QUIET)
    )
    assert made == [module]
    assert trainer.global_step == 5  # exactly i* optimizer steps
    assert not torch.equal(module.initial["layer.weight"], first.initial["layer.weight"])  # a fresh θ_o
    assert not torch.equal(module.layer.weight, module.initial["layer.weight"])  # and it trained
    assert torch.equal(torch.cat(module.trained_on), X)  # on subtrain + valid
    assert module.validated_at == []  # no validation, no early stopping


@pytest.mark.parametrize(
    ("data", "best_step", "accumulate", "steps", "epochs"),
    [
        (Data(), 8, 1, 10, 2),  # 2 passes: 4 batches/epoch on subtrain, 5 on all
        (Data(), 5, 1, 6, None),  # 1.25 passes: round(6.25) steps
        (Data(), 4, 2, 6, 2),  # accumulating 2 batches: 2 steps/epoch on subtrain, 3 on all
        (FlaggedData(train_plus_val=True), 6, 1, 8, 2),  # subtrain 8 examples in 3 batches, all 4
    ],
    ids=["whole", "fraction", "accumulate", "flag"],
)
def test_retrain_epochs_matches_passes(tmp_path, data, best_step, accumulate, steps, epochs):
    kwargs = dict(default_root_dir=tmp_path, accumulate_grad_batches=accumulate, **QUIET)
    _module, trainer = retrain_on_all_data(Model, data, best_step, match="epochs", trainer_kwargs=kwargs, seed=1)
    assert trainer.global_step == steps
    if epochs is not None:  # a whole number of passes ends at an epoch boundary
        assert trainer.current_epoch == epochs


def test_retrain_seed_reproduces_the_init(tmp_path):
    kwargs = dict(default_root_dir=tmp_path, **QUIET)
    runs = [retrain_on_all_data(Model, Data(), 1, trainer_kwargs=kwargs, seed=3)[0] for _ in range(2)]
    assert torch.equal(runs[0].initial["layer.weight"], runs[1].initial["layer.weight"])
    assert torch.equal(runs[0].layer.weight, runs[1].layer.weight)


def test_retrain_with_digits_datamodule(tmp_path):
    digits = pytest.importorskip("examples.digits")
    data = digits.DigitsDataModule(batch_size=64, train_plus_val=True)  # 1077 + 360 examples
    kwargs = dict(default_root_dir=tmp_path, **QUIET)
    _, trainer = retrain_on_all_data(
        lambda: digits.DigitsMLP(hidden=8), data, 34, match="epochs", trainer_kwargs=kwargs
    )
    assert (trainer.global_step, trainer.current_epoch) == (46, 2)  # 2 × 17 batches -> 2 × 23


def continue_run(tmp_path, script, target, **kwargs):
    seed_everything(0)
    module = Model(script=script)
    theta_star = {k: v.clone() for k, v in module.state_dict().items()}
    kwargs.setdefault("check_every_n_steps", 1)
    result = continue_on_all_data(
        module, Data(), target, trainer_kwargs=dict(default_root_dir=tmp_path, **QUIET), **kwargs
    )
    assert isinstance(result, ContinueResult) and result.module is module and result.target == target
    return result, theta_star


def test_continue_stops_at_first_check_with_loss_at_most_target(tmp_path):
    # J_valid after step i: the check at step 3 equals ε; Lightning's strict `<` would go on to step 4.
    result, _ = continue_run(tmp_path, [0.9, 0.8, 0.7, 0.5, 0.4, 0.3], 0.5, max_steps=5)
    assert (result.steps, result.reached, result.val_loss) == (3, True, 0.5)
    assert result.module.validated_at == [0, 1, 2, 3]
    assert result.trainer.num_training_batches == 5  # trained on subtrain + valid


def test_continue_checks_every_n_steps(tmp_path):
    result, _ = continue_run(tmp_path, [0.9, 0.8, 0.7, 0.5, 0.4, 0.3, 0.2], 0.5, max_steps=6, check_every_n_steps=2)
    assert (result.steps, result.reached, result.val_loss) == (4, True, pytest.approx(0.4))
    assert result.module.validated_at == [0, 2, 4]


def test_continue_stops_at_max_steps_when_target_never_reached(tmp_path):
    result, theta_star = continue_run(tmp_path, [0.9] * 10, 0.5, max_steps=4)
    assert (result.steps, result.reached, result.val_loss) == (4, False, pytest.approx(0.9))
    assert result.module.validated_at == [0, 1, 2, 3, 4]
    assert not torch.equal(result.module.layer.weight, theta_star["layer.weight"])


def test_continue_runs_no_step_when_theta_star_already_meets_target(tmp_path):
    result, theta_star = continue_run(tmp_path, [0.5, 0.4], 0.5, max_steps=4)
    assert (result.steps, result.reached) == (0, True)
    assert torch.equal(result.module.layer.weight, theta_star["layer.weight"])


def test_continue_ends_unreached_on_non_finite_loss(tmp_path):
    result, _ = continue_run(tmp_path, [0.9, 0.8, math.nan, 0.1], 0.5, max_steps=4)
    assert (result.steps, result.reached) == (2, False)
    assert math.isnan(result.val_loss)


def test_continue_missing_metric_lists_logged_metrics(tmp_path):
    with pytest.raises(RuntimeError, match=r"monitors `val_error`.*one of the following: `val_loss`"):
        continue_run(tmp_path, [0.9] * 3, 0.5, max_steps=2, monitor="val_error")


class NoAllData(LightningDataModule):
    def train_dataloader(self):
        return DataLoader(TensorDataset(SUBTRAIN), batch_size=2)


class AllDataNoVal:
    def train_plus_val_dataloader(self):
        return DataLoader(TensorDataset(X), batch_size=2)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(module_factory=3), TypeError, r"^`module_factory` must be callable"),
        (dict(datamodule=NoAllData()), TypeError, r"no `train_plus_val_dataloader\(\)` method and no true"),
        (dict(datamodule=FlaggedData(train_plus_val=False)), TypeError, r"train_plus_val=True"),
        (dict(best_step=0), ValueError, r"^`best_step` must be an integer >= 1, but got best_step=0\.$"),
        (dict(best_step=2.0), TypeError, r"^`best_step` must be an integer"),
        (dict(match="passes"), ValueError, r"^`match` must be one of 'steps', 'epochs', but got match='passes'\.$"),
        (dict(seed="0"), TypeError, r"^`seed` must be an integer"),
        (dict(trainer_kwargs=[("max_steps", 3)]), TypeError, r"^`trainer_kwargs` must be a mapping"),
        (dict(trainer_kwargs=dict(max_steps=3, max_epochs=1)), ValueError, r"must not set `max_steps`, `max_epochs`"),
        (
            dict(trainer_kwargs=dict(callbacks=[LightningEarlyStopping("val_loss")])),
            ValueError,
            r"must not contain an EarlyStopping",
        ),
        (dict(match="epochs", trainer_kwargs=dict(limit_train_batches=2)), ValueError, r"`limit_train_batches`"),
    ],
)
def test_retrain_invalid_arguments(kwargs, error, match):
    arguments = dict(module_factory=Model, datamodule=Data(), best_step=5)
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        retrain_on_all_data(
            arguments.pop("module_factory"), arguments.pop("datamodule"), arguments.pop("best_step"), **arguments
        )


def test_retrain_factory_must_return_a_lightning_module():
    with pytest.raises(TypeError, match=r"must return a LightningModule, but it returned Linear"):
        retrain_on_all_data(lambda: torch.nn.Linear(2, 1), Data(), 5)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(module=torch.nn.Linear(2, 1)), TypeError, r"^`module` must be a LightningModule"),
        (dict(datamodule=AllDataNoVal()), TypeError, r"`val_dataloader\(\)` method for Algorithm 7\.3"),
        (dict(subtrain_loss="0.5"), TypeError, r"^`subtrain_loss` must be a real number"),
        (dict(subtrain_loss=math.nan), ValueError, r"^`subtrain_loss` must not be NaN"),
        (dict(max_steps=0), ValueError, r"^`max_steps` must be an integer >= 1, but got max_steps=0\.$"),
        (dict(check_every_n_steps=0), ValueError, r"^`check_every_n_steps` must be an integer >= 1"),
        (dict(monitor=1), TypeError, r"^`monitor` must be a string"),
        (dict(trainer_kwargs=dict(val_check_interval=2)), ValueError, r"must not set `val_check_interval`"),
    ],
)
def test_continue_invalid_arguments(kwargs, error, match):
    arguments = dict(module=Model(), datamodule=Data(), subtrain_loss=0.5, max_steps=3)
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        continue_on_all_data(
            arguments.pop("module"), arguments.pop("datamodule"), arguments.pop("subtrain_loss"), **arguments
        )
