"""Smoke test of benchmarks/gpu_check.py on the CPU: its parts run and report; without a GPU it refuses the GPU run.

The GPU itself is exercised only where one is present; this keeps the script runnable for that day.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("gpu_check", None)


def test_cpu_smoke_run_of_the_nan_and_skipped_parts_writes_its_report(gpu_check, tmp_path, capsys):
    assert gpu_check.main(["--accelerator", "cpu", "--only", "nan,oom,ddp", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    nan = results["parts"]["nan"]
    # on the CPU LossCheck reads every step: the fit stops at the first NaN (the GPU's cadence is 50 steps)
    assert nan["status"] == "pass" and nan["loss_check"] == {
        "stopped_at_step": 8,
        "error": "NonFiniteLossError: training loss is nan at step 8",
    }
    assert {"no check", "LossCheck() default", "LossCheck(every=1)"} <= set(nan["ms_per_step"])
    assert results["parts"]["oom"]["status"] == "skipped" and results["parts"]["ddp"]["status"] == "skipped"
    assert "- **nan**: pass" in (tmp_path / "gpu_check.md").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_the_gpu_run_is_one_line_and_exit_2(gpu_check, tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: torch sees no GPU here: run this on a machine with an NVIDIA GPU\n"
    assert not (tmp_path / "gpu_check.json").exists()


def test_an_unknown_part_is_refused(gpu_check, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        gpu_check.main(["--only", "sweep,fast", "--out", str(tmp_path)])
    assert exit_.value.code == 2 and "unknown part(s) fast" in capsys.readouterr().err
