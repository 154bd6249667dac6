"""The search space: value forms, boundaries, conditional parameters, and rebuilding a trial's config."""

from __future__ import annotations

import re

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from lightopt.sweep.spec import parse_search

RUN = {
    "model": {"class_path": "examples.digits.DigitsMLP", "init_args": {"hidden": 16}},
    "data": {"class_path": "examples.digits.DigitsDataModule"},
    "optimizer": {"class_path": "lightopt.optim.SGD", "init_args": {"lr": 0.1}},
}


def _distributions(search):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    parse_search(search, RUN).suggest(trial, RUN)
    return trial.distributions


def test_value_forms_become_optuna_distributions():
    got = _distributions(
        {
            "optimizer.init_args.lr": {"low": 1.0e-4, "high": 1.0, "log": True},
            "optimizer.init_args.momentum": {"low": 0.0, "high": 0.9, "step": 0.1},
            "model.init_args.hidden": {"low": 8, "high": 64, "log": True},
            "model.init_args.layers": {"low": 1, "high": 3, "type": "int"},
            "optimizer.init_args.weight_decay": {"low": 0, "high": 1, "type": "float"},
            "data.init_args.batch_size": {"choices": [16, 32]},
        }
    )
    assert got == {
        "optimizer.init_args.lr": FloatDistribution(1.0e-4, 1.0, log=True),
        "optimizer.init_args.momentum": FloatDistribution(0.0, 0.9, step=0.1),
        "model.init_args.hidden": IntDistribution(8, 64, log=True),
        "model.init_args.layers": IntDistribution(1, 3),
        "optimizer.init_args.weight_decay": FloatDistribution(0.0, 1.0),
        "data.init_args.batch_size": CategoricalDistribution([16, 32]),
    }


@pytest.mark.parametrize(
    "spec",
    [
        {"low": 0.5, "high": 0.5},  # low == high: one value
        {"low": 1e-12, "high": 1.0, "log": True},  # log just above 0
        {"choices": [0.1]},
    ],
)
def test_boundaries_accepted(spec):
    assert len(parse_search({"optimizer.init_args.lr": spec}, RUN)) == 1


@pytest.mark.parametrize(
    "spec, error, match",
    [
        ({"low": 0.5, "high": 0.4999}, ValueError, "must be <= `high`"),
        ({"low": 0.0, "high": 1.0, "log": True}, ValueError, "must be > 0 with log: true"),
        ({"low": -1e-9, "high": 1.0, "log": True}, ValueError, "must be > 0 with log: true"),
        ({"low": 0.1, "high": 1.0, "log": True, "step": 0.1}, ValueError, "must not have both `step` and `log: true`"),
        ({"low": 0.1, "high": 1.0, "step": 0}, ValueError, "step` must be a number > 0, but got step=0."),
        ({"low": 1, "high": 4, "type": "int", "step": 0.5}, TypeError, "must be an integer for type: int"),
        ({"low": 0.1, "high": 1.0, "type": "integer"}, ValueError, "Did you mean 'int'?"),
        ({"low": 0.1}, ValueError, "`high` is missing"),
        ({"low": "a", "high": 1.0}, TypeError, "`search.optimizer.init_args.lr.low` must be a finite number"),
        ({"choices": []}, ValueError, "must not be empty, but got choices=[]"),
        ({"choices": {}}, ValueError, "must not be empty"),
        ({"choices": [1, 1]}, ValueError, "must not repeat a value"),
        ({"choices": [[0.9, 0.999]]}, TypeError, "give a mapping from labels to values"),
        ({"choices": [1], "low": 0}, ValueError, "either `choices` or `low` and `high`"),
        (0.1, TypeError, "must be a mapping such as"),
        ({"choices": [1], "when": {"optimizer.clas_path": "x"}}, ValueError, "Did you mean 'class_path'?"),
    ],
)
def test_bad_specs(spec, error, match):
    with pytest.raises(error, match=re.escape(match)):
        parse_search({"optimizer.init_args.lr": spec}, RUN)


def test_condition_must_refer_to_an_earlier_key():
    search = {
        "optimizer.init_args.momentum": {
            "low": 0.0,
            "high": 0.9,
            "when": {"optimizer.class_path": "lightopt.optim.SGD"},
        },
        "optimizer.class_path": {"choices": ["lightopt.optim.SGD", "lightopt.optim.Adam"]},
    }
    with pytest.raises(ValueError, match=r"refers to `optimizer.class_path`, which is searched at or after this entry"):
        parse_search(search, RUN)


def test_conditional_parameters_and_apply_round_trip():
    space = parse_search(
        {
            "optimizer": {
                "choices": {
                    "sgd": {"class_path": "lightopt.optim.SGD", "init_args": {"lr": 0.1}},
                    "adam": {"class_path": "lightopt.optim.Adam", "init_args": {"lr": 0.001, "betas": [0.9, 0.999]}},
                }
            },
            "optimizer.init_args.momentum": {
                "low": 0.0,
                "high": 0.99,
                "when": {"optimizer.class_path": "lightopt.optim.SGD"},
            },
            "optimizer.init_args.nesterov": {
                "choices": [False, True],
                "when": {"optimizer.class_path": ["lightopt.optim.SGD"]},
            },
            "optimizer.init_args.lr": {"low": 1e-4, "high": 0.5, "log": True},
        },
        RUN,
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        config = space.suggest(trial, RUN)
        label = trial.params["optimizer"]
        seen.add(label)
        has_momentum = "optimizer.init_args.momentum" in trial.params
        assert has_momentum == ("optimizer.init_args.nesterov" in trial.params) == (label == "sgd")
        assert ("momentum" in config["optimizer"]["init_args"]) == (label == "sgd")
        assert config["optimizer"]["init_args"]["lr"] == trial.params["optimizer.init_args.lr"]
        assert space.apply(RUN, trial.params) == config
        study.tell(trial, 0.0)
    assert seen == {"sgd", "adam"}
    assert RUN["optimizer"] == {"class_path": "lightopt.optim.SGD", "init_args": {"lr": 0.1}}  # never mutated


def test_apply_sets_missing_init_args_and_rejects_unknown_names():
    space = parse_search(
        {"data.init_args.batch_size": {"choices": [16, 32]}, "trainer.max_epochs": {"low": 1, "high": 3}}, RUN
    )
    config = space.apply(RUN, {"data.init_args.batch_size": 32, "trainer.max_epochs": 2})
    assert config["data"] == {"class_path": "examples.digits.DigitsDataModule", "init_args": {"batch_size": 32}}
    assert config["trainer"] == {"max_epochs": 2}
    with pytest.raises(ValueError, match=r"Did you mean 'trainer.max_epochs'"):
        space.apply(RUN, {"trainer.max_epoch": 2})
