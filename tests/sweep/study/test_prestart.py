"""--workers N: the children start with the command (study/_prestart.py); every progress line uses one clock."""

from __future__ import annotations

import io
import itertools
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from optuna.trial import TrialState

from lightopt.sweep import run_sweep
from lightopt.sweep.spec import parse
from lightopt.sweep.study import _prestart
from tests.sweep.fault_helpers import children_of, start
from tests.sweep.helpers import load_journal, sweep_dict, write

_LINE = re.compile(r"^\[\d+/\d+\] trial (\d+) .* \| ([0-9.]+) s$")


def _start(file: Path, *args: str) -> subprocess.Popen:
    """``lightopt sweep run FILE ARGS`` in its own session (a terminal's job), from the repository root."""
    return start("sweep", "run", str(file), *args, start_new_session=True)


def _session(sid: int) -> list[int]:
    """The processes of session ``sid`` (the command and everything it started)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def _no_process_left(sid: int) -> None:
    deadline = time.monotonic() + 30  # multiprocessing's resource tracker leaves once its pipe closes
    while _session(sid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _session(sid) == []


def test_two_workers_on_a_short_sweep_both_run_trials(tmp_path):
    # Trials of a fraction of a second: before, the child was still importing torch when the parent had run them all.
    file = write(tmp_path / "s.yaml", sweep_dict(tmp_path / "runs", n_trials=10))
    proc = _start(file, "--workers", "2")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    trials = load_journal(tmp_path / "runs" / "s" / "study.journal").trials
    assert len(trials) == 10 and all(t.state == TrialState.COMPLETE for t in trials)
    pids = {t.user_attrs["worker"]["pid"] for t in trials}
    assert proc.pid in pids and len(pids) == 2, out  # the command's process and its child both ran trials
    _no_process_left(proc.pid)


def test_every_progress_line_counts_from_the_sweeps_start(tmp_path):
    # The first fits wait until both workers have started one, so the child surely runs a trial (started late here:
    # run_sweep in-process has no prestarted children).
    data = sweep_dict(tmp_path / "runs", n_trials=4)
    data["model"] = {
        "class_path": "tests.sweep.device_helpers.RecordingMLP",
        "init_args": {"hidden": 16, "record_file": str(tmp_path / "fits.jsonl"), "wait_for": 2},
    }
    out = io.StringIO()
    result = run_sweep(parse(data), workers=2, out=out)
    trials = {t.number: t for t in result.study.trials}
    assert len({t.user_attrs["worker"]["pid"] for t in trials.values()}) == 2
    first = min(t.datetime_start for t in trials.values()).timestamp()  # no trial started before the sweep did
    longest = max((t.datetime_complete - t.datetime_start).total_seconds() for t in trials.values())
    shown = [(int(m[1]), float(m[2])) for m in map(_LINE.match, out.getvalue().splitlines()) if m]
    assert sorted(number for number, _ in shown) == [0, 1, 2, 3]
    for number, elapsed in shown:  # a child's clock started after its imports: seconds short, before
        assert elapsed >= trials[number].datetime_complete.timestamp() - first - 0.25, out.getvalue()
    for (_, before), (_, after) in itertools.pairwise(shown):  # printed as they finish: never back by a trial's length
        assert after >= before - longest, out.getvalue()


def test_a_usage_error_with_two_workers_is_one_line_exit_2_and_leaves_no_process(tmp_path):
    data = sweep_dict(tmp_path / "runs")
    data["search"]["optimizer.init_args.lr"] = {"low": 0.5, "high": 0.01, "log": True}
    proc = _start(write(tmp_path / "s.yaml", data), "--workers", "3")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 2 and len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert out == "" and "Traceback" not in err
    _no_process_left(proc.pid)
    assert not (tmp_path / "runs" / "s" / "study.journal").exists()


def test_ctrl_c_while_the_prestarted_children_import_is_one_line_exit_130_and_leaves_no_process(tmp_path):
    file = write(tmp_path / "s.yaml", sweep_dict(tmp_path / "runs", n_trials=20))
    proc = _start(file, "--workers", "3")
    deadline = time.monotonic() + 120
    while len(children_of(proc.pid)) < 2:  # the children start before the command imports torch
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: every process of the group gets SIGINT
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("interrupted") and "Traceback" not in err
    _no_process_left(proc.pid)
    journal = tmp_path / "runs" / "s" / "study.journal"
    if journal.is_file() and journal.stat().st_size:
        assert all(t.state != TrialState.RUNNING for t in load_journal(journal).trials)


def test_prestart_is_off_for_one_worker_and_unused_children_are_killed_at_close(monkeypatch):
    assert _prestart.prestart_workers(1) is None and _prestart.prestart_workers(None) is None
    monkeypatch.setenv(_prestart.PRESTART_ENV, "0")
    assert _prestart.prestart_workers(3) is None
    monkeypatch.delenv(_prestart.PRESTART_ENV)
    pool = _prestart.prestart_workers(3)
    try:
        assert pool is not None and pool.workers == 3 and all(child.is_alive() for child in pool.children)
        assert _prestart.take_prestarted(1) is None  # another count: closed, the sweep starts its own
        assert all(child.exitcode is not None for child in pool.children)
    finally:
        _prestart.close_prestarted()


def test_user_modules_come_from_the_files_class_paths(tmp_path):
    data = sweep_dict(tmp_path)
    data["trainer"]["callbacks"] = [
        {"class_path": "lightning.pytorch.callbacks.EarlyStopping"},
        {"class_path": "subprocess.Popen"},
    ]
    file = write(tmp_path / "s.yaml", data)
    assert _prestart.user_modules([str(file), str(tmp_path / "missing.yaml")]) == [
        "examples.digits",
        "lightning.pytorch.callbacks",
        "lightopt.optim",
    ]
