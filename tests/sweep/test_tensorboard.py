"""TensorBoard of a sweep: each trial's HParams session (complete, pruned, failed), the study run, and a real
TensorBoard server queried as the HParams dashboard queries it."""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, metadata

from lightopt.cli import main
from lightopt.sweep import run_sweep
from lightopt.sweep import spec as config
from lightopt.sweep.study import StudyRun
from lightopt.sweep.trial import METRICS, STATES, experiment_summary, trial_hparams, write_trial
from tests.sweep.helpers import PruneAt, sweep_dict, write

ROOT = Path(__file__).resolve().parents[2]
# trial number -> (params, expected state); trial 3 fails while its model is built, before any Trainer exists
TRIALS = [
    (
        {
            "optimizer.init_args.lr": 0.1,
            "data.init_args.batch_size": 32,
            "model.init_args.broken": False,
            "model.init_args.hidden": 16,
        },
        "COMPLETE",
    ),
    (
        {
            "optimizer.init_args.lr": 0.2,
            "data.init_args.batch_size": 64,
            "model.init_args.broken": False,
            "model.init_args.hidden": 16,
        },
        "PRUNED",
    ),
    (
        {
            "optimizer.init_args.lr": 0.1,
            "data.init_args.batch_size": 32,
            "model.init_args.broken": True,
            "model.init_args.hidden": 16,
        },
        "FAIL",
    ),
    (
        {
            "optimizer.init_args.lr": 0.1,
            "data.init_args.batch_size": 32,
            "model.init_args.broken": False,
            "model.init_args.hidden": -1,
        },
        "FAIL",
    ),
    (
        {
            "optimizer.init_args.lr": 0.05,
            "data.init_args.batch_size": 64,
            "model.init_args.broken": False,
            "model.init_args.hidden": 16,
        },
        "COMPLETE",
    ),
]


class FixedSampler(optuna.samplers.BaseSampler):
    """Gives trial ``n`` the parameters ``rows[n]``."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.rows[trial.number][param_name]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A finished 5-trial sweep: 2 complete, 1 pruned, 1 broken in training, 1 broken before its Trainer."""
    root = tmp_path_factory.mktemp("tb")
    data = sweep_dict(root / "runs", n_trials=len(TRIALS))
    data["model"] = {"class_path": "tests.sweep.helpers.BreakableMLP", "init_args": {"hidden": 16}}
    data["search"]["model.init_args.broken"] = {"choices": [False, True]}
    data["search"]["model.init_args.hidden"] = {"choices": [16, -1]}
    file = write(root / "sweep.yaml", data)
    with open(os.devnull, "w") as devnull:
        result = run_sweep(
            config.load(file),
            out=devnull,
            pruner=PruneAt(1, 1),
            sampler=FixedSampler([params for params, _ in TRIALS]),
        )
    assert [t.state.name for t in result.study.trials] == [state for _, state in TRIALS]
    return file, result


def _load(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir), size_guidance={"tensors": 0, "scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def _hparams_data(accumulator: EventAccumulator) -> dict[str, bytes]:
    return accumulator.PluginTagToContent(metadata.PLUGIN_NAME)


def test_every_trial_run_has_its_hparams_session_and_metrics(sweep):
    _file, result = sweep
    for trial, (params, state) in zip(result.study.trials, TRIALS):
        run = _load(result.study_dir / f"trial_{trial.number:04d}")
        data = _hparams_data(run)
        start = metadata.parse_session_start_info_plugin_data(data[metadata.SESSION_START_INFO_TAG])
        values = {
            name: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
            for name, value in start.hparams.items()
        }
        shown = {k: str(v) if type(v) is int else v for k, v in params.items()}  # integer choices: categories
        assert {k: values[k] for k in params} == {
            k: pytest.approx(v) if type(v) is float else v for k, v in shown.items()
        }
        assert values["state"] == {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}[state]
        texts = run.Tags()["tensors"]
        if state == "FAIL":
            assert values["fail_reason"] == trial.user_attrs["fail_reason"][:200]
            text = run.Tensors("trial/failure")[-1].tensor_proto.string_val[0].decode()
            assert text.startswith(f"**failed:** {trial.user_attrs['fail_reason']}")
            assert trial.user_attrs["traceback"].rstrip().splitlines()[-1] in text
        else:
            assert "fail_reason" not in values and "trial/failure" not in texts
        assert values["optimizer.class_path"] == "lightopt.optim.SGD"
        assert values["model.class_path"] == "tests.sweep.helpers.BreakableMLP"
        assert values["seed_everything"] == trial.user_attrs["seed"]
        end = metadata.parse_session_end_info_plugin_data(data[metadata.SESSION_END_INFO_TAG])
        assert end.status == (api_pb2.STATUS_FAILURE if state == "FAIL" else api_pb2.STATUS_SUCCESS)
        experiment = metadata.parse_experiment_plugin_data(data[metadata.EXPERIMENT_TAG])
        assert [m.name.tag for m in experiment.metric_infos] == list(METRICS)

        scalars = {tag: run.Scalars(tag)[-1].value for tag in run.Tags()["scalars"]}
        assert scalars["trial/state"] == STATES[state]
        assert "hp_metric" not in scalars
        if state == "COMPLETE":
            assert scalars["trial/best_value"] == pytest.approx(trial.value)
            assert scalars["trial/epochs"] == 2 and "val_loss" in scalars  # the same run as the trainer's logs
        elif state == "PRUNED":
            assert scalars["trial/best_value"] == pytest.approx(trial.user_attrs["best_value"])
            assert scalars["trial/epochs"] == 1  # pruned after its first validation round
        else:
            assert "trial/best_value" not in scalars
    before_trainer = result.study_dir / "trial_0003"
    files = sorted(p.name.rsplit(".", 1)[-1] for p in before_trainer.iterdir())
    assert files == ["failure", "hparams", "txt"]  # no trainer logs there; error.txt is the failure's record


def test_experiment_config_gives_the_search_space_domains(sweep):
    _, result = sweep
    data = _hparams_data(_load(result.study_dir / "trial_0000"))
    infos = {i.name: i for i in metadata.parse_experiment_plugin_data(data[metadata.EXPERIMENT_TAG]).hparam_infos}
    lr = infos["optimizer.init_args.lr"].domain_interval
    assert (lr.min_value, lr.max_value) == (0.01, 0.5)
    assert [v.string_value for v in infos["data.init_args.batch_size"].domain_discrete.values] == ["32", "64"]
    assert sorted(v.string_value for v in infos["state"].domain_discrete.values) == ["complete", "failed", "pruned"]
    assert infos["state"].differs and infos["seed_everything"].differs  # each trial has its own seed
    assert [v.bool_value for v in infos["model.init_args.broken"].domain_discrete.values] == [False, True]
    assert infos["optimizer.class_path"].type == api_pb2.DATA_TYPE_STRING


def test_a_converted_coordinate_also_shows_its_real_value():
    """The main sweep samples h = 1/(1 - α) and ε/(1 - α) scaled with the batch; HParams shows α and ε too."""
    sweep = config.load(ROOT / "sweeps" / "digits_sgd.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    run = sweep.search.suggest(trial, sweep.run)
    hparams = trial_hparams(trial.params, run, sweep.search)
    h, step = (
        trial.params["optimizer.init_args.momentum:horizon"],
        trial.params["optimizer.init_args.lr:effective_at_batch_64"],
    )
    batch = trial.params["data.init_args.batch_size"]
    assert hparams["optimizer.init_args.momentum:horizon"] == h
    assert hparams["optimizer.init_args.momentum"] == pytest.approx(1 - 1 / h)
    assert hparams["optimizer.init_args.lr"] == pytest.approx(step * (1 - (1 - 1 / h)) * batch / 64)
    infos = metadata.parse_experiment_plugin_data(
        experiment_summary(sweep.search, "val_loss").value[0].metadata.plugin_data.content
    ).hparam_infos
    names = [info.name for info in infos]
    assert names[:5] == [
        "optimizer.init_args.momentum:horizon",
        "optimizer.init_args.lr:effective_at_batch_64",
        "data.init_args.batch_size",
        "optimizer.init_args.momentum",
        "optimizer.init_args.lr",
    ]
    assert all(info.differs for info in infos[:5])


def test_study_run_has_best_so_far_counts_and_plots(sweep):
    _, result = sweep
    run = _load(result.study_dir / "study")
    best = run.Scalars("study/best_value")
    values = [t.value for t in result.study.trials if t.state.name == "COMPLETE"]
    assert [e.step for e in best] == [0, 1, 2, 3, 4]
    assert best[-1].value == pytest.approx(min(values))
    assert [e.value for e in run.Scalars("study/trial_value")] == pytest.approx(values)
    last = {tag: run.Scalars(f"study/trials_{tag}")[-1] for tag in ("complete", "pruned", "failed")}
    assert {tag: e.value for tag, e in last.items()} == {"complete": 2, "pruned": 1, "failed": 2}
    assert run.Scalars("study/best_value_by_time")[-1].wall_time == pytest.approx(
        max(t.datetime_complete.timestamp() for t in result.study.trials)
    )
    plots = _load(result.study_dir / "study" / "plots")
    assert {"plots/optimization_history", "plots/param_importances"} <= set(plots.Tags()["images"])
    assert plots.Images("plots/optimization_history")[-1].encoded_image_string.startswith(b"\x89PNG")
    assert plots.Images("plots/optimization_history")[-1].step == len(TRIALS)  # drawn at the end


def test_study_run_rewrite_replaces_what_tensorboard_shows(sweep, tmp_path):
    _, result = sweep
    board = StudyRun(tmp_path, plot_every=3600)
    board.write(result.study)
    reader = _load(tmp_path / "study")  # a TensorBoard that read the first copy ...
    assert [e.step for e in reader.Scalars("study/best_value")] == [0, 1, 2, 3, 4]
    study = optuna.create_study(study_name="copy", storage=optuna.storages.InMemoryStorage())
    study.add_trials(result.study.trials[:2])  # a smaller study: the counts must go back, not add up
    board.write(study)
    reader.Reload()  # ... and reloads: it drops the first copy
    for run in (reader, _load(tmp_path / "study")):
        assert [e.step for e in run.Scalars("study/best_value")] == [0, 1]
        assert run.Scalars("study/trials_complete")[-1].value == 1
    assert not (tmp_path / "plots").exists()  # plot_every not reached: nothing drawn
    with pytest.raises(ValueError, match="`plot_every` must be a number of seconds >= 0"):
        StudyRun(tmp_path, plot_every=-1)


def test_only_global_rank_zero_writes(tmp_path, monkeypatch):
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1, raising=False)
    assert write_trial(tmp_path / "trial_0000", {"x": 1.0}, {}, "COMPLETE") is None
    assert StudyRun(tmp_path).write(optuna.create_study()) is None
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    with pytest.raises(ValueError, match="`state` must be one of"):
        write_trial(tmp_path / "trial_0000", {}, {}, "RUNNING")
    assert write_trial(tmp_path / "trial_0000", {"x": 1.0}, {}, "COMPLETE").is_file()


@pytest.mark.parametrize(
    "argv, match",
    [
        (
            ["tensorboard", "nothing_here", "--log-dir", "{tmp}"],
            "error: study 'nothing_here' has not been run yet (no journal at",
        ),
        (["tensorboard", "s", "--port", "0"], "error: `--port` must be in [1, 65535], but got port=0."),
        (["tensorboard", "s", "--host", "256.1.1.1"], "error: `--host` must be an address or name of this machine"),
    ],
)
def test_tensorboard_command_user_errors(argv, match, tmp_path, capsys):
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(match) and err.count("\n") == 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@pytest.fixture
def server(sweep):
    """``lightopt tensorboard SWEEP_FILE`` on a free port of 127.0.0.1; stopped at teardown."""
    file, _ = sweep
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [sys.executable, "-m", "lightopt", "tensorboard", str(file), "--port", str(port)],
        cwd=file.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.terminate()
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def test_hparams_dashboard_lists_every_trial_with_its_metrics(sweep, server):
    _, result = sweep
    url, process = server
    base = f"{url}/data/plugin/hparams"
    statuses = ["STATUS_FAILURE", "STATUS_RUNNING", "STATUS_SUCCESS", "STATUS_UNKNOWN"]  # the dashboard's filter
    deadline, groups, error = time.monotonic() + 180, [], None
    while time.monotonic() < deadline and len(groups) < len(TRIALS):
        assert process.poll() is None, process.communicate()[0]
        try:  # the requests the dashboard makes: the experiment, then the session groups for its columns
            experiment = _post(
                f"{base}/experiment", {"experimentName": "", "hparamsLimit": 1000, "includeMetrics": True}
            )
            columns = [{"hparam": h["name"], "includeInResult": True} for h in experiment["hparamInfos"]]
            columns += [{"metric": m["name"], "includeInResult": True} for m in experiment.get("metricInfos", [])]
            groups = _post(
                f"{base}/session_groups",
                {
                    "experimentName": "",
                    "allowedStatuses": statuses,
                    "colParams": columns,
                    "startIndex": 0,
                    "sliceSize": 1000,
                },
            )["sessionGroups"]
        except (urllib.error.URLError, ConnectionError, KeyError) as caught:  # not serving, or not loaded yet
            error = caught
        time.sleep(1)
    assert len(groups) == len(TRIALS), f"TensorBoard listed {len(groups)} trials before the deadline ({error})"
    assert [m["name"]["tag"] for m in experiment["metricInfos"]] == list(METRICS)
    hparams = {h["name"] for h in experiment["hparamInfos"]}
    assert {"optimizer.init_args.lr", "model.init_args.broken", "optimizer.class_path", "seed_everything"} <= hparams
    by_run = {g["sessions"][0]["name"]: g for g in groups}
    for trial, (params, state) in zip(result.study.trials, TRIALS):
        group = by_run[f"trial_{trial.number:04d}"]
        assert group["hparams"]["optimizer.init_args.lr"] == pytest.approx(params["optimizer.init_args.lr"])
        metrics = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        assert metrics["trial/state"] == STATES[state]
        assert group["sessions"][0]["status"] == ("STATUS_FAILURE" if state == "FAIL" else "STATUS_SUCCESS")
        if state == "COMPLETE":
            assert metrics["trial/best_value"] == pytest.approx(trial.value)
    scalars = json.load(urllib.request.urlopen(f"{url}/data/plugin/scalars/tags", timeout=30))
    assert "study/best_value" in scalars["study"] and not any("hp_metric" in tags for tags in scalars.values())


def _finished(t0: datetime.datetime, seconds: float, value: float | None, state: str) -> optuna.trial.FrozenTrial:
    """A trial in ``state`` (COMPLETE and PRUNED with ``value``) that ended ``seconds`` after ``t0``."""
    kind = optuna.trial.TrialState[state]
    trial = optuna.trial.create_trial(
        state=kind,
        value=value if kind == optuna.trial.TrialState.COMPLETE else None,
        params={"x": 0.5},
        distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
        intermediate_values={1: value} if kind == optuna.trial.TrialState.PRUNED else None,
    )
    trial.datetime_start, trial.datetime_complete = t0, t0 + datetime.timedelta(seconds=seconds)
    return trial


def _scalars_of(run_dir: Path) -> dict[str, list[tuple[int, float, float]]]:
    run = _load(run_dir)
    return {tag: [(e.step, round(e.wall_time, 6), e.value) for e in run.Scalars(tag)] for tag in run.Tags()["scalars"]}


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_study_run_appended_trial_by_trial_equals_one_rebuilt_from_the_storage(tmp_path, direction):
    """Several workers' trials: finished out of number order, one still running, one whose end lands late."""
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j")))
    study = optuna.create_study(storage=storage, study_name="s", direction=direction)
    t0 = datetime.datetime(2026, 1, 1, 12, 0, 0)
    board = StudyRun(tmp_path / "appended", plot_every=3600)

    def add(seconds: float, value: float | None, state: str = "COMPLETE") -> None:
        study.add_trial(_finished(t0, seconds, value, state))

    def check(expected_best_steps: list[int]) -> None:
        path = board.write(study)
        assert len(list(path.parent.glob("events.out.tfevents.*"))) == 1  # appended to, never a new file
        rebuilt = tmp_path / f"rebuilt_{len(study.trials)}"
        StudyRun(rebuilt, plot_every=3600).write(study)
        appended = _scalars_of(tmp_path / "appended" / "study")
        assert appended == _scalars_of(rebuilt / "study")
        assert [step for step, _, _ in appended.get("study/best_value", [])] == expected_best_steps
        assert [step for step, _, _ in appended["study/trials_complete"]] == list(
            range(1, sum(t.state.is_finished() for t in study.trials) + 1)
        )

    for second, value, state in [(1, 0.5, "COMPLETE"), (2, None, "FAIL"), (3, 0.7, "COMPLETE"), (4, 0.9, "PRUNED")]:
        add(second, value, state)
    check([0, 1, 2, 3])
    running = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # trial 4 runs on another worker
    add(6, 0.3)
    add(7, 0.8)
    check([0, 1, 2, 3])  # trials 5 and 6 wait for trial 4 on the axis of trial numbers
    add(4.5, 0.2)  # trial 7 ended before trials 5 and 6, but is seen after them: the finish order restarts
    check([0, 1, 2, 3])
    study.tell(running, 0.6)  # trial 4 ends now, after all the others
    check([0, 1, 2, 3, 4, 5, 6, 7])
    add(8, 0.1)
    check(list(range(9)))
    values = [t.value for t in study.trials if t.state.name == "COMPLETE"]
    last = _load(tmp_path / "appended" / "study").Scalars("study/best_value")[-1]
    assert last.value == pytest.approx(min(values) if direction == "minimize" else max(values))


def test_one_process_writes_the_study_run_and_the_next_takes_over(tmp_path):
    study = optuna.create_study()
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
    first, second = StudyRun(tmp_path, plot_every=3600), StudyRun(tmp_path, plot_every=3600)
    assert first.write(study) is not None
    assert second.write(study) is None  # the first one writes the run
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    first.close()
    path = second.write(study)  # takes over: a new file with the whole history
    assert [step for step, _, _ in _scalars_of(tmp_path / "study")["study/best_value"]] == [0, 1, 2, 3, 4]
    assert path.name == max(p.name for p in (tmp_path / "study").glob("events.out.tfevents.*"))


def test_plots_are_redrawn_no_sooner_than_draw_share_times_their_drawing(tmp_path):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1) + trial.suggest_float("y", 0, 1), n_trials=4)
    board = StudyRun(tmp_path, plot_every=0)
    board.write(study)  # plot_every reached: drawn
    png = tmp_path / "plots" / "optimization_history.png"
    drawn = png.stat().st_mtime_ns
    assert board.drawing_s > 0
    board.write(study)  # within DRAW_SHARE times the drawing: not again, however many trials come
    assert png.stat().st_mtime_ns == drawn
    board.drawing_s = 0.0  # as if drawing were free: redrawn at once
    board.write(study)
    assert png.stat().st_mtime_ns > drawn
