"""Warm starts: ``study.enqueue`` (known settings tried first) and ``study.warm_start`` (another study's trials).

Real sweeps of the digits MLP through ``lightopt.cli.main``; old studies either run by lightopt or
written with Optuna alone (a study lightopt did not make: no ``lightopt`` attribute, a parameter it
does not search) on a journal file or an SQLite database.
"""

from __future__ import annotations

import json
import math
import shutil

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightopt.cli import main
from lightopt.sweep.spec import Coordinate, parse_search
from lightopt.sweep.store import counted
from lightopt.sweep.study import copyable
from tests.sweep.helpers import load_journal, sweep_dict, write

LR, BATCH = "optimizer.init_args.lr", "data.init_args.batch_size"
HORIZON, EFFECTIVE = "optimizer.init_args.momentum:horizon", "optimizer.init_args.lr:effective_at_batch_64"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A study ``s`` of three trials run from ``sweep_dict``: its folder (``s.yaml``, ``runs/``), to copy."""
    folder = tmp_path_factory.mktemp("old")
    assert main(["sweep", "run", str(write(folder / "s.yaml", sweep_dict(folder / "runs")))]) == 0
    return folder


@pytest.fixture
def old(recorded, tmp_path, monkeypatch):
    """A copy of the recorded study's folder in ``tmp_path`` (the working directory)."""
    shutil.copytree(recorded, tmp_path, dirs_exist_ok=True)
    (tmp_path / "s.yaml").write_text(
        (tmp_path / "s.yaml").read_text().replace(str(recorded / "runs"), str(tmp_path / "runs"))
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _coordinates_sweep(runs, **study):
    """``sweep_dict`` with the momentum searched as its horizon, the learning rate as a batch-scaled effective step."""
    data = sweep_dict(runs, **study)
    data["search"] = {
        "optimizer.init_args.momentum": {"low": 2.0, "high": 100.0, "log": True, "coordinate": "horizon"},
        LR: {"low": 0.01, "high": 10.0, "log": True, "coordinate": "effective", "scale_with_batch": BATCH},
        BATCH: {"choices": [32, 64]},
    }
    return data


def _journal_study(path, name, trials, direction="minimize", attrs=None):
    """A study written with Optuna alone in the journal file ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    study = optuna.create_study(study_name=name, storage=storage, direction=direction)
    for key, value in (attrs or {}).items():
        study.set_user_attr(key, value)
    study.add_trials(trials)
    return study


def _trial(value, state=TrialState.COMPLETE, **params):
    distributions = {
        LR: FloatDistribution(1e-4, 1.0, log=True),
        BATCH: CategoricalDistribution([16, 32, 48, 64]),
        "wd": FloatDistribution(0.0, 0.1),
    }
    names = {"lr": LR, "batch": BATCH, "wd": "wd"}
    params = {names[k]: v for k, v in params.items()}
    return create_trial(
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        params=params,
        distributions={k: distributions[k] for k in params},
        intermediate_values={1: value} if value is not None else {},
    )


def test_enqueued_settings_run_first_with_their_config_values_and_are_not_enqueued_again(tmp_path, capsys):
    entries = [
        {"optimizer.init_args.momentum": 0.9, LR: 0.1, BATCH: 32},  # h = 10, eff = 0.1/(1 - 0.9)·64/32 = 2
        {"optimizer.init_args.momentum": 0.99},  # the rest sampled
    ]
    path = write(tmp_path / "c.yaml", _coordinates_sweep(tmp_path / "runs", n_trials=2, enqueue=entries))
    assert main(["sweep", "run", str(path)]) == 0
    out = capsys.readouterr().out
    assert "study.enqueue: 2 setting(s) run first (#1, #2)" in out
    assert "trial 0 (study.enqueue #1) complete" in out and "trial 1 (study.enqueue #2) complete" in out
    study = load_journal(tmp_path / "runs" / "s" / "study.journal")
    first, second = study.trials
    init_args = first.user_attrs["config"]["optimizer"]["init_args"]
    assert (init_args["momentum"], init_args["lr"], first.user_attrs["config"]["data"]["init_args"]["batch_size"]) == (
        0.9,
        0.1,
        32,
    )
    assert first.params[HORIZON] == pytest.approx(10.0) and first.params[EFFECTIVE] == pytest.approx(2.0)
    assert second.user_attrs["config"]["optimizer"]["init_args"]["momentum"] == 0.99
    assert [t.user_attrs.get("enqueued") for t in study.trials] == ["#1", "#2"]

    assert main(["sweep", "run", str(path), "--n-trials", "3"]) == 0  # resumed: the entries exist, none is added
    out = capsys.readouterr().out
    assert "run first" not in out and "trial 2 complete" in out
    study = load_journal(tmp_path / "runs" / "s" / "study.journal")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert [t.user_attrs.get("enqueued") for t in study.trials] == ["#1", "#2", None]


def test_enqueue_reads_the_run_config_that_sweep_best_exports(old, capsys):
    assert main(["sweep", "best", "s.yaml", "--export", "best.yaml"]) == 0
    best = load_journal(old / "runs" / "s" / "study.journal").best_trial
    data = sweep_dict(old / "runs", name="again", n_trials=1, enqueue=["best.yaml"])
    (old / "sub").mkdir()
    shutil.move(old / "best.yaml", old / "sub" / "best.yaml")  # relative to the sweep file, not the working directory
    path = write(old / "sub" / "again.yaml", data)
    capsys.readouterr()
    assert main(["sweep", "run", str(path)]) == 0
    assert "trial 0 (study.enqueue best.yaml) complete" in capsys.readouterr().out
    again = load_journal(old / "runs" / "again" / "study.journal", "again")
    assert again.trials[0].params == best.params and again.trials[0].user_attrs["enqueued"] == "best.yaml"


def _plain(entries):
    return lambda runs: sweep_dict(runs, enqueue=entries)


def _coords(entries):
    return lambda runs: _coordinates_sweep(runs, enqueue=entries)


BAD = [
    (_plain([{"optimizer.init_args.lrr": 0.1}]), "`study.enqueue` entry 1: `optimizer.init_args.lrr` is not searched"),
    (_plain([{"optimizer.init_args.lrr": 0.1}]), "Did you mean 'optimizer.init_args.lr'?"),
    (_plain([{BATCH: 32}, {LR: 0.6}]), "entry 2: `optimizer.init_args.lr`=0.6 is outside [0.01, 0.5]"),
    (_plain([{LR: 0.0099}]), "entry 1: `optimizer.init_args.lr`=0.0099 is outside [0.01, 0.5]"),
    (_plain([{BATCH: 48}]), "entry 1: `data.init_args.batch_size`=48 is not one of its choices [32, 64]"),
    (_plain([{LR: "fast"}]), "entry 1: `optimizer.init_args.lr`='fast' is not a finite number"),
    (_plain(["missing.yaml"]), "`study.enqueue` entry 1 (missing.yaml): no such file at"),
    (_plain({LR: 0.1}), "`study.enqueue` must be a list of settings"),
    (_plain([0.1]), "`study.enqueue` entry 1 must be a mapping such as"),
    (_coords([{"optimizer.init_args.momentum": 0.999}]), "(as horizon 1000) is outside [2.0, 100.0]"),
    (_coords([{"optimizer.init_args.momentum": 1.0}]), "`optimizer.init_args.momentum`=1.0 cannot be converted"),
    (_coords([{LR: 0.1, BATCH: 32}]), "`optimizer.init_args.momentum`, which is searched: give its value in the entry"),
    (lambda runs: sweep_dict(runs, warm_start={"stdy": "old"}), "Did you mean 'study'?"),
    (lambda runs: sweep_dict(runs, warm_start={"study": ""}), "`study.warm_start.study` must name the study"),
]


@pytest.mark.parametrize("make, match", BAD)
def test_bad_warm_start_settings_are_one_line_naming_the_entry(tmp_path, monkeypatch, capsys, make, match):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "bad.yaml", make(tmp_path / "runs"))
    assert main(["sweep", "run", str(path)]) == 2
    captured = capsys.readouterr()
    assert match in captured.err, captured.err
    assert captured.err.startswith(f"error: {path}:") and captured.err.count("\n") == 1 and captured.out == ""
    assert not (tmp_path / "runs").exists()


def test_warm_start_copies_the_trials_that_fit_once_and_they_count_for_nothing(old, capsys):
    lrs = sorted(t.params[LR] for t in load_journal(old / "runs" / "s" / "study.journal").trials)
    data = sweep_dict(old / "runs", name="new", n_trials=1, warm_start={"study": "s"})
    data["search"][LR]["high"] = lrs[1]  # the largest learning rate of the old study is outside now
    path = write(old / "new.yaml", data)
    capsys.readouterr()
    assert main(["sweep", "run", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        f"warm start: 2 of 3 complete trials of study 's' copied; 1 skipped: {LR} outside [0.01, {lrs[1]}] (1)\n"
    ) in out
    assert "study 'new': 0 trial(s) in" in out and "[1/1] trial 2 complete" in out
    assert "study 'new': 1 trials: 1 complete, 0 pruned, 0 failed; and 2 copied from study 's' (warm start)" in out
    study = load_journal(old / "runs" / "new" / "study.journal", "new")
    copies = [t for t in study.trials if "copied_from" in t.user_attrs]
    assert sorted(t.params[LR] for t in copies) == lrs[:2]
    assert all(t.distributions[LR] == FloatDistribution(0.01, lrs[1], log=True) for t in copies)
    assert {t.user_attrs["copied_from"]["study"] for t in copies} == {"s"} and "config" not in copies[0].user_attrs
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3  # what the sampler sees
    assert counted(study.trials) == 1 and study.user_attrs["warm_start"]["copied"] == 2

    assert main(["sweep", "run", str(path), "--n-trials", "2"]) == 0  # resumed: not copied again
    assert "warm start" not in capsys.readouterr().out.splitlines()[0]
    study = load_journal(old / "runs" / "new" / "study.journal", "new")
    assert len(study.trials) == 4 and sum("copied_from" in t.user_attrs for t in study.trials) == 2


def test_warm_start_from_a_database_never_makes_a_copy_the_best(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    old = optuna.create_study(study_name="old", storage=url)
    old.add_trials(
        [
            _trial(2.0, lr=0.1, batch=32, wd=0.01),  # copied, without wd
            _trial(2.0, lr=0.1),  # no batch size: skipped
            _trial(2.0, lr=0.1, batch=48),  # not one of [32, 64]: skipped
            _trial(None, TrialState.FAIL, lr=0.1, batch=32),  # not complete
            _trial(-100.0, lr=0.05, batch=64),  # copied; better than anything run here
        ]
    )
    data = sweep_dict(tmp_path / "runs", name="new", n_trials=1, storage=url, warm_start={"study": "old"})
    assert main(["sweep", "run", str(write(tmp_path / "new.yaml", data))]) == 0  # the old study: in the same storage
    out = capsys.readouterr().out
    assert (
        "warm start: 2 of 4 complete trials of study 'old' copied; 2 skipped: no data.init_args.batch_size (1), "
        "data.init_args.batch_size not one of [32, 64] (1); not searched now, so left out of the copies: wd\n"
    ) in out
    assert "best trial 2: val_loss=" in out
    new = optuna.load_study(study_name="new", storage=url)
    assert new.best_trial.number == 1 and new.trials[1].intermediate_values == {1: -100.0}  # Optuna's own rule
    board = EventAccumulator(str(tmp_path / "runs" / "new" / "study"), size_guidance={"scalars": 0})
    board.Reload()  # TensorBoard's study run: the trial run here, not the copies
    assert [e.step for e in board.Scalars("study/best_value")] == [2]
    assert board.Scalars("study/best_value")[0].value == pytest.approx(new.trials[2].value)
    assert [e.value for e in board.Scalars("study/trials_complete")] == [0, 0, 1]

    assert main(["sweep", "best", "new", "--storage", url, "--export", "best.yaml"]) == 0
    assert "best trial 2 written to best.yaml" in capsys.readouterr().out
    assert (tmp_path / "best.yaml").read_text().startswith("# Best trial 2 of study 'new'")
    assert main(["sweep", "show", "new", "--storage", url]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split()[-1] == "from" and table[2].endswith("copied old#0") and table[3].endswith("copied old#4")
    assert table[4].endswith("-") and table[-1].startswith("best: trial 2,")
    assert main(["sweep", "show", "new", "--storage", url, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["best"]["number"] == 2 and shown["trials"][0]["copied_from"] == {"study": "old", "trial": 0}


def test_sweep_best_does_not_export_a_copy_when_no_trial_ran_here(tmp_path, capsys):
    runs = tmp_path / "runs"
    copy = _trial(1.0, lr=0.1, batch=32)
    copy.set_user_attr("copied_from", {"study": "old", "trial": 0})
    _journal_study(runs / "new" / "study.journal", "new", [copy], attrs={"lightopt": {"metric": "val_loss"}})
    assert main(["sweep", "best", "new", "--log-dir", str(runs)]) == 2
    assert capsys.readouterr().err == "error: study 'new' has no completed trial yet.\n"
    assert main(["sweep", "reproduce", "new", "--log-dir", str(runs), "--trial", "0"]) == 2
    assert capsys.readouterr().err == (
        "error: trial 0 was copied from trial 0 of study 'old' (study.warm_start) and never ran here: reproduce it "
        "in its own study, with `lightopt sweep reproduce old --trial 0`.\n"
    )


def _stored_direction(path):
    _journal_study(path / "runs" / "old" / "study.journal", "old", [_trial(1.0, lr=0.1, batch=32)], "maximize")


def _stored_metric(path):
    _journal_study(
        path / "runs" / "old" / "study.journal",
        "old",
        [_trial(1.0, lr=0.1, batch=32)],
        attrs={"lightopt": {"metric": "x"}},
    )


WRONG_SOURCE = [
    ({"study": "s"}, None, "`study.warm_start.study` must name another study than this one ('s')"),
    ({"study": "nope"}, None, "`study.warm_start.study` 'nope' has no journal at runs/nope/study.journal"),
    ({"study": "nope", "storage": "runs/old/study.journal"}, _stored_metric, "no study named 'nope' in"),
    ({"study": "old"}, _stored_direction, "must have this study's direction, minimize, but it has maximize"),
    ({"study": "old"}, _stored_metric, "must measure `study.metric` 'val_loss', but its trials' values are 'x'"),
]


@pytest.mark.parametrize("warm, make, match", WRONG_SOURCE)
def test_a_study_to_warm_start_from_that_cannot_be_used_is_one_line_before_any_write(
    tmp_path, monkeypatch, capsys, warm, make, match
):
    monkeypatch.chdir(tmp_path)
    if make is not None:
        make(tmp_path)
    path = write(tmp_path / "s.yaml", sweep_dict("runs", warm_start=warm))
    assert main(["sweep", "run", str(path)]) == 2
    captured = capsys.readouterr()
    assert match in captured.err and captured.err.count("\n") == 1 and captured.out == ""
    journal = tmp_path / "runs" / "s" / "study.journal"
    assert (
        not journal.exists()
        or optuna.get_all_study_names(
            optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
        )
        == []
    )


def test_a_changed_search_goes_on_in_a_new_study_warm_started_from_the_old_one(old, capsys):
    data = yaml.safe_load((old / "s.yaml").read_text())
    data["search"][LR]["low"] = 0.005
    del data["search"][BATCH]
    path = write(old / "s.yaml", data)
    capsys.readouterr()
    assert main(["sweep", "run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "removed data.init_args.batch_size; changed optimizer.init_args.lr (low 0.01 -> 0.005)" in err
    assert "with `study.warm_start: {study: s}`, which copies in its trials that fit the new space" in err

    data["study"].update(name="s2", warm_start={"study": "s"})  # the fix the message names
    assert main(["sweep", "run", str(write(path, data)), "--n-trials", "1"]) == 0
    out = capsys.readouterr().out
    assert (
        "warm start: 3 of 3 complete trials of study 's' copied; not searched now, so left out of the copies: "
        "data.init_args.batch_size\n"
    ) in out
    old_lrs = [t.params[LR] for t in load_journal(old / "runs" / "s" / "study.journal").trials]
    study = load_journal(old / "runs" / "s2" / "study.journal", "s2")
    assert [t.params for t in study.trials[:3]] == [{LR: lr} for lr in old_lrs]
    assert study.trials[0].distributions[LR] == FloatDistribution(0.005, 0.5, log=True)
    assert study.trials[3].state == TrialState.COMPLETE and "copied_from" not in study.trials[3].user_attrs


def test_a_conditional_parameter_may_be_absent_from_a_copied_trial():
    run = {"optimizer": {"class_path": "lightopt.optim.SGD", "init_args": {"lr": 0.1, "momentum": 0.9}}}
    space = parse_search(
        {
            "optimizer.init_args.lr": {"low": 0.01, "high": 1.0},
            "optimizer.init_args.momentum": {"low": 0.0, "high": 0.99, "when": {"optimizer.init_args.lr": [0.1]}},
        },
        run,
    )
    assert copyable({LR: 0.5}, space) == ({LR: 0.5}, None)
    assert copyable({LR: 0.1, "optimizer.init_args.momentum": 1.0}, space) == (
        {},
        "optimizer.init_args.momentum outside [0.0, 0.99]",
    )
    assert copyable({"optimizer.init_args.momentum": 0.5}, space) == ({}, f"no {LR}")


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 0.3, 0.123456789])
@pytest.mark.parametrize("lr", [0.1, 0.003, 0.37, 1.0])
def test_from_config_undoes_to_config(momentum, lr):
    config = {"o": {"momentum": momentum}, "d": {"b": 48}}
    horizon = Coordinate("horizon")
    assert math.isclose(horizon.to_config(horizon.from_config(momentum, config), config), momentum, rel_tol=1e-15)
    assert horizon.from_config(momentum, config) == pytest.approx(1 / (1 - momentum))
    for coordinate in (Coordinate("effective", "o.momentum"), Coordinate("raw", None, "d.b", 64)):
        sampled = coordinate.from_config(lr, config)
        back = coordinate.to_config(sampled, config)
        assert math.isclose(back, lr, rel_tol=1e-15)  # exact where a float reaches it: see the next test
        assert back == lr or all(coordinate.to_config(x, config) != lr for x in _ulps_around(sampled, 4))
    both = Coordinate("effective", "o.momentum", "d.b", 64)
    assert both.from_config(lr, config) == pytest.approx(lr / (1 - momentum) * 64 / 48)


def _ulps_around(x, n):
    below = above = x
    for _ in range(n):
        below, above = math.nextafter(below, -math.inf), math.nextafter(above, math.inf)
        yield below
        yield above


@pytest.mark.parametrize("momentum, lr", [(0.9, 0.1), (0.5, 0.01), (0.99, 0.001), (0.0, 0.1), (0.95, 0.05)])
def test_the_books_values_come_back_exactly(momentum, lr):
    config = {"o": {"momentum": momentum}, "d": {"b": 32}}
    horizon, effective = Coordinate("horizon"), Coordinate("effective", "o.momentum", "d.b", 64)
    assert horizon.to_config(horizon.from_config(momentum, config), config) == momentum
    assert effective.to_config(effective.from_config(lr, config), config) == lr


def test_workers_share_one_warm_start_and_one_enqueued_setting(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _journal_study(tmp_path / "runs" / "old" / "study.journal", "old", [_trial(1.0, lr=0.1, batch=32)])
    data = sweep_dict("runs", n_trials=2, warm_start={"study": "old"}, enqueue=[{LR: 0.2, BATCH: 64}])
    assert main(["sweep", "run", str(write(tmp_path / "s.yaml", data)), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("warm start: 1 of 1 complete trials of study 'old' copied\n") == 1
    study = load_journal(tmp_path / "runs" / "s" / "study.journal")
    assert [t.user_attrs.get("copied_from") for t in study.trials].count({"study": "old", "trial": 0}) == 1
    assert [t.params for t in study.trials if t.user_attrs.get("enqueued") == "#1"] == [{LR: 0.2, BATCH: 64}]
    assert counted(study.trials) == 2 and len(study.trials) == 3
