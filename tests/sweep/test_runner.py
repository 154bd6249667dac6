"""run_sweep on real storages with real tiny fits: states, resume, seeds, logs, failures."""

from __future__ import annotations

import io

import optuna
import pytest
from optuna.trial import TrialState
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightopt.sweep import MetricNotLoggedError, SweepConfigError, run_sweep, trial_config, trial_seed
from lightopt.sweep.spec import parse
from tests.sweep.helpers import PruneAt, sweep_dict


def _run(data, **kwargs):
    out = io.StringIO()
    result = run_sweep(parse(data, "sweep.yaml"), out=out, **kwargs)
    return result, out.getvalue()


def test_complete_and_pruned_trials_with_default_journal_storage(tmp_path):
    data = sweep_dict(tmp_path / "runs")
    data["trainer"]["val_check_interval"] = 0.5
    result, out = _run(data, pruner=PruneAt(1, 2))
    trials = result.study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE]
    assert trials[1].user_attrs["pruned_at"] == 2 and max(trials[1].intermediate_values) == 2
    for trial in trials:
        assert trial.user_attrs["seed"] == trial_seed(0, trial.number)
        assert set(trial.params) == {"optimizer.init_args.lr", "data.init_args.batch_size"}
        assert trial.user_attrs["config"]["optimizer"]["init_args"]["lr"] == trial.params["optimizer.init_args.lr"]
    complete = trials[0]
    assert complete.value == min(complete.intermediate_values.values())  # the best round, not the last
    assert complete.user_attrs["validation_rounds"] == 4 and complete.user_attrs["epochs"] == 2
    assert (tmp_path / "runs" / "s" / "study.journal").is_file()
    events = EventAccumulator(str(tmp_path / "runs" / "s" / "trial_0001")).Reload()
    assert len(events.Scalars("val_loss")) == 2  # the pruned trial's logs are complete up to its stop
    lines = out.splitlines()
    assert lines[1].startswith("[1/3] trial 0 complete val_loss=") and "[2/3] trial 1 pruned at step 2" in lines[2]
    assert "1 pruned, 0 failed" in lines[3] and f"best trial {result.study.best_trial.number}:" in out
    assert str(tmp_path / "runs" / "s") in out


def test_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
    data = sweep_dict(tmp_path, sampler="grid", n_trials=2)
    data["model"]["class_path"] = "tests.sweep.helpers.BreakableMLP"
    data["search"] = {"model.init_args.broken": {"choices": [False, True]}}
    result, out = _run(data, storage=f"sqlite:///{tmp_path / 'study.db'}")
    by_param = {t.params["model.init_args.broken"]: t for t in result.study.trials}
    assert by_param[False].state == TrialState.COMPLETE
    broken = by_param[True]
    assert broken.state == TrialState.FAIL
    assert broken.user_attrs["fail_reason"] == "RuntimeError: broken on purpose"
    assert "Traceback" in broken.user_attrs["traceback"] and "failed: RuntimeError: broken on purpose" in out


def test_resume_counts_earlier_trials_and_leaves_them_untouched(tmp_path):
    data = sweep_dict(tmp_path)
    first, _ = _run(data, n_trials=2)
    before = [(t.number, t.params, t.value, t.datetime_start) for t in first.study.trials]
    second, out = _run(data, n_trials=4)
    assert second.ran == 2 and len(second.study.trials) == 4
    after = [(t.number, t.params, t.value, t.datetime_start) for t in second.study.trials[:2]]
    assert after == before
    third, out = _run(data, n_trials=4)
    assert third.ran == 0 and "running up to 0 more" in out


def test_same_seed_gives_the_same_trial(tmp_path):
    data = sweep_dict(tmp_path, n_trials=1)
    one, _ = _run(data)
    two, _ = _run(data, study_name="again")
    a, b = one.study.trials[0], two.study.trials[0]
    assert a.params == b.params and a.user_attrs["seed"] == b.user_attrs["seed"]
    assert a.value == b.value and a.intermediate_values == b.intermediate_values


def test_trial_config_rebuilds_a_trial(tmp_path):
    data = sweep_dict(tmp_path, n_trials=1)
    result, _ = _run(data)
    trial = result.study.trials[0]
    sweep = parse(data)
    assert trial_config(sweep, trial.params, trial.user_attrs["seed"]) == trial.user_attrs["config"]


def test_metric_never_logged_stops_with_the_logged_metrics(tmp_path):
    data = sweep_dict(tmp_path, metric="val_los")
    with pytest.raises(MetricNotLoggedError, match=r"logged metrics: .*val_acc, val_loss"):
        _run(data)
    study = optuna.load_study(
        study_name="s",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "s" / "study.journal"))
        ),
    )
    assert [t.state for t in study.trials] == [TrialState.FAIL]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"workers": 0}, "`--workers` must be an integer >= 1, but got workers=0."),
        ({"workers": -1}, "`--workers` must be an integer >= 1, but got workers=-1."),
        ({"n_trials": 0}, "`--n-trials` must be an integer >= 1"),
        ({"timeout": -1}, "`--timeout` must be a number of seconds > 0"),
        ({"storage": "sqlite:////no/such/dir/x.db"}, "`--storage` 'sqlite:////no/such/dir/x.db' cannot be opened"),
    ],
)
def test_bad_arguments_touch_nothing(tmp_path, kwargs, match):
    with pytest.raises(SweepConfigError, match=match):
        _run(sweep_dict(tmp_path), **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_a_resumed_seeded_sampler_draws_new_parameters(tmp_path):
    """A second run of the same file resumes the study with a sampler reseeded by the trial count,
    so a seeded random sampler does not draw the first run's parameters again; a fresh study with
    the same file draws the same parameters as the first run."""
    data = sweep_dict(tmp_path / "runs", n_trials=2)
    first = [t.params for t in run_sweep(parse(data), out=io.StringIO()).study.trials]
    data["study"]["n_trials"] = 4
    resumed = [t.params for t in run_sweep(parse(data), out=io.StringIO()).study.trials]
    assert resumed[:2] == first and resumed[2]["optimizer.init_args.lr"] not in {
        p["optimizer.init_args.lr"] for p in first
    }
    data["study"].update(n_trials=2, log_dir=str(tmp_path / "again"))
    assert [t.params for t in run_sweep(parse(data), out=io.StringIO()).study.trials] == first
