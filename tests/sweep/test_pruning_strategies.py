"""A pruned trial is recorded as pruned under every strategy Lightning offers on one machine.

A user's own script (``tests/sweep/pruning_script.py``: ``study.optimize`` over ``trainer.fit``,
trial 0 pruned at step 1, trial 1 not) runs with each strategy (CPU, gloo, 2 processes) and each
kind of storage, with lightopt's protocol and with optuna-integration's. Where the storage cannot
carry the decision back (in-memory storage, worker processes) the callback refuses the strategy
with one line that says what to use. The scenarios of optuna-integration's own tests are mirrored
for ``PyTorchLightningPruningCallback``: TrialPruned reaching the objective, a completed trial's
value, an unknown monitor warned about, ``check_pruned`` under DDP, a refused storage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import optuna
import pytest

from lightopt.callbacks import EarlyStopping
from lightopt.sweep import PruningCallback, PyTorchLightningPruningCallback
from tests.sweep import pruning_script
from tests.sweep.pruning_script import Net, PruneTrialZero, loader

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "sweep" / "pruning_script.py"
_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK")

PRUNED_THEN_COMPLETE = {
    "lightopt": {"states": ["PRUNED", "COMPLETE"], "steps": [[1], [1, 2, 3]], "error": None},  # rounds
    "optuna-integration": {"states": ["PRUNED", "COMPLETE"], "steps": [[0, 1], [0, 1, 2]], "error": None},  # epochs
}


def _script(tmp_path, strategy, devices, storage, *protocols):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for key in _ENV:
        env.pop(key, None)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), strategy, str(devices), storage, *protocols],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((tmp_path / "result.json").read_text())


@pytest.mark.parametrize("storage", ["memory", "journal"])
def test_single_device(tmp_path, storage):
    assert pruning_script.run(str(tmp_path), "auto", 1, storage) == PRUNED_THEN_COMPLETE


# Each worker process costs an interpreter start, so each protocol meets each spawning strategy once.
@pytest.mark.parametrize(
    ("strategy", "storage", "protocols"),
    [
        ("ddp", "memory", ("lightopt", "optuna-integration")),
        ("ddp_spawn", "journal", ("lightopt",)),  # the report: pruned in the child, COMPLETE in the parent
        ("ddp_fork", "journal", ("optuna-integration",)),  # check_pruned() after fit, as in DDP
    ],
)
def test_two_processes_record_the_pruned_trial_as_pruned(tmp_path, strategy, storage, protocols):
    """``ddp`` keeps rank 0 in the caller's process; spawn and fork carry the decision through the storage."""
    expected = {protocol: PRUNED_THEN_COMPLETE[protocol] for protocol in protocols}
    assert _script(tmp_path, strategy, 2, storage, *protocols) == expected


@pytest.mark.parametrize(
    ("strategy", "protocol", "named"),
    [("ddp_spawn", "optuna-integration", "'ddp_spawn'"), ("ddp_fork", "lightopt", "'ddp_fork' or 'ddp_notebook'")],
)
def test_in_memory_storage_under_worker_processes_is_refused_with_the_fix(tmp_path, strategy, protocol, named):
    result = _script(tmp_path, strategy, 2, "memory", protocol)[protocol]
    assert result["states"] == ["FAIL"]  # not COMPLETE: the decision is never lost
    last_line = result["error"].strip().splitlines()[-1]
    assert f"cannot record a decision made in the worker processes of strategy {named}" in last_line
    assert "use strategy='ddp', or a storage that processes share" in last_line


# optuna-integration's scenarios, one process ------------------------------------------------


def _objective(callbacks=(), monitor="val_loss", check=True):
    def objective(trial):
        pruning = PyTorchLightningPruningCallback(trial, monitor=monitor)
        trainer = pl.Trainer(
            max_epochs=2,
            accelerator="cpu",
            callbacks=[pruning, *callbacks],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        trainer.fit(Net(0.01), train_dataloaders=loader(), val_dataloaders=loader())
        if check:
            pruning.check_pruned()
        return 1.0

    return objective


@pytest.mark.parametrize(("prune", "state"), [(True, "PRUNED"), (False, "COMPLETE")])
def test_integration_callback_prunes_or_completes(prune, state):
    class Always(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return prune

    study = optuna.create_study(pruner=Always())
    study.optimize(_objective(check=False), n_trials=1)
    trial = study.trials[0]
    assert trial.state.name == state
    assert sorted(trial.intermediate_values) == ([0] if prune else [0, 1])  # reported at each epoch
    if not prune:
        assert trial.value == 1.0


def test_integration_callback_trial_pruned_reaches_the_objective_and_early_stopping_restores():
    early_stopping = EarlyStopping("val_loss", patience=5)
    seen = []

    def objective(trial):
        try:
            return _objective(callbacks=[early_stopping])(trial)
        except optuna.TrialPruned as pruned:
            seen.append(str(pruned))
            raise

    study = optuna.create_study(pruner=PruneTrialZero())
    study.optimize(objective, n_trials=1)
    assert study.trials[0].state.name == "PRUNED" and seen == ["Trial was pruned at epoch 1."]
    assert early_stopping._restored  # θ* went back into the module on the way out


def test_integration_callback_unknown_monitor_warns_and_completes():
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner())
    with pytest.warns(UserWarning, match=r"'InvalidMonitor' is not in the evaluation logs"):
        study.optimize(_objective(monitor="InvalidMonitor"), n_trials=1)
    assert study.trials[0].state.name == "COMPLETE" and study.trials[0].intermediate_values == {}


def test_integration_callback_port_keeps_the_constructor_and_check_pruned():
    trial = optuna.create_study().ask()
    callback = PyTorchLightningPruningCallback(trial, "val_acc")
    assert callback.monitor == "val_acc" and callback.check_pruned() is None
    assert isinstance(callback, PruningCallback)
