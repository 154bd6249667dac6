"""--devices and --trials-per-device: how ids are shared out, the refused combinations, and real sweeps.

The sweeps run on the CPU (``accelerator: cpu``) with ids that no GPU backs: lightopt hands the ids
out as listed, and each trial records the ``CUDA_VISIBLE_DEVICES`` it saw, its process and its
start and end (tests.sweep.device_helpers.RecordingMLP), which is what the assertions read.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from optuna.trial import TrialState
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata

from lightopt.cli import main
from lightopt.sweep.study import parse_devices, plan
from lightopt.sweep.trial import DEVICES_ENV, VISIBLE_ENV, assigned_devices, trial_devices
from tests.sweep.device_helpers import most_at_once, records
from tests.sweep.helpers import load_journal, sweep_dict, write

ROOT = Path(__file__).resolve().parents[2]


def _recording_sweep(tmp_path: Path, n_trials: int, wait_for: int, **init_args) -> tuple[dict, Path]:
    data = sweep_dict(tmp_path / "runs", n_trials=n_trials, stop_after_same_failures=0)
    record = tmp_path / "record.jsonl"
    data["model"] = {
        "class_path": "tests.sweep.device_helpers.RecordingMLP",
        "init_args": {"hidden": 16, "record_file": str(record), "wait_for": wait_for, **init_args},
    }
    data["trainer"].update(max_epochs=1)
    return data, record


# --- how the ids are shared out -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("devices", "kwargs", "groups", "workers"),
    [
        ("0,1,2,3", {}, [("0",), ("1",), ("2",), ("3",)], 4),
        ("0,1", {"trials_per_device": 2}, [("0",), ("1",)], 4),
        ("0,1", {"trials_per_device": 2, "workers": 2}, [("0",), ("1",)], 2),  # fewest: one per device
        ("0,1,2,3", {"per_trial": 2}, [("0", "1"), ("2", "3")], 2),  # 2-device DDP trials: two at once
        ("0,1,2,3", {"per_trial": 2, "trials_per_device": 2}, [("0", "1"), ("2", "3")], 4),
        ("0,1,2,3", {"per_trial": 4}, [("0", "1", "2", "3")], 1),
        ("3,1", {}, [("3",), ("1",)], 2),  # as listed, in the listed order
        ("GPU-5f3e2a1b-0c4d-4e8f-9a7b-1c2d3e4f5a6b", {}, [("GPU-5f3e2a1b-0c4d-4e8f-9a7b-1c2d3e4f5a6b",)], 1),
    ],
)
def test_plan_cuts_the_list_into_groups_and_fills_every_slot(devices, kwargs, groups, workers):
    slots = plan(devices, **kwargs)
    assert [tuple(group) for group in slots.groups] == groups and slots.workers == workers


def test_workers_are_dealt_round_robin_so_no_device_takes_more_than_k():
    slots = plan("0,1,2", trials_per_device=2, workers=5)
    ids = [slots.ids(worker) for worker in range(slots.workers)]
    assert ids == [("0",), ("1",), ("2",), ("0",), ("1",)]
    assert slots.environment(4) == {VISIBLE_ENV: "1", DEVICES_ENV: "1"}


@pytest.mark.parametrize(
    ("devices", "kwargs", "match"),
    [
        ("0,0", {}, "lists 0 more than once.*--trials-per-device"),
        ("0,,1", {}, "must be 'auto' or device ids separated by commas"),
        ("cuda:0", {}, "must be 'auto' or device ids"),
        ("", {}, "must be 'auto' or device ids"),
        (
            "0,1",
            {"trials_per_device": 0},
            r"`--trials-per-device` must be an integer >= 1, but got trials_per_device=0",
        ),
        ("0,1", {"workers": 5}, "`--workers` must be between 2 and 2 .* but got workers=5: leave --workers out"),
        ("0,1", {"trials_per_device": 2, "workers": 5}, "between 2 and 4"),
        ("0,1,2,3", {"workers": 3, "per_trial": 2}, r"between 2 and 2 .*2 group\(s\) of 2 device"),
        ("0,1,2,3", {"workers": 1}, "between 4 and 4"),  # one worker would leave three listed devices idle
        ("0,1,2", {"per_trial": 2}, "cannot be cut into groups of 2.*multiple of 2"),
        ("0,1", {"per_trial": 4}, "each trial takes 4 devices .* lists 2"),
    ],
)
def test_plan_refuses_what_cannot_be_satisfied(devices, kwargs, match):
    with pytest.raises(ValueError, match=match):
        plan(devices, **kwargs)


def test_auto_lists_the_gpus_torch_sees_and_says_when_there_are_none(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ValueError, match=r"`--devices auto` found no GPU here .*--devices 0,1"):
        parse_devices("auto")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv(VISIBLE_ENV, raising=False)
    assert parse_devices("auto") == ("0", "1")
    monkeypatch.setenv(VISIBLE_ENV, "4,6")  # a scheduler's allocation: the machine's ids of the 2 GPUs seen
    assert parse_devices("auto") == ("4", "6")


@pytest.mark.parametrize(
    ("trainer", "expected"),
    [
        ({"strategy": "ddp", "devices": 2, "accelerator": "cpu"}, 2),
        ({"strategy": "ddp_find_unused_parameters_true", "devices": [0, 1, 2]}, 3),
        ({"accelerator": "gpu"}, 1),
        ({"devices": 1}, 1),
        ({"devices": "auto"}, 1),
        ({"devices": [3]}, 1),
        (None, 1),
    ],
)
def test_trial_devices(trainer, expected):
    assert trial_devices(trainer) == expected


@pytest.mark.parametrize(
    ("trainer", "match"),
    [
        ({"strategy": "ddp", "devices": "auto"}, "must be a number of devices for a DDP trial run with --devices"),
        ({"strategy": "ddp", "devices": -1}, "must be a number of devices"),
        ({"devices": 2}, r"must be 1 \(or 'auto'\) unless `trainer.strategy` is 'ddp'.*set `strategy: ddp`"),
        ({"strategy": "ddp_spawn", "devices": 2}, "must be 'ddp' in a sweep trial"),
    ],
)
def test_trial_devices_refuses(trainer, match):
    with pytest.raises(ValueError, match=match):
        trial_devices(trainer)


def test_assigned_devices_reads_what_the_worker_was_started_with():
    assert assigned_devices({DEVICES_ENV: "2,3", VISIBLE_ENV: "2,3"}) == ("2", "3")
    assert assigned_devices({VISIBLE_ENV: "0"}) is None  # set by someone else: not a --devices worker


# --- the command line refuses bad combinations with one line -----------------------------------


@pytest.mark.parametrize(
    ("args", "trainer", "message"),
    [
        (["--trials-per-device", "2"], {}, "`--trials-per-device` needs --devices: add --devices 0,1,"),
        (["--devices", "0,1", "--workers", "3"], {}, "`--workers` must be between 2 and 2 with --devices 0,1"),
        (["--devices", "1,1"], {}, "`--devices` lists 1 more than once"),
        (["--devices", "0,1", "--trials-per-device", "-1"], {}, "`--trials-per-device` must be an integer >= 1"),
        (["--devices", "0,1,2"], {"strategy": "ddp", "devices": 2}, "--devices 0,1,2 cannot be cut into groups of 2"),
        (["--devices", "0"], {"strategy": "ddp", "devices": 2}, "each trial takes 2 devices"),
        (["--devices", "0,1"], {"strategy": "ddp", "devices": "auto"}, "must be a number of devices for a DDP trial"),
        (["--devices", "0,1"], {"devices": 2}, "unless `trainer.strategy` is 'ddp'"),
    ],
)
def test_bad_device_flags_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, args, trainer, message):
    data = sweep_dict(tmp_path / "runs")
    data["trainer"].update(trainer)
    file = write(tmp_path / "s.yaml", data)
    assert main(["sweep", "run", str(file), *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # no study, no journal, no log folder


def test_devices_auto_without_a_gpu_through_the_real_command(tmp_path):
    file = write(tmp_path / "s.yaml", sweep_dict(tmp_path / "runs"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}  # no GPU, even on a GPU machine
    proc = subprocess.run(
        [sys.executable, "-m", "lightopt", "sweep", "run", str(file), "--devices", "auto"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "error: `--devices auto` found no GPU here (torch.cuda.device_count() is 0): list the ids, e.g. --devices "
        "0,1, or leave --devices out to run on the CPU."
    ]


# --- real sweeps ----------------------------------------------------------------------------------


def test_two_trials_per_device_share_each_listed_id_and_no_more(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(VISIBLE_ENV, "7")  # the launching shell's value: each worker's replaces it, then it is back
    data, record = _recording_sweep(tmp_path, n_trials=6, wait_for=4)
    file = write(tmp_path / "s.yaml", data)
    assert main(["sweep", "run", str(file), "--devices", "0,1", "--trials-per-device", "2"]) == 0
    assert os.environ[VISIBLE_ENV] == "7" and DEVICES_ENV not in os.environ
    seen = records(record)
    assert len(seen) == 6 and {r["visible"] for r in seen} == {"0", "1"}  # every listed id used
    assert all(r["visible"] == r["held"] for r in seen)
    by_id = defaultdict(list)
    for r in seen:
        by_id[r["visible"]].append((r["start"], r["end"]))
    assert max(most_at_once(intervals) for intervals in by_id.values()) <= 2  # never more than K on an id
    assert most_at_once([(r["start"], r["end"]) for r in seen]) == 4  # the 4 workers met: they ran at once
    pids = defaultdict(set)
    for r in seen:
        pids[r["pid"]].add(r["visible"])
    assert len(pids) == 4 and all(len(ids) == 1 for ids in pids.values())  # 4 workers, each pinned to one id
    assert os.getpid() not in pids  # the command's own process ran no trial
    assert sorted(len([p for p, ids in pids.items() if i in ids]) for i in ("0", "1")) == [2, 2]

    trials = load_journal(tmp_path / "runs" / "s" / "study.journal").trials
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    by_dir = {Path(r["log_dir"]).name: r["visible"] for r in seen}
    assert all(t.user_attrs["device"] == by_dir[f"trial_{t.number:04d}"] for t in trials)
    out = capsys.readouterr().out
    progress = [line for line in out.splitlines() if line.startswith("[")]
    assert len(progress) == 6
    assert all(f"trial {t.number} on device {t.user_attrs['device']} complete" in out for t in trials)

    events = EventAccumulator(str(tmp_path / "runs" / "s" / "trial_0003"), size_guidance={"tensors": 0})
    events.Reload()
    data = events.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(data[metadata.SESSION_START_INFO_TAG])
    experiment = metadata.parse_experiment_plugin_data(data[metadata.EXPERIMENT_TAG])
    assert start.hparams["device"].string_value == trials[3].user_attrs["device"]  # HParams shows the device
    assert "device" in [info.name for info in experiment.hparam_infos]


def test_ddp_trials_take_two_ids_each_and_two_run_at_once(tmp_path, capsys):
    data, record = _recording_sweep(tmp_path, n_trials=2, wait_for=2)
    data["trainer"].update(strategy="ddp", devices=2)
    file = write(tmp_path / "s.yaml", data)
    assert main(["sweep", "run", str(file), "--devices", "0,1,2,3"]) == 0
    seen = records(record)
    assert len(seen) == 4 and sorted((r["visible"], r["rank"]) for r in seen) == [
        ("0,1", 0),
        ("0,1", 1),
        ("2,3", 0),
        ("2,3", 1),
    ]  # every rank of a trial sees its trial's two ids
    rank0 = [r for r in seen if r["rank"] == 0]
    assert most_at_once([(r["start"], r["end"]) for r in rank0]) == 2
    trials = load_journal(tmp_path / "runs" / "s" / "study.journal").trials
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.user_attrs["device"] for t in trials) == ["0,1", "2,3"]
    assert "on devices 0,1 complete" in capsys.readouterr().out


def test_out_of_memory_on_one_device_fails_its_trials_only(tmp_path, capsys):
    data, _record = _recording_sweep(tmp_path, n_trials=6, wait_for=2, oom_on="1")
    file = write(tmp_path / "s.yaml", data)
    assert main(["sweep", "run", str(file), "--devices", "0,1"]) == 0
    trials = load_journal(tmp_path / "runs" / "s" / "study.journal").trials
    assert len(trials) == 6 and {t.user_attrs["device"] for t in trials} == {"0", "1"}
    for trial in trials:
        if trial.user_attrs["device"] == "1":
            assert trial.state == TrialState.FAIL
            assert trial.user_attrs["fail_reason"].startswith(
                "out of memory (OutOfMemoryError): CUDA out of memory. Tried to allocate"
            )
        else:
            assert trial.state == TrialState.COMPLETE  # the other device's trials went on
    out = capsys.readouterr().out
    assert "on device 1 failed: out of memory" in out and "6 trials: " in out


def _stalled_device_sweep(tmp_path: Path, n_trials: int) -> tuple[subprocess.Popen, Path, Path, dict, list]:
    """``lightopt sweep run --devices 0,1`` with both workers' trials stalled after their first epoch's checkpoint."""
    data = sweep_dict(tmp_path / "runs", n_trials=n_trials)
    stall = tmp_path / "stall"
    data["model"] = {
        "class_path": "tests.sweep.helpers.StallingMLP",
        "init_args": {"hidden": 16, "stall_file": str(stall)},
    }
    data["trainer"].update(max_epochs=3, enable_checkpointing=True)
    file = write(tmp_path / "s.yaml", data)
    stall.touch()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lightopt", "sweep", "run", str(file), "--devices", "0,1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    journal = tmp_path / "runs" / "s" / "study.journal"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        checkpoints = [journal.parent / f"trial_{n:04d}" / "checkpoints" / "last.ckpt" for n in (0, 1)]
        if journal.is_file() and all(c.is_file() for c in checkpoints):
            trials = load_journal(journal).trials
            if len(trials) == 2 and all(t.state == TrialState.RUNNING for t in trials):
                time.sleep(0.5)  # last.ckpt is complete once the fit moved on to the stall
                return proc, journal, stall, data, trials
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"the two workers never stalled: {proc.communicate()}")


def test_a_killed_worker_has_its_trial_retried_on_another_device(tmp_path):
    proc, journal, stall, _, trials = _stalled_device_sweep(tmp_path, n_trials=3)
    victim = next(t for t in trials if t.user_attrs["device"] == "1")
    os.kill(victim.user_attrs["worker"]["pid"], signal.SIGKILL)  # the worker of device 1 is gone
    stall.unlink()
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    trials = load_journal(journal).trials
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == victim.number)
    assert trials[victim.number].state == TrialState.FAIL
    assert trials[victim.number].user_attrs["fail_reason"].startswith("worker died")
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["device"] == "0"  # the surviving worker's
    assert retry.user_attrs["resume_from"].endswith(f"trial_{victim.number:04d}/checkpoints/last.ckpt")


def test_sigterm_to_the_command_records_every_running_trial_and_the_next_run_retries_them(tmp_path, capsys):
    proc, journal, stall, _data, trials = _stalled_device_sweep(tmp_path, n_trials=2)
    proc.send_signal(signal.SIGTERM)  # to the command only, as `kill` or a scheduler's batch-shell signal does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip().splitlines() == [
        "interrupted: the running trials were recorded as failed (interrupted); run the same command again to retry "
        "them"
    ]
    trials = load_journal(journal).trials
    assert [(t.state, t.user_attrs["fail_reason"]) for t in trials] == [(TrialState.FAIL, "interrupted")] * 2
    for pid in {t.user_attrs["worker"]["pid"] for t in trials}:
        with pytest.raises(ProcessLookupError):  # no worker left behind
            os.kill(pid, 0)
    stall.unlink()
    assert main(["sweep", "run", str(tmp_path / "s.yaml"), "--devices", "0,1"]) == 0  # the requeued job
    trials = load_journal(journal).trials
    retries = sorted((t.user_attrs["retry_of"], t.state) for t in trials[2:])
    assert retries == [(0, TrialState.COMPLETE), (1, TrialState.COMPLETE)]
    assert all(t.user_attrs["resumed_at"]["epoch"] >= 1 for t in trials[2:])  # from their checkpoints


def test_a_ddp_trial_that_needs_more_devices_than_its_worker_holds_fails_before_any_rank_starts(monkeypatch):
    from lightopt.sweep.trial import trial_processes

    monkeypatch.setenv(DEVICES_ENV, "2,3")  # as a --devices worker of 2-device trials
    job = {
        "config": {"trainer": {"strategy": "ddp", "devices": 4, "accelerator": "cpu"}},
        "seed": 0,
        "directory": ".",
        "name": "trial_0000",
        "monitor": "val_loss",
        "report_at": "round",
        "mode": "min",
    }
    started = []
    with (
        pytest.raises(
            ValueError,
            match=r"`trainer.devices` must be at most 2 in this trial, but got 4: its worker "
            r"holds devices 2,3",
        ),
        trial_processes(job),
    ):
        started.append(True)
    assert started == [] and "LOCAL_RANK" not in os.environ and "MASTER_PORT" not in os.environ
