"""``{range_test: true}`` search entries: their syntax, their errors, and bounds set from a recorded test."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution

from lightopt.sweep.spec import SweepFile, describe_space, lr_entry, parse_search, with_recorded_bounds

RUN = {
    "model": {"class_path": "examples.digits.DigitsMLP"},
    "data": {"class_path": "examples.digits.DigitsDataModule", "init_args": {"batch_size": 32}},
    "optimizer": {"class_path": "lightopt.optim.SGD", "init_args": {"lr": 0.1, "momentum": 0.9}},
}
LR = "optimizer.init_args.lr"


def test_entry_waits_for_its_bounds_then_draws_from_them():
    space = parse_search({LR: {"range_test": True}}, RUN)
    (param,) = space.deferred
    assert (param.kind, param.log, param.low, param.high) == ("float", True, None, None)
    assert describe_space(space) == {LR: {"kind": "float", "log": True, "range_test": True}}
    with pytest.raises(ValueError, match=r"range_test: true.*run the sweep first"):
        param.distribution()
    bounded = space.with_bounds({LR: (0.001, 0.1)})
    assert bounded.deferred == ()
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    config = bounded.suggest(trial, RUN)
    assert trial.distributions == {LR: FloatDistribution(0.001, 0.1, log=True)}
    assert 0.001 <= config["optimizer"]["init_args"]["lr"] <= 0.1


def test_explicit_bounds_are_the_tested_range_and_log_false_is_kept():
    space = parse_search({LR: {"range_test": True, "low": 1e-4, "high": 1.0, "log": False}}, RUN)
    entry = lr_entry(SweepFile(RUN, search=space))
    assert (entry.low, entry.high, entry.range_test) == (1e-4, 1.0, True)
    assert space.with_bounds({LR: (0.01, 0.5)}).params[0].distribution() == FloatDistribution(0.01, 0.5)


def test_effective_and_batch_scaled_entries_convert_the_tested_values():
    search = {
        LR: {
            "range_test": True,
            "coordinate": "effective",
            "scale_with_batch": {"key": "data.init_args.batch_size", "reference": 64},
        }
    }
    entry = lr_entry(SweepFile(RUN, search=parse_search(search, RUN)))
    assert entry.coordinate == "effective_at_batch_64"
    assert entry.lr(1.0) == pytest.approx((1 - 0.9) * 32 / 64)
    assert entry.effective(1.0) == pytest.approx(0.5)


def test_momentum_searched_but_not_in_the_file_is_taken_as_zero():
    run = {**RUN, "optimizer": {"class_path": "lightopt.optim.SGD", "init_args": {"lr": 0.1}}}
    search = {LR: {"range_test": True}, "optimizer.init_args.momentum": {"low": 0.0, "high": 0.9}}
    entry = lr_entry(SweepFile(run, search=parse_search(search, run)))
    assert entry.momentum == 0.0 and "momentum 0" in entry.notes[0]


def test_recorded_bounds_apply_to_the_entry_they_name():
    sweep = SweepFile(RUN, search=parse_search({LR: {"range_test": True}}, RUN))
    assert with_recorded_bounds(sweep, {"name": "other.lr", "low": 0.1, "high": 1.0}) is sweep
    bounded = with_recorded_bounds(sweep, {"name": LR, "low": 0.002, "high": 0.2})
    assert (bounded.search.params[0].low, bounded.search.params[0].high) == (0.002, 0.2)


@pytest.mark.parametrize(
    ("search", "error", "match"),
    [
        ({LR: {"range_test": "yes"}}, TypeError, r"`search.optimizer.init_args.lr.range_test` must be true or false"),
        ({LR: {"range_test": True, "step": 0.1}}, ValueError, "both `range_test` and `step`"),
        ({LR: {"range_test": True, "choices": [0.1]}}, ValueError, "both `range_test` and `choices`"),
        ({LR: {"range_test": True, "type": "int"}}, ValueError, "must be float with range_test"),
        ({LR: {"range_test": True, "low": 1e-3}}, ValueError, "both `low` and `high`.*`high` is missing"),
        ({LR: {"range_test": True, "low": 1.0, "high": 0.1}}, ValueError, "0 < low < high"),
        ({LR: {"range_test": True, "low": 0.0, "high": 0.1}}, ValueError, "0 < low < high"),
        (
            {"optimizer.init_args.momentum": {"range_test": True}},
            ValueError,
            "is for a learning rate .* but got `optimizer.init_args.momentum`",
        ),
        (
            {LR: {"range_test": True}, "optimizer.init_args.weight_decay_lr": {"range_test": True}},
            ValueError,
            "the second entry with `range_test: true`",
        ),
        ({LR: {"range_test": True, "log": "yes"}}, TypeError, "`search.optimizer.init_args.lr.log` must be true"),
    ],
)
def test_bad_entries(search, error, match):
    with pytest.raises(error, match=match):
        parse_search(search, RUN)


def test_with_bounds_refuses_unknown_names_and_bad_bounds():
    space = parse_search({LR: {"range_test": True}}, RUN)
    with pytest.raises(ValueError, match="must name parameters with `range_test: true`"):
        space.with_bounds({"optimizer.init_args.momentum": (0.1, 0.2)})
    with pytest.raises(ValueError, match="0 < low <= high"):
        space.with_bounds({LR: (0.0, 0.2)})
