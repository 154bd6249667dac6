"""The study's plots drawn in a process of their own, and the final drawing left to the last sweep of a machine."""

from __future__ import annotations

import os
import time
from pathlib import Path

import optuna
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightopt.sweep import run_sweep
from lightopt.sweep import spec as config
from lightopt.sweep.store import study_dir
from lightopt.sweep.study import StudyRun, sweeping
from tests.sweep.helpers import sweep_dict, write

PLOTS = {"contour", "optimization_history", "parallel_coordinate", "param_importances", "slice"}


def _journal_study(path: Path, n_trials: int = 4) -> optuna.Study:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    study = optuna.create_study(study_name="drawn", storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1) + trial.suggest_float("y", 0, 1), n_trials=n_trials)
    return study


def test_a_drawing_runs_in_its_own_process_and_its_images_reach_the_study_run(tmp_path):
    study = _journal_study(tmp_path / "study.journal")
    board = StudyRun(tmp_path / "runs", plot_every=0, storage=str(tmp_path / "study.journal"))
    board.write(study)  # plot_every reached: a drawing starts, the write returns
    board.close()  # waits for the drawing and writes its images
    (drawing,) = board.drawings
    assert drawing.pid != os.getpid() and drawing.error is None
    assert drawing.finished == 4 and {p.stem for p in drawing.drawn} == PLOTS
    assert drawing.cpu_s > 0 and drawing.peak_mib > 0 and board.drawing_s == drawing.seconds > 0
    assert {p.stem for p in (tmp_path / "runs" / "plots").glob("*.png")} == PLOTS
    assert not list((tmp_path / "runs" / "plots").glob(".drawing-*"))  # the child's scratch folder is gone
    images = EventAccumulator(str(tmp_path / "runs" / "study" / "plots"), size_guidance={"images": 0})
    images.Reload()
    assert {tag.removeprefix("plots/") for tag in images.Tags()["images"]} == PLOTS
    assert images.Images("plots/optimization_history")[-1].step == 4


def test_a_final_drawing_is_waited_for(tmp_path):
    study = _journal_study(tmp_path / "study.journal")
    board = StudyRun(tmp_path / "runs", plot_every=3600, storage=str(tmp_path / "study.journal"))
    board.write(study, plots=True)
    (drawing,) = board.drawings
    assert drawing.error is None and {p.stem for p in drawing.drawn} == PLOTS
    assert not board.behind(study)
    board.close()


def test_a_drawing_that_fails_is_one_line_and_the_sweep_goes_on(tmp_path, capsys):
    study = _journal_study(tmp_path / "study.journal")
    missing = tmp_path / "elsewhere" / "study.journal"
    board = StudyRun(tmp_path / "runs", plot_every=0, storage=str(missing))
    board.write(study, plots=True)
    board.write(study, plots=True)
    err = capsys.readouterr().err
    assert err.count("the study's plots were not drawn:") == 1  # said once, not at every drawing
    assert "no study journal at" in err and "Traceback" not in err
    assert [d.drawn for d in board.drawings] == [[], []] and board.drawings[0].error.startswith("ConfigError")
    assert board.write(study) is not None  # the study run itself is still written
    board.close()


def test_without_its_storage_a_study_is_drawn_in_this_process(tmp_path):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1) + trial.suggest_float("y", 0, 1), n_trials=3)
    board = StudyRun(tmp_path, plot_every=3600)
    board.write(study, plots=True)
    (drawing,) = board.drawings
    assert {p.stem for p in drawing.drawn} == PLOTS and drawing.finished == 3 and drawing.error is None
    assert drawing.pid == os.getpid() and drawing.peak_mib is None
    board.close()


def test_only_the_last_of_the_sweeps_running_here_is_last(tmp_path):
    with sweeping(tmp_path) as first, sweeping(tmp_path) as second:
        assert not first()  # the second still runs
        assert second()  # the first let go: the second is the last
    with sweeping(tmp_path) as third:
        assert third()


def test_the_final_plots_wait_for_the_last_sweep_of_the_study(tmp_path):
    file = write(tmp_path / "sweep.yaml", sweep_dict(tmp_path / "runs", n_trials=2))
    directory = study_dir(str(tmp_path / "runs"), "s")
    pngs = directory / "plots"
    with sweeping(directory):  # another `sweep run` of the study, still running on this machine
        with open(os.devnull, "w") as devnull:
            first = run_sweep(config.load(file), out=devnull)
        assert first.ran == 2
        assert not list(pngs.glob("*.png"))  # it leaves the final drawing to the other one
    with open(os.devnull, "w") as devnull:  # the other one ends, having run nothing more (n_trials reached)
        last = run_sweep(config.load(file), out=devnull)
    assert last.ran == 0
    assert {p.stem for p in pngs.glob("*.png")} >= {"optimization_history", "slice"}  # drawn: the plots were behind
    drawn = max(p.stat().st_mtime_ns for p in pngs.glob("*.png"))
    with open(os.devnull, "w") as devnull:  # nothing new since: not drawn again
        run_sweep(config.load(file), out=devnull)
    assert max(p.stat().st_mtime_ns for p in pngs.glob("*.png")) == drawn


@pytest.mark.parametrize("plots", [None, True])
def test_a_drawing_in_flight_when_the_run_closes_is_collected(tmp_path, plots):
    study = _journal_study(tmp_path / "study.journal")
    board = StudyRun(tmp_path / "runs", plot_every=0, storage=str(tmp_path / "study.journal"))
    board.write(study)  # starts one
    board.write(study, plots=plots)  # None: one in flight, no second; True: waits for it, then draws again
    board.close()
    assert len(board.drawings) == (2 if plots else 1)
    assert all(d.error is None for d in board.drawings)


def test_a_drawing_collected_late_counts_its_own_time_not_the_wait(tmp_path):
    """A long trial collects the drawing long after it ended: the schedule must not read that wait as drawing time."""
    study = _journal_study(tmp_path / "study.journal")
    board = StudyRun(tmp_path / "runs", plot_every=0, storage=str(tmp_path / "study.journal"))
    started = time.time()
    board.write(study)
    plots = tmp_path / "runs" / "plots"
    deadline = time.monotonic() + 120
    while not (len(list(plots.glob("*.png"))) == len(PLOTS) and not list(plots.glob(".drawing-*"))):
        assert time.monotonic() < deadline, "the drawing did not finish"
        time.sleep(0.05)
    time.sleep(3.0)  # a trial that runs on after the drawing ended
    board.write(study)  # collected now
    (drawing,) = board.drawings
    assert 0 < drawing.seconds <= time.time() - started - 2.0
    board.close()


def test_where_no_drawing_process_can_start_the_plots_are_drawn_here(tmp_path, monkeypatch):
    study = _journal_study(tmp_path / "study.journal")
    monkeypatch.setattr("sys.executable", str(tmp_path / "no-python"))  # as in an embedded interpreter
    board = StudyRun(tmp_path / "runs", plot_every=3600, storage=str(tmp_path / "study.journal"))
    board.write(study, plots=True)  # no traceback: drawn in this process
    (drawing,) = board.drawings
    assert drawing.pid == os.getpid() and {p.stem for p in drawing.drawn} == PLOTS
    board.close()
