"""A sweep whose learning rate says ``{range_test: true}``: tested once when the study is created, reused after."""

from __future__ import annotations

import io

import pytest
from optuna.distributions import FloatDistribution

from lightopt.cli import main
from lightopt.sweep.readback import find_study, format_table
from lightopt.sweep.spec import load
from lightopt.sweep.study import _range_bounds, run_sweep
from tests.sweep.helpers import write

LR = "optimizer.init_args.lr"


def sweep_data(log_dir, **entry):
    return {
        "study": {
            "name": "tested",
            "n_trials": 2,
            "sampler": {"name": "random", "seed": 0},
            "pruner": "none",
            "threads": 1,
            "log_dir": str(log_dir),
            "seed": 0,
        },
        "model": {"class_path": "tests.sweep.trial.range_project.SmallMLP"},
        "data": {"class_path": "tests.sweep.trial.range_project.Regression"},
        "trainer": {"max_epochs": 1, "limit_train_batches": 4, "enable_checkpointing": False, "accelerator": "cpu"},
        "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}},
        "search": {LR: {"range_test": True, **entry}},
    }


@pytest.fixture
def calls(monkeypatch):
    """How often the range test ran (it runs for real, 40 steps instead of 100)."""
    made = []
    real = _range_bounds.range_test

    def counted(*args, **kwargs):
        made.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(_range_bounds, "range_test", counted)
    monkeypatch.setattr(_range_bounds, "STEPS", 40)
    return made


def test_bounds_are_tested_at_creation_recorded_and_reused_on_resume(tmp_path, calls, capsys):
    path = write(tmp_path / "tested.yaml", sweep_data(tmp_path / "runs", low=1.0e-3, high=3.0))
    out = io.StringIO()
    first = run_sweep(load(path), out=out)
    assert len(calls) == 1
    assert (calls[0]["min_lr"], calls[0]["max_lr"]) == (1.0e-3, 3.0)  # the entry's low/high: the tested range
    record = first.study.user_attrs["lightopt"]["range_test"]
    low, high = record["low"], record["high"]
    assert record["name"] == LR and 1.0e-3 <= low < high <= 3.0
    assert high == pytest.approx(low * 100) or low == 1.0e-3
    text = out.getvalue()
    assert "suggested range for optimizer.init_args.lr" in text and "<- lowest" in text
    assert (first.study_dir / "range_test.png").read_bytes()[:4] == b"\x89PNG"
    for trial in first.study.trials:
        assert trial.distributions[LR] == FloatDistribution(low, high, log=True)
        assert low <= trial.params[LR] <= high

    out = io.StringIO()
    again = run_sweep(load(path), n_trials=3, out=out)
    assert len(calls) == 1  # resumed: not run again
    assert "as recorded when study 'tested' was created (not run again)" in out.getvalue()
    assert again.study.user_attrs["lightopt"]["range_test"] == record
    assert len(again.study.trials) == 3
    assert all(low <= t.params[LR] <= high for t in again.study.trials)

    study, sweep, _ = find_study(str(path))
    assert sweep.search.deferred == () and sweep.search.params[0].low == low
    assert format_table(study).splitlines()[0].startswith(f"range test (run when the study was created): {LR} in")
    assert main(["sweep", "show", str(path)]) == 0
    assert "range test (run when the study was created)" in capsys.readouterr().out
    assert len(calls) == 1


def test_a_study_that_failed_at_the_test_is_not_created(tmp_path, calls):
    data = sweep_data(tmp_path / "runs")
    data["trainer"]["fast_dev_run"] = True  # set aside by the test's own Trainer: the test still runs
    data["model"]["init_args"] = {"features": 3}  # the data has 8 features: the first batch fails
    path = write(tmp_path / "broken.yaml", data)
    with pytest.raises(RuntimeError):
        run_sweep(load(path), out=io.StringIO())
    assert len(calls) == 1
    assert not (tmp_path / "runs" / "tested" / "study.journal").exists()
