"""reproduce_trial on pruned and failed trials, and plot_study with one parameter."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest

from lightopt.sweep import config, run_sweep
from lightopt.sweep.config import SweepConfigError
from lightopt.sweep.report import find_study, plot_study, reproduce_trial
from tests.sweep.helpers import PruneAt, sweep_dict, write

matplotlib.use("Agg")


def _sweep(tmp_path, **kwargs):
    data = sweep_dict(tmp_path / "runs", **kwargs)
    data["trainer"]["max_epochs"] = 2
    return config.load(str(write(tmp_path / "s.yaml", data)))


def test_pruned_trial_runs_to_full_length_and_failed_trial_is_refused(tmp_path, capsys):
    sweep = _sweep(tmp_path, n_trials=2)
    run_sweep(sweep, pruner=PruneAt(1, 1))
    study, _, _ = find_study(sweep.path)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED"]
    result = reproduce_trial(study, 1, sweep)
    assert any("pruned" in note and "full length" in note for note in result.notes)
    assert "full length" in result.summary("s") and result.recorded == study.trials[1].user_attrs["best_value"]

    data = sweep_dict(tmp_path / "runs", n_trials=3)
    data["model"] = {"class_path": "tests.sweep.helpers.BreakableMLP", "init_args": {"hidden": 16, "broken": True}}
    broken = config.load(str(write(tmp_path / "b.yaml", {**data, "study": {**data["study"], "name": "b"}})))
    run_sweep(broken, n_trials=1)
    study, _, _ = find_study(broken.path)
    with pytest.raises(SweepConfigError, match="trial 0 failed .*broken on purpose"):
        reproduce_trial(study, 0, broken)


def test_plot_with_one_parameter_skips_importances_and_contour(tmp_path, capsys):
    data = sweep_dict(tmp_path / "runs", n_trials=3)
    data["trainer"]["max_epochs"] = 1
    del data["search"]["data.init_args.batch_size"]
    sweep = config.load(str(write(tmp_path / "one.yaml", data)))
    run_sweep(sweep)
    study, _, _ = find_study(sweep.path)
    written, notes = plot_study(study, tmp_path / "plots")
    assert [p.name for p in written] == ["optimization_history.png", "parallel_coordinate.png", "slice.png"]
    assert len(notes) == 2 and all("skipped" in note for note in notes)
    assert all(Path(p).read_bytes()[:4] == b"\x89PNG" for p in written)
