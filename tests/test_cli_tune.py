"""``lightopt tune lr FILE``: the range test's table, suggested range and plot; bad input as one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lightopt.cli import main
from tests.sweep.helpers import write

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "tests.sweep.trial.range_project"


def run_config(**optimizer):
    return {
        "model": {"class_path": f"{PROJECT}.SmallMLP"},
        "data": {"class_path": f"{PROJECT}.Regression"},
        "trainer": {"max_epochs": 3, "accelerator": "cpu", "logger": True},
        "seed_everything": 0,
        **({"optimizer": optimizer} if optimizer else {}),
    }


@pytest.mark.parametrize("argv", [["tune"], ["tune", "lr"]])
def test_help(argv, capsys):
    assert main([*argv, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: lightopt tune")
    assert "§8.3.1" in out if argv[-1] == "lr" else "range test" in out


def test_tune_lr_prints_the_curve_and_range_and_writes_the_plot(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "mlp.yaml", run_config())
    assert main(["tune", "lr", str(path), "--steps", "30", "--min-lr", "1e-3", "--trainer.max_epochs", "2"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "lr range test of the optimizer: 30 batches, lr from 0.001 to 10"
    assert lines[1].split() == ["step", "lr", "smoothed", "loss"]
    assert "<- lowest" in out and "suggested range for the learning rate: [" in out
    assert lines[-1] == "plot: mlp-lr-range-test.png"
    assert (tmp_path / "mlp-lr-range-test.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp-lr-range-test.png", "mlp.yaml"]  # no logs, no ckpt


def test_tune_lr_of_a_sweep_in_the_effective_step(tmp_path, capsys):
    data = {
        **run_config(class_path="torch.optim.SGD", init_args={"lr": 0.01, "momentum": 0.9}),
        "study": {"name": "s", "seed": 0, "log_dir": str(tmp_path / "runs")},
        "search": {"optimizer.init_args.lr": {"low": 1e-2, "high": 10.0, "log": True, "coordinate": "effective"}},
    }
    path = write(tmp_path / "sweep.yaml", data)
    png = tmp_path / "plots" / "lr.png"
    assert main(["tune", "lr", str(path), "--steps", "20", "--out", str(png)]) == 0
    out = capsys.readouterr().out
    # the entry's range is the test's; the table shows ε and ε/(1 - α)
    assert out.splitlines()[0].endswith("20 batches, effective from 0.01 to 10")
    assert out.splitlines()[1].split()[:3] == ["step", "lr", "effective"]
    assert out.splitlines()[2].split()[1:3] == ["0.001", "0.01"]
    assert "the effective step lr/(1-α) at the file's momentum α=0.9" in out
    assert png.is_file()
    assert not (tmp_path / "runs").exists()  # no study, no logs


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "1"], "`--steps` must be an integer >= 2, but got steps=1."),
        (["--min-lr", "0"], "0 < --min-lr < --max-lr, but got min-lr=0, max-lr=10."),
        (["--min-lr", "1", "--max-lr", "0.1"], "but got min-lr=1, max-lr=0.1."),
        (["--max-lr", "inf"], "but got min-lr=1e-06, max-lr=inf."),
        (["--out", "curve.txt"], "`--out` must be a .png file, but got 'curve.txt'."),
        (["--threads", "0"], "`--threads` must be"),
        (["--model.init_args.hiden", "3"], "hiden"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, argv, message):
    path = write(tmp_path / "mlp.yaml", run_config())
    assert main(["tune", "lr", str(path), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_missing_file_and_subprocess_exit_code(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lightopt", "tune", "lr", str(tmp_path / "absent.yaml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "absent.yaml" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"range_test": True, "step": 0.1}, "must not have both `range_test` and `step`"),
        ({"range_test": True, "low": 0.1}, "takes both `low` and `high`"),
    ],
)
def test_bad_range_test_entry_is_one_line_before_any_study(tmp_path, capsys, entry, message):
    data = {
        **run_config(),
        "study": {"name": "s", "log_dir": str(tmp_path / "runs")},
        "search": {"model.init_args.lr": entry},
    }
    path = write(tmp_path / "sweep.yaml", data)
    for command in (["sweep", "run"], ["tune", "lr"]):
        assert main([*command, str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err and f"{path}:" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()
