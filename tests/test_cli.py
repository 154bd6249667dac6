"""The `lightopt` command: sweep run/show/best/reproduce/plot, fit, --help everywhere, and user errors as one line +
exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lightopt.cli import main
from lightopt.sweep import trial_seed
from tests.sweep.helpers import sweep_dict, write

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def sweep_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = sweep_dict(Path("runs"), n_trials=2)
    data["trainer"]["max_epochs"] = 1
    return write(tmp_path / "digits.yaml", data)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["fit"],
        ["sweep"],
        ["sweep", "run"],
        ["sweep", "show"],
        ["sweep", "best"],
        ["sweep", "reproduce"],
        ["sweep", "plot"],
        ["tensorboard"],
    ],
)
def test_help_on_every_command(argv, capsys):
    assert main([*argv, "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: lightopt")


def test_run_show_best_fit(sweep_file, tmp_path, capsys):
    assert main(["sweep", "run", str(sweep_file)]) == 0
    out = capsys.readouterr().out
    assert "[2/2] trial 1" in out and "best trial" in out and "runs/s/study.journal" in out
    assert f"(view: lightopt tensorboard {sweep_file})" in out

    assert main(["sweep", "show", str(sweep_file)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split() == [
        "number",
        "state",
        "value",
        "optimizer.init_args.lr",
        "data.init_args.batch_size",
        "duration_s",
        "seed",
    ]
    assert table[2].split()[:2] == ["0", "COMPLETE"] and table[-1].startswith("best: trial")

    assert main(["sweep", "show", "s", "--json"]) == 0  # by name: the default storage under runs/
    shown = json.loads(capsys.readouterr().out)
    assert [t["state"] for t in shown["trials"]] == ["COMPLETE", "COMPLETE"] and shown["metric"] == "val_loss"
    best = shown["best"]

    assert main(["sweep", "best", str(sweep_file), "--export", "best.yaml"]) == 0
    assert (
        f"to see how much of it was the seed: lightopt sweep reproduce {sweep_file} --trial {best['number']} --seeds 5"
    ) in capsys.readouterr().out
    exported = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert "study" not in exported and "search" not in exported
    assert exported["seed_everything"] == best["seed"]
    assert exported["optimizer"]["init_args"]["lr"] == best["params"]["optimizer.init_args.lr"]

    assert main(["fit", "best.yaml"]) == 0  # reruns the best trial: one epoch, the same seed
    fitted = capsys.readouterr().out
    val_loss = float(fitted.split("fit done:")[1].split("val_loss=")[1].split()[0].rstrip(","))
    assert val_loss == pytest.approx(best["value"], rel=1e-5)


def test_reproduce_a_trial_and_plot_the_study(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = sweep_dict(Path("runs"), n_trials=3)  # 2 params, seeded sampler and trials
    data["trainer"]["max_epochs"] = 1
    sweep_file = write(tmp_path / "digits.yaml", data)
    assert main(["sweep", "run", str(sweep_file)]) == 0
    capsys.readouterr()
    assert main(["sweep", "show", "s", "--json"]) == 0
    recorded = json.loads(capsys.readouterr().out)["trials"][1]["value"]

    assert main(["sweep", "reproduce", str(sweep_file), "--trial", "1"]) == 0
    out = capsys.readouterr().out
    assert "trial 1 of study 's' (COMPLETE)" in out and "val_loss (best over validation rounds)" in out
    values = {
        line.split()[0]: float(line.split()[1])
        for line in out.splitlines()
        if line.strip().startswith(("recorded", "reproduced"))
    }
    assert values["recorded"] == pytest.approx(recorded, abs=1e-8)  # printed to 10 digits
    assert values["reproduced"] == pytest.approx(recorded, abs=1e-6)
    assert "difference" in out and (tmp_path / "runs/s-reproduce/reproduce_0001").is_dir()
    assert not list((tmp_path / "runs/s").glob("reproduce*"))  # apart from the trials TensorBoard shows

    # With other seeds: the same params trained with trial_seed(recorded seed, 1..N), and the spread.
    assert main(["sweep", "reproduce", str(sweep_file), "--trial", "1", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    recorded_seed = int(out.split("), seed ")[1].split(",")[0])
    others = [trial_seed(recorded_seed, i) for i in (1, 2)]
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("seed ")]
    assert [int(row[1]) for row in rows] == others and "with 2 other seed(s), the same params:" in out
    reseeded = [float(row[2]) for row in rows]
    assert len(set(reseeded)) == 2 and recorded not in reseeded  # other seeds, other values
    better = sum(values["recorded"] < value for value in reseeded)
    assert f"the recorded value is better than {better} of 2" in out
    assert all((tmp_path / f"runs/s-reproduce/reproduce_0001_seed_{other}").is_dir() for other in others)
    assert main(["sweep", "reproduce", str(sweep_file), "--trial", "1", "--seeds", "-1"]) == 2
    assert capsys.readouterr().err == "lightopt sweep reproduce: `--seeds` must be >= 0, but got seeds=-1.\n"

    assert main(["sweep", "reproduce", "s", "--trial", "2"]) == 0  # by name: the recorded config
    assert "config from the trial's recorded config" in capsys.readouterr().out

    assert main(["sweep", "plot", str(sweep_file)]) == 0
    paths = capsys.readouterr().out.splitlines()
    names = ["optimization_history", "param_importances", "parallel_coordinate", "slice", "contour"]
    assert paths == [str(Path("runs/s/plots") / f"{name}.png") for name in names]
    for path in paths:
        assert (tmp_path / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main(["sweep", "plot", "s", "--out", "elsewhere"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == str(Path("elsewhere/optimization_history.png"))
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == sorted(f"{n}.png" for n in names)

    assert main(["sweep", "reproduce", str(sweep_file), "--trial", "9"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: `--trial` must be a trial of study 's', but got 9; its trials: 0 to 2.\n"
    assert captured.out == ""


def _bad(tmp_path, edit):
    data = sweep_dict(Path("runs"))
    edit(data)
    return str(write(tmp_path / "bad.yaml", data))


BAD = [
    (lambda p: ["sweep", "run", "missing.yaml"], "missing.yaml: no such file"),
    (lambda p: ["sweep", "run", _bad(p, lambda d: d["study"].update(n_trails=2))], "Did you mean 'n_trials'?"),
    (
        lambda p: [
            "sweep",
            "run",
            _bad(p, lambda d: d["search"].update({"optimizer.init_args.lr": {"low": 1.0, "high": 0.1}})),
        ],
        "bad.yaml:",
    ),
    (
        lambda p: ["sweep", "run", _bad(p, lambda d: d["model"].update(class_path="examples.digits.Nope"))],
        "`model.class_path` 'examples.digits.Nope' names no class",
    ),
    (lambda p: ["sweep", "run", _bad(p, lambda d: d.pop("study") and d.pop("search"))], "has no `study` block"),
    (lambda p: ["sweep", "run", _bad(p, lambda d: None), "--workers", "0"], "`--workers` must be an integer >= 1"),
    (lambda p: ["sweep", "run", _bad(p, lambda d: None), "--n-trials", "x"], "argument --n-trials: invalid int value"),
    (lambda p: ["sweep", "run", _bad(p, lambda d: None), "--storage", "sqlite:////no/dir/x.db"], "cannot be opened"),
    (
        lambda p: ["sweep", "show", "nosuchstudy"],
        "study 'nosuchstudy' has not been run yet (no journal at runs/nosuchstudy/study.journal)",
    ),
    (lambda p: ["sweep", "best", _bad(p, lambda d: None)], "has not been run yet (no journal at"),
    (lambda p: ["sweep", "frobnicate"], "invalid choice: 'frobnicate'"),
    (
        lambda p: ["sweep", "reproduce", "nosuchstudy", "--trial", "0"],
        "has not been run yet (no journal at runs/nosuchstudy",
    ),
    (lambda p: ["sweep", "reproduce", _bad(p, lambda d: None)], "the following arguments are required: --trial"),
    (lambda p: ["sweep", "plot", "nosuchstudy"], "has not been run yet (no journal at runs/nosuchstudy"),
    (lambda p: ["fit", _bad(p, lambda d: d["trainer"].update(max_epoch=1))], "Did you mean 'max_epochs'?"),
]


@pytest.mark.parametrize("argv, match", BAD)
def test_user_errors_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, argv, match):
    monkeypatch.chdir(tmp_path)
    assert main(argv(tmp_path)) == 2
    captured = capsys.readouterr()
    assert match in captured.err and captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.out == "" and not (tmp_path / "runs").exists()


def test_metric_never_logged_is_a_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "run", _bad(tmp_path, lambda d: d["study"].update(metric="val_los"))]) == 2
    assert "logged metrics: " in capsys.readouterr().err


def _python_m(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "lightopt", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )


def test_python_m_lightopt_exit_codes(tmp_path):
    ok = _python_m("sweep", "run", "--help", cwd=tmp_path)
    assert ok.returncode == 0 and "--n-trials N" in ok.stdout
    bad = _python_m("sweep", "run", "nope.yaml", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr == "error: nope.yaml: no such file\n" and bad.stdout == ""


RUN_CONFIG_BAD = [
    (["fit"], "lightopt fit: give a config FILE or --config BASE.yaml"),
    (["fit", "--config", "missing.yaml"], "missing.yaml: no such file"),
    (["fit", "run.yaml", "--trainer.max_epochs"], "`--trainer.max_epochs` needs a value"),
    (["fit", "run.yaml", "--trainer.max_epoch", "1"], "`trainer.max_epoch` is not a Trainer argument. Did you mean"),
    (
        ["fit", "run.yaml", "--trainer.max_epochs", "many"],
        "command line: `trainer.max_epochs`: Expected a <class 'int'>",
    ),
    (["sweep", "show", "s", "--trainer.max_epochs", "1"], "unrecognized arguments: --trainer.max_epochs 1"),
    (["fit", "run.yaml", "--model-class", "examples.digits.DigitsMLP"], "`model` must be a mapping of init args"),
]


@pytest.mark.parametrize("argv, match", RUN_CONFIG_BAD)
def test_run_config_command_line_errors_are_one_line(tmp_path, monkeypatch, capsys, argv, match):
    monkeypatch.chdir(tmp_path)
    data = {k: v for k, v in sweep_dict(Path("runs")).items() if k not in ("study", "search")}
    write(tmp_path / "run.yaml", data)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert match in captured.err and captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "lightning_logs").exists()


def test_export_makes_its_folder_or_says_why_not(sweep_file, tmp_path, capsys):
    assert main(["sweep", "run", str(sweep_file)]) == 0
    assert main(["sweep", "best", str(sweep_file), "--export", "new/folder/best.yaml"]) == 0
    assert (tmp_path / "new/folder/best.yaml").is_file()
    (tmp_path / "a_file").write_text("")
    capsys.readouterr()
    assert main(["sweep", "best", str(sweep_file), "--export", "a_file/best.yaml"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("lightopt sweep best: `--export` 'a_file/best.yaml' cannot be written") and err.count("\n") == 1
    )
