"""Ctrl-C and SIGTERM outside a fit: while the command imports torch, waits for a lock, or draws plots."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.sweep.fault_helpers import HOLD_LOCK, lightopt, python, start, wait_for
from tests.sweep.helpers import sweep_dict, write

LINES = {signal.SIGINT: "interrupted", signal.SIGTERM: "interrupted: terminated (SIGTERM)"}


def _torch_loading(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_command_starts_is_one_line_and_exit_130(tmp_path, signum):
    write(tmp_path / "s.yaml", sweep_dict(Path("runs")))
    proc = start("sweep", "run", "s.yaml", cwd=tmp_path)
    wait_for(lambda: _torch_loading(proc.pid) or proc.poll() is not None, "torch to load")
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.splitlines() == [LINES[signum]]
    assert not (tmp_path / "runs" / "s" / "trial_0000").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_waiting_for_the_journal_lock_is_one_line_and_exit_130(tmp_path, signum):
    write(tmp_path / "s.yaml", sweep_dict(Path("runs")))
    journal = tmp_path / "runs" / "s" / "study.journal"
    journal.parent.mkdir(parents=True)
    holder = python(HOLD_LOCK, str(journal))
    try:
        assert holder.stdout.readline().strip() == "held"
        err_file = tmp_path / "err.txt"
        with open(err_file, "w") as err:
            proc = start("sweep", "run", "s.yaml", cwd=tmp_path, stderr=err)
            wait_for(lambda: "waiting for the study journal's lock" in err_file.read_text(), "the waiting line")
            proc.send_signal(signum)
            proc.communicate(timeout=120)
    finally:
        holder.kill()
        holder.wait()
    lines = err_file.read_text().splitlines()
    assert proc.returncode == 130 and len(lines) == 2 and lines[1] == LINES[signum]
    assert lines[0].startswith(f"waiting for the study journal's lock {journal}.lock, held by pid {holder.pid} on host")


def test_scratch_folders_of_a_kill_during_plot_drawing_are_removed_by_the_next_run(tmp_path):
    write(tmp_path / "s.yaml", sweep_dict(Path("runs"), n_trials=2))
    plots = tmp_path / "runs" / "s" / "plots"
    proc = start("sweep", "run", "s.yaml", cwd=tmp_path)
    wait_for(lambda: any(plots.glob(".drawing-*")) or proc.poll() is not None, "plots being drawn")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [p.name.split("-")[1] for p in plots.glob(".drawing-*")] == [str(proc.pid)]  # left by the kill
    done = lightopt("sweep", "run", "s.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not list(plots.glob(".drawing-*"))
