"""Studies with several objectives: real sweeps of a foreign model-size project, pruned on the first metric.

The project (:mod:`tests.foreign.multi_project`) logs ``val_loss`` and ``n_params``; its ``frozen``
runs (learning rate 0) are clearly bad from the first round, so the median pruner has work to do.
"""

from __future__ import annotations

import datetime
import io
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata

from lightopt.cli import main
from lightopt.sweep import run_sweep
from lightopt.sweep import spec as config
from lightopt.sweep.store import minimizes, pareto_front
from lightopt.sweep.study import StudyHistory, plot_study
from tests.sweep.helpers import load_journal, sweep_dict, write

ROOT = Path(__file__).resolve().parents[2]
TrialState = optuna.trial.TrialState


def multi_dict(log_dir: Path, **study) -> dict:
    """A width-and-loss study: 8 trials of at most 3 epochs of 6 batches, random sampler, median pruner."""
    return {
        "study": {
            "name": "mo",
            "metric": ["val_loss", "n_params"],
            "direction": "minimize",
            "n_trials": 8,
            "sampler": {"name": "random", "seed": 0},
            "pruner": {"name": "median", "n_startup_trials": 2},
            "threads": 1,
            "log_dir": str(log_dir),
            **study,
        },
        "model": {"class_path": "tests.foreign.multi_project.SizedRegressor"},
        "data": {"class_path": "tests.foreign.multi_project.CurveData"},
        "trainer": {"max_epochs": 3, "enable_checkpointing": False, "accelerator": "cpu"},
        "search": {
            "model.init_args.width": {"choices": [2, 4, 8, 16]},
            "model.init_args.frozen": {"choices": [True, False]},
        },
    }


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The study run once, through `lightopt sweep run`'s function: (file, result, its printed lines)."""
    root = tmp_path_factory.mktemp("multi")
    file = write(root / "mo.yaml", multi_dict(root / "runs"))
    out = io.StringIO()
    result = run_sweep(config.load(file), out=out)
    return file, result, out.getvalue()


def _front(study: optuna.Study) -> list[int]:
    return [t.number for t in pareto_front(study.trials, minimizes(study))]


def _reports(trial: optuna.trial.FrozenTrial) -> dict[int, float]:
    return {int(step): value for step, value in trial.user_attrs["intermediate_values"].items()}


def test_the_study_has_both_objectives_and_each_trial_values_from_one_round(swept):
    _, result, _ = swept
    study = result.study
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE] * 2
    assert study.metric_names == ["val_loss", "n_params"]
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) >= 3
    for trial in complete:
        width = trial.params["model.init_args.width"]
        assert trial.values[0] == trial.user_attrs["best_value"] == min(_reports(trial).values())
        assert trial.values[1] == 5 * width + 1  # 3w + w weights and biases, then w + 1
        assert trial.user_attrs["objective_values"] == trial.values


def _median_rule(trial: optuna.trial.FrozenTrial, earlier: list[optuna.trial.FrozenTrial], startup: int) -> int | None:
    """The step at which MedianPruner(n_startup_trials=startup) prunes ``trial``, given the trials before it."""
    if sum(t.state == TrialState.COMPLETE for t in earlier) < startup:
        return None
    finished = [t for t in earlier if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    best = float("inf")
    for step, value in sorted(_reports(trial).items()):
        best = min(best, value)
        others = [_reports(t)[step] for t in finished if step in _reports(t)]
        if others and best > np.percentile(others, 50):
            return step
    return None


def test_trials_are_pruned_on_the_first_metric_by_the_median_rule(swept):
    _, result, _ = swept
    trials = result.study.trials
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned and len(pruned) < len(trials)
    for trial in trials:  # sequential trials: "earlier" is "lower number"
        expected = _median_rule(trial, trials[: trial.number], startup=2)
        assert trial.user_attrs.get("pruned_at") == expected
        if expected is not None:
            assert max(_reports(trial)) == expected  # no round reported after the decision


def test_pruned_trials_record_their_values_and_are_never_on_the_front(swept):
    _, result, _ = swept
    study = result.study
    front = _front(study)
    assert front == sorted(t.number for t in study.best_trials)  # lightopt's rule is Optuna's
    for trial in study.get_trials(states=(TrialState.PRUNED,)):
        assert trial.values is None and trial.number not in front
        assert len(trial.user_attrs["objective_values"]) == 2
        assert trial.user_attrs["objective_values"][0] == trial.user_attrs["best_value"]


def test_the_progress_lines_and_the_summary_show_the_front(swept):
    _, result, out = swept
    study = result.study
    front = _front(study)
    lines = out.splitlines()
    assert f"Pareto front: {len(front)} trials (val_loss (minimize), n_params (minimize))" in lines
    for number in front:
        trial = study.trials[number]
        assert any(
            line.startswith(f"  trial {number}: val_loss={trial.values[0]:.6g}, n_params={trial.values[1]:.6g}")
            for line in lines
        )
    assert "choose one: lightopt sweep best mo --trial K --export PATH" in out
    complete = [line for line in lines if " complete val_loss=" in line]
    assert complete and all(", n_params=" in line and "| Pareto front: " in line for line in complete)


def test_show_marks_the_front_and_json_has_every_value(swept, capsys):
    file, result, _ = swept
    study = result.study
    front = _front(study)
    assert main(["sweep", "show", str(file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:5] == ["number", "state", "val_loss", "n_params", "front"]
    marked = [int(line.split()[0]) for line in lines[2:-1] if line.split()[4] == "*"]
    assert marked == front
    assert lines[-1].startswith(f"Pareto front (*): trial{'s' if len(front) > 1 else ''} {', '.join(map(str, front))}")

    assert main(["sweep", "show", str(file), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["metrics"] == ["val_loss", "n_params"] and shown["directions"] == ["minimize", "minimize"]
    assert shown["best"] is None and [row["number"] for row in shown["best_trials"]] == front
    for row, trial in zip(shown["trials"], study.trials):
        assert row["pareto"] == (trial.number in front)
        assert row["values"] == (trial.values or trial.user_attrs["objective_values"])


def test_best_asks_for_a_trial_and_exports_the_chosen_one(swept, capsys, tmp_path):
    file, result, _ = swept
    study = result.study
    front = _front(study)
    assert main(["sweep", "best", str(file)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "Choose one with --trial K." in err
    assert all(f"trial {number} (val_loss=" in err for number in front)

    chosen = study.trials[front[-1]]
    target = tmp_path / "chosen.yaml"
    assert main(["sweep", "best", str(file), "--trial", str(chosen.number), "--export", str(target)]) == 0
    assert f"trial {chosen.number} written to {target}" in capsys.readouterr().out
    text = target.read_text()
    assert text.startswith(f"# Trial {chosen.number} of study 'mo' (complete, on the Pareto front): val_loss=")
    assert yaml.safe_load(text) == chosen.user_attrs["config"]

    pruned = study.get_trials(states=(TrialState.PRUNED,))[0]
    assert main(["sweep", "best", str(file), "--trial", str(pruned.number)]) == 0
    assert f"# Trial {pruned.number} of study 'mo' (pruned): val_loss=" in capsys.readouterr().out
    assert main(["sweep", "best", str(file), "--trial", "99"]) == 2
    assert "`--trial` must be the number of a trial of study 'mo' (0 to 7)" in capsys.readouterr().err


def test_tensorboard_shows_every_objective(swept):
    _, result, _ = swept
    study = result.study
    trial = study.trials[_front(study)[0]]
    run = EventAccumulator(str(result.study_dir / f"trial_{trial.number:04d}"), size_guidance={"tensors": 0})
    run.Reload()
    data = run.PluginTagToContent(metadata.PLUGIN_NAME)
    experiment = metadata.parse_experiment_plugin_data(data[metadata.EXPERIMENT_TAG])
    infos = {m.name.tag: m.display_name for m in experiment.metric_infos}
    assert infos["objective/val_loss"] == "val_loss" and infos["objective/n_params"] == "n_params"
    assert run.Scalars("objective/val_loss")[-1].value == pytest.approx(trial.values[0])
    assert run.Scalars("objective/n_params")[-1].value == trial.values[1]

    board = EventAccumulator(str(result.study_dir / "study"))
    board.Reload()
    assert board.Scalars("study/pareto_front_size")[-1].value == len(_front(study))
    assert board.Scalars("study/pareto_front_size_by_time")[-1].value == len(_front(study))
    by_number = {e.step: e.value for e in board.Scalars("study/trial_value/n_params")}
    assert by_number == {t.number: t.values[1] for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert "study/best_value" not in board.Tags()["scalars"]
    plots = EventAccumulator(str(result.study_dir / "study" / "plots"))
    plots.Reload()
    assert "plots/pareto_front" in plots.Tags()["images"]


def test_the_pareto_plot_is_drawn(swept, tmp_path):
    _, result, _ = swept
    assert (result.study_dir / "plots" / "pareto_front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    written, _ = plot_study(result.study, tmp_path)
    assert {"pareto_front.png", "optimization_history.png"} <= {path.name for path in written}


@pytest.mark.parametrize(
    "change, match",
    [
        ({"metric": "val_loss", "direction": "minimize"}, "has 2 objectives (val_loss, n_params), but got one"),
        ({"direction": ["minimize", "maximize"]}, "which is ['minimize', 'minimize'], but got direction=['minimize', "),
        ({"metric": ["val_loss", "val_loss2"]}, "which is ['val_loss', 'n_params'], but got metric=['val_loss', 'val_"),
    ],
)
def test_resuming_with_other_objectives_is_refused_in_one_line(swept, tmp_path, capsys, change, match):
    file, result, _ = swept
    data = yaml.safe_load(file.read_text())
    data["study"].update(change)
    before = len(result.study.trials)
    assert main(["sweep", "run", str(write(tmp_path / "changed.yaml", data))]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1
    assert len(load_journal(result.study_dir / "study.journal", "mo").trials) == before


BAD = [
    ({"metric": ["val_loss", "n_params"], "direction": ["minimize"]}, ValueError, "one direction per metric (2: val_"),
    ({"metric": ["a", "b"], "direction": ["minimize", "minimise"]}, ValueError, "Did you mean 'minimize'"),
    ({"metric": ["val_loss", "val_loss"]}, ValueError, "must list each metric once"),
    ({"metric": []}, ValueError, "must list at least one metric"),
    ({"metric": ["val_loss", 3]}, TypeError, "or list several, but got metric=['val_loss', 3]"),
    ({"metric": ["trial/duration_s", "val_loss"]}, ValueError, "must start with a metric the module logs"),
    ({"metric": ["val_loss", "n_params"], "sampler": "cmaes"}, ValueError, "'cmaes' samples for one objective only"),
]


@pytest.mark.parametrize("block, error, match", BAD)
def test_bad_objectives_are_refused(block, error, match):
    with pytest.raises(error, match=match.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        config.parse_study(block, "s")


def test_bad_objectives_are_one_line_and_exit_2_on_the_command_line(tmp_path):
    data = multi_dict(tmp_path / "runs", direction=["minimize", "maximize", "minimize"])
    process = subprocess.run(
        [sys.executable, "-m", "lightopt", "sweep", "run", str(write(tmp_path / "bad.yaml", data))],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert process.returncode == 2 and process.stderr.count("\n") == 1 and "Traceback" not in process.stderr
    assert "`study.direction` must list one direction per metric (2: val_loss, n_params)" in process.stderr
    assert not (tmp_path / "runs").exists()


def test_one_direction_applies_to_every_metric_and_a_list_of_one_is_one_objective():
    spec = config.parse_study({"metric": ["val_loss", "val_acc"], "direction": "maximize"}, "s")
    assert spec.metrics == ("val_loss", "val_acc") and spec.directions == ("maximize", "maximize")
    assert spec.multi_objective and spec.metric == "val_loss" and spec.direction == "maximize"
    mixed = config.parse_study({"metric": ["val_loss", "val_acc"], "direction": ["minimize", "maximize"]}, "s")
    assert mixed.directions == ("minimize", "maximize")
    one = config.parse_study({"metric": ["val_acc"], "direction": ["maximize"]}, "s")
    assert not one.multi_objective and one.metric == "val_acc" and one.direction == "maximize"
    assert config.parse_study({"metric": ["a", "b"], "sampler": "nsgaii"}, "s").sampler == {"name": "nsgaii"}


def test_a_metric_never_logged_is_one_line(tmp_path, capsys):
    data = multi_dict(tmp_path / "runs", metric=["val_loss", "n_param"], n_trials=1)
    assert main(["sweep", "run", str(write(tmp_path / "typo.yaml", data))]) == 2
    err = capsys.readouterr().err
    logged = "lr-SGD, lr-SGD-momentum, n_params, val_loss"
    assert f"'n_param' was not logged after validation round 1; logged metrics: {logged}." in err
    assert err.count("\n") == 1


def test_the_trials_wall_time_as_an_objective_with_nsga_ii(tmp_path):
    data = multi_dict(tmp_path / "runs", metric=["val_loss", "trial/duration_s"], n_trials=3, pruner="none")
    data["study"]["sampler"] = {"name": "nsgaii", "seed": 0, "population_size": 2}
    data["trainer"]["max_epochs"] = 1
    result = run_sweep(config.load(write(tmp_path / "time.yaml", data)), out=io.StringIO())
    assert isinstance(result.study.sampler, optuna.samplers.NSGAIISampler)
    for trial in result.study.trials:
        assert trial.state == TrialState.COMPLETE
        assert 0 < trial.values[1] <= trial.duration.total_seconds()


def test_the_pareto_front_is_optunas_best_trials_in_every_direction():
    rng = random.Random(0)
    for directions in (["minimize", "maximize"], ["maximize", "maximize", "minimize"]):
        study = optuna.create_study(directions=directions)
        for _ in range(40):  # values on a coarse grid: ties and duplicates happen
            study.add_trial(optuna.trial.create_trial(values=[rng.randint(0, 5) for _ in directions]))
        study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED))
        assert _front(study) == sorted(t.number for t in study.best_trials)


def test_sweep_best_exports_a_chosen_trial_of_a_single_objective_study(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = sweep_dict(Path("runs"), n_trials=2)
    data["trainer"]["max_epochs"] = 1
    file = write(tmp_path / "digits.yaml", data)
    assert main(["sweep", "run", str(file)]) == 0
    capsys.readouterr()
    assert main(["sweep", "best", str(file), "--trial", "1", "--export", "one.yaml"]) == 0
    assert capsys.readouterr().out == "trial 1 written to one.yaml; run it with: lightopt fit one.yaml\n"
    text = Path("one.yaml").read_text()
    assert text.startswith("# Trial 1 of study 's' (complete): val_loss=")
    study = load_journal(Path("runs/s/study.journal"))
    assert yaml.safe_load(text) == study.trials[1].user_attrs["config"]


def _points(events) -> dict[tuple[str, int], float]:
    """What TensorBoard keeps of ``events``: the last value per (tag, step), a restart dropping its step and later."""
    points: dict[tuple[str, int], float] = {}
    for event in events:
        if event.HasField("session_log"):
            points = {key: value for key, value in points.items() if key[1] < event.step}
        for value in event.summary.value:
            points[(value.tag, event.step)] = value.simple_value
    return points


def test_the_study_runs_front_grows_trial_by_trial_as_a_fresh_history_gives_it():
    rng = random.Random(1)
    start = datetime.datetime(2026, 1, 1)
    trials = []
    for number in range(12):  # trial 5 finishes last: its points come after later trials' were written
        state = TrialState.PRUNED if number % 4 == 3 else TrialState.COMPLETE
        trials.append(
            optuna.trial.FrozenTrial(
                number=number,
                state=state,
                value=None,
                values=[rng.randint(0, 6), rng.randint(0, 6)] if state == TrialState.COMPLETE else None,
                datetime_start=start,
                datetime_complete=start + datetime.timedelta(seconds=100 if number == 5 else number),
                params={},
                distributions={},
                user_attrs={},
                system_attrs={},
                intermediate_values={},
                trial_id=number,
            )
        )
    incremental = StudyHistory((True, False), ["loss", "acc"])
    events = [event for k in range(1, len(trials) + 1) for event in incremental.add(trials[:k])]
    fresh = StudyHistory((True, False), ["loss", "acc"]).add(trials)
    assert _points(events) == _points(fresh)
    final = _points(fresh)
    assert final[("study/pareto_front_size", len(trials) - 1)] == len(pareto_front(trials, (True, False)))
    assert final[("study/pareto_front_size_by_time", len(trials))] == len(pareto_front(trials, (True, False)))
    assert final[("study/trial_value/acc", 0)] == trials[0].values[1]
    assert not any(tag.startswith("study/best_value") for tag, _ in final)
