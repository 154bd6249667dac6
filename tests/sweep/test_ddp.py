"""DDP for real (2 CPU processes, gloo): sweep trials, `lightopt fit`, PruningCallback under Lightning's launcher."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from optuna.trial import TrialState
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightopt.sweep import run_sweep
from lightopt.sweep.spec import parse
from lightopt.sweep.trial import ddp_processes
from tests.sweep.helpers import PruneAt, sweep_dict, write

ROOT = Path(__file__).resolve().parents[2]
DDP = {"strategy": "ddp", "devices": 2, "accelerator": "cpu"}
_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS")


def _records(directory: Path, run: str) -> dict[int, dict]:
    return {
        rank: json.loads((directory / f"{run}_rank{rank}.json").read_text())
        for rank in (0, 1)
        if (directory / f"{run}_rank{rank}.json").is_file()
    }


def _event_pids(directory: Path) -> set[int]:
    """The pids in the names of the TensorBoard event files under ``directory`` (events.out.tfevents.T.HOST.PID.N)."""
    return {int(path.name.split(".")[-2]) for path in directory.rglob("events.out.tfevents.*")}


def _children_of_this_process() -> list[str]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and b"resource_tracker" not in _cmdline(stat.parent):
            children.append(stat.parent.name)  # multiprocessing's resource tracker (started by --workers) stays
    return children


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


def test_sweep_of_ddp_trials_complete_pruned_and_a_crashed_rank(tmp_path):
    data = sweep_dict(tmp_path / "runs", n_trials=3)
    recording = {"hidden": 16, "record_dir": str(tmp_path), "broken_rank": 1, "broken_run": "trial_0002"}
    data["model"] = {"class_path": "tests.sweep.ddp_helpers.RecordingMLP", "init_args": recording}
    data["trainer"].update(DDP, val_check_interval=0.5)
    data["search"]["optimizer.init_args.momentum"] = {"low": 0.5, "high": 0.95}
    environ = {key: os.environ.get(key) for key in _ENV}
    threads = torch.get_num_threads()
    out = io.StringIO()
    result = run_sweep(parse(data, "sweep.yaml"), pruner=PruneAt(1, 2), out=out)

    trials = result.study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    for trial, steps in zip(trials[:2], (8, 4)):  # 2 epochs of 4 batches per rank; pruned at the 2nd of 2 rounds/epoch
        records = _records(tmp_path, f"trial_{trial.number:04d}")
        assert sorted(records) == [0, 1] and records[0]["pid"] == os.getpid() != records[1]["pid"]
        for record in records.values():  # every rank trained with the trial's parameters and stopped together
            assert record["world_size"] == 2 and record["global_step"] == steps
            assert record["lr"] == trial.params["optimizer.init_args.lr"]
            assert record["momentum"] == trial.params["optimizer.init_args.momentum"]
        # the study holds what rank 0 saw (each rank validates its own half of the validation set)
        rank0, rank1 = records[0]["val_losses"], records[1]["val_losses"]
        assert (
            trial.intermediate_values
            == {round_: value for round_, value in enumerate(rank0, 1)}
            != dict(enumerate(rank1, 1))
        )
        assert trial.user_attrs["best_value"] == min(rank0) and trial.user_attrs["global_step"] == steps
        events = EventAccumulator(trial.user_attrs["log_dir"]).Reload()
        assert [event.value for event in events.Scalars("val_loss")] == pytest.approx(rank0)
    assert trials[0].value == min(trials[0].intermediate_values.values())
    assert trials[1].user_attrs["pruned_at"] == 2 and "trial 1 pruned at step 2" in out.getvalue()
    assert trials[2].user_attrs["fail_reason"] == (
        "RankFailed: rank 1 exited with code 1: RuntimeError: rank 1 broken on purpose"
    )
    assert "[3/3] trial 2 failed: RankFailed: rank 1" in out.getvalue()

    # only rank 0 wrote to the study: one report per validation round of rank 0, nothing from rank 1
    journal = [json.loads(line) for line in (tmp_path / "runs" / "s" / "study.journal").read_text().splitlines()]
    assert sum("intermediate_value" in op for op in journal) == 4 + 2
    # only rank 0 wrote TensorBoard files: every event file was written by this process
    assert _event_pids(tmp_path / "runs" / "s") == {os.getpid()}
    # every rank process is gone, and the next trial finds this process as it was
    assert _children_of_this_process() == []
    for record in (_records(tmp_path, "trial_0000")[1], _records(tmp_path, "trial_0001")[1]):
        with pytest.raises(ProcessLookupError):
            os.kill(record["pid"], 0)
    assert {key: os.environ.get(key) for key in _ENV} == environ and torch.get_num_threads() == threads
    assert not torch.distributed.is_initialized()


_SCRIPT = """
import json, os, sys
import lightning as L
import optuna
from examples.digits import DigitsDataModule
from lightopt.sweep import PruningCallback
from tests.sweep.helpers import PruneAt
from tests.sweep.ddp_helpers import RecordingMLP

out = sys.argv[1]
rank = int(os.environ.get("LOCAL_RANK", 0))  # Lightning's ddp launcher starts rank 1 as this script again
trial = None
if rank == 0:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(out + "/study.journal"))
    trial = optuna.create_study(storage=storage, study_name="ddp", pruner=PruneAt(0, {prune_at})).ask()
pruning = PruningCallback(trial, "val_loss", report_at="examples")
L.seed_everything(0, verbose=False)
trainer = L.Trainer(strategy="ddp", devices=2, accelerator="cpu", max_epochs=3, limit_train_batches=3,
                    logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    default_root_dir=out + "/fit", callbacks=[pruning])
trainer.fit(RecordingMLP(record_dir=out, hidden=16), datamodule=DigitsDataModule(batch_size=100))
with open(f"{{out}}/pruning_rank{{rank}}.json", "w") as file:
    json.dump({{"history": pruning.history, "pruned": pruning.pruned}}, file)
"""


def test_pruning_callback_under_lightnings_own_ddp_launcher_counts_examples_of_all_ranks(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(_SCRIPT.format(prune_at=1200)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for key in _ENV:
        env.pop(key, None)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    pruning = {rank: json.loads((tmp_path / f"pruning_rank{rank}.json").read_text()) for rank in (0, 1)}
    # 3 batches of 100 per rank and epoch, 2 ranks: 600 examples per epoch; pruned after the second epoch
    assert [step for step, _ in pruning[0]["history"]] == [600, 1200]
    assert pruning[0]["pruned"] == pruning[1]["pruned"] == 1200 and pruning[1]["history"] == []
    records = _records(tmp_path, "fit")
    assert records[0]["global_step"] == records[1]["global_step"] == 6  # both ranks stopped at the same step
    assert [value for _, value in pruning[0]["history"]] == records[0]["val_losses"]


def test_lightopt_fit_runs_a_ddp_config_and_reports_once(tmp_path):
    config = sweep_dict(tmp_path)
    del config["study"], config["search"]
    config["trainer"].update(DDP, default_root_dir=str(tmp_path / "fit"))
    config["model"] = {
        "class_path": "tests.sweep.ddp_helpers.RecordingMLP",
        "init_args": {"hidden": 16, "record_dir": str(tmp_path)},
    }
    path = write(tmp_path / "fit.yaml", config)
    env = {"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    process = subprocess.Popen(
        [sys.executable, "-m", "lightopt", "fit", str(path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    assert stdout.count("fit done: ") == 1 and "val_loss=" in stdout  # rank 1 prints nothing
    records = _records(tmp_path, "fit")
    assert records[0]["pid"] == process.pid and records[1]["global_step"] == records[0]["global_step"] == 8
    assert _event_pids(tmp_path / "fit") == {process.pid}  # Lightning's TensorBoardLogger writes on rank 0 only


@pytest.mark.parametrize(
    "trainer, processes",
    [
        ({"max_epochs": 2}, 0),
        ({"strategy": "ddp", "devices": 2, "accelerator": "cpu"}, 2),
        ({"strategy": "ddp_find_unused_parameters_true", "devices": "3"}, 3),
        ({"strategy": "ddp", "devices": [0, 1]}, 2),
        ({"strategy": "ddp", "devices": "0,1,"}, 2),
        ({"strategy": "ddp", "accelerator": "cpu"}, 1),
        ({"strategy": "auto", "devices": 2}, 0),
    ],
)
def test_ddp_processes(trainer, processes):
    assert ddp_processes(trainer) == processes


@pytest.mark.parametrize(
    "trainer, match",
    [
        ({"strategy": "ddp_spawn", "devices": 2}, r"`trainer.strategy` must be 'ddp' in a sweep trial .*='ddp_spawn'"),
        ({"strategy": "ddp_fork_find_unused_parameters_true", "devices": 2}, r"must be 'ddp' in a sweep trial"),
        ({"strategy": "ddp", "devices": 2, "num_nodes": 2}, r"`trainer.num_nodes` must be 1 .* num_nodes=2"),
        ({"strategy": "ddp", "devices": 0}, r"`trainer.devices` must be an int >= 1, .* devices=0"),
    ],
)
def test_ddp_processes_refuses(trainer, match):
    with pytest.raises(ValueError, match=match):
        ddp_processes(trainer)


def test_spawning_strategy_fails_the_trial_with_the_fix(tmp_path):
    data = sweep_dict(tmp_path, n_trials=1)
    data["trainer"].update(strategy="ddp_spawn", devices=2)
    result = run_sweep(parse(data, "sweep.yaml"), out=io.StringIO())
    assert result.study.trials[0].state == TrialState.FAIL
    assert "must be 'ddp' in a sweep trial" in result.study.trials[0].user_attrs["fail_reason"]
