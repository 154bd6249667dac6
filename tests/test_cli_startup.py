"""The commands that read no model start without importing torch or Lightning (seconds on a busy machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_CHECK = """
import json, sys
from lightopt.cli import main
try:
    code = main({argv!r})
except SystemExit as exit_:
    code = exit_.code
heavy = sorted(m for m in ("torch", "lightning", "pytorch_lightning") if m in sys.modules)
print(json.dumps({{"code": code, "heavy": heavy}}))
"""


def _modules_after(argv: list[str], cwd: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _CHECK.format(argv=argv)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        ["sweep", "--help"],
        ["sweep", "show", "--help"],
        ["fit", "--help"],
        ["tensorboard", "--help"],
    ],
)
def test_help_and_version_import_no_torch(argv, tmp_path):
    result = _modules_after(argv, tmp_path)
    assert result == {"code": 0, "heavy": []}


def test_import_lightopt_is_lazy_and_complete():
    code = (
        "import sys, lightopt; assert 'torch' not in sys.modules; "
        "assert lightopt.optim.SGD and lightopt.ConfigureOptimizersMixin and lightopt.retrain_on_all_data; "
        "from lightopt import callbacks, schedules; assert 'torch' in sys.modules; "
        "assert set(lightopt.__all__) <= set(dir(lightopt)); print('ok')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.stdout == "ok\n", done.stderr


def test_unknown_attribute_is_an_attribute_error():
    import lightopt

    with pytest.raises(AttributeError, match="has no attribute 'SDG'"):
        lightopt.SDG  # noqa: B018


def test_show_and_best_of_a_stored_study_import_no_torch(tmp_path):
    import optuna

    from lightopt.sweep.spec import trial_seed

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal")))
    study = optuna.create_study(study_name="s", storage=storage)
    study.add_trial(
        optuna.trial.create_trial(
            value=0.5,
            params={"x": 1.0},
            distributions={"x": optuna.distributions.FloatDistribution(0, 2)},
            user_attrs={"seed": 3, "config": {"model": {"class_path": "m.M"}}},
        )
    )
    storage = str(tmp_path / "journal")
    for argv in (
        ["sweep", "show", "s", "--storage", storage],
        ["sweep", "show", "s", "--storage", storage, "--json"],
        ["sweep", "best", "s", "--storage", storage],
    ):
        assert _modules_after(argv, tmp_path) == {"code": 0, "heavy": []}, argv
    study.set_user_attr("lightopt", {"metric": "val_loss"})
    study.set_user_attr("seed_runs", {"0": {str(trial_seed(3, 1)): 0.75}})  # as `sweep best --seeds 1` records
    for argv in (
        ["sweep", "best", "s", "--storage", storage],  # a note of the recorded runs
        ["sweep", "best", "s", "--storage", storage, "--seeds", "1"],  # every run recorded: nothing to train
    ):
        assert _modules_after(argv, tmp_path) == {"code": 0, "heavy": []}, argv


def test_show_before_the_first_run_says_how_to_run_it(tmp_path, capsys):
    from lightopt.cli import main

    (tmp_path / "s.yaml").write_text(
        "study: {name: s, log_dir: " + str(tmp_path / "runs") + "}\n"
        "model: {class_path: examples.digits.DigitsMLP}\n"
        "data: {class_path: examples.digits.DigitsDataModule}\n"
    )
    for command in (["sweep", "show"], ["sweep", "best"], ["tensorboard"]):
        assert main([*command, str(tmp_path / "s.yaml")]) == 2
        err = capsys.readouterr().err
        assert err == (
            f"error: study 's' has not been run yet (no journal at {tmp_path}/runs/s/study.journal): "
            f"run it with `lightopt sweep run {tmp_path}/s.yaml`.\n"
        )
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("threads, flag, expected", [(1, [], 1), (1, ["--threads", "2"], 2), (None, [], "torch")])
def test_fit_runs_at_the_files_study_threads(tmp_path, monkeypatch, threads, flag, expected):
    import torch

    import lightopt.sweep
    from lightopt.cli import main
    from lightopt.runconfig import ConfigError

    seen = []

    def fit(run, spec=None):  # records the thread count the fit would train with, then stops
        seen.append(torch.get_num_threads())
        raise ConfigError("stopped before training")

    monkeypatch.setattr(lightopt.sweep, "fit", fit)
    study = f"study: {{name: s, threads: {threads}}}\n" if threads is not None else ""
    (tmp_path / "s.yaml").write_text(
        study + "model: {class_path: examples.digits.DigitsMLP}\ndata: {class_path: examples.digits.DigitsDataModule}\n"
    )
    default = torch.get_num_threads()
    assert main(["fit", str(tmp_path / "s.yaml"), *flag]) == 2
    assert seen == [default if expected == "torch" else expected] and torch.get_num_threads() == default


def _stored_study(tmp_path: Path) -> None:
    import optuna

    (tmp_path / "runs" / "s").mkdir(parents=True)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "runs" / "s" / "study.journal"))
    )
    study = optuna.create_study(study_name="s", storage=storage)
    for x in (0.5, 1.5):
        study.add_trial(
            optuna.trial.create_trial(
                value=x,
                params={"x": x},
                user_attrs={"config": {"x": x}, "seed": 1},
                distributions={"x": optuna.distributions.FloatDistribution(0, 2)},
            )
        )


BAD_PATHS = [
    (["sweep", "plot", "s", "--out", "a_file"], "error: a_file: File exists (a file is in the way of a folder"),
    (["sweep", "plot", "s", "--out", "a_file/plots"], "error: a_file/plots: Not a directory (a file is in the way"),
    (["sweep", "show", "s", "--storage", "runs"], "error: `--storage` 'runs' is a folder: give the journal file"),
    (["sweep", "show", "s", "--log-dir", "a_file"], "error: study 's' has not been run yet"),
    (["tensorboard", "s", "--storage", "runs"], "error: `--storage` 'runs' is a folder"),
    (["sweep", "best", "s", "--export", "a_file/best.yaml"], "`--export` 'a_file/best.yaml' cannot be written"),
    (["sweep", "best", "s", "--seeds", "1", "--export", "a_file/b.yaml"], "`--export` 'a_file/b.yaml' cannot be"),
]


@pytest.mark.parametrize("argv, match", BAD_PATHS)
def test_paths_that_cannot_be_used_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, argv, match):
    from lightopt.cli import main

    monkeypatch.chdir(tmp_path)
    _stored_study(tmp_path)
    (tmp_path / "a_file").write_text("")
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1 and "Traceback" not in err


def test_fit_into_a_file_where_its_log_folder_goes_is_one_line(tmp_path):
    (tmp_path / "a_file").write_text("")
    (tmp_path / "f.yaml").write_text(
        "model: {class_path: examples.digits.DigitsMLP, init_args: {hidden: 8}}\n"
        "data: {class_path: examples.digits.DigitsDataModule}\n"
        "trainer: {max_epochs: 1, limit_train_batches: 1, limit_val_batches: 1, "
        "default_root_dir: a_file, accelerator: cpu}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "lightopt", "fit", "f.yaml", "--threads", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"error: {tmp_path}/a_file/lightning_logs: Not a directory (a file is in "
        f"the way of a folder: remove it or choose another path)"
    )


_OUTSIDE = """
import sys
from lightopt.cli import main
sys.path[:] = [p for p in sys.path if p not in ({root!r}, "")]  # lightopt is imported; the repository is left
raise SystemExit(main({argv!r}))
"""


def test_a_shipped_sweep_run_from_outside_the_repository_says_where_classes_come_from(tmp_path):
    """`examples.digits` is imported from the current directory and PYTHONPATH: from elsewhere it is not found."""
    argv = ["sweep", "run", str(ROOT / "sweeps" / "digits_sgd.yaml"), "--n-trials", "1"]
    done = subprocess.run(
        [sys.executable, "-c", _OUTSIDE.format(root=str(ROOT), argv=argv)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "no module 'examples'" in done.stderr
    assert "class paths are imported from the current directory and PYTHONPATH" in done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written
