"""The curves that compare trials (lightopt.sweep.trial._curves): learning rate and momentum in every trial, the
study metric against examples seen, and a training curve in a short trial; read back from real sweeps' event files."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import optuna
import pytest
from lightning.pytorch.callbacks import LearningRateMonitor
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightopt.sweep import load, run_sweep
from lightopt.sweep.trial import PruningCallback, fit_trial
from lightopt.sweep.trial._curves import TrialLearningRateMonitor
from tests.sweep.helpers import sweep_dict, write

TRAIN_SIZE = 1077  # DigitsDataModule's training split
# trial number -> its parameters: the same lr, two batch sizes (34 and 17 batches an epoch, both under 50)
PARAMS = [
    {"optimizer.init_args.lr": 0.1, "data.init_args.batch_size": 32},
    {"optimizer.init_args.lr": 0.05, "data.init_args.batch_size": 64},
]


class FixedSampler(optuna.samplers.RandomSampler):
    """Gives trial ``i`` the parameters ``rows[i]``."""

    def __init__(self, rows):
        super().__init__(seed=0)
        self.rows = rows

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.rows[trial.number][param_name]


def _scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    run = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    return {tag: [(event.step, event.value) for event in run.Scalars(tag)] for tag in run.Tags()["scalars"]}


def _run_config(**trainer):
    """A digits run config (no study): 4 batches of 64 an epoch, 2 epochs, unless ``trainer`` says otherwise."""
    data = sweep_dict(Path("unused"))
    del data["study"], data["search"]
    data["trainer"] = {**data["trainer"], **trainer}
    return data


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two complete trials of whole epochs, batch size 32 and 64, with the file's defaults (no log_every_n_steps)."""
    root = tmp_path_factory.mktemp("curves")
    data = sweep_dict(root / "runs", n_trials=len(PARAMS))
    del data["trainer"]["limit_train_batches"]  # whole epochs: both batch sizes see the same examples
    result = run_sweep(load(write(root / "sweep.yaml", data)), out=io.StringIO(), sampler=FixedSampler(PARAMS))
    trials = result.study.trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    return trials, [_scalars(t.user_attrs["log_dir"]) for t in trials]


def test_every_trial_logs_its_learning_rate_and_momentum(sweep):
    trials, runs = sweep
    for trial, run in zip(trials, runs):
        lr = trial.params["optimizer.init_args.lr"]
        assert [value for _, value in run["lr-SGD"]] == pytest.approx([lr] * len(run["lr-SGD"]))
        assert [value for _, value in run["lr-SGD-momentum"]] == pytest.approx([0.9] * len(run["lr-SGD"]))
        assert len(run["lr-SGD"]) > 2  # a curve over the fit, not one point


def test_the_metric_by_examples_seen_lines_up_trials_of_different_batch_sizes(sweep):
    trials, runs = sweep
    for run in runs:
        assert [step for step, _ in run["val_loss/by_examples"]] == [TRAIN_SIZE, 2 * TRAIN_SIZE]
        assert [value for _, value in run["val_loss/by_examples"]] == [value for _, value in run["val_loss"]]
    # on the step axis the batch-32 trial ran twice as far as the batch-64 one
    assert runs[0]["val_loss"][-1][0] != runs[1]["val_loss"][-1][0]
    assert [value for _, value in runs[0]["val_loss/by_examples"]] == pytest.approx(
        [v for _, v in sorted(trials[0].intermediate_values.items())]
    )


def test_a_trial_shorter_than_the_default_log_interval_logs_a_training_curve(sweep):
    _, runs = sweep
    for run, batches in zip(runs, (34, 17)):  # both under Lightning's default interval of 50
        steps = [step for step, _ in run["train_loss_step"]]
        assert len(steps) >= 2 * 4  # about four points an epoch, two epochs
        assert steps[0] == batches // 4 - 1


def test_the_by_examples_steps_are_the_pruning_reports_with_report_at_examples(tmp_path):
    data = sweep_dict(tmp_path / "runs", n_trials=2, report_at="examples")
    result = run_sweep(load(write(tmp_path / "sweep.yaml", data)), out=io.StringIO(), sampler=FixedSampler(PARAMS))
    for trial in result.study.trials:
        run = _scalars(trial.user_attrs["log_dir"])
        batch = trial.params["data.init_args.batch_size"]
        assert [step for step, _ in run["val_loss/by_examples"]] == [4 * batch, 8 * batch]  # 4 batches an epoch
        assert dict(run["val_loss/by_examples"]) == pytest.approx(trial.intermediate_values)
        assert "train_loss_step" in run and "lr-SGD-momentum" in run


def test_a_config_with_its_own_learning_rate_monitor_gets_no_second_one(tmp_path):
    monitor = {
        "class_path": "lightning.pytorch.callbacks.LearningRateMonitor",
        "init_args": {"logging_interval": "step"},
    }  # no momentum
    run = fit_trial(_run_config(callbacks=[monitor]), 0, PruningCallback(None, "val_loss"), tmp_path, "t")
    monitors = [c for c in run.trainer.callbacks if isinstance(c, LearningRateMonitor)]
    assert len(monitors) == 1 and not isinstance(monitors[0], TrialLearningRateMonitor)
    scalars = _scalars(tmp_path / "t")
    assert "lr-SGD" in scalars and "lr-SGD-momentum" not in scalars

    plain = fit_trial(_run_config(), 0, PruningCallback(None, "val_loss"), tmp_path, "u")
    assert [type(c) for c in plain.trainer.callbacks if isinstance(c, LearningRateMonitor)] == [
        TrialLearningRateMonitor
    ]
    assert plain.trainer.log_every_n_steps == 1  # 4 batches an epoch
    assert {"lr-SGD", "lr-SGD-momentum", "train_loss_step"} <= set(_scalars(tmp_path / "u"))


def test_an_optimizer_without_momentum_logs_its_learning_rate_without_a_warning(tmp_path):
    adagrad = {"class_path": "torch.optim.Adagrad", "init_args": {"lr": 0.1}}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fit_trial({**_run_config(), "optimizer": adagrad}, 0, PruningCallback(None, "val_loss"), tmp_path, "t")
    scalars = _scalars(tmp_path / "t")
    assert "lr-Adagrad" in scalars and not any("momentum" in tag for tag in scalars)


def test_a_log_interval_the_config_sets_is_kept_with_a_warning(tmp_path):
    with pytest.warns(UserWarning, match=r"log_every_n_steps=50 \(the config's\) exceeds the 4 training batches"):
        run = fit_trial(_run_config(log_every_n_steps=50), 0, PruningCallback(None, "val_loss"), tmp_path, "t")
    assert run.trainer.log_every_n_steps == 50
    assert "train_loss_step" not in _scalars(tmp_path / "t")


def test_a_trial_that_logs_nowhere_gets_no_monitor(tmp_path):
    run = fit_trial(_run_config(logger=False), 0, PruningCallback(None, "val_loss"), tmp_path, "t")
    assert not any(isinstance(c, LearningRateMonitor) for c in run.trainer.callbacks)
    assert not (tmp_path / "t").exists() or not list((tmp_path / "t").glob("events.out.tfevents.*"))
