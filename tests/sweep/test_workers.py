"""--workers N, kill -9 of a worker then resume, Ctrl-C: real processes, real journal files, real checkpoints."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightopt.cli import main
from lightopt.sweep import run_sweep
from lightopt.sweep.spec import parse
from lightopt.sweep.study import run_worker
from tests.sweep.fault_helpers import children_of
from tests.sweep.helpers import load_journal, sweep_dict, write

ROOT = Path(__file__).resolve().parents[2]


def _stalling_sweep(tmp_path: Path, **study) -> tuple[dict, Path]:
    """Trials of 3 epochs that stall at epoch 1 while ``stall`` exists, with last.ckpt written after epoch 0."""
    data = sweep_dict(tmp_path / "runs", **study)
    stall = tmp_path / "stall"
    data["model"] = {
        "class_path": "tests.sweep.helpers.StallingMLP",
        "init_args": {"hidden": 16, "stall_file": str(stall)},
    }
    data["trainer"].update(max_epochs=3, enable_checkpointing=True)
    return data, stall


def _start(file: Path, *args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-m", "lightopt", "sweep", "run", str(file), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def _wait_stalled(proc: subprocess.Popen, journal: Path, *numbers: int) -> Path:
    """Wait (at most 3 minutes) until trials ``numbers`` are RUNNING with last.ckpt written; returns the last one's."""
    checkpoints = [journal.parent / f"trial_{n:04d}" / "checkpoints" / "last.ckpt" for n in numbers]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if all(c.is_file() for c in checkpoints) and journal.is_file():
            trials = load_journal(journal).trials
            if len(trials) > max(numbers) and all(trials[n].state == TrialState.RUNNING for n in numbers):
                time.sleep(0.5)  # the checkpoint file is complete once the fit moved on to the stall
                return checkpoints[-1]
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"trials {numbers} never stalled: {proc.communicate()}")


def test_workers_run_the_study_to_exactly_n_trials(tmp_path):
    out = io.StringIO()
    result = run_sweep(parse(sweep_dict(tmp_path, n_trials=5)), workers=2, out=out)
    trials = load_journal(tmp_path / "s" / "study.journal").trials
    assert [t.number for t in trials] == [0, 1, 2, 3, 4] and result.ran == 5
    assert all(t.state == TrialState.COMPLETE for t in trials)  # nothing RUNNING after
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) <= 2  # this process and one child
    lines = out.getvalue().splitlines()
    assert sorted(line.split()[0] for line in lines if line.startswith("[")) == [f"[{k}/5]" for k in range(1, 6)]
    assert "5 trials: 5 complete" in out.getvalue()


def test_kill_9_mid_trial_then_rerun_retries_it_from_its_checkpoint(tmp_path):
    data, stall = _stalling_sweep(tmp_path, n_trials=3)
    file = write(tmp_path / "s.yaml", data)
    sweep = parse(data, str(file))
    run_sweep(sweep, n_trials=1, out=io.StringIO())  # trial 0 completes
    journal = tmp_path / "runs" / "s" / "study.journal"
    before = load_journal(journal).trials[0]

    stall.touch()
    proc = _start(file)
    checkpoint = _wait_stalled(proc, journal, 1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert load_journal(journal).trials[1].state == TrialState.RUNNING  # as the dead worker left it

    stall.unlink()
    out = io.StringIO()
    result = run_sweep(sweep, out=out)
    trials = result.study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[0].value == before.value and trials[0].datetime_complete == before.datetime_complete
    killed, retry = trials[1], trials[2]
    assert killed.user_attrs["fail_reason"] == f"worker died (pid {proc.pid} on host {socket.gethostname()})"
    assert retry.user_attrs["retry_of"] == 1 and retry.params == killed.params
    assert retry.user_attrs["seed"] == killed.user_attrs["seed"]
    assert retry.user_attrs["resume_from"] == str(checkpoint)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert retry.user_attrs["resumed_at"] == {"epoch": saved["epoch"] + 1, "global_step": saved["global_step"]}
    assert retry.user_attrs["epochs"] == 3 and retry.user_attrs["validation_rounds"] == 3  # epoch 0's round restored
    assert sorted(retry.intermediate_values) == [1, 2, 3]
    steps = [event.step for event in EventAccumulator(retry.user_attrs["log_dir"]).Reload().Scalars("val_loss")]
    assert steps and min(steps) > saved["global_step"]  # the retry trained only the epochs after the checkpoint
    lines = out.getvalue().splitlines()
    assert lines[0] == (
        "trial 1 was left RUNNING by a worker that died: recorded as failed; it will be retried "
        "(from its last checkpoint if it has one)"
    )
    assert lines[1].startswith("study 's': 1 trial(s)") and "running up to 2 more" in lines[1]
    assert lines[2].startswith("[2/3] trial 2 complete") and lines[3].startswith("[3/3] trial 3 complete")


def test_ctrl_c_records_the_trial_as_interrupted_and_exits_130(tmp_path):
    data, stall = _stalling_sweep(tmp_path, n_trials=2)
    file = write(tmp_path / "s.yaml", data)
    stall.touch()
    proc = _start(file)
    journal = tmp_path / "runs" / "s" / "study.journal"
    _wait_stalled(proc, journal, 0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert err.strip().splitlines() == [
        "interrupted: trial 0 recorded as failed (interrupted); run the same command again to retry it"
    ]
    trials = load_journal(journal).trials  # the journal still loads
    assert [t.state for t in trials] == [TrialState.FAIL] and trials[0].user_attrs["fail_reason"] == "interrupted"


def test_sigterm_is_recorded_as_an_interruption_and_retried(tmp_path):
    data, stall = _stalling_sweep(tmp_path, n_trials=1)
    file = write(tmp_path / "s.yaml", data)
    stall.touch()
    proc = _start(file)
    journal = tmp_path / "runs" / "s" / "study.journal"
    _wait_stalled(proc, journal, 0)
    proc.send_signal(signal.SIGTERM)  # as a cluster's scheduler does; Lightning stops the fit at the next step
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip().splitlines() == [
        "interrupted: trial 0 recorded as failed (interrupted by SIGTERM); run the same command again to retry it"
    ]
    assert load_journal(journal).trials[0].user_attrs["fail_reason"] == "interrupted (SIGTERM)"
    stall.unlink()
    trials = run_sweep(parse(data), out=io.StringIO()).study.trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE] and trials[1].user_attrs["retry_of"] == 0


def test_ctrl_c_with_two_workers_stops_both_and_leaves_no_process(tmp_path):
    data, stall = _stalling_sweep(tmp_path, n_trials=4)
    file = write(tmp_path / "s.yaml", data)
    stall.touch()
    proc = _start(file, "--workers", "2")
    journal = tmp_path / "runs" / "s" / "study.journal"
    _wait_stalled(proc, journal, 0, 1)
    proc.send_signal(signal.SIGINT)  # to the parent only, as `kill -INT`; it passes it on
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip().splitlines() == [
        "interrupted: the running trials were recorded as failed (interrupted); run the same command again to retry "
        "them"
    ]
    trials = load_journal(journal).trials
    assert [(t.state, t.user_attrs["fail_reason"]) for t in trials] == [(TrialState.FAIL, "interrupted")] * 2
    pids = {t.user_attrs["worker"]["pid"] for t in trials}
    assert proc.pid in pids and len(pids) == 2
    for pid in pids - {proc.pid}:
        with pytest.raises(ProcessLookupError):  # the child is gone too (reaped by the parent)
            os.kill(pid, 0)


@pytest.mark.filterwarnings("ignore:Argument ``heartbeat_interval``", "ignore:Heartbeat of storage")
def test_heartbeat_fails_a_stale_trial_of_another_host_and_retries_it(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'h.db'}", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage, study_name="s", sampler=optuna.samplers.RandomSampler(0))
    lost = study.ask()
    lost.suggest_float("x", 0, 1)
    lost.set_user_attr("worker", {"host": "another-host", "pid": 1, "started": None})
    storage.record_heartbeat(
        storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("s"), lost.number)
    )
    time.sleep(2.5)  # longer than the grace period: the other host's worker is presumed dead
    ran = run_worker(study, lambda trial: trial.suggest_float("x", 0, 1), total=2, lock=tmp_path / "lock")
    trials = study.trials
    assert ran == 2 and [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    retry = trials[1]
    assert retry.user_attrs["retry_of"] == 0 and retry.params == trials[0].params
    assert retry.user_attrs["retry_reason"] == "no heartbeat from its worker within the grace period"


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_workers_below_one_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, workers):
    monkeypatch.chdir(tmp_path)
    file = write(tmp_path / "s.yaml", sweep_dict(Path("runs")))
    assert main(["sweep", "run", str(file), "--workers", workers]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: `--workers` must be an integer >= 1, but got workers={workers}.\n"
    assert captured.out == "" and sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_a_reused_pid_is_not_taken_for_the_dead_worker():
    from lightopt.sweep.store import process_alive, worker_identity

    me = worker_identity()
    assert process_alive(me)
    assert not process_alive({**me, "started": "another-boot:1"})  # same pid, another process
    assert not process_alive({**me, "pid": 2**22 + 7})  # above Linux's pid_max: no such process


def test_a_zombie_counts_as_dead():
    from lightopt.sweep.store import process_alive, worker_identity

    child = subprocess.Popen(["true"])
    me = worker_identity(child.pid)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":  # exited, not waited for
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(child.pid, 0)  # the kernel still lists it...
    assert not process_alive(me)  # ...but it runs nothing
    child.wait()


def test_kill_9_of_one_child_under_two_workers_retries_its_trial_and_completes_the_study(tmp_path):
    data, stall = _stalling_sweep(tmp_path, n_trials=3)
    file = write(tmp_path / "s.yaml", data)
    stall.touch()
    proc = _start(file, "--workers", "2")
    journal = tmp_path / "runs" / "s" / "study.journal"
    _wait_stalled(proc, journal, 0, 1)
    running = {t.number: t.user_attrs["worker"]["pid"] for t in load_journal(journal).trials}
    ((number, child),) = [(n, pid) for n, pid in running.items() if pid != proc.pid]
    os.kill(child, signal.SIGKILL)
    time.sleep(1.0)  # reaped at once: the parent does not keep a zombie that would look alive
    assert not Path(f"/proc/{child}").exists()
    stall.unlink()
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert f"worker 1 (pid {child}) was killed (SIGKILL); its trial will be retried" in out
    trials = load_journal(journal).trials
    killed = trials[number]
    assert killed.state == TrialState.FAIL and killed.user_attrs["fail_reason"].startswith(f"worker died (pid {child} ")
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == number]
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3  # the study reached its total


def test_sigterm_to_the_parent_of_two_workers_is_one_line_and_exit_130(tmp_path):
    data, stall = _stalling_sweep(tmp_path, n_trials=4)
    file = write(tmp_path / "s.yaml", data)
    stall.touch()
    proc = _start(file, "--workers", "2")
    journal = tmp_path / "runs" / "s" / "study.journal"
    _wait_stalled(proc, journal, 0, 1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip().splitlines() == [
        "interrupted: the running trials were recorded as failed (interrupted); run the same command again to retry "
        "them"
    ]
    assert all(t.state == TrialState.FAIL for t in load_journal(journal).trials)


def test_ctrl_c_in_a_terminal_while_the_children_start_is_one_line_and_exit_130(tmp_path):
    data, stall = _stalling_sweep(tmp_path, n_trials=4)
    file = write(tmp_path / "s.yaml", data)
    stall.touch()
    proc = _start(file, "--workers", "3", start_new_session=True)  # its own process group, as a terminal's job
    deadline = time.monotonic() + 180
    while len(children_of(proc.pid)) < 2:  # the two children are starting (importing torch)
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: every process of the group gets SIGINT
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("interrupted") and "Traceback" not in err
    journal = tmp_path / "runs" / "s" / "study.journal"
    if journal.is_file() and journal.stat().st_size:  # the children start before the study exists (study/_prestart.py)
        assert all(t.state != TrialState.RUNNING for t in load_journal(journal).trials)
