"""What a sweep's summary, header and `sweep show` say: config values next to coordinates, one value per
trial, the timeout, a failed trial's traceback, the metric's name for optuna-dashboard."""

from __future__ import annotations

import io
import json

from lightopt.cli import main
from lightopt.sweep import run_sweep
from lightopt.sweep import spec as config
from lightopt.sweep.readback import find_study, format_table, study_json, trial_value
from lightopt.sweep.spec import momentum_from_horizon
from tests.sweep.helpers import PruneAt, sweep_dict, write


def _load(tmp_path, name="s", **study):
    data = sweep_dict(tmp_path / "runs", name=name, **study)
    data["search"] = {"optimizer.init_args.momentum": {"low": 1.0, "high": 100.0, "log": True, "coordinate": "horizon"}}
    return data


def test_summary_and_show_give_the_config_value_next_to_the_coordinate(tmp_path, capsys):
    sweep = config.load(str(write(tmp_path / "s.yaml", _load(tmp_path))))
    out = io.StringIO()
    result = run_sweep(sweep, n_trials=2, out=out)
    best = min((t for t in result.study.trials), key=lambda t: t.value)
    horizon = best.params["optimizer.init_args.momentum:horizon"]
    alpha = momentum_from_horizon(horizon)
    assert (
        f"  optimizer.init_args.momentum:horizon: {horizon!r}  (optimizer.init_args.momentum = {alpha!r})"
        in out.getvalue().splitlines()
    )
    assert result.study.metric_names == ["val_loss"]  # optuna-dashboard labels the objective with it

    table = format_table(result.study).splitlines()
    assert table[0].split() == [
        "number",
        "state",
        "value",
        "optimizer.init_args.momentum:horizon",
        "=",
        "optimizer.init_args.momentum",
        "duration_s",
        "seed",
    ]
    row = table[1 + best.number].split()
    assert row[3] == f"{horizon:.4g}" and row[4] == f"{alpha:.4g}"
    rows = json.loads(study_json(result.study))["trials"]
    assert rows[best.number]["config_values"] == {"optimizer.init_args.momentum:horizon": alpha}


def test_a_pruned_trials_value_is_its_best_everywhere(tmp_path, capsys):
    data = sweep_dict(tmp_path / "runs", n_trials=2)
    data["trainer"]["max_epochs"] = 4
    sweep = config.load(str(write(tmp_path / "s.yaml", data)))
    study = run_sweep(sweep, pruner=PruneAt(1, 3), out=io.StringIO()).study
    pruned = study.trials[1]
    assert pruned.state.name == "PRUNED"
    best = pruned.user_attrs["best_value"]
    assert trial_value(pruned) == best == min(pruned.intermediate_values.values())
    assert json.loads(study_json(study))["trials"][1]["value"] == best
    assert format_table(study).splitlines()[2].split()[2] == f"{best:.4g}"


def test_timeout_is_in_the_header_and_the_summary(tmp_path):
    sweep = config.load(str(write(tmp_path / "s.yaml", sweep_dict(tmp_path / "runs", n_trials=5))))
    out = io.StringIO()
    result = run_sweep(sweep, timeout=0.001, out=out)
    lines = out.getvalue().splitlines()
    assert "(n_trials=5), or for 0.001 s (timeout);" in lines[0]
    assert result.ran < 5
    assert lines[-1] == (
        f"the timeout (0.001 s) stopped the run: {result.ran} of the 5 trials it could run ran; "
        f"the same command goes on"
    )
    again = io.StringIO()
    run_sweep(sweep, out=again)  # no timeout: no such line
    assert "(timeout)" not in again.getvalue() and "the timeout" not in again.getvalue()


def test_show_json_has_a_failed_trials_traceback(tmp_path, monkeypatch, capsys):
    data = sweep_dict(tmp_path / "runs", n_trials=1)
    data["model"] = {"class_path": "tests.sweep.helpers.BreakableMLP", "init_args": {"hidden": 16, "broken": True}}
    path = write(tmp_path / "b.yaml", data)
    run_sweep(config.load(str(path)), out=io.StringIO())
    capsys.readouterr()
    assert main(["sweep", "show", str(path), "--json"]) == 0
    trial = json.loads(capsys.readouterr().out)["trials"][0]
    assert trial["state"] == "FAIL" and "broken on purpose" in trial["fail_reason"]
    assert (
        trial["traceback"].startswith("Traceback (most recent call last)") and "broken on purpose" in trial["traceback"]
    )
    study, _, _ = find_study(str(path))
    assert trial_value(study.trials[0]) is None
