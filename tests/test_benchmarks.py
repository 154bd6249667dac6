"""Smoke test of benchmarks/optim_step.py: it runs in-process and reports every pair. No timing thresholds."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "optim_step.py"

# Every pair the benchmark must report on CPU, with the kernel paths torch offers for it.
_ALL = ("loop", "foreach", "fused")
_RMS = ("loop", "foreach")
EXPECTED = {
    "SGD": _ALL,
    "SGD momentum=0.9": _ALL,
    "SGD momentum=0.9 nesterov (lookahead)": _ALL,
    "SGD momentum=0.9, lr changed every step": _ALL,
    "AdaGrad": _ALL,
    "Adam": _ALL,
    "RMSProp": _RMS,
    "RMSProp momentum=0.9": _RMS,
    "RMSProp momentum=0.9 nesterov (lookahead)": _RMS,
    "control: torch Adam vs torch Adam": _ALL,
}


@pytest.fixture(scope="module")
def optim_step():
    spec = importlib.util.spec_from_file_location("optim_step", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def _table_rows(stdout: str) -> dict[tuple[str, str], list[str]]:
    """The rows of the main results table, keyed by (pair, path)."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[1] in _ALL:
            rows[(cells[0], cells[1])] = cells
    return rows


def test_quick_run_reports_every_pair(optim_step, tmp_path, capsys):
    out = tmp_path / "out.json"
    argv = ["--quick", "--rounds", "2", "--layers", "2", "--max-width", "16", "--block-ms", "1", "--json", str(out)]
    assert optim_step.main(argv) == 0
    stdout = capsys.readouterr().out

    expected = {(name, path) for name, paths in EXPECTED.items() for path in paths}
    rows = _table_rows(stdout)
    assert set(rows) == expected
    for cells in rows.values():
        ratio = float(cells[4].split()[0])
        assert math.isfinite(ratio) and ratio > 0

    report = json.loads(out.read_text())
    assert report["skipped"] == []
    assert {(r["pair"], r["path"]) for r in report["results"]} == expected
    for r in report["results"]:
        assert len(r["lightopt_rounds_s"]) == len(r["torch_rounds_s"]) == 2
        assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("lightopt_s", "torch_s", "ratio", "round_ratio_median"))
        assert 0 < r["ratio_ci_low"] <= r["ratio_ci_high"]
    assert report["machine"]["cpu"] in stdout and report["n_params"] > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--rounds", "1"], "`--rounds` must be >= 2, but got rounds=1."),
        (["--layers", "0"], "`--layers` must be >= 1, but got layers=0."),
    ],
)
def test_bad_arguments_exit_2(optim_step, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        optim_step.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# benchmarks/callback_overhead.py: it runs in-process on tiny fits and reports every callback.

_OVERHEAD_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "callback_overhead.py"

OVERHEAD_CASES = {
    "control: no callback vs no callback",
    "GradientMonitor()",
    "GradientMonitor(check_every_step=True)",
    "EarlyStopping('val_loss', patience=1000)",
    "Initialization()",
    "PolyakAveraging()",
    "GradientClipping(clip_val=1.0)",
    "CurvatureMonitor(every_n_steps=2)",
    "CurvatureMonitor(every_n_steps=5)",
}


@pytest.fixture(scope="module")
def callback_overhead():
    spec = importlib.util.spec_from_file_location("callback_overhead", _OVERHEAD_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_callback_overhead_reports_every_callback(callback_overhead, tmp_path, capsys):
    out = tmp_path / "out.json"
    argv = ["--quick", "--rounds", "2", "--epochs", "1", "--batch-size", "128", "--warmup", "0",
            "--curvature-every", "2", "5", "--json", str(out)]
    assert callback_overhead.main(argv) == 0
    stdout = capsys.readouterr().out

    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 11 and cells[0] in OVERHEAD_CASES:
            rows[cells[0]] = cells
    assert set(rows) == OVERHEAD_CASES
    for cells in rows.values():
        ratio = float(cells[4].split()[0])
        assert math.isfinite(ratio) and ratio > 0

    report = json.loads(out.read_text())
    assert report["skipped"] == []
    assert {r["case"] for r in report["results"]} == OVERHEAD_CASES
    for r in report["results"]:
        assert len(r["wall_a_rounds"]) == len(r["wall_b_rounds"]) == 2
        assert r["steps_with"] == r["steps_without"] == 9  # 1,077 training images in batches of 128
        assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("without_s", "with_s", "ratio", "cpu_ratio"))
        assert 0 < r["ratio_ci_low"] <= r["ratio_ci_high"]
    by_case = {r["case"]: r for r in report["results"]}
    assert by_case["CurvatureMonitor(every_n_steps=2)"]["events"] == 5  # steps 0, 2, 4, 6, 8
    assert report["machine"]["cpu"] in stdout



# ---------------------------------------------------------------------------------------------
# benchmarks/trial_overhead.py: it runs in-process on one-epoch trials and reports the three arms.

_TRIAL_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "trial_overhead.py"


@pytest.fixture(scope="module")
def trial_overhead():
    spec = importlib.util.spec_from_file_location("trial_overhead", _TRIAL_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_trial_overhead_reports_three_arms(trial_overhead, tmp_path, capsys):
    out = tmp_path / "out.json"
    argv = ["--quick", "--rounds", "2", "--trials", "1", "--epochs", "1", "--warmup", "0", "--profile-trials", "1",
            "--json", str(out)]
    assert trial_overhead.main(argv) == 0
    stdout = capsys.readouterr().out
    for name in trial_overhead.ARM_NAMES.values():
        assert f"| {name} |" in stdout
    for key in ("B/A", "C/A", "C/B"):
        assert f"| {key} |" in stdout

    report = json.loads(out.read_text())
    for arm in report["arms"].values():
        assert len(arm["wall_rounds"]) == 2 and all(math.isfinite(w) and w > 0 for w in arm["wall_rounds"])
    losses = [arm["val_loss"] for arm in report["arms"].values()]
    assert max(losses) - min(losses) < 1e-4  # the same batches, the same weights: the same work in every arm
    for r in report["ratios"].values():
        assert math.isfinite(r["ratio"]) and r["ratio"] > 0
        assert 0 < r["ratio_ci_low"] <= r["ratio_ci_high"]
    assert report["profile"]["top"] and report["profile"]["packages"]
    assert report["machine"]["cpu"] in stdout


def test_trial_overhead_bad_arguments_exit_2(trial_overhead, capsys):
    with pytest.raises(SystemExit) as exc:
        trial_overhead.main(["--trials", "0"])
    assert exc.value.code == 2
    assert "`--trials` must be >= 1, but got trials=0." in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# benchmarks/workers.py: one quick round of both arms (two tiny trials each), the same trials in both.

_WORKERS_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "workers.py"


@pytest.fixture(scope="module")
def workers_benchmark():
    spec = importlib.util.spec_from_file_location("workers_benchmark", _WORKERS_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_workers_benchmark_reports_both_arms(workers_benchmark, tmp_path, capsys):
    out = tmp_path / "out.json"
    assert workers_benchmark.main(["--quick", "--json", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "| 1 |" in stdout and "| 2 |" in stdout and "| 2 workers / 1 worker |" in stdout
    report = json.loads(out.read_text())
    for arm in report["arms"].values():
        assert len(arm["rounds"]) == 1 and arm["rounds"][0]["states"] == {"COMPLETE": 2, "PRUNED": 0, "FAIL": 0}
        assert math.isfinite(arm["trials_per_min"]) and arm["trials_per_min"] > 0
    assert report["machine"]["cpu"] in stdout


def test_workers_benchmark_bad_arguments_exit_2(workers_benchmark, capsys):
    with pytest.raises(SystemExit) as exc:
        workers_benchmark.main(["--trials", "0"])
    assert exc.value.code == 2
    assert "`--trials` must be >= 1, but got trials=0." in capsys.readouterr().err
