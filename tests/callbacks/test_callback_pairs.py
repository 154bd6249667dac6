"""Stateful callbacks used together: the weights left in the module are the weights that were scored.

Each test is a real (tiny) Trainer run with two callbacks that both touch the module's weights or
read a metric measured on them, in both orders of the ``callbacks`` list.
"""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import (
    EMAWeightAveraging,
    ModelCheckpoint,
    StochasticWeightAveraging,
    WeightAveraging,
)
from torch.utils.data import DataLoader, TensorDataset

from lightopt.callbacks import (
    Continuation,
    CoordinateDescent,
    EarlyStopping,
    GradientClipping,
    GradientMonitor,
    Initialization,
    PolyakAveraging,
)

_G = torch.Generator().manual_seed(0)
X_TRAIN = torch.randn(64, 4, generator=_G)
X_VAL = torch.randn(32, 4, generator=_G)
W = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
Y_TRAIN = X_TRAIN @ W + 0.5 * torch.randn(64, 1, generator=_G)
Y_VAL = X_VAL @ W + 0.5 * torch.randn(32, 1, generator=_G)


class Regression(LightningModule):
    """Noisy SGD with momentum on a small BatchNorm network: the average differs from the iterate."""

    def __init__(self, batch_norm: bool = True, lr: float = 0.05):
        super().__init__()
        layers = [torch.nn.Linear(4, 8)]
        if batch_norm:
            layers.append(torch.nn.BatchNorm1d(8))  # buffers: averaged, swapped and restored too
        layers += [torch.nn.Tanh(), torch.nn.Linear(8, 1)]
        self.net = torch.nn.Sequential(*layers)
        self.lr = lr

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch  # one batch: the logged epoch value is exactly the full-set loss
        self.log("val_loss", torch.nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)

    def train_dataloader(self):
        return DataLoader(TensorDataset(X_TRAIN, Y_TRAIN), batch_size=8)  # fixed order: resumable

    def val_dataloader(self):
        return DataLoader(TensorDataset(X_VAL, Y_VAL), batch_size=len(X_VAL))


def val_loss(model: LightningModule) -> float:
    """The validation loss of the weights the module holds now (eval mode, no callback swapping)."""
    model.eval()
    with torch.no_grad():
        return torch.nn.functional.mse_loss(model(X_VAL), Y_VAL).item()


def fit(callbacks, tmp_path, model=None, **trainer_kwargs):
    seed_everything(0, verbose=False)
    model = model or Regression()
    trainer_kwargs = {"max_epochs": 12, "enable_checkpointing": False, **trainer_kwargs}
    trainer = Trainer(
        default_root_dir=tmp_path,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **trainer_kwargs,
    )
    trainer.fit(model)
    return trainer, model


def averagers():
    return {
        "polyak-ema": lambda: PolyakAveraging(decay=0.8),
        "polyak-arithmetic": lambda: PolyakAveraging(mode="arithmetic", start_step=16),
        "lightning-ema": lambda: EMAWeightAveraging(decay=0.8),
        "lightning-swa": lambda: WeightAveraging(),
    }


# Each averager with each order; both check hooks for PolyakAveraging's EMA, one each for the rest.
AVERAGER_CHECKS = [
    ("polyak-ema", "train-epoch-end"),
    ("polyak-ema", "validation-end"),
    ("polyak-arithmetic", "validation-end"),
    ("lightning-ema", "train-epoch-end"),
    ("lightning-swa", "validation-end"),
]


@pytest.mark.parametrize(("averager", "check"), AVERAGER_CHECKS)
@pytest.mark.parametrize("early_stopping_first", [True, False], ids=["es-first", "averager-first"])
def test_early_stopping_with_weight_averaging_leaves_the_scored_weights(
    tmp_path, averager, early_stopping_first, check
):
    """The README's pairing: θ* is the average that scored ``best_score``, in either order."""
    early_stopping = EarlyStopping("val_loss", patience=3, check_on_train_epoch_end=check == "train-epoch-end")
    averaging = averagers()[averager]()
    callbacks = [early_stopping, averaging] if early_stopping_first else [averaging, early_stopping]
    trainer, model = fit(callbacks, tmp_path)
    assert early_stopping.best_epoch is not None
    if "ema" in averager:  # the EMA passes its best before the end: restoring matters in both orders
        assert early_stopping.best_epoch < trainer.current_epoch - 1
    assert val_loss(model) == pytest.approx(early_stopping.best_score.item(), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("early_stopping_first", [True, False], ids=["es-first", "averager-first"])
def test_early_stopping_with_several_validations_per_epoch_and_averaging(tmp_path, early_stopping_first):
    early_stopping = EarlyStopping("val_loss", patience=4)
    averaging = PolyakAveraging(decay=0.8)
    callbacks = [early_stopping, averaging] if early_stopping_first else [averaging, early_stopping]
    trainer, model = fit(callbacks, tmp_path, val_check_interval=0.5)
    assert early_stopping.best_step < trainer.global_step
    assert val_loss(model) == pytest.approx(early_stopping.best_score.item(), rel=1e-5, abs=1e-7)


def test_a_training_metric_keeps_the_raw_weights_with_averaging(tmp_path):
    """``train_loss`` is measured on the iterates, not on the average: θ* is the iterate then."""
    early_stopping = EarlyStopping("train_loss", patience=2, check_on_train_epoch_end=True)
    averaging = PolyakAveraging(decay=0.8)
    snapshots = {}

    class Record(EarlyStopping):  # records the raw weights at each train epoch end (after the check)
        def __init__(self):
            super().__init__("unused", strict=False, restore_best_weights=False)

        def on_train_epoch_end(self, trainer, pl_module):
            snapshots[trainer.global_step] = {k: v.clone() for k, v in pl_module.state_dict().items()}

    _trainer, model = fit([averaging, early_stopping, Record()], tmp_path, max_epochs=6)
    restored = model.state_dict()
    expected = snapshots[early_stopping.best_step]
    assert all(torch.equal(restored[k], expected[k]) for k in expected)


@pytest.mark.parametrize("early_stopping_first", [True, False], ids=["es-first", "swa-first"])
def test_early_stopping_with_stochastic_weight_averaging(tmp_path, early_stopping_first):
    """SWA validates the iterates and writes its average at the end: θ* (scored) wins over it."""
    early_stopping = EarlyStopping("val_loss", patience=20)  # runs to max_epochs: SWA transfers
    swa = StochasticWeightAveraging(swa_lrs=0.05, swa_epoch_start=0.5)
    callbacks = [early_stopping, swa] if early_stopping_first else [swa, early_stopping]
    _trainer, model = fit(callbacks, tmp_path, model=Regression(batch_norm=False), max_epochs=8)
    assert val_loss(model) == pytest.approx(early_stopping.best_score.item(), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("averager", ["polyak-ema", "lightning-ema"])
def test_model_checkpoint_with_weight_averaging_saves_the_scored_weights(tmp_path, averager):
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_top_k=1)
    fit([averagers()[averager](), checkpoint], tmp_path, enable_checkpointing=True, max_epochs=6)
    saved = torch.load(checkpoint.best_model_path, weights_only=True)
    fresh = Regression()
    fresh.load_state_dict(saved["state_dict"])
    assert val_loss(fresh) == pytest.approx(checkpoint.best_model_score.item(), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("early_stopping_first", [True, False], ids=["es-first", "averager-first"])
def test_early_stopping_and_averaging_resume_equal_an_uninterrupted_run(tmp_path, early_stopping_first):
    def run(max_epochs, ckpt_path=None, root=tmp_path / "a"):
        early_stopping = EarlyStopping("val_loss", patience=3)
        averaging = PolyakAveraging(decay=0.8)
        callbacks = [early_stopping, averaging] if early_stopping_first else [averaging, early_stopping]
        callbacks.append(ModelCheckpoint(dirpath=root, save_last=True))
        seed_everything(0, verbose=False)
        model = Regression()
        trainer = Trainer(
            default_root_dir=root,
            callbacks=callbacks,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            max_epochs=max_epochs,
        )
        trainer.fit(model, ckpt_path=ckpt_path)
        return early_stopping, model

    whole, whole_model = run(12, root=tmp_path / "whole")
    run(4, root=tmp_path / "part")
    resumed, resumed_model = run(12, ckpt_path=tmp_path / "part" / "last.ckpt", root=tmp_path / "part")
    assert resumed.best_step == whole.best_step and resumed.state_dict() == whole.state_dict()
    assert val_loss(resumed_model) == pytest.approx(resumed.best_score.item(), rel=1e-5, abs=1e-7)
    for key, value in whole_model.state_dict().items():
        torch.testing.assert_close(resumed_model.state_dict()[key], value)


@pytest.mark.parametrize("other", ["initialization", "coordinate-descent", "clipping", "monitor", "continuation"])
@pytest.mark.parametrize("early_stopping_first", [True, False], ids=["es-first", "other-first"])
def test_early_stopping_with_the_other_stateful_callbacks(tmp_path, other, early_stopping_first):
    """Callbacks that change weights only through training steps leave θ* as scored, in either order."""
    model = Regression()
    model.temperature = 1.0
    second = {
        "initialization": lambda: Initialization("orthogonal", seed=3),
        "coordinate-descent": lambda: CoordinateDescent([["net.0"], ["net.1", "net.3"]], steps_per_block=3),
        "clipping": lambda: GradientClipping(0.5),
        "monitor": lambda: GradientMonitor(),
        "continuation": lambda: Continuation("temperature", [1.0, 0.5, 0.25]),
    }[other]()
    early_stopping = EarlyStopping("val_loss", patience=3)
    callbacks = [early_stopping, second] if early_stopping_first else [second, early_stopping]
    _trainer, model = fit(callbacks, tmp_path, model=model)
    assert early_stopping.best_epoch is not None
    assert val_loss(model) == pytest.approx(early_stopping.best_score.item(), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("initialization_first", [True, False], ids=["init-first", "polyak-first"])
def test_polyak_averaging_with_initialization_averages_the_initialized_weights(tmp_path, initialization_first):
    """The averaged copy taken at setup holds the weights before initialization: it must never be used."""

    def run(with_averaging):
        callbacks = [Initialization("orthogonal", seed=3)]
        if with_averaging:
            averaging = PolyakAveraging(decay=0.5)
            callbacks = [*callbacks, averaging] if initialization_first else [averaging, *callbacks]
        return fit(callbacks, tmp_path, max_epochs=None, max_steps=1)[1]

    plain, averaged = run(False), run(True)
    for key, value in plain.state_dict().items():  # θ̂^(1) = θ^(1), the first step from the initialized θ
        torch.testing.assert_close(averaged.state_dict()[key], value)
