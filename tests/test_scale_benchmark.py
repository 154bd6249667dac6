"""Smoke test of benchmarks/scale.py: both arms run on a tiny study, the samplers are timed. No timing thresholds."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "scale.py"


@pytest.fixture(scope="module")
def scale():
    """The script as the module ``scale``, importable by the worker processes it spawns (they get sys.path)."""
    sys.path.insert(0, str(_SCRIPT.parent))
    try:
        yield importlib.import_module("scale")
    finally:
        sys.path.remove(str(_SCRIPT.parent))
        sys.modules.pop("scale", None)
        sys.modules.pop("_measure", None)


def test_both_arms_run_the_same_trials_and_report_each_checkpoint(scale, tmp_path):
    out = tmp_path / "scale.json"
    assert scale.main(["--trials", "40", "--workers", "1", "--scratch", str(tmp_path), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    (row,) = report["runs"]
    for arm in ("optuna", "lightopt"):
        assert row[arm]["trials_run"] == 40
        assert set(row[arm]["per_trial_ms"]) == set(row[arm]["cpu_per_trial_ms"]) == {"40"}
        assert set(row[arm]["cpu_per_trial_by_segment_ms"]) == {"10-40"}  # every trial of the span, not a window
        assert set(row[arm]["cpu_per_trial_by_segment_without_plots_ms"]) == {"10-40"}
        assert row[arm]["storage_bytes"] > 0
    assert row["lightopt"]["tensorboard_bytes"] > 0 and row["optuna"]["tensorboard_bytes"] == 0
    assert set(row["difference_per_trial_ms"]) == {"40"}
    assert report["machine"]["cores"] >= 1


def test_sampler_scale_times_every_sampler(scale, tmp_path):
    out = tmp_path / "samplers.json"
    assert scale.main(["--sampler-scale", "--trials", "100", "--repeats", "1", "--out", str(out)]) == 0
    names = {row["sampler"].split(" ")[0] for row in json.loads(out.read_text())["samplers"]}
    assert {"tpe", "random", "qmc"} <= names


def test_the_stub_fit_reports_through_the_pruning_callback(scale):
    import optuna

    from lightopt.sweep import PruningCallback

    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    pruning = PruningCallback(study.ask(), "val_loss")
    stamps = scale.Stamps()
    config = {"optimizer": {"init_args": {"lr": 0.03, "momentum": 0.9}}, "data": {"init_args": {"batch_size": 64}}}
    run = scale._stub_fit(stamps)(config, 0, pruning, Path("."), "trial_0007")
    assert [step for step, _ in pruning.history] == list(range(1, scale.ROUNDS + 1))
    assert pruning.best == pytest.approx(scale.value(0.03, 0.9, 64, scale.ROUNDS))
    assert run.trainer.current_epoch == scale.ROUNDS and stamps.starts[0][1] == 7


class _AlwaysPrune(__import__("optuna").pruners.BasePruner):
    def prune(self, study, trial):
        return True


def test_the_stub_fit_prunes_as_the_pruning_callback_does(scale):
    """A pruned stub trial is PRUNED with ``pruned_at``, not FAIL (an AttributeError on the ``pruned`` property)."""
    import optuna

    from lightopt.sweep import PruningCallback

    study = optuna.create_study(pruner=_AlwaysPrune())
    trial = study.ask()
    pruning = PruningCallback(trial, "val_loss")
    config = {"optimizer": {"init_args": {"lr": 0.03, "momentum": 0.9}}, "data": {"init_args": {"batch_size": 64}}}
    run = scale._stub_fit(scale.Stamps())(config, 0, pruning, Path("."), "trial_0000")
    assert pruning.pruned == 1 and run.trainer.current_epoch == 1
    assert study.trials[0].user_attrs["pruned_at"] == 1


def test_cpu_by_segment_counts_every_trial_of_each_span_over_all_workers(scale):
    """Two workers interleaving trials 0..399; worker 0 spends 2 ms per trial, worker 1 spends 4 ms before
    trial 100 and 6 ms after: each span's figure is the CPU between the first and last start of each worker in
    it, summed, over the trials started after each worker's first."""
    workers = []
    for index, cost in enumerate((lambda n: 0.002, lambda n: 0.004 if n < 100 else 0.006)):
        numbers = list(range(index, 400, 2))
        cpu, used = [], 0.0
        for number in numbers:
            cpu.append(used)
            used += cost(number)
        workers.append({"starts": [(float(n), n) for n in numbers], "cpu": cpu})
    assert scale.segments(400) == [(10, 100), (100, 300), (300, 400)]
    assert scale.segments(5) == []
    spans = scale.cpu_by_segment_ms(workers, 400)
    assert spans["10-100"] == pytest.approx(3.0, abs=0.05)  # (2 + 4) / 2
    assert spans["100-300"] == pytest.approx(4.0, abs=0.05)  # (2 + 6) / 2
    assert spans["300-400"] == pytest.approx(4.0, abs=0.05)


def test_cpu_by_segment_without_plots_leaves_out_the_drawings_inside_each_span(scale):
    """A drawing of 0.5 s between the starts of trials 149 and 150 (stamped 150) is in span 100-300 only."""
    cpu = [0.002 * i + (0.5 if i >= 150 else 0.0) for i in range(400)]
    worker = {"starts": [(float(i), i) for i in range(400)], "cpu": cpu, "draws": [[150, 0.5]]}
    spans = scale.cpu_by_segment_ms([worker], 400)
    plain = scale.cpu_by_segment_ms([worker], 400, without_draws=True)
    assert spans["100-300"] == pytest.approx(2.0 + 500 / 199, abs=0.01)
    assert plain == pytest.approx({"10-100": 2.0, "100-300": 2.0, "300-400": 2.0}, abs=0.01)


def test_scale_profile_counts_each_trials_statements_and_the_collector_by_block(tmp_path):
    """benchmarks/scale_profile.py on a real PostgreSQL: statements, their rows, CPU and collector time per block."""
    import subprocess

    out = tmp_path / "profile.json"
    script = _SCRIPT.parent / "scale_profile.py"
    command = [sys.executable, str(script), "--trials", "30", "--window", "10", "--block", "10", "--no-callers"]
    done = subprocess.run([*command, "--disable", "drawing", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["trials"] == 30 and report["arm"] == "lightopt"
    first, last = report["statements_per_trial"].values()
    assert first > 10 and last > 10  # every trial creates, writes and finishes itself in the database
    assert report["parameters_and_rows_last"]["INSERT INTO trials (rows)"] > 0
    assert report["by_caller_last"] == {}  # --no-callers: no stack walked
    assert [n for n, _ in report["cpu_ms_per_trial_by_block"]] == [0, 10, 20]
    blocks = report["collector_by_block"]
    assert [b[0] for b in blocks] == [0, 10, 20]
    assert all(b[4] >= 10 for b in blocks)  # at least the full pass after each trial (TrialCleanup)
    assert all(n == 30 for n, _ in report["drawings"])  # --disable drawing: none during the sweep, the final one only
