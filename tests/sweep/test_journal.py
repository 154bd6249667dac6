"""The study journal under real faults: a lock holder killed with kill -9 (mid-write too), a truncated or
garbage tail, a full disk, a read-only folder, a journal deleted while the sweep runs."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from lightopt.cli import main
from lightopt.sweep import run_sweep
from lightopt.sweep.spec import parse
from tests.sweep.fault_helpers import HOLD_LOCK, lightopt, python, start, wait_for
from tests.sweep.helpers import sweep_dict, write

HOLD = {
    # lightopt's lock, killed in the middle of writing a record: a stale lock and a partial line are left
    "lightopt, mid-write": (HOLD_LOCK, '{"op_code":5,"worker_id":"w","trial_id":0,"us'),
    # Optuna's own lock made from a relative path (as lightopt made it before): a link that points nowhere
    "optuna, relative link": (
        "import sys, time\n"
        "from optuna.storages.journal import JournalFileSymlinkLock\n"
        "JournalFileSymlinkLock(sys.argv[1]).acquire()\n"
        "print('held', flush=True); time.sleep(600)\n",
        None,
    ),
}


def _study(journal: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    return optuna.load_study(study_name="s", storage=storage)


def _hold(tmp_path: Path, kind: str, journal: str) -> subprocess.Popen:
    code, partial = HOLD[kind]
    holder = python(code, journal, *([partial] if partial else []), cwd=tmp_path)
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.fixture
def two_trials(tmp_path):
    """A sweep file (log_dir ``runs``, relative to tmp_path) whose study has 2 complete trials."""
    data = sweep_dict(Path("runs"), n_trials=2)
    file = write(tmp_path / "s.yaml", data)
    run_sweep(parse({**data, "study": {**data["study"], "log_dir": str(tmp_path / "runs")}}), out=io.StringIO())
    return file, tmp_path / "runs" / "s" / "study.journal"


@pytest.mark.parametrize("kind", list(HOLD))
def test_a_lock_whose_holder_was_killed_is_broken_at_once_with_one_line(two_trials, tmp_path, kind):
    _file, journal = two_trials
    holder = _hold(tmp_path, kind, "runs/s/study.journal")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert os.path.lexists(f"{journal}.lock")
    done = lightopt("sweep", "run", "s.yaml", "--n-trials", "3", cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].startswith(f"broke the study journal's lock {journal}.lock: its holder, ")
    if kind.startswith("lightopt"):  # the holder is named, and its partial record is cut off and kept
        assert f"pid {holder.pid} on host " in lines[0] and lines[0].endswith("which is gone")
        cut = list(journal.parent.glob("study.journal.cut-*"))
        assert len(cut) == 1 and cut[0].read_bytes().startswith(b'{"op_code":5,"worker_id":"w"')
        assert lines[1].startswith(f"the study journal {journal} ended with ") and "kept them in" in lines[1]
    assert "Traceback" not in done.stderr and len(lines) == (2 if kind.startswith("lightopt") else 1)
    trials = _study(journal).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert not os.path.lexists(f"{journal}.lock")


def test_a_live_holder_is_waited_for_with_a_line_naming_it_then_broken_once_killed(two_trials, tmp_path):
    _file, journal = two_trials
    holder = _hold(tmp_path, "lightopt, mid-write", str(journal))
    err = tmp_path / "err.txt"
    with open(err, "w") as stderr:
        sweep = start("sweep", "run", "s.yaml", "--n-trials", "3", cwd=tmp_path, stderr=stderr)
        wait_for(lambda: "waiting for the study journal's lock" in err.read_text(), "the waiting line")
        assert sweep.poll() is None  # it waits, and says so
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        _out, _ = sweep.communicate(timeout=120)
    lines = err.read_text().splitlines()
    assert sweep.returncode == 0, lines
    assert lines[0].startswith(f"waiting for the study journal's lock {journal}.lock, held by pid {holder.pid} on host")
    assert "(running)" in lines[0]
    assert any(line.startswith(f"broke the study journal's lock {journal}.lock") for line in lines)
    assert [t.state for t in _study(journal).trials] == [TrialState.COMPLETE] * 3


@pytest.mark.parametrize("damage", ["cut mid-record", "garbage appended", "a garbage line"])
def test_a_damaged_tail_is_cut_off_kept_and_the_sweep_goes_on(two_trials, tmp_path, monkeypatch, capsys, damage):
    _file, journal = two_trials
    data = journal.read_bytes()
    before = {t.number: t.value for t in _study(journal).trials}
    if damage == "cut mid-record":
        os.truncate(journal, len(data) - 7)  # the last record loses its end, as when a write is cut short
        cut = data[data.rstrip(b"\n").rindex(b"\n") + 1 : -7]
    else:
        cut = b"\x00\x17garbage" if damage == "garbage appended" else b"not a record\n"
        journal.write_bytes(data + cut)
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "run", "s.yaml", "--n-trials", "3"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert (
        len(err) == 1
        and err[0].startswith(f"the study journal {journal} ended with {len(cut)} bytes that are not a complete record")
        and "kept them in" in err[0]
    )
    copies = list(journal.parent.glob("study.journal.cut-*"))
    assert [c.read_bytes() for c in copies] == [cut]
    study = _study(journal)  # every line parses again
    assert journal.read_bytes().endswith(b"\n")
    assert study.trials[0].value == before[0]
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) >= 3 - (damage == "cut mid-record")
    assert main(["sweep", "show", "s.yaml"]) == 0 and capsys.readouterr().err == ""


@contextlib.contextmanager
def _mounted(where: Path, *options: str):
    where.mkdir(exist_ok=True)
    done = subprocess.run(["mount", *options, str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a small file system needs root: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_full_disk_is_one_line_and_loses_nothing_recorded(tmp_path):
    write(tmp_path / "s.yaml", sweep_dict(Path("runs"), n_trials=4))
    with _mounted(tmp_path / "disk", "-t", "tmpfs", "-o", "size=1m", "tmpfs"):
        journal = tmp_path / "disk" / "study.journal"
        done = lightopt("sweep", "run", "s.yaml", "--storage", str(journal), "--n-trials", "2", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        free = os.statvfs(journal.parent)
        filler = journal.parent / "filler"
        filler.write_bytes(b"x" * (free.f_bavail * free.f_frsize - 8192))  # room for about one more trial
        done = lightopt("sweep", "run", "s.yaml", "--storage", str(journal), cwd=tmp_path)
        assert done.returncode == 1
        assert done.stderr.splitlines() == [
            f"error: cannot write the study journal {journal}: no space left on its device. Nothing recorded before "
            f"is lost; free some space and run the same command again (the trial cut off is retried)"
        ]
        assert journal.read_bytes().endswith(b"\n")
        complete = [t for t in _study(journal).trials if t.state == TrialState.COMPLETE]
        assert len(complete) == 2 + done.stdout.count(" complete val_loss=")  # every trial it reported is there
        filler.unlink()
        done = lightopt("sweep", "run", "s.yaml", "--storage", str(journal), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        trials = _study(journal).trials
        assert sum(t.state == TrialState.COMPLETE for t in trials) == 4


def test_a_read_only_journal_is_one_line_and_still_shows(two_trials, tmp_path):
    _file, journal = two_trials
    with _mounted(journal.parent, "--bind", str(journal.parent)):
        subprocess.run(["mount", "-o", "remount,bind,ro", str(journal.parent)], check=True)
        done = lightopt("sweep", "run", "s.yaml", "--n-trials", "3", cwd=tmp_path)
        assert done.returncode == 1 and done.stderr.splitlines() == [
            f"error: cannot write the study journal {journal}: its folder is read-only; make it writable and run the "
            f"same command again (nothing recorded is lost)"
        ]
        shown = lightopt("sweep", "show", "s.yaml", cwd=tmp_path)
        assert shown.returncode == 0 and shown.stderr == "" and "COMPLETE" in shown.stdout
    assert [t.state for t in _study(journal).trials] == [TrialState.COMPLETE] * 2


def test_a_journal_deleted_while_the_sweep_runs_is_one_line(tmp_path):
    data = sweep_dict(Path("runs"), n_trials=2)
    stall = tmp_path / "stall"
    data["model"] = {
        "class_path": "tests.sweep.helpers.StallingMLP",
        "init_args": {"hidden": 16, "stall_file": str(stall)},
    }
    write(tmp_path / "s.yaml", data)
    stall.touch()
    sweep = start("sweep", "run", "s.yaml", cwd=tmp_path)
    journal = tmp_path / "runs" / "s" / "study.journal"
    wait_for(
        lambda: (journal.parent / "trial_0000" / "version_0").exists() or (journal.parent / "trial_0000").is_dir(),
        "trial 0 to start",
    )
    journal.unlink()
    stall.unlink()
    _, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 1 and err.splitlines() == [
        f"error: the study journal {journal} was deleted while the sweep ran: stopped without writing more; restore it "
        f"from a copy to keep its trials, or run again to start the study afresh"
    ]
    assert not journal.exists()  # not recreated with a tail of records that belong to nothing


def test_a_trial_created_just_before_a_hard_exit_is_found_and_retried(tmp_path):
    journal = tmp_path / "study.journal"
    code = (
        "import os, sys, optuna\n"
        "from pathlib import Path\n"
        "from lightopt.sweep.store import open_storage\n"
        "storage, _ = open_storage(sys.argv[1], Path('.'))\n"
        "study = optuna.create_study(storage=storage, study_name='s')\n"
        "study.ask()\n"
        "os._exit(9)  # before the objective's first line\n"
    )
    proc = subprocess.Popen(
        ["python", "-c", code, str(journal)], env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    )
    assert proc.wait(timeout=120) == 9
    from lightopt.sweep import study as recovery

    study = _study(journal)
    assert study.trials[0].state == TrialState.RUNNING
    assert study.trials[0].user_attrs["worker"]["pid"] == proc.pid  # recorded with the trial itself
    assert recovery.fail_dead_trials(study) == [0]
    assert study.trials[0].user_attrs["fail_reason"].startswith(f"worker died (pid {proc.pid} on host ")
