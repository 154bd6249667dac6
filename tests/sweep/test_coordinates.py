"""Search coordinates from Chapter 8: the formulas, trial names, round trips to a config, bad input."""

from __future__ import annotations

import io
import math
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from lightopt.sweep import SweepConfigError, run_sweep, trial_config
from lightopt.sweep.readback import best_config
from lightopt.sweep.spec import load, lr_from_effective, momentum_from_horizon, parse, parse_search, scale_lr_with_batch
from tests.sweep.helpers import sweep_dict

RUN = {
    "model": {"class_path": "examples.digits.DigitsMLP", "init_args": {"hidden": 16}},
    "data": {"class_path": "examples.digits.DigitsDataModule", "init_args": {"batch_size": 64}},
    "optimizer": {"class_path": "lightopt.optim.SGD", "init_args": {"lr": 0.1, "momentum": 0.9}},
}
HORIZON = {"low": 1.0, "high": 100.0, "log": True, "coordinate": "horizon"}
CHAPTER = {
    "optimizer.init_args.momentum": HORIZON,
    "optimizer.init_args.lr": {
        "low": 0.01,
        "high": 10.0,
        "log": True,
        "coordinate": "effective",
        "scale_with_batch": "data.init_args.batch_size",
    },
    "data.init_args.batch_size": {"choices": [16, 64, 256]},
}


@pytest.mark.parametrize("horizon, momentum", [(1, 0.0), (2, 0.5), (10, 0.9), (100, 0.99), (1.25, 0.2)])
def test_momentum_from_horizon(horizon, momentum):
    assert momentum_from_horizon(horizon) == pytest.approx(momentum, abs=1e-12)
    assert 1 / (1 - momentum_from_horizon(horizon)) == pytest.approx(horizon)  # h is the factor of eq. 8.17


def test_log_uniform_horizon_spreads_the_books_momenta():
    # Where alpha = .5, .9, .99 sit in the range: uniform alpha in [0, .99] crowds them at its top end;
    # log-uniform h in [1, 100] puts them at 15%, 50% and 100% of the range.
    def uniform_alpha(a):
        return a / 0.99

    def log_horizon(a):
        return math.log(1 / (1 - a)) / math.log(100)

    assert [round(uniform_alpha(a), 2) for a in (0.5, 0.9, 0.99)] == [0.51, 0.91, 1.0]
    assert [round(log_horizon(a), 2) for a in (0.5, 0.9, 0.99)] == [0.15, 0.5, 1.0]
    assert momentum_from_horizon(100**0.5) == pytest.approx(0.9)  # the median of log-uniform h


def test_effective_and_batch_scaled_learning_rates():
    assert lr_from_effective(0.5, 0.9) == pytest.approx(0.05)
    assert lr_from_effective(0.5, 0.0) == 0.5
    assert scale_lr_with_batch(0.1, 256, 64) == pytest.approx(0.4)
    assert scale_lr_with_batch(0.1, 16, 64) == pytest.approx(0.025)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: momentum_from_horizon(0.99), r"`horizon` must be a finite number >= 1 .* but got horizon=0.99\."),
        (lambda: momentum_from_horizon(math.inf), "horizon=inf"),
        (lambda: lr_from_effective(0.5, 1.0), r"`momentum` must be in \[0, 1\) .* but got momentum=1.0\."),
        (lambda: lr_from_effective(0.5, None), "but got momentum=None"),
        (lambda: scale_lr_with_batch(0.1, 0, 64), r"`batch_size` must be an integer >= 1 .* but got batch_size=0\."),
    ],
)
def test_formula_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_trial_names_and_distributions_are_the_sampled_coordinates():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    config = parse_search(CHAPTER, RUN).suggest(trial, RUN)
    assert trial.distributions == {
        "optimizer.init_args.momentum:horizon": FloatDistribution(1.0, 100.0, log=True),
        "optimizer.init_args.lr:effective_at_batch_64": FloatDistribution(0.01, 10.0, log=True),
        "data.init_args.batch_size": CategoricalDistribution([16, 64, 256]),
    }
    h = trial.params["optimizer.init_args.momentum:horizon"]
    eff = trial.params["optimizer.init_args.lr:effective_at_batch_64"]
    batch = trial.params["data.init_args.batch_size"]
    alpha = 1 - 1 / h
    assert config["optimizer"]["init_args"] == pytest.approx({"momentum": alpha, "lr": eff * (1 - alpha) * batch / 64})
    assert config["data"]["init_args"]["batch_size"] == batch


def test_apply_uses_the_file_momentum_and_order_does_not_matter():
    # The learning rate's entry comes first; the momentum it reads is still the searched one.
    search = {
        "optimizer.init_args.lr": {"low": 0.01, "high": 10.0, "log": True, "coordinate": "effective"},
        "optimizer.init_args.momentum": HORIZON,
    }
    space = parse_search(search, RUN)
    config = space.apply(RUN, {"optimizer.init_args.lr:effective": 1.0, "optimizer.init_args.momentum:horizon": 4.0})
    assert config["optimizer"]["init_args"] == pytest.approx({"lr": 0.25, "momentum": 0.75})
    alone = parse_search({"optimizer.init_args.lr": search["optimizer.init_args.lr"]}, RUN)
    assert alone.apply(RUN, {"optimizer.init_args.lr:effective": 1.0})["optimizer"]["init_args"]["lr"] == pytest.approx(
        0.1
    )
    scaled = parse_search(
        {
            "optimizer.init_args.lr": {
                "low": 0.01,
                "high": 1.0,
                "scale_with_batch": {"key": "data.init_args.batch_size", "reference": 32},
            }
        },
        RUN,
    )
    assert scaled.names == ("optimizer.init_args.lr:at_batch_32",)
    assert scaled.apply(RUN, {"optimizer.init_args.lr:at_batch_32": 0.1})["optimizer"]["init_args"][
        "lr"
    ] == pytest.approx(0.2)
    assert RUN["optimizer"]["init_args"] == {"lr": 0.1, "momentum": 0.9}  # the file's config is untouched


def test_sweep_round_trips_through_trial_config_and_best_config(tmp_path):
    data = sweep_dict(tmp_path / "runs", n_trials=2)
    data["search"] = CHAPTER
    sweep = parse(data, "sweep.yaml")
    result = run_sweep(sweep, out=io.StringIO())
    trials = result.study.trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for trial in trials:
        assert set(trial.params) == {
            "optimizer.init_args.momentum:horizon",
            "optimizer.init_args.lr:effective_at_batch_64",
            "data.init_args.batch_size",
        }
        assert trial_config(sweep, trial.params, trial.user_attrs["seed"]) == trial.user_attrs["config"]
    config, best = best_config(result.study, sweep)
    assert config == trial_config(sweep, best.params, best.user_attrs["seed"])
    assert config["optimizer"]["init_args"]["momentum"] == pytest.approx(
        1 - 1 / best.params["optimizer.init_args.momentum:horizon"]
    )


def test_resuming_with_other_coordinates_is_refused_by_name(tmp_path):
    data = sweep_dict(tmp_path / "runs", n_trials=1)
    data["search"] = {"optimizer.init_args.momentum": {"low": 0.0, "high": 0.99}}
    run_sweep(parse(data), out=io.StringIO())
    data["study"]["n_trials"] = 2
    data["search"] = {"optimizer.init_args.momentum": HORIZON}
    # α and h never mix under one name: the changed space is refused, naming both parameters.
    with pytest.raises(
        SweepConfigError,
        match=r"added optimizer\.init_args\.momentum:horizon; "
        r"removed optimizer\.init_args\.momentum\.",
    ):
        run_sweep(parse(data), out=io.StringIO())
    data["study"]["name"] = "s-horizon"  # a new study takes the new coordinates
    trials = run_sweep(parse(data), out=io.StringIO()).study.trials
    assert [set(t.params) for t in trials] == [{"optimizer.init_args.momentum:horizon"}] * 2


@pytest.mark.parametrize(
    "search, line, match",
    [
        (
            {"optimizer.init_args.momentum": {"low": 0.5, "high": 10.0, "coordinate": "horizon"}},
            10,
            r"`search.optimizer.init_args.momentum.low` must be >= 1 with coordinate: horizon .* but got low=0.5\.",
        ),
        (
            {"optimizer.init_args.momentum": {"low": 50.0, "high": 2.0, "coordinate": "horizon"}},
            10,
            r"`search.optimizer.init_args.momentum.low` must be <= `high`, but got low=50.0, high=2.0\.",
        ),
        (
            {"optimizer.init_args.lr": {"low": 0.1, "high": 1.0, "coordinate": "effectve"}},
            10,
            r"`search.optimizer.init_args.lr.coordinate` must be one of .* but got coordinate='effectve'\. "
            r"Did you mean 'effective'\?",
        ),
        (
            {"optimizer.init_args.momentum": {"choices": [2.0, 10.0], "coordinate": "horizon"}},
            10,
            r"`search.optimizer.init_args.momentum.coordinate` needs `low` and `high`, not `choices`",
        ),
        (
            {"optimizer.init_args.momentum": {"low": 2, "high": 10, "type": "int", "coordinate": "horizon"}},
            10,
            r"`search.optimizer.init_args.momentum.type` must be float with a coordinate, but got type='int'\.",
        ),
        (
            {"optimizer.init_args.momentum": {**HORIZON, "scale_with_batch": "data.init_args.batch_size"}},
            10,
            r"`search.optimizer.init_args.momentum.scale_with_batch` is for a learning rate",
        ),
        (
            {"optimizer.init_args.momentum": {"low": 0.1, "high": 1.0, "coordinate": "effective"}},
            10,
            r"`search.optimizer.init_args.momentum.coordinate` effective is for a learning rate next to a `momentum`",
        ),
        (
            {"optimizer.init_args.lr": {"low": 0.1, "high": 1.0, "scale_with_batch": "data.init_args.batchsize"}},
            10,
            r"`search.optimizer.init_args.lr.scale_with_batch` names `data.init_args.batchsize`, but neither",
        ),
        (
            {
                "optimizer.init_args.lr": {
                    "low": 0.1,
                    "high": 1.0,
                    "scale_with_batch": {"key": "data.init_args.batch_size", "reference": 0},
                }
            },
            10,
            r"`search.optimizer.init_args.lr.scale_with_batch.reference` must be an integer >= 1, "
            r"but got reference=0\.",
        ),
        (
            {
                "optimizer.init_args.lr": {
                    "low": 0.1,
                    "high": 1.0,
                    "scale_with_batch": {"key": "data.init_args.batch_size", "referense": 64},
                }
            },
            10,
            r"`search.optimizer.init_args.lr.scale_with_batch.referense` is not a known key\. "
            r"Did you mean 'reference'\?",
        ),
        (
            {
                "optimizer.init_args.momentum": HORIZON,
                "data.init_args.batch_size": {"choices": [16, 32], "when": {"optimizer.init_args.momentum": 0.9}},
            },
            11,
            r"`search.data.init_args.batch_size.when` refers to `optimizer.init_args.momentum`, "
            r"whose value is converted",
        ),
    ],
)
def test_bad_coordinates_are_one_located_line(search, line, match):
    data = {"study": {"n_trials": 1}, "search": search}
    lines = {f"search.{key}": 10 + i for i, key in enumerate(search)}
    with pytest.raises(SweepConfigError, match=match) as error:
        parse({**RUN, **data}, "sweep.yaml", lines)
    assert "\n" not in str(error.value)
    assert str(error.value).startswith(f"sweep.yaml:{line}: ")


def test_effective_lr_needs_a_momentum_somewhere():
    run = {**RUN, "optimizer": {"class_path": "lightopt.optim.SGD", "init_args": {"lr": 0.1}}}
    effective = {"low": 0.1, "high": 1.0, "coordinate": "effective"}
    with pytest.raises(
        ValueError,
        match=r"`search.optimizer.init_args.lr.coordinate` effective needs a momentum at "
        r"`optimizer.init_args.momentum`, in the config or the search, but neither",
    ):
        parse_search({"optimizer.init_args.lr": effective}, run)
    space = parse_search({"optimizer.init_args.lr": effective, "optimizer.init_args.momentum": HORIZON}, run)
    assert space.names == ("optimizer.init_args.lr:effective", "optimizer.init_args.momentum:horizon")
    # A recorded value that no longer converts (a hand-edited study) names the key and the value.
    with pytest.raises(
        ValueError,
        match=r"`search.optimizer.init_args.momentum` cannot be converted for "
        r"optimizer.init_args.momentum:horizon=0.5",
    ):
        space.apply(run, {"optimizer.init_args.momentum:horizon": 0.5, "optimizer.init_args.lr:effective": 1.0})


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).resolve().parents[2] / "sweeps").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_sweep_file_parses_and_builds_a_trial_config(path):
    sweep = load(path)
    study = optuna.create_study(sampler=sweep.study.make_sampler(sweep.search))
    trial = study.ask()
    config = sweep.search.suggest(trial, sweep.run)
    assert trial_config(sweep, trial.params) == config
    assert set(trial.params) <= set(sweep.search.names)
