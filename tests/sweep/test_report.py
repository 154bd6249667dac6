"""reproduce_trial on pruned and failed trials, and plot_study with one parameter."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest

from lightopt.sweep import run_sweep, trial_seed
from lightopt.sweep import spec as config
from lightopt.sweep import trial as objective
from lightopt.sweep.readback import find_study, reproduce_trial
from lightopt.sweep.spec import SweepConfigError
from lightopt.sweep.study import plot_study
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
    with pytest.raises(SweepConfigError, match=r"trial 0 failed .*broken on purpose"):
        reproduce_trial(study, 0, broken)


def test_other_seeds_show_the_spread_and_a_failing_seed_loses_nothing(tmp_path, monkeypatch):
    sweep = _sweep(tmp_path, n_trials=1)
    run_sweep(sweep)
    study, _, _ = find_study(sweep.path)
    seed = study.trials[0].user_attrs["seed"]
    others = [trial_seed(seed, i) for i in (1, 2, 3)]
    real_fit = objective.fit_trial

    def fit(config, seed, *args, **kwargs):  # the second other seed diverges
        if seed == others[1]:
            raise RuntimeError("loss is nan at step 3\nmore lines")
        return real_fit(config, seed, *args, **kwargs)

    monkeypatch.setattr(objective, "fit_trial", fit)  # reproduce_trial imports it when it runs
    result = reproduce_trial(study, 0, sweep, seeds=3)
    assert result.value == pytest.approx(study.trials[0].value, abs=1e-6)
    assert [s for s, _ in result.reseeded] == others
    assert result.reseeded[1][1] == "loss is nan at step 3"
    good = [v for _, v in result.reseeded if isinstance(v, float)]
    assert len(good) == 2 and good[0] != good[1]
    text = result.summary("s")
    assert f"seed {others[1]:<10d}  failed: loss is nan at step 3" in text
    assert f"the recorded value is better than {sum(result.recorded < v for v in good)} of 2" in text
    assert all((tmp_path / "runs/s-reproduce" / f"reproduce_0000_seed_{s}").is_dir() for s in (others[0], others[2]))


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
