"""The learning-rate range test (§8.3.1) on a small foreign Lightning project: suggestion, restore, effective step."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch

from lightopt.runconfig import Run
from lightopt.sweep.spec import SweepFile, lr_entry, parse_search
from lightopt.sweep.trial import DIVERGENCE, range_test, run_range_test, suggest_range, unbiased
from tests.sweep.trial.range_project import Regression, SmallMLP

PROJECT = "tests.sweep.trial.range_project"


def config(**trainer):
    return {
        "model": {"class_path": f"{PROJECT}.SmallMLP"},
        "data": {"class_path": f"{PROJECT}.Regression"},
        "trainer": {"accelerator": "cpu", "max_epochs": 1, "limit_train_batches": 4, **trainer},
    }


@pytest.fixture(scope="module")
def tested():
    """One 100-step test from 1e-4 to 100 of a config that asks for DDP on two devices."""
    return range_test(config(devices=2, strategy="ddp"), min_lr=1e-4, max_lr=100.0, steps=100, seed=0)


def test_suggested_upper_end_is_below_the_divergence_and_in_the_known_good_decade(tested):
    # Fixed-lr SGD on this problem for 100 steps (seed 0): val_loss 0.083 at lr 0.1, 0.024 at 0.3, nan at 1.0.
    assert tested.diverged is not None
    divergence = tested.values[tested.diverged]
    assert tested.high < divergence
    assert 0.1 <= tested.high < 1.0
    assert tested.low == pytest.approx(tested.high / 100)
    assert tested.losses[tested.diverged] > DIVERGENCE * min(tested.losses[10:]) or not math.isfinite(
        tested.losses[tested.diverged]
    )
    assert tested.losses[tested.best] == min(tested.losses[10:])


def test_values_grow_exponentially_from_min_lr(tested):
    assert tested.values[0] == pytest.approx(1e-4)
    ratios = [b / a for a, b in zip(tested.values, tested.values[1:])]
    # six decades in 100 steps (Lightning's schedule takes its first two steps at once)
    assert ratios[1:] == pytest.approx([10 ** (6 / 100)] * (len(ratios) - 1), rel=1e-6)


def test_table_plot_and_ddp_note(tested, tmp_path):
    table = tested.table()
    assert table.splitlines()[0].split()[:2] == ["step", "lr"]
    assert "<- lowest" in table and "<- diverged" in table
    assert len(table.splitlines()) <= 24
    described = tested.describe()
    assert f"[{tested.low:.3g}, {tested.high:.3g}]" in described and "§8.3.1" in described
    assert "devices=2, strategy=ddp" in described and "one process" in described
    path = tested.plot(tmp_path / "curve" / "lr.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_module_weights_and_folder_are_the_same_after(tmp_path):
    pl.seed_everything(0, verbose=False)
    model, data = SmallMLP(), Regression()
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = run_range_test(Run(model, data, trainer, {}), min_lr=1e-3, max_lr=10.0, steps=20)
    assert len(result.values) >= 10
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert list(tmp_path.iterdir()) == []  # Lightning's checkpoint of the weights is removed


def test_effective_step_entry_reports_both_coordinates():
    run = {
        **config(),
        "optimizer": {"class_path": "lightopt.optim.SGD", "init_args": {"lr": 0.1, "momentum": 0.9}},
    }
    search = parse_search({"optimizer.init_args.lr": {"range_test": True, "coordinate": "effective"}}, run)
    entry = lr_entry(SweepFile(run, search=search))
    result = range_test(run, entry, min_lr=1e-2, max_lr=10.0, steps=20, seed=0)
    # the test ramps ε; its values are ε/(1 - α)
    assert result.values[0] == pytest.approx(1e-2)
    assert entry.lr(result.values[0]) == pytest.approx(1e-3)
    assert result.table().splitlines()[0].split()[:3] == ["step", "lr", "effective"]
    described = result.describe()
    assert "effective step lr/(1-α) at the file's momentum α=0.9" in described
    assert f"lr [{result.low * 0.1:.3g}, {result.high * 0.1:.3g}]" in described
    assert result.record()["coordinate"] == "effective" and result.record()["momentum"] == 0.9


def test_searched_momentum_adds_the_effective_column():
    run = {
        **config(),
        "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1, "momentum": 0.5}},
    }
    search = parse_search(
        {
            "optimizer.init_args.lr": {"low": 1e-3, "high": 1.0, "log": True},
            "optimizer.init_args.momentum": {"low": 0.0, "high": 0.9},
        },
        run,
    )
    entry = lr_entry(SweepFile(run, search=search))
    assert (entry.coordinate, entry.momentum, entry.low, entry.high) == ("lr", 0.5, 1e-3, 1.0)
    row = [0.01, 0.02, 0.5, 1.0]
    assert entry.effective(row[0]) == pytest.approx(0.02)
    from lightopt.sweep.trial import RangeTest

    result = RangeTest(entry, tuple(row), (1.0, 0.9, 0.8, 5.0), 0.0005, 0.05, 2, 3, (0.01, 1.0), 4)
    assert "lr/(1-α)" in result.table().splitlines()[0]
    assert "effective step lr/(1-α) at α=0.5: [0.001, 0.1]" in result.describe()


def test_suggest_range_rule():
    values = [10 ** (-4 + i / 10) for i in range(40)]
    losses = [0.1] + [2.0 - i / 100 for i in range(1, 30)] + [5.0] * 10
    low, high, best = suggest_range(values, losses)
    assert best == 29  # the first steps (a lucky first batch) are not looked at
    assert high == values[29] and low == pytest.approx(high / 100)
    # the lower end stays inside the tested range
    assert suggest_range(values, losses, (values[25], values[39]))[:2] == (values[25], values[29])
    with pytest.raises(ValueError, match="no finite loss"):
        suggest_range([1.0, 2.0], [math.nan, math.inf])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 1}, "`steps` must be an integer >= 2"),
        ({"min_lr": 0.0}, "`min_lr` must be a finite number > 0"),
        ({"max_lr": math.inf}, "`max_lr` must be a finite number > 0"),
        ({"min_lr": 1.0, "max_lr": 0.1}, "`min_lr` must be < `max_lr`"),
    ],
)
def test_bad_arguments_are_refused_before_building(kwargs, match):
    with pytest.raises(ValueError, match=match):
        range_test({"model": {"class_path": "not.built"}}, **kwargs)


def test_a_schedule_that_needs_the_run_length_is_set_aside():
    """The README's main sweep has LinearDecay with no tau (the run's length): the test runs without it."""
    with_schedule = {
        **config(max_epochs=6),
        "optimizer": {"class_path": "lightopt.optim.SGD", "init_args": {"lr": 0.05, "momentum": 0.9}},
        "lr_scheduler": {"class_path": "lightopt.schedules.LinearDecay", "init_args": {"final_ratio": 0.01}},
    }
    result = range_test(with_schedule, min_lr=1e-4, max_lr=10.0, steps=30, seed=0)
    assert len(result.values) >= 10 and result.low < result.high


def test_a_model_without_an_lr_attribute_whose_optimizer_comes_from_the_config():
    """The shipped digits ConvNet has no `lr`: the optimizer is the config's; the test still runs."""
    digits = {
        "model": {"class_path": "examples.digits.DigitsConvNet", "init_args": {"channels": 4}},
        "data": {"class_path": "examples.digits.DigitsDataModule", "init_args": {"batch_size": 64}},
        "trainer": {"accelerator": "cpu", "max_epochs": 6, "val_check_interval": 0.5},
        "optimizer": {"class_path": "lightopt.optim.SGD", "init_args": {"lr": 0.05, "momentum": 0.9}},
        "lr_scheduler": {"class_path": "lightopt.schedules.LinearDecay", "init_args": {"final_ratio": 0.01}},
    }
    result = range_test(digits, min_lr=1e-4, max_lr=10.0, steps=30, seed=0)
    assert len(result.values) >= 10 and 1e-4 <= result.low < result.high <= 10.0


def _recorded_by_lightning(losses, beta=0.98, nan_at=()):
    """What Lightning's lr_find records for raw batch ``losses``: avg / (1 - beta^(global_step + 1)), the global
    step being k at the k-th batch (NaN for a batch without a loss, the average unchanged)."""
    avg, out = 0.0, []
    for index, loss in enumerate(losses):
        if index in nan_at:
            out.append(float("nan"))
            continue
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (index + 2)))
    return out


def test_unbiased_restores_the_bias_corrected_average_of_the_losses_seen():
    """A constant loss reads constant after the correction (Lightning's first value reads half of it); a falling
    loss reads as the exactly bias-corrected average, NaN entries skipped."""
    recorded = _recorded_by_lightning([2.0] * 30)
    assert recorded[0] == pytest.approx(2.0 / 1.98) and recorded[9] < 0.93 * 2.0
    assert unbiased(recorded) == pytest.approx([2.0] * 30)
    raw = [2.3 - 0.001 * k for k in range(100)]
    recorded = _recorded_by_lightning(raw, nan_at={5})
    expected, avg, held = [], 0.0, 0
    for index, loss in enumerate(raw):
        if index == 5:
            expected.append(math.nan)
            continue
        avg, held = 0.98 * avg + 0.02 * loss, held + 1
        expected.append(avg / (1 - 0.98**held))
    corrected = unbiased(recorded)
    assert math.isnan(corrected[5])
    assert [c for i, c in enumerate(corrected) if i != 5] == pytest.approx(
        [e for i, e in enumerate(expected) if i != 5]
    )


def test_a_slowly_falling_loss_puts_the_upper_end_at_the_end_of_the_ramp_not_at_the_first_step_looked_at():
    """The loss falls from 2.30 to 2.20 over 100 steps and never diverges: the lowest (corrected) smoothed loss
    is the last, so the suggested upper end is the highest rate tested. Lightning's values, read as they are,
    put it at step 10, the first one looked at."""
    values = [1e-4 * 10 ** (k / 25) for k in range(100)]
    recorded = _recorded_by_lightning([2.3 - 0.001 * k for k in range(100)])
    assert suggest_range(values, recorded)[2] == 10
    assert suggest_range(values, unbiased(recorded))[2] == 99
