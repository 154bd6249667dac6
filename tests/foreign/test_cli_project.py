"""A LightningCLI project in subclass mode, as its authors wrote it: fitted by LightningCLI and by lightopt, then swept.

The project (tests/foreign/cli_project) has a nested backbone (`model.init_args.net`), its own
CSVLogger, LightningCLI's ReduceLROnPlateau on its own metric name (`valid_loss`) and a YAML 1.2
float (`lr: 1e-2`). The config fed to lightopt is the one its own `--print_config` prints, verbatim.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lightopt.cli import main

ROOT = Path(__file__).resolve().parents[2]
PROJECT = Path(__file__).parent / "cli_project"


def _project(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PROJECT / "main.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )


def _valid_losses(version: Path) -> list[float]:
    return [
        float(row["valid_loss"]) for row in csv.DictReader((version / "metrics.csv").open()) if row.get("valid_loss")
    ]


def _last_valid_loss(version: Path) -> float:
    return _valid_losses(version)[-1]


@pytest.fixture(scope="module")
def printed(tmp_path_factory) -> Path:
    """The project's config as `python main.py fit --config config.yaml --print_config` prints it."""
    folder = tmp_path_factory.mktemp("cli_project")
    shutil.copy(PROJECT / "config.yaml", folder / "config.yaml")
    done = _project("fit", "--config", "config.yaml", "--print_config", cwd=folder)
    assert done.returncode == 0, done.stderr[-2000:]
    (folder / "printed.yaml").write_text(done.stdout)
    printed = yaml.safe_load(done.stdout)
    assert {"ckpt_path", "weights_only"} <= set(printed) and printed["trainer"]["callbacks"] is None
    return folder / "printed.yaml"


def test_lightopt_fit_of_print_config_output_trains_what_lightning_cli_trains(printed, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    done = _project("fit", "--config", str(printed), cwd=tmp_path)  # LightningCLI itself
    assert done.returncode == 0, done.stderr[-2000:]
    assert main(["fit", "--config", str(printed)]) == 0  # the same file, verbatim
    out = capsys.readouterr().out
    versions = sorted((tmp_path / "csv_logs/regression").iterdir())
    assert [v.name for v in versions] == ["version_0", "version_1"]  # the project's own logger, both times
    by_lightning_cli, by_lightopt = (_last_valid_loss(v) for v in versions)
    assert by_lightopt == pytest.approx(by_lightning_cli, rel=1e-6)  # same seed, same objects, same result
    assert f"valid_loss={by_lightopt:.6g}" in out


def test_dotted_overrides_and_a_second_config_file(printed, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "short.yaml").write_text("trainer:\n  max_epochs: 1\n")
    argv = [
        "fit",
        "--config",
        str(printed),
        "--config",
        "short.yaml",
        "--model.init_args.net.init_args.hidden",
        "4",
        "--trainer.limit_train_batches=2",
    ]
    assert main(argv) == 0
    rows = list(csv.DictReader((tmp_path / "csv_logs/regression/version_0/metrics.csv").open()))
    assert {int(row["epoch"]) for row in rows} == {0} and max(int(row["step"]) for row in rows) <= 2
    capsys.readouterr()


def test_sweep_from_the_project_config_then_export_for_the_project(printed, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "search.yaml").write_text(
        "study: {name: regression, metric: valid_loss, n_trials: 2, sampler: {name: random, seed: 0}, pruner: none,\n"
        "        threads: 1}\n"
        "trainer: {max_epochs: 2}\n"
        "search:\n"
        "  model.init_args.net.init_args.hidden: {choices: [4, 12]}\n"
        "  optimizer.init_args.lr: {low: 1e-3, high: 1.0e-1, log: true}\n"
    )
    assert main(["sweep", "run", "search.yaml", "--config", str(printed)]) == 0
    assert "best trial" in capsys.readouterr().out
    assert main(["sweep", "show", "regression", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [t["state"] for t in shown["trials"]] == ["COMPLETE", "COMPLETE"]
    # The project's CSVLogger is kept beside lightopt's TensorBoard run of each trial.
    assert len(list((tmp_path / "csv_logs/regression").iterdir())) == 2
    assert all(list((tmp_path / f"runs/regression/trial_000{i}").glob("events.out.tfevents.*")) for i in (0, 1))

    assert main(["sweep", "best", "search.yaml", "--config", str(printed), "--export", "best.yaml"]) == 0
    capsys.readouterr()
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    params = shown["best"]["params"]
    assert best["model"]["init_args"]["net"]["init_args"]["hidden"] == params["model.init_args.net.init_args.hidden"]
    assert best["optimizer"]["init_args"]["lr"] == params["optimizer.init_args.lr"]
    assert best["trainer"]["max_epochs"] == 2 and best["seed_everything"] == shown["best"]["seed"]
    done = _project("fit", "--config", "best.yaml", cwd=tmp_path)  # the project's own main.py takes the export
    assert done.returncode == 0, done.stderr[-2000:]
    assert min(_valid_losses(sorted((tmp_path / "csv_logs/regression").iterdir())[-1])) == pytest.approx(
        shown["best"]["value"], rel=1e-5
    )


def test_the_projects_own_lightning_cli_subclass_links_its_arguments(tmp_path, monkeypatch, capsys):
    from lightopt.runconfig import CliSpec, build, read_yaml

    monkeypatch.chdir(tmp_path)
    config, _ = read_yaml(PROJECT / "config.yaml")
    del config["model"]["init_args"]["net"]["init_args"]["in_features"]  # the link sets it from the data
    config["data"]["init_args"]["in_features"] = 5
    config["trainer"].update(logger=False)
    run = build(config, spec=CliSpec(cli_class="tests.foreign.cli_project.cli.RegressionCLI"), seed=0)
    assert run.model.net.layers[0].in_features == 5

    (tmp_path / "base.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (tmp_path / "search.yaml").write_text(
        "config: [base.yaml]\nlightning_cli: {class_path: tests.foreign.cli_project.cli.RegressionCLI}\n"
        "study: {name: linked, metric: valid_loss, n_trials: 2, sampler: {name: random, seed: 0}, pruner: none}\n"
        "trainer: {max_epochs: 1}\nsearch:\n  data.init_args.in_features: {choices: [3, 6]}\n"
    )
    assert main(["sweep", "run", "search.yaml"]) == 0  # a width the backbone did not follow would fail each trial
    capsys.readouterr()
    assert main(["sweep", "show", "linked", "--json"]) == 0
    assert [t["state"] for t in json.loads(capsys.readouterr().out)["trials"]] == ["COMPLETE", "COMPLETE"]
