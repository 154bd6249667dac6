"""lightopt's EarlyStopping in the scenarios Lightning's own EarlyStopping tests check.

Each scenario of Lightning's ``tests/tests_pytorch/callbacks/test_early_stopping.py``, written
again for lightopt's subclass (θ* kept and restored, the default): the stopping epochs, reasons
and checkpoint states must be the same. Documented differences: a bad ``mode`` raises
``ValueError`` (Lightning: ``MisconfigurationException``); reaching ``stopping_threshold`` counts as
an improvement (see ``test_early_stopping.py``). Lightning's ``ddp_spawn`` variants of the
multiple-callbacks test are covered by the single-process ones here plus ``tests/sweep``'s DDP runs.
"""

from __future__ import annotations

import math
import pickle
from unittest import mock

import cloudpickle
import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.demos.boring_classes import BoringModel

from lightopt.callbacks import EarlyStopping

QUIET = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False}


def _fit(model, callbacks, tmp_path, **kwargs):
    trainer = Trainer(
        default_root_dir=tmp_path, callbacks=callbacks, **{"enable_checkpointing": False, **QUIET, **kwargs}
    )
    trainer.fit(model)
    return trainer


class ValidationLosses(BoringModel):
    """Logs ``name`` = ``losses[current_epoch]`` at the end of each validation epoch."""

    def __init__(self, losses, name="val_loss"):
        super().__init__()
        self.losses, self.name = list(losses), name

    def on_validation_epoch_end(self):
        self.log(self.name, torch.tensor(float(self.losses[self.current_epoch])))


class TrainLosses(BoringModel):
    def __init__(self, losses):
        super().__init__()
        self.losses = list(losses)

    def on_train_epoch_end(self):
        self.log("train_loss", torch.tensor(float(self.losses[self.current_epoch])))


def test_state_key_is_lightnings():
    assert EarlyStopping(monitor="val_loss").state_key == "EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}"


class RecordingEarlyStopping(EarlyStopping):
    """Keeps its state after each epoch's check; on resume, checks the state it was restored to."""

    def __init__(self, expected_state, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.expected_state, self.saved_states = expected_state, []

    def on_train_start(self, trainer, pl_module):
        if self.expected_state:
            assert self.state_dict() == self.expected_state  # compares with ==, θ* is not in it

    def on_train_epoch_end(self, trainer, pl_module):
        super().on_train_epoch_end(trainer, pl_module)
        self.saved_states.append(self.state_dict().copy())


def test_resume_from_checkpoint_restores_a_state_that_compares_equal(tmp_path):
    seed_everything(42)
    model = TrainLosses([5, 4, 4.5, 3])
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="train_loss", save_top_k=1)
    early_stopping = RecordingEarlyStopping(None, monitor="train_loss")
    _fit(
        model,
        [early_stopping, checkpoint],
        tmp_path,
        num_sanity_val_steps=0,
        max_epochs=4,
        enable_checkpointing=True,
        limit_train_batches=2,
        limit_val_batches=2,
    )
    assert len(early_stopping.saved_states) == 4
    saved = torch.load(checkpoint.kth_best_model_path, weights_only=True)
    expected = early_stopping.saved_states[saved["epoch"]]
    assert saved["callbacks"]["RecordingEarlyStopping{'monitor': 'train_loss', 'mode': 'min'}"] == expected
    assert saved["early_stopping_best_weights"][early_stopping.state_key].keys() == model.state_dict().keys()

    resumed = RecordingEarlyStopping(expected, monitor="train_loss")
    trainer = Trainer(
        default_root_dir=tmp_path,
        max_epochs=5,
        callbacks=[resumed],
        enable_checkpointing=False,
        limit_train_batches=2,
        limit_val_batches=2,
        **QUIET,
    )
    trainer.fit(TrainLosses([5, 4, 4.5, 3, 2]), ckpt_path=checkpoint.kth_best_model_path)
    assert resumed.best_score.item() == 2.0


def test_no_extraneous_invocations(tmp_path):
    early_stopping = EarlyStopping(monitor="train_loss")
    with mock.patch.object(early_stopping, "_run_early_stopping_check") as check:
        trainer = _fit(
            TrainLosses([4, 3, 2, 1]),
            [early_stopping],
            tmp_path,
            limit_train_batches=4,
            limit_val_batches=4,
            max_epochs=4,
        )
    assert trainer.early_stopping_callback is early_stopping
    assert trainer.early_stopping_callbacks == [early_stopping]
    assert check.call_count == 4


PATIENCE_CASES = [([6, 5, 5, 5, 5, 5], 3, 4), ([6, 5, 4, 4, 3, 3], 1, 3), ([6, 5, 6, 5, 5, 5], 3, 4)]


@pytest.mark.parametrize(("losses", "patience", "stop_epoch"), PATIENCE_CASES)
def test_patience(tmp_path, losses, patience, stop_epoch):
    early_stopping = EarlyStopping(monitor="test_val_loss", patience=patience, verbose=True)
    model = ValidationLosses(losses + [0] * 4, name="test_val_loss")
    trainer = _fit(model, [early_stopping], tmp_path, num_sanity_val_steps=0, max_epochs=10)
    assert trainer.current_epoch - 1 == stop_epoch


@pytest.mark.parametrize("without_validation", [True, False])
@pytest.mark.parametrize(("losses", "patience", "stop_epoch"), PATIENCE_CASES)
def test_patience_on_a_training_metric(tmp_path, without_validation, losses, patience, stop_epoch):
    model = TrainLosses(losses + [0] * 4)
    if without_validation:
        model.validation_step = None
    early_stopping = EarlyStopping(monitor="train_loss", patience=patience, check_on_train_epoch_end=True)
    trainer = _fit(model, [early_stopping], tmp_path, num_sanity_val_steps=0, max_epochs=10)
    assert trainer.current_epoch - 1 == stop_epoch


def test_pickling_keeps_every_attribute():
    early_stopping = EarlyStopping(monitor="foo")
    for dumps, loads in ((pickle.dumps, pickle.loads), (cloudpickle.dumps, cloudpickle.loads)):
        assert vars(loads(dumps(early_stopping))) == vars(early_stopping)


def test_no_validation_step_falls_back_to_a_training_metric(tmp_path):
    model = TrainLosses([5, 4.95, 4.9, 4.85, 4.8, 4.75, 4.7, 4.65, 4.6, 4.55])
    model.validation_step, model.val_dataloader = None, None
    stopping = EarlyStopping(monitor="train_loss", min_delta=0.1, patience=0, check_on_train_epoch_end=True)
    trainer = _fit(model, [stopping], tmp_path, max_epochs=10, limit_train_batches=2)
    assert trainer.state.finished and trainer.current_epoch < trainer.max_epochs - 1


@pytest.mark.parametrize(
    ("stopping_threshold", "divergence_threshold", "losses", "stop_epoch"),
    [
        (None, None, [8, 4, 2, 3, 4, 5, 8, 10], 5),
        (2.9, None, [9, 8, 7, 6, 5, 6, 4, 3, 2, 1], 8),
        (None, 15.9, [9, 4, 2, 16, 32, 64], 3),
    ],
)
def test_thresholds(tmp_path, stopping_threshold, divergence_threshold, losses, stop_epoch):
    early_stopping = EarlyStopping(
        monitor="abc", stopping_threshold=stopping_threshold, divergence_threshold=divergence_threshold
    )
    trainer = _fit(
        ValidationLosses(losses + [0] * 10, name="abc"),
        [early_stopping],
        tmp_path,
        limit_train_batches=0.2,
        limit_val_batches=0.2,
        max_epochs=20,
    )
    assert trainer.current_epoch - 1 == stop_epoch


@pytest.mark.parametrize("stop_value", [math.inf, math.nan])
def test_non_finite_monitor(tmp_path, stop_value):
    early_stopping = EarlyStopping(monitor="val_loss", check_finite=True)
    trainer = _fit(
        ValidationLosses([4, 3, stop_value, 2, 1]),
        [early_stopping],
        tmp_path,
        limit_train_batches=0.2,
        limit_val_batches=0.2,
        max_epochs=10,
    )
    assert trainer.current_epoch - 1 == 2 and early_stopping.stopped_epoch == 2
    assert early_stopping.best_score.item() == 3.0 and early_stopping.best_epoch == 1


@pytest.mark.parametrize(
    ("limit_train_batches", "min_epochs", "min_steps", "stop_step"),
    [
        (3, 0, 10, 10),
        (5, 0, 10, 10),
        (3, 2, 0, 6),
        (5, 2, 0, 10),
        (3, 1, 10, 10),
        (5, 1, 10, 10),
        (3, 3, 10, 10),
        (5, 3, 10, 15),
    ],
)
def test_min_epochs_and_min_steps_outlast_a_stop(tmp_path, limit_train_batches, min_epochs, min_steps, stop_step):
    class Logged(BoringModel):
        def training_step(self, batch, batch_idx):
            self.log("foo", batch_idx)
            return super().training_step(batch, batch_idx)

    early_stopping = EarlyStopping("foo")
    epochs = max(math.ceil(min_steps / limit_train_batches), min_epochs)
    with mock.patch.object(early_stopping, "_evaluate_stopping_criteria", side_effect=[(True, "")] * epochs):
        trainer = _fit(
            Logged(),
            early_stopping,
            tmp_path,
            limit_val_batches=0,
            limit_train_batches=limit_train_batches,
            min_epochs=min_epochs,
            min_steps=min_steps,
        )
    assert trainer.should_stop and trainer.current_epoch == epochs and trainer.global_step == stop_step


def test_bad_mode_is_a_value_error():
    with pytest.raises(ValueError, match=r"`mode` must be one of .*unknown_option"):
        EarlyStopping(monitor="foo", mode="unknown_option")


class TwoMetrics(BoringModel):
    def __init__(self, on_train):
        super().__init__()
        self.on_train = on_train

    def _log(self):
        self.log("abc", torch.tensor([8, 4, 2, 3, 4, 5, 8, 10][self.current_epoch]))
        self.log("cba", torch.tensor(0))

    def on_train_epoch_end(self):
        if self.on_train:
            self._log()

    def on_validation_epoch_end(self):
        if not self.on_train:
            self._log()


@pytest.mark.parametrize("on_train", [False, True])
@pytest.mark.parametrize("abc_first", [True, False])
def test_multiple_early_stoppings_stop_when_any_says_so(tmp_path, on_train, abc_first):
    check = {"check_on_train_epoch_end": True} if on_train else {}
    callbacks = [EarlyStopping("abc", **check), EarlyStopping("cba", patience=3, **check)]
    if not abc_first:
        callbacks.reverse()
    trainer = _fit(
        TwoMetrics(on_train), callbacks, tmp_path, limit_train_batches=0.1, limit_val_batches=0.1, max_epochs=20
    )
    assert trainer.current_epoch - 1 == 3
    abc = next(c for c in callbacks if c.monitor == "abc")
    assert abc.best_epoch == 2  # θ* of each is its own


@pytest.mark.parametrize(
    ("kwargs", "side_effect_calls"),
    [
        ({"val_check_interval": 0.3, "limit_train_batches": 10, "max_epochs": 10}, "steps"),
        ({"check_val_every_n_epoch": 2, "max_epochs": 5}, "epochs"),
    ],
)
def test_check_on_train_epoch_end_smart_handling(tmp_path, kwargs, side_effect_calls):
    class Logged(BoringModel):
        def validation_step(self, batch, batch_idx):
            self.log("foo", 1)
            return super().validation_step(batch, batch_idx)

    early_stopping = EarlyStopping(monitor="foo")
    with mock.patch.object(early_stopping, "_evaluate_stopping_criteria", side_effect=[(False, "A"), (True, "B")]) as m:
        trainer = _fit(Logged(), early_stopping, tmp_path, limit_val_batches=1, **kwargs)
    assert m.call_count == 2
    if side_effect_calls == "steps":
        assert trainer.global_step == 2 * int(trainer.limit_train_batches * trainer.val_check_interval)
    else:
        assert trainer.current_epoch == 2 * trainer.check_val_every_n_epoch


def test_the_monitored_value_is_squeezed():
    early_stopping = EarlyStopping(monitor="foo")
    trainer = Trainer(**QUIET)
    trainer.callback_metrics["foo"] = torch.tensor([[[0]]])
    with mock.patch.object(early_stopping, "_evaluate_stopping_criteria", return_value=(False, "")) as m:
        early_stopping._run_early_stopping_check(trainer)
    m.assert_called_once_with(torch.tensor(0))


@pytest.mark.parametrize(
    ("log_rank_zero_only", "world_size", "global_rank", "expected"),
    [
        (False, 1, 0, "bar"),
        (False, 2, 0, "[rank: 0] bar"),
        (False, 2, 1, "[rank: 1] bar"),
        (True, 1, 0, "bar"),
        (True, 2, 0, "[rank: 0] bar"),
        (True, 2, 1, None),
    ],
)
def test_log_info(log_rank_zero_only, world_size, global_rank, expected):
    trainer = mock.Mock(global_rank=global_rank, world_size=world_size)
    with mock.patch("lightning.pytorch.callbacks.early_stopping.log.info") as info:
        EarlyStopping._log_info(trainer, "bar", log_rank_zero_only)
    if expected:
        info.assert_called_once_with(expected)
    else:
        info.assert_not_called()


@pytest.mark.parametrize(
    ("losses", "kwargs", "max_epochs", "reason", "message"),
    [
        ([10.0] * 10, {"patience": 2}, 10, EarlyStoppingReason.PATIENCE_EXHAUSTED, "did not improve"),
        (
            [5.0, 3.0, 1.0, 0.5] + [0.1] * 6,
            {"stopping_threshold": 0.6},
            10,
            EarlyStoppingReason.STOPPING_THRESHOLD,
            "Stopping threshold reached",
        ),
        (
            [1.0, 2.0, 5.0, 10.0] + [15.0] * 6,
            {"divergence_threshold": 8.0},
            10,
            EarlyStoppingReason.DIVERGENCE_THRESHOLD,
            "Divergence threshold reached",
        ),
        (
            [1.0, 0.5] + [math.nan] * 8,
            {"check_finite": True},
            10,
            EarlyStoppingReason.NON_FINITE_METRIC,
            "is not finite",
        ),
        ([5.0, 4.0, 3.0], {"patience": 3}, 3, EarlyStoppingReason.NOT_STOPPED, None),
    ],
)
def test_stopping_reasons(tmp_path, losses, kwargs, max_epochs, reason, message):
    early_stopping = EarlyStopping(monitor="val_loss", verbose=True, **kwargs)
    _fit(ValidationLosses(losses), [early_stopping], tmp_path, max_epochs=max_epochs)
    assert early_stopping.stopping_reason == reason
    if message is None:
        assert early_stopping.stopping_reason_message is None and early_stopping.stopped_epoch == 0
    else:
        assert message in early_stopping.stopping_reason_message and early_stopping.stopped_epoch > 0


def test_stopping_reason_survives_a_state_round_trip():
    early_stopping = EarlyStopping(monitor="val_loss", patience=3)
    early_stopping.stopping_reason = EarlyStoppingReason.PATIENCE_EXHAUSTED
    early_stopping.stopping_reason_message = "Test message"
    loaded = EarlyStopping(monitor="val_loss", patience=3)
    loaded.load_state_dict(early_stopping.state_dict())
    assert loaded.stopping_reason == EarlyStoppingReason.PATIENCE_EXHAUSTED
    assert loaded.stopping_reason_message == "Test message"
    assert loaded.state_dict() == early_stopping.state_dict()


def test_loads_an_old_state_without_the_newer_fields():
    early_stopping = EarlyStopping(monitor="val_loss", patience=3)
    early_stopping.load_state_dict(
        {"wait_count": 2, "stopped_epoch": 5, "best_score": torch.tensor(0.5), "patience": 3}
    )
    assert early_stopping.stopping_reason == EarlyStoppingReason.NOT_STOPPED
    assert early_stopping.stopping_reason_message is None
    assert (early_stopping.wait_count, early_stopping.stopped_epoch) == (2, 5)
    assert (early_stopping.best_step, early_stopping.best_epoch) == (0, None)


def test_state_dict_compares_with_equality_after_a_fit_that_kept_theta_star(tmp_path):
    early_stopping = EarlyStopping(monitor="val_loss", patience=3)
    _fit(ValidationLosses([3.0, 2.0, 2.5, 2.6, 2.7, 2.8]), [early_stopping], tmp_path, max_epochs=6)
    assert early_stopping._best_weights is not None  # θ* kept ...
    state = early_stopping.state_dict()
    assert state == early_stopping.state_dict()  # ... and the state still compares
    assert all(not isinstance(v, dict) for v in state.values())
