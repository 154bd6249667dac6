"""Ctrl-C and SIGTERM outside a fit: while the command imports torch, waits for a lock, or draws plots."""

from __future__ import annotations

import os
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


def _drawer(plots: Path) -> int | None:
    """The pid of the process drawing into ``plots`` (its scratch folder's name), or None."""
    names = [p.name for p in plots.glob(".drawing-*")]
    return int(names[0].split("-")[1]) if names else None


def test_a_drawing_process_killed_mid_draw_is_one_line_and_the_next_run_cleans_up(tmp_path):
    write(tmp_path / "s.yaml", sweep_dict(Path("runs"), n_trials=2))
    plots = tmp_path / "runs" / "s" / "plots"
    proc = start("sweep", "run", "s.yaml", cwd=tmp_path)
    wait_for(lambda: _drawer(plots) is not None or proc.poll() is not None, "plots being drawn")
    drawer = _drawer(plots)
    assert drawer != proc.pid  # drawn by a process of its own
    os.kill(drawer, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err  # the sweep itself is done: its trials are recorded
    assert [line for line in err.splitlines() if "plots" in line] == [
        "the study's plots were not drawn: the drawing process was killed (signal 9)"
    ]
    assert [_drawer(plots)] == [drawer] and not list(plots.glob("*.png"))  # left by the kill
    done = lightopt("sweep", "run", "s.yaml", cwd=tmp_path)  # nothing left to run: cleans up, draws what is missing
    assert done.returncode == 0, done.stderr
    assert not list(plots.glob(".drawing-*"))
    assert {p.stem for p in plots.glob("*.png")} >= {"optimization_history", "slice"}


def test_a_worker_killed_while_its_plots_are_drawn_leaves_the_drawing_to_finish(tmp_path):
    write(tmp_path / "s.yaml", sweep_dict(Path("runs"), n_trials=2))
    plots = tmp_path / "runs" / "s" / "plots"
    proc = start("sweep", "run", "s.yaml", cwd=tmp_path)
    wait_for(lambda: _drawer(plots) is not None or proc.poll() is not None, "plots being drawn")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    wait_for(lambda: _drawer(plots) is None, "the drawing process to end")
    assert {p.stem for p in plots.glob("*.png")} >= {"optimization_history", "slice"}
