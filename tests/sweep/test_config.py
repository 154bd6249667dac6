"""Sweep and run files: defaults, line numbers, and one table of bad inputs."""

from __future__ import annotations

import copy

import optuna
import pytest

from lightopt.sweep import SweepConfigError, load
from lightopt.sweep.spec import parse
from tests.sweep.helpers import sweep_dict, write


def test_study_defaults_and_sampler_seed(tmp_path):
    data = sweep_dict(tmp_path)
    data["study"] = {"n_trials": 5, "seed": 7}
    sweep = load(write(tmp_path / "digits-lr.yaml", data))
    study = sweep.study
    assert (study.name, study.direction, study.metric, study.report_at, study.log_dir) == (
        "digits-lr",
        "minimize",
        "val_loss",
        "validation_round",
        "runs",
    )
    assert study.sampler == {"name": "tpe"} and study.pruner == {"name": "median"}
    sampler = study.make_sampler(sweep.search)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sweep.search.names == ("optimizer.init_args.lr", "data.init_args.batch_size")
    assert "study" not in sweep.run and "search" not in sweep.run
    assert sweep.path == str(tmp_path / "digits-lr.yaml")


def test_run_file_without_study_or_search(tmp_path):
    data = {k: v for k, v in sweep_dict(tmp_path).items() if k not in ("study", "search")}
    sweep = load(write(tmp_path / "run.yaml", data))
    assert sweep.study is None and len(sweep.search) == 0 and sweep.run == data


def test_grid_sampler_lists_the_space(tmp_path):
    data = sweep_dict(tmp_path, sampler="grid")
    data["search"]["optimizer.init_args.lr"] = {"low": 0.1, "high": 0.3, "step": 0.1}
    sweep = parse(data)
    assert isinstance(sweep.study.make_sampler(sweep.search), optuna.samplers.GridSampler)
    assert sweep.search.grid() == {"optimizer.init_args.lr": [0.1, 0.2, 0.3], "data.init_args.batch_size": [32, 64]}


def _edit(path, value):
    def edit(data):
        node = data
        *parents, last = path.split("/")
        for part in parents:
            node = node[part]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return edit


_DELETE = object()
LR = "search/optimizer.init_args.lr"
BAD = [
    (_edit("modle", {}), "`modle` is not a known key. Did you mean 'model'?"),
    (_edit("model", _DELETE), "the file has no `model`"),
    (_edit("model/class_path", "examples.digits.DigitsMPL"), "Did you mean 'examples.digits.DigitsMLP'"),
    (_edit("model/class_path", "nowhere.Model"), "no module 'nowhere'"),
    (
        _edit("model/init_args/hiden", 3),
        "`model.init_args.hiden` is not an argument of DigitsMLP. Did you mean 'hidden'?",
    ),
    (_edit("trainer/max_epoch", 3), "`trainer.max_epoch` is not a Trainer argument. Did you mean 'max_epochs'?"),
    (_edit("optimizer/class_path", "lightopt.optim.SDG"), "`optimizer.class_path`"),
    (_edit("optimizer/init_args/momentm", 0.9), "`optimizer.init_args.momentm` is not an argument of SGD"),
    (_edit("study/n_trails", 3), "`study.n_trails` is not a known key. Did you mean 'n_trials'?"),
    (_edit("study/n_trials", 0), "`study.n_trials` must be an integer >= 1, but got n_trials=0."),
    (_edit("study/direction", "minimise"), "Did you mean 'minimize'?"),
    (
        _edit("study/sampler", {"name": "tpe", "sed": 0}),
        "`study.sampler.sed` is not an argument of TPESampler. Did you mean 'seed'?",
    ),
    (_edit("study/pruner", "hyperbnd"), "Did you mean 'hyperband'?"),
    (_edit("study/sampler", "grid"), "`search.optimizer.init_args.lr` must have `choices` or a `step`"),
    (
        _edit("search/optimiser.init_args.lr", {"low": 0.1, "high": 1.0}),
        "points nowhere: the file has no `optimiser`. Did you mean 'optimizer'?",
    ),
    (
        _edit("search/optimizer.init_args.momentm", {"low": 0.1, "high": 0.9}),
        "`optimizer.init_args` has no key `momentm`. Did you mean 'momentum'?",
    ),
    (_edit("search/model.init_args.hiden", {"low": 8, "high": 32}), "`model.init_args` has no key `hiden`"),
    (
        _edit(LR, {"low": 1.0, "high": 0.1}),
        "`search.optimizer.init_args.lr.low` must be <= `high`, but got low=1.0, high=0.1.",
    ),
    (
        _edit(LR, {"low": 0.0, "high": 0.1, "log": True}),
        "`search.optimizer.init_args.lr.low` must be > 0 with log: true, but got low=0.0.",
    ),
    (_edit(LR, {"choices": []}), "`search.optimizer.init_args.lr.choices` must not be empty, but got choices=[]."),
    (_edit(LR, {"low": 0.1, "high": 1.0, "lg": True}), "unknown key 'lg'. Did you mean 'log'?"),
    (_edit("study", _DELETE), "`search` needs a `study` block"),
]


@pytest.mark.parametrize("edit, match", BAD)
def test_bad_input(tmp_path, edit, match):
    data = copy.deepcopy(sweep_dict(tmp_path))
    edit(data)
    with pytest.raises(SweepConfigError) as info:
        load(write(tmp_path / "bad.yaml", data))
    assert match in str(info.value)
    assert str(info.value).startswith(str(tmp_path / "bad.yaml")) and "\n" not in str(info.value)
    assert not (tmp_path / "s").exists()


def test_error_names_the_line(tmp_path):
    text = (
        "model:\n  class_path: examples.digits.DigitsMLP\nstudy: {n_trials: 2}\n"
        "search:\n  model.init_args.hidden: {low: 64, high: 8}\n"
    )
    (tmp_path / "f.yaml").write_text(text)
    with pytest.raises(SweepConfigError, match=r"f\.yaml:5: `search\.model\.init_args\.hidden\.low` must be <= `high`"):
        load(tmp_path / "f.yaml")


@pytest.mark.parametrize(
    "text, match",
    [
        ("model: [unclosed\n", r"bad\.yaml:2: malformed YAML"),
        ("- a list\n", "the file must be a mapping"),
    ],
)
def test_malformed_file(tmp_path, text, match):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(SweepConfigError, match=match):
        load(tmp_path / "bad.yaml")


def test_missing_file(tmp_path):
    with pytest.raises(SweepConfigError, match=r"nope.yaml: no such file"):
        load(tmp_path / "nope.yaml")
