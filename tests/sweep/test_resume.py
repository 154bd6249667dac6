"""Resuming a study with a changed file, and storages that cannot be opened: one line, exit 2, nothing written.
Retrying a trial killed mid-epoch: from its mid-epoch checkpoint, or, when that fails, the last end-of-epoch one."""

from __future__ import annotations

import io
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from lightopt.cli import main
from lightopt.sweep import run_sweep
from lightopt.sweep.spec import describe_space, parse
from tests.sweep.fault_helpers import start, wait_for
from tests.sweep.helpers import sweep_dict, write

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A study ``s`` with one trial, run from ``sweep_dict``: its log dir, to copy."""
    runs = tmp_path_factory.mktemp("recorded") / "runs"
    path = write(runs.parent / "s.yaml", sweep_dict(runs, n_trials=1))
    assert main(["sweep", "run", str(path)]) == 0
    return runs


def _copy(recorded, tmp_path, edit):
    runs = tmp_path / "runs"
    shutil.copytree(recorded, runs)
    data = sweep_dict(runs, n_trials=2)
    edit(data)
    return write(tmp_path / "s.yaml", data), runs


def _files(directory):
    return {p: p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _set_low(data):
    data["search"]["optimizer.init_args.lr"]["low"] = 0.001


def _add_remove(data):
    del data["search"]["data.init_args.batch_size"]
    data["search"]["optimizer.init_args.momentum"] = {"low": 0.0, "high": 0.99}


MISUSE = [
    (
        lambda d: d["study"].update(metric="val_acc"),
        "`study.metric` must match the stored study 's', which is 'val_loss', but got metric='val_acc'",
    ),
    (
        lambda d: d["study"].update(direction="maximize"),
        "`study.direction` must match the stored study 's', which is minimize, but got direction='maximize'.",
    ),
    (
        _set_low,
        "`search` must match the stored study 's', but it changed: changed optimizer.init_args.lr (low 0.01 -> 0.001).",
    ),
    (_add_remove, "it changed: added optimizer.init_args.momentum; removed data.init_args.batch_size."),
]


@pytest.mark.parametrize("edit, match", MISUSE)
def test_resuming_with_a_changed_file_is_refused_and_writes_nothing(
    recorded, tmp_path, monkeypatch, capsys, edit, match
):
    monkeypatch.chdir(tmp_path)
    path, runs = _copy(recorded, tmp_path, edit)
    before = _files(runs)
    assert main(["sweep", "run", str(path)]) == 2
    captured = capsys.readouterr()
    assert match in captured.err and captured.err.count("\n") == 1 and captured.err.startswith(f"error: {path}:")
    assert "--study-name NEW" in captured.err or "direction" in match
    assert captured.out == "" and _files(runs) == before


def test_a_new_study_name_runs_the_changed_file(recorded, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path, runs = _copy(recorded, tmp_path, _add_remove)
    assert main(["sweep", "run", str(path), "--study-name", "s2", "--n-trials", "1"]) == 0
    study = optuna.load_study(
        study_name="s2",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(runs / "s2" / "study.journal"))
        ),
    )
    assert set(study.user_attrs["lightopt"]["space"]) == {"optimizer.init_args.lr", "optimizer.init_args.momentum"}


def test_a_study_without_a_recorded_space_is_resumed_and_gets_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = sweep_dict(tmp_path / "runs", n_trials=1)
    storage = f"sqlite:///{tmp_path / 'old.db'}"
    old = optuna.create_study(study_name="s", storage=storage)
    old.set_user_attr("lightopt", {"metric": "val_loss", "seed": 0})
    assert main(["sweep", "run", str(write(tmp_path / "s.yaml", data)), "--storage", storage]) == 0
    stored = optuna.load_study(study_name="s", storage=storage).user_attrs["lightopt"]["space"]
    assert stored == describe_space(parse(data).search) and stored["data.init_args.batch_size"]["choices"] == [32, 64]


def test_describe_space_keeps_zero_bounds_and_conditions(tmp_path):
    data = sweep_dict(tmp_path)
    data["search"] = {
        "optimizer.init_args.momentum": {
            "low": 0.0,
            "high": 0.9,
            "step": 0.1,
            "when": {"optimizer.class_path": "lightopt.optim.SGD"},
        }
    }
    assert describe_space(parse(data).search) == {
        "optimizer.init_args.momentum": {
            "kind": "float",
            "low": 0.0,
            "high": 0.9,
            "step": 0.1,
            "when": [["optimizer.class_path", ["lightopt.optim.SGD"]]],
        }
    }


UNREACHABLE = [
    ("sqlite:////nonexistent/dir/x.db", "`--storage` 'sqlite:////nonexistent/dir/x.db' cannot be opened: "),
    (
        "postgresql://user:s3cret-pw@127.0.0.1:1/db",
        "`--storage` 'postgresql://user:***@127.0.0.1:1/db' cannot be opened: ",
    ),
]


@pytest.mark.parametrize("url, match", UNREACHABLE)
def test_an_unreachable_database_is_one_line_without_the_password(tmp_path, monkeypatch, capsys, url, match):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "s.yaml", sweep_dict(tmp_path / "runs"))
    assert main(["sweep", "run", str(path), "--storage", url]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: {match}") and captured.err.count("\n") == 1
    assert "s3cret" not in captured.err + captured.out and captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_python_m_lightopt_refuses_an_unreachable_database_without_showing_its_password(tmp_path):
    path = write(tmp_path / "s.yaml", sweep_dict(tmp_path / "runs"))
    done = subprocess.run(
        [sys.executable, "-m", "lightopt", "sweep", "run", str(path), "--storage", UNREACHABLE[1][0]],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stdout == "" and done.stderr.startswith(f"error: {UNREACHABLE[1][1]}")
    assert done.stderr.count("\n") == 1 and "s3cret" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def _mid_epoch_kill(tmp_path, epoch_state):
    """A trial killed (kill -9) at step 6, in epoch 1, just after the mid-epoch checkpoint of step 6."""
    stall, stalled = tmp_path / "stall", tmp_path / "stalled"
    data = sweep_dict(tmp_path / "runs", n_trials=1)
    data["model"] = {
        "class_path": "tests.sweep.fault_helpers.EpochStateMLP",
        "init_args": {
            "hidden": 16,
            "stall_file": str(stall),
            "stall_step": 6,
            "stalled_file": str(stalled),
            "epoch_state": epoch_state,
        },
    }
    data["trainer"].update(max_epochs=3, enable_checkpointing=True, val_check_interval=0.5)
    write(tmp_path / "s.yaml", data)
    stall.touch()
    proc = start("sweep", "run", str(tmp_path / "s.yaml"))
    wait_for(lambda: stalled.exists() or proc.poll() is not None, "the trial to stall at step 6", timeout=180)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stall.unlink()
    checkpoints = tmp_path / "runs" / "s" / "trial_0000" / "checkpoints"
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["global_step"] == 6  # mid-epoch
    assert torch.load(checkpoints / "epoch-end.ckpt", weights_only=False)["global_step"] == 4  # end of epoch 0
    return parse(data), checkpoints


def test_a_retry_whose_mid_epoch_resume_fails_goes_on_from_the_last_end_of_epoch_checkpoint(tmp_path):
    sweep, checkpoints = _mid_epoch_kill(tmp_path, epoch_state=True)
    trials = run_sweep(sweep, out=io.StringIO()).study.trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    retry = trials[1]
    fallback = retry.user_attrs["resume_fallback"]
    assert fallback["failed"] == str(checkpoints / "last.ckpt") and fallback["to"] == str(
        checkpoints / "epoch-end.ckpt"
    )
    assert fallback["error"].startswith("AttributeError: ") and "_batches_this_epoch" in fallback["error"]
    assert retry.user_attrs["resumed_at"] == {"epoch": 1, "global_step": 4}
    assert retry.user_attrs["epochs"] == 3 and retry.user_attrs["global_step"] == 12


def test_the_digits_example_resumes_from_a_mid_epoch_checkpoint(tmp_path):
    sweep, _checkpoints = _mid_epoch_kill(tmp_path, epoch_state=False)
    trials = run_sweep(sweep, out=io.StringIO()).study.trials
    retry = trials[1]
    assert retry.state == TrialState.COMPLETE and "resume_fallback" not in retry.user_attrs
    assert retry.user_attrs["resumed_at"]["global_step"] == 6 and retry.user_attrs["global_step"] == 12


@pytest.mark.parametrize("storage", ["journal", "sqlite"])
def test_a_fix_in_the_search_block_after_every_trial_failed_runs(tmp_path, monkeypatch, capsys, storage):
    """A categorical's choices changed after an all-failed stop: Optuna cannot mix the draws in one study, so the
    failed trials are kept as a study of their own, with their logs, and the fixed file runs."""
    monkeypatch.chdir(tmp_path)
    data = sweep_dict(tmp_path / "runs", n_trials=4)
    if storage == "sqlite":
        data["study"]["storage"] = f"sqlite:///{tmp_path / 's.db'}"
    data["model"] = {"class_path": "tests.sweep.helpers.BreakableMLP", "init_args": {"hidden": 8}}
    data["search"] = {
        "model.init_args.broken": {"choices": [True]},
        "optimizer.init_args.lr": {"low": 0.01, "high": 0.1},
    }
    path = write(tmp_path / "s.yaml", data)
    assert main(["sweep", "run", str(path)]) == 1  # its first 3 trials all failed the same way
    assert "broken on purpose" in capsys.readouterr().err
    data["search"]["model.init_args.broken"] = {"choices": [False]}
    write(path, data)

    assert main(["sweep", "run", str(path)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "(model.init_args.broken: choices [True] -> [False])" in err and "kept as study 's-failed-1'" in err

    url = data["study"].get("storage") or str(tmp_path / "runs" / "s" / "study.journal")
    assert main(["sweep", "show", "s", "--storage", url, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [row["state"] for row in shown["trials"]] == ["COMPLETE"] * 4
    aside_url = data["study"].get("storage") or str(tmp_path / "runs" / "s-failed-1" / "study.journal")
    assert main(["sweep", "show", "s-failed-1", "--storage", aside_url, "--json"]) == 0
    aside = json.loads(capsys.readouterr().out)["trials"]
    assert [row["state"] for row in aside] == ["FAIL"] * 3
    assert all(row["params"]["model.init_args.broken"] is True for row in aside)
    for number in range(3):  # their logs moved with them; the new trials' logs are the new study's
        assert (
            "broken on purpose" in (tmp_path / "runs" / "s-failed-1" / f"trial_{number:04d}" / "error.txt").read_text()
        )
        assert not (tmp_path / "runs" / "s" / f"trial_{number:04d}" / "error.txt").exists()
