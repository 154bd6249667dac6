"""Smoke test of benchmarks/trial_memory.py: a few trials in a child process, the CSV and the plot. No thresholds."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "trial_memory.py"


def test_trial_memory_writes_one_row_per_trial_and_a_plot(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("trial_memory", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--trials", "4", "--fail-every", "2", "--only", "runner", "--out", str(tmp_path)]) == 0
    with open(tmp_path / "trial_memory.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["setting"], r["trial"], r["state"]) for r in rows] == [
        ("runner", "0", "COMPLETE"),
        ("runner", "1", "FAIL"),
        ("runner", "2", "COMPLETE"),
        ("runner", "3", "FAIL"),
    ]
    assert all(float(r["rss_mib"]) > 0 for r in rows) and {r["live_trainers"] for r in rows} == {"0"}
    assert (tmp_path / "trial_memory.png").stat().st_size > 0
    assert '"setting": "runner", "trials": 4, "failed": 2' in capsys.readouterr().out
