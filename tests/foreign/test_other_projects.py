"""Projects beyond subclass mode: LightningCLI(Model, DataModule), `pytorch_lightning` modules, no validation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning
import yaml

from lightopt.cli import main
from lightopt.runconfig import CliSpec, build

ROOT = Path(__file__).resolve().parents[2]
FIXED = "tests.foreign.fixed_project.project"
FLAGS = ["--model-class", f"{FIXED}.BlobClassifier", "--datamodule-class", f"{FIXED}.Blobs"]


def _fixed_main(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tests/foreign/fixed_project/main.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )


def test_fixed_class_project_fit_and_sweep(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text(
        "model: {hidden: 8, lr: 0.05}\ndata: {batch_size: 32}\n"
        "trainer: {max_epochs: 2, accelerator: cpu, enable_progress_bar: false}\n"
    )
    printed = _fixed_main("fit", "--config", "config.yaml", "--print_config", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr[-2000:]
    (tmp_path / "printed.yaml").write_text(printed.stdout)

    assert main(["fit", "--config", "printed.yaml"]) == 2  # without the classes: one line that says how to give them
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "printed.yaml" in err and "model_class" in err

    assert main(["fit", "--config", "printed.yaml", *FLAGS, "--trainer.max_epochs", "1"]) == 0
    assert "val_acc=" in capsys.readouterr().out

    (tmp_path / "search.yaml").write_text(
        f"lightning_cli: {{model_class: {FIXED}.BlobClassifier, datamodule_class: {FIXED}.Blobs}}\n"
        "study: {name: blobs, n_trials: 2, sampler: {name: random, seed: 1}, pruner: none, threads: 1}\n"
        "search:\n  model.hidden: {choices: [4, 16]}\n  model.lr: {low: 1e-2, high: 2e-1, log: true}\n"
    )
    assert main(["sweep", "run", "search.yaml", "--config", "printed.yaml"]) == 0
    capsys.readouterr()
    assert main(["sweep", "show", "blobs", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [t["state"] for t in shown["trials"]] == ["COMPLETE", "COMPLETE"]
    assert main(["sweep", "best", "search.yaml", "--config", "printed.yaml", "--export", "best.yaml"]) == 0
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert best["model"] == {
        "hidden": shown["best"]["params"]["model.hidden"],
        "lr": shown["best"]["params"]["model.lr"],
    }
    done = _fixed_main("fit", "--config", "best.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]


PL_SWEEP = """\
study: {name: pl, n_trials: 2, sampler: {name: random, seed: 0}, pruner: none, threads: 1}
model: {class_path: tests.foreign.pl_project.LitAutoEncoder, init_args: {bottleneck: 2}}
data: {class_path: tests.foreign.pl_project.RandomVectors}
trainer: {max_epochs: 2, accelerator: cpu, enable_checkpointing: false, callbacks: [
  {class_path: lightopt.callbacks.EarlyStopping, init_args: {monitor: val_loss, patience: 3}}]}
search:
  model.init_args.lr: {low: 1.0e-3, high: 1.0e-1, log: true}
"""


def test_pytorch_lightning_project_is_swept_with_its_own_trainer(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pl.yaml").write_text(PL_SWEEP)
    config = yaml.safe_load(PL_SWEEP)
    run = build({k: v for k, v in config.items() if k not in ("study", "search")}, seed=0)
    assert isinstance(run.trainer, pytorch_lightning.Trainer) and isinstance(
        run.model, pytorch_lightning.LightningModule
    )
    assert main(["sweep", "run", "pl.yaml"]) == 0
    capsys.readouterr()
    assert main(["sweep", "show", "pl", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [t["state"] for t in shown["trials"]] == ["COMPLETE", "COMPLETE"]
    assert main(["fit", "pl.yaml"]) == 0


def test_module_without_validation_step_says_so_and_keeps_no_study(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "noval.yaml").write_text(
        "study: {name: noval, n_trials: 2, pruner: none, threads: 1}\n"
        "model: {class_path: tests.foreign.pl_project.NoValidation}\n"
        "trainer: {max_epochs: 1, accelerator: cpu, enable_checkpointing: false}\n"
        "search: {model.init_args.lr: {low: 0.01, high: 0.1}}\n"
    )
    assert main(["sweep", "run", "noval.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NoValidation has no validation_step" in err and "Traceback" not in err
    assert main(["sweep", "show", "noval.yaml"]) == 2  # nothing recorded
    assert "study 'noval' has not been run yet" in capsys.readouterr().err  # nothing kept: as before the first run


def test_a_corrected_metric_runs_after_a_typo(tmp_path, monkeypatch, capsys):
    from tests.sweep.helpers import sweep_dict, write

    monkeypatch.chdir(tmp_path)
    data = sweep_dict(Path("runs"), n_trials=1, metric="val_los")
    data["trainer"]["max_epochs"] = 1
    write(tmp_path / "typo.yaml", data)
    assert main(["sweep", "run", "typo.yaml"]) == 2
    assert "logged metrics: " in capsys.readouterr().err
    data["study"]["metric"] = "val_loss"
    write(tmp_path / "typo.yaml", data)
    assert main(["sweep", "run", "typo.yaml"]) == 0
    capsys.readouterr()
    assert main(["sweep", "show", "s", "--json"]) == 0
    assert [t["state"] for t in json.loads(capsys.readouterr().out)["trials"]] == ["COMPLETE"]


@pytest.mark.parametrize("spec", [CliSpec(model_class=f"{FIXED}.BlobClassifier", datamodule_class=f"{FIXED}.Blobs")])
def test_fixed_classes_build_without_class_paths(spec):
    run = build(
        {"model": {"hidden": 3}, "data": {"batch_size": 8}, "trainer": {"max_epochs": 1, "logger": False}},
        spec=spec,
        seed=1,
    )
    assert run.model.hparams.hidden == 3 and run.datamodule.batch_size == 8
