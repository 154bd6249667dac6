"""lightopt.callbacks.EarlyStopping: Algorithm 7.1 with θ* kept and restored."""

from __future__ import annotations

import math
import signal

import optuna
import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import EarlyStopping as LightningEarlyStopping
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from torch.utils.data import DataLoader, TensorDataset

from lightopt.callbacks import EarlyStopping

# The book's test sequence (§7.8): with n = 1 and p = 3, i* = 5, v = 2.9, stop after i = 8.
ERRORS = [5.0, 4.0, 3.0, 3.5, 2.9, 3.0, 3.1, 3.2, 3.3, 1.0]
X = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
Y = X.sum(dim=1, keepdim=True)


class Scripted(LightningModule):
    """Trains a real (BatchNorm + Linear) model; its validation error after step i is errors[i - 1]."""

    def __init__(self, errors=ERRORS, batches=1):
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(2)  # buffers change each step: θ* must include them
        self.layer = torch.nn.Linear(2, 1)
        self.errors = list(errors)
        self.batches = batches
        self.seen = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        return (self.layer(self.norm(x)) - y).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        value = self.errors[self.global_step - 1]
        self.seen.append(value)
        self.log("val_error", value)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)

    def train_dataloader(self):
        return DataLoader(TensorDataset(X.repeat(self.batches, 1), Y.repeat(self.batches, 1)), batch_size=4)

    def val_dataloader(self):
        return DataLoader(TensorDataset(X, Y), batch_size=4)


class Snapshots(Callback):
    """The module's state_dict after every optimizer step, keyed by global step."""

    def __init__(self):
        self.at = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.at[trainer.global_step] = {k: v.clone() for k, v in pl_module.state_dict().items()}


class AtStep(Callback):
    """Runs ``action(trainer, pl_module)`` after optimizer step ``step``."""

    def __init__(self, step, action):
        self.step, self.action = step, action

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            self.action(trainer, pl_module)


def make_trainer(tmp_path, callbacks, **kwargs):
    options = dict(
        default_root_dir=tmp_path,
        max_epochs=len(ERRORS),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    options.update(kwargs)
    return Trainer(callbacks=callbacks, **options)


def assert_state_equal(actual, expected):
    assert actual.keys() == expected.keys()
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key


# Each evaluation after one step: one batch per epoch (checked at train-epoch end), or ten
# batches in one epoch with validation after every step (checked at validation end).
PER_EPOCH = dict(batches=1, trainer=dict(), best_epoch=4)
PER_STEP = dict(
    batches=10, trainer=dict(max_epochs=1, val_check_interval=1, check_val_every_n_epoch=None), best_epoch=0
)


@pytest.mark.parametrize("layout", [PER_EPOCH, PER_STEP], ids=["per-epoch", "per-step"])
def test_book_sequence(tmp_path, layout):
    seed_everything(0)
    module, snapshots = Scripted(batches=layout["batches"]), Snapshots()
    early_stopping = EarlyStopping("val_error", patience=3)
    trainer = make_trainer(tmp_path, [early_stopping, snapshots], **layout["trainer"])
    trainer.fit(module)

    assert early_stopping.best_step == 5  # i*
    assert early_stopping.best_epoch == layout["best_epoch"]
    assert early_stopping.best_score == torch.tensor(2.9)  # v
    assert trainer.global_step == 8  # stopped right after the evaluation at i = 8
    assert module.seen == ERRORS[:8]  # the 1.0 is never seen
    assert early_stopping.stopping_reason is EarlyStoppingReason.PATIENCE_EXHAUSTED
    assert_state_equal(module.state_dict(), snapshots.at[5])  # θ*, bit for bit
    assert not torch.equal(snapshots.at[8]["layer.weight"], snapshots.at[5]["layer.weight"])
    assert not torch.equal(snapshots.at[8]["norm.running_mean"], snapshots.at[5]["norm.running_mean"])


def raise_pruned(trainer, pl_module):
    raise optuna.TrialPruned("pruned at step 7")


def raise_interrupt(trainer, pl_module):
    raise KeyboardInterrupt


def set_should_stop(trainer, pl_module):
    trainer.should_stop = True


ENDINGS = {
    "max_epochs": (dict(max_epochs=7), [], None, 7),
    "max_steps": (dict(max_steps=7), [], None, 7),
    "other_callback": (dict(), [AtStep(7, set_should_stop)], None, 7),
    "pruned_trial": (dict(), [AtStep(7, raise_pruned)], optuna.TrialPruned, 7),
    "keyboard_interrupt": (dict(), [AtStep(7, raise_interrupt)], SystemExit, 7),  # Lightning exits
}


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_restores_best_however_training_ends(tmp_path, ending):
    trainer_kwargs, extra, raises, last_step = ENDINGS[ending]
    seed_everything(0)
    module, snapshots = Scripted(), Snapshots()
    early_stopping = EarlyStopping("val_error", patience=len(ERRORS))  # never stops by itself
    trainer = make_trainer(tmp_path, [early_stopping, snapshots, *extra], **trainer_kwargs)
    sigint = signal.getsignal(signal.SIGINT)
    try:
        if raises is None:
            trainer.fit(module)
        else:
            with pytest.raises(raises):
                trainer.fit(module)
    finally:
        signal.signal(signal.SIGINT, sigint)  # Lightning ignores SIGINT after a KeyboardInterrupt

    assert trainer.global_step == last_step
    assert early_stopping.best_step == 5
    assert_state_equal(module.state_dict(), snapshots.at[5])
    assert not torch.equal(snapshots.at[last_step]["layer.weight"], snapshots.at[5]["layer.weight"])


LIGHTNING_CONFIGS = {
    "book": (ERRORS, dict(patience=3)),
    "min_delta": (ERRORS, dict(patience=2, min_delta=0.2)),
    "max": ([-e for e in ERRORS], dict(mode="max", patience=2)),
    "stopping_threshold": (ERRORS, dict(patience=3, stopping_threshold=2.95)),
    "divergence_threshold": (ERRORS, dict(patience=5, divergence_threshold=3.4)),
    "non_finite": ([5.0, 4.0, math.nan, 3.0, *ERRORS], dict(patience=3)),
}


@pytest.mark.parametrize("config", list(LIGHTNING_CONFIGS))
def test_without_restore_behaves_like_lightning(tmp_path, config):
    errors, kwargs = LIGHTNING_CONFIGS[config]
    runs = []
    for callback in (
        LightningEarlyStopping("val_error", **kwargs),
        EarlyStopping("val_error", **kwargs, restore_best_weights=False),
    ):
        seed_everything(0)
        module = Scripted(errors)
        trainer = make_trainer(tmp_path, [callback])
        trainer.fit(module)
        runs.append((callback, module, trainer))
    (theirs, their_module, their_trainer), (ours, our_module, our_trainer) = runs

    ours_state = ours.state_dict()
    for key, value in theirs.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(ours_state[key].nan_to_num(7.0), value.nan_to_num(7.0)), key
        else:
            assert ours_state[key] == value, key
    assert our_trainer.global_step == their_trainer.global_step
    assert our_module.seen == their_module.seen or config == "non_finite"
    assert_state_equal(our_module.state_dict(), their_module.state_dict())
    assert "best_weights" not in ours_state  # θ* lives in the checkpoint under its own key


def test_stopping_threshold_counts_as_improvement(tmp_path):
    # Lightning stops at 2.9 < 2.95 without updating best_score (3.0 at step 3); θ* must be step 5's.
    seed_everything(0)
    module, snapshots = Scripted(), Snapshots()
    early_stopping = EarlyStopping("val_error", stopping_threshold=2.95)
    make_trainer(tmp_path, [early_stopping, snapshots]).fit(module)
    assert early_stopping.stopping_reason is EarlyStoppingReason.STOPPING_THRESHOLD
    assert (early_stopping.best_step, early_stopping.best_score) == (5, torch.tensor(2.9))
    assert_state_equal(module.state_dict(), snapshots.at[5])

    lightning_like = EarlyStopping("val_error", stopping_threshold=2.95, restore_best_weights=False)
    make_trainer(tmp_path, [lightning_like]).fit(Scripted())
    assert (lightning_like.best_step, lightning_like.best_score) == (3, torch.tensor(3.0))


def test_best_weights_path(tmp_path):
    seed_everything(0)
    module, snapshots = Scripted(), Snapshots()
    path = tmp_path / "best" / "weights.pt"
    early_stopping = EarlyStopping("val_error", best_weights_path=path)
    make_trainer(tmp_path, [early_stopping, snapshots]).fit(module)
    assert_state_equal(module.state_dict(), snapshots.at[5])
    assert_state_equal(torch.load(path, weights_only=True), snapshots.at[5])
    state = early_stopping.state_dict()
    assert "best_weights" not in state and state["best_weights_file"] == str(path)


def run_with_checkpoints(tmp_path, ckpt_path=None, crash_at=None):
    seed_everything(0)
    module = Scripted()
    early_stopping = EarlyStopping("val_error", patience=3)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    callbacks = [early_stopping, checkpoint]
    if crash_at is not None:
        callbacks.append(AtStep(crash_at, lambda trainer, pl_module: 1 / 0))
    trainer = make_trainer(tmp_path, callbacks, enable_checkpointing=True)
    if crash_at is None:
        trainer.fit(module, ckpt_path=ckpt_path)
    else:
        with pytest.raises(ZeroDivisionError):
            trainer.fit(module)
    return module, early_stopping, trainer


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_crash_and_resume_equals_uninterrupted_run(tmp_path):
    module, early_stopping, trainer = run_with_checkpoints(tmp_path / "whole")
    run_with_checkpoints(tmp_path / "crash", crash_at=7)  # last checkpoint: after step 6
    last = tmp_path / "crash" / "ckpt" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=False)
    saved = checkpoint["callbacks"][early_stopping.state_key]
    assert saved["best_step"] == 5  # θ* is in the checkpoint, beside the comparable state
    assert checkpoint["early_stopping_best_weights"][early_stopping.state_key].keys() == module.state_dict().keys()

    resumed_module, resumed, resumed_trainer = run_with_checkpoints(tmp_path / "crash", ckpt_path=last)
    assert resumed_trainer.global_step == trainer.global_step == 8
    assert (resumed.best_step, resumed.best_epoch) == (early_stopping.best_step, early_stopping.best_epoch)
    assert torch.equal(resumed.best_score, early_stopping.best_score)
    assert resumed.wait_count == early_stopping.wait_count == 3
    assert_state_equal(resumed_module.state_dict(), module.state_dict())


def test_loads_lightning_state_and_shares_its_state_key():
    early_stopping = EarlyStopping("val_error", mode="max")
    assert early_stopping.state_key == LightningEarlyStopping("val_error", mode="max").state_key
    old = LightningEarlyStopping("val_error").state_dict()
    early_stopping = EarlyStopping("val_error")
    early_stopping.load_state_dict(old)  # a checkpoint written without lightopt's fields
    assert (early_stopping.best_step, early_stopping.best_epoch) == (0, None)
    assert "best_weights" not in early_stopping.state_dict()


def test_loads_a_state_that_holds_theta_star_from_an_earlier_lightopt(tmp_path):
    module = Scripted()
    old = {**EarlyStopping("val_error").state_dict(), "best_weights": module.state_dict(), "best_step": 4}
    early_stopping = EarlyStopping("val_error")
    early_stopping.load_state_dict(old)
    assert early_stopping.best_step == 4
    fresh = Scripted()
    early_stopping._restore(None, fresh, barrier=False)
    assert_state_equal(fresh.state_dict(), module.state_dict())


def test_missing_metric_lists_logged_metrics(tmp_path):
    trainer = make_trainer(tmp_path, [EarlyStopping("val_loss")])
    with pytest.raises(RuntimeError, match=r"`val_loss` which is not available.*`val_error`"):
        trainer.fit(Scripted())


def widen_layer(trainer, pl_module):
    pl_module.layer = torch.nn.Linear(2, 3)


def add_layer(trainer, pl_module):
    pl_module.extra = torch.nn.Linear(1, 1)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            widen_layer,
            r"shape changed: layer\.bias \(saved \(1,\), now \(3,\)\), "
            r"layer\.weight \(saved \(1, 2\), now \(3, 2\)\)",
        ),
        (add_layer, r"missing from the saved weights: extra\.bias, extra\.weight"),
    ],
)
def test_restore_into_changed_module_names_the_keys(tmp_path, change, match):
    trainer = make_trainer(tmp_path, [EarlyStopping("val_error"), AtStep(6, change)])
    with pytest.raises(ValueError, match=match):
        trainer.fit(Scripted())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(patience=-1), ValueError, r"^`patience` must be an integer >= 0, but got patience=-1\.$"),
        (dict(patience=1.5), TypeError, r"^`patience` must be an integer, but got patience=1\.5"),
        (dict(min_delta=-0.1), ValueError, r"^`min_delta` must be >= 0, but got min_delta=-0\.1\.$"),
        (dict(mode="avg"), ValueError, r"^`mode` must be one of 'min', 'max', but got mode='avg'\.$"),
        (dict(restore_best_weights="yes"), TypeError, r"^`restore_best_weights` must be True or False"),
        (dict(best_weights_device=0), TypeError, r"^`best_weights_device` must be a string or torch\.device"),
        (dict(best_weights_device="gpu9"), ValueError, r"^`best_weights_device` must name a torch device"),
        (dict(best_weights_path=3), TypeError, r"^`best_weights_path` must be a path or None"),
        (dict(best_weights_path="w.pt", restore_best_weights=False), ValueError, r"only used with restore"),
    ],
)
def test_invalid_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        EarlyStopping("val_error", **kwargs)


def test_boundary_arguments_accepted():
    early_stopping = EarlyStopping("val_error", patience=0, min_delta=0.0, best_weights_device=torch.device("cpu"))
    assert (early_stopping.patience, early_stopping.best_weights_device) == (0, torch.device("cpu"))
