"""`lightopt sweep best --seeds N`: the top trials trained with other seeds, the best mean recommended, runs reused.

The sweep runs a foreign module (not lightopt's digits MLP) whose validation loss is a known sum of
its setting's part and its seed's part, ``a + (seed % 97) / 97``: every run's value is known
exactly, so the test checks the means, the seeds and the recommendation, not just that a line
is printed.
"""

from __future__ import annotations

import json
import math
import signal
import statistics
import time
from pathlib import Path

import lightning as L
import optuna
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from lightopt.cli import main
from lightopt.sweep.spec import trial_seed
from tests.sweep.fault_helpers import start, wait_for
from tests.sweep.helpers import load_journal, write


def seed_part(seed: int) -> float:
    return (seed % 97) / 97


class SeedNoise(L.LightningModule):
    """``val_loss = a + (seed % 97) / 97``, the seed read back from torch (set by ``seed_everything``).

    Each fit appends ``"a seed"`` to ``runs_file``, so a test counts the runs that trained; the fit after
    ``interrupt_after`` of them raises ``KeyboardInterrupt``, the fit after ``stall_after`` of them waits for a
    real Ctrl-C (``<runs_file>.stalled`` says it waits); a seed in ``nan_seeds`` validates NaN.
    """

    def __init__(
        self,
        a: float = 0.0,
        runs_file: str = "",
        interrupt_after: int = 0,
        stall_after: int = 0,
        nan_seeds: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.a, self.runs_file = a, runs_file
        self.interrupt_after, self.stall_after = interrupt_after, stall_after
        self.seed = torch.initial_seed()
        self.nan = self.seed in (nan_seeds or [])
        self.layer = torch.nn.Linear(1, 1)

    def on_fit_start(self) -> None:
        if self.runs_file:
            runs = Path(self.runs_file)
            trained = len(runs.read_text().splitlines()) if runs.exists() else 0
            if self.interrupt_after and trained >= self.interrupt_after:
                raise KeyboardInterrupt  # as Ctrl-C in the middle of the command
            if self.stall_after and trained >= self.stall_after:
                Path(f"{runs}.stalled").touch()
                while True:  # until the test sends SIGINT
                    time.sleep(0.05)
            with runs.open("a") as file:
                file.write(f"{self.a} {self.seed}\n")

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", torch.tensor(math.nan if self.nan else self.a + seed_part(self.seed)))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.ones(4, 1)), batch_size=2)

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.ones(2, 1)), batch_size=2)


@pytest.fixture
def noisy_sweep(tmp_path, monkeypatch, capsys):
    """A 6-trial sweep of SeedNoise, run: the sweep file, and the file its runs are counted in."""
    monkeypatch.chdir(tmp_path)
    runs_file = tmp_path / "runs.txt"
    data = {
        "study": {
            "name": "noisy",
            "n_trials": 6,
            "seed": 0,
            "sampler": {"name": "random", "seed": 0},
            "pruner": "none",
            "threads": 1,
            "log_dir": "runs",
        },
        "model": {"class_path": "tests.sweep.test_best_seeds.SeedNoise", "init_args": {"runs_file": str(runs_file)}},
        "trainer": {"max_epochs": 1, "enable_checkpointing": False, "accelerator": "cpu"},
        "search": {"model.init_args.a": {"low": 0.0, "high": 0.5}},
    }
    sweep_file = write(tmp_path / "noisy.yaml", data)
    assert main(["sweep", "run", str(sweep_file)]) == 0
    capsys.readouterr()
    runs_file.unlink()
    return sweep_file, runs_file


def _trained(runs_file: Path) -> list[tuple[float, int]]:
    if not runs_file.exists():
        return []
    return [(float(a), int(seed)) for a, seed in (line.split() for line in runs_file.read_text().splitlines())]


def test_the_best_mean_is_recommended_and_recorded_runs_are_reused(noisy_sweep, tmp_path, capsys):
    sweep_file, runs_file = noisy_sweep
    study = load_journal(tmp_path / "runs/noisy/study.journal", "noisy")
    complete = sorted(study.trials, key=lambda t: (t.value, t.number))
    top = complete[:3]
    for trial in study.trials:  # the module's loss is what the test says it is
        assert trial.value == pytest.approx(trial.params["model.init_args.a"] + seed_part(trial.user_attrs["seed"]))

    assert main(["sweep", "best", str(sweep_file), "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    # K x N runs, with the seeds `sweep reproduce --seeds 2` uses, and each in its own folder beside the study's
    expected = {t.number: [trial_seed(t.user_attrs["seed"], i) for i in (1, 2)] for t in top}
    assert sorted(_trained(runs_file)) == sorted(
        (t.params["model.init_args.a"], seed) for t in top for seed in expected[t.number]
    )
    for number, seeds in expected.items():
        for seed in seeds:
            assert (tmp_path / f"runs/noisy-seeds/trial_{number:04d}_seed_{seed}").is_dir()
    assert not list((tmp_path / "runs/noisy").glob("*seed*"))  # the study's own runs are only its trials

    means = {
        t.number: statistics.fmean(
            [t.value] + [t.params["model.init_args.a"] + seed_part(s) for s in expected[t.number]]
        )
        for t in top
    }
    chosen = min(means, key=lambda n: (means[n], n))
    assert chosen != top[0].number  # the study's seed 0 makes the luckiest trial not the best setting
    assert f"recommended: trial {chosen} (mean {means[chosen]:.6g} over 3 runs); " in out
    assert f"the single best trial {top[0].number} has mean {means[top[0].number]:.6g} over 3 runs" in out
    assert "(6 run(s) trained now, 0 reused" in out
    rows = {
        int(line.split()[0]): line.split()
        for line in out.splitlines()
        if line.split()[:1] in ([str(t.number)] for t in top)
    }
    for t in top:
        assert float(rows[t.number][2]) == pytest.approx(means[t.number], rel=1e-5) and rows[t.number][-1] == "3"

    # recorded in the study, through its storage: another process reads them with Optuna alone
    recorded = load_journal(tmp_path / "runs/noisy/study.journal", "noisy").user_attrs["seed_runs"]
    assert {int(n): sorted(int(s) for s in runs) for n, runs in recorded.items()} == {
        n: sorted(seeds) for n, seeds in expected.items()
    }

    # again, by name, as JSON, with one more seed: the 6 recorded runs are reused, 3 trained
    runs_file.unlink()
    assert main(["sweep", "best", "noisy", "--seeds", "3", "--json"]) == 0
    captured = capsys.readouterr()
    table = json.loads(captured.out)
    assert len(_trained(runs_file)) == 3 and (table["reused"], table["trained"]) == (6, 3)
    assert "[3/3] trial" in captured.err  # progress on stderr: stdout is the JSON alone
    assert [c["number"] for c in table["candidates"]] == [t.number for t in top]
    assert all(c["n_runs"] == 4 and len(c["runs"]) == 4 for c in table["candidates"])
    assert table["best"] == top[0].number and table["metric"] == "val_loss" and table["seeds"] == 3

    # nothing to train: the same command only reads; `--export` writes the recommended config
    runs_file.unlink()
    assert main(["sweep", "best", str(sweep_file), "--seeds", "2", "--export", "chosen.yaml"]) == 0
    out = capsys.readouterr().out
    assert not runs_file.exists() and "(0 run(s) trained now, 6 reused" in out
    text = (tmp_path / "chosen.yaml").read_text()
    assert text.startswith(f"# Trial {chosen} of study 'noisy', chosen by the mean val_loss over 3 runs")
    exported = yaml.safe_load(text)
    chosen_trial = study.trials[chosen]
    assert exported["model"]["init_args"]["a"] == chosen_trial.params["model.init_args.a"]
    assert exported["seed_everything"] == chosen_trial.user_attrs["seed"]
    assert main(["fit", "chosen.yaml"]) == 0
    assert f"val_loss={chosen_trial.value:.6g}" in capsys.readouterr().out

    # without --seeds: the best trial as before, and a note of what the recorded runs say
    assert main(["sweep", "best", "noisy"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# Best trial {top[0].number} of study 'noisy'")
    assert f"# note: trial {chosen} is the best by mean over 4 runs" in out
    assert "lightopt sweep best noisy --seeds 3 --export PATH` exports it" in out


BAD_INPUT = [
    (["--seeds", "-1"], "lightopt sweep best: `--seeds` must be >= 0, but got seeds=-1."),
    (["--seeds", "2", "--top", "0"], "lightopt sweep best: `--top` must be >= 1, but got top=0."),
    (["--top", "2"], "lightopt sweep best: `--top` goes with --seeds N (N >= 1,"),
    (["--json"], "lightopt sweep best: `--json` goes with --seeds N (N >= 1,"),
    (["--seeds", "1", "--threads", "0"], "lightopt sweep best: `--threads` must be"),
    (
        ["--seeds", "1", "--export", "a_file/x.yaml"],
        "lightopt sweep best: `--export` 'a_file/x.yaml' cannot be written",
    ),
]


def test_bad_input_and_ctrl_c_are_one_line_and_keep_the_finished_runs(noisy_sweep, tmp_path, capsys):
    sweep_file, runs_file = noisy_sweep
    (tmp_path / "a_file").write_text("")
    for argv, line in BAD_INPUT:  # checked before any training
        assert main(["sweep", "best", str(sweep_file), *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(line) and err.count("\n") == 1, (argv, err)
    assert not runs_file.exists() and not (tmp_path / "runs/noisy-seeds").exists()

    # Ctrl-C in the third run: the two finished are recorded, and the next command trains the other four
    data = yaml.safe_load(sweep_file.read_text())
    data["model"]["init_args"]["interrupt_after"] = 2
    interrupting = write(tmp_path / "interrupting.yaml", data)
    assert main(["sweep", "best", str(interrupting), "--seeds", "2"]) == 130
    err = capsys.readouterr().err
    assert err.endswith(
        "interrupted: 2 of 6 seed run(s) finished and are recorded in the study; the same command again trains "
        "only the rest\n"
    )
    assert len(_trained(runs_file)) == 2
    recorded = load_journal(tmp_path / "runs/noisy/study.journal", "noisy").user_attrs["seed_runs"]
    assert sum(len(runs) for runs in recorded.values()) == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Lightning's SIG_IGN undone

    # a seed whose run fails (NaN) is listed, not recorded, and its trial is recommended after the others
    study = load_journal(tmp_path / "runs/noisy/study.journal", "noisy")
    second = sorted(study.trials, key=lambda t: (t.value, t.number))[1]  # the interrupted command left its runs
    failing = trial_seed(second.user_attrs["seed"], 2)
    data["model"]["init_args"].update(interrupt_after=0, nan_seeds=[failing])
    assert main(["sweep", "best", str(write(tmp_path / "nan.yaml", data)), "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert "(3 run(s) trained now, 2 reused from earlier `--seeds` runs)" in out
    assert f"  trial {second.number}, seed {failing} failed: trial {second.number} failed when run again" in out
    row = next(line for line in out.splitlines() if line.split()[:1] == [str(second.number)])
    assert row.endswith("2  (1 failed)") and f"recommended: trial {second.number} " not in out
    recorded = load_journal(tmp_path / "runs/noisy/study.journal", "noisy").user_attrs["seed_runs"]
    assert sum(len(runs) for runs in recorded.values()) == 5 and str(failing) not in recorded[str(second.number)]

    assert main(["sweep", "best", str(sweep_file), "--seeds", "2"]) == 0  # only the failed one is tried again
    assert "(1 run(s) trained now, 5 reused from earlier `--seeds` runs)" in capsys.readouterr().out
    assert len(_trained(runs_file)) == 7 and len(set(_trained(runs_file))) == 6  # only the failed seed twice


def test_ctrl_c_of_the_command_exits_130_and_keeps_the_finished_runs(noisy_sweep, tmp_path):
    sweep_file, runs_file = noisy_sweep
    data = yaml.safe_load(sweep_file.read_text())
    data["model"]["init_args"]["stall_after"] = 1
    stalling = write(tmp_path / "stalling.yaml", data)
    process = start("sweep", "best", str(stalling), "--seeds", "1", "--threads", "1", cwd=tmp_path)
    try:
        wait_for(lambda: Path(f"{runs_file}.stalled").exists(), "the second run to start", timeout=240)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130 and "Traceback" not in err, err
    assert err.splitlines()[-1] == (
        "interrupted: 1 of 3 seed run(s) finished and are recorded in the study; the same command again trains "
        "only the rest"
    )
    assert "[1/3] trial" in out and len(_trained(runs_file)) == 1
    recorded = load_journal(tmp_path / "runs/noisy/study.journal", "noisy").user_attrs["seed_runs"]
    assert [len(runs) for runs in recorded.values()] == [1]


def test_a_study_without_a_complete_trial_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs/empty").mkdir(parents=True)
    journal = optuna.storages.journal.JournalFileBackend(str(tmp_path / "runs/empty/study.journal"))
    study = optuna.create_study(study_name="empty", storage=optuna.storages.JournalStorage(journal))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    assert main(["sweep", "best", "empty", "--seeds", "2"]) == 2
    assert capsys.readouterr().err == (
        "error: study 'empty' has no completed trial yet, so there is nothing to train with other seeds; "
        "`lightopt sweep show` lists its trials.\n"
    )


def test_without_seeds_the_recorded_runs_are_a_note(tmp_path, monkeypatch, capsys):
    """Recorded runs of trials other than the best now: the note says so and how to train the best's."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs/s").mkdir(parents=True)
    journal = optuna.storages.journal.JournalFileBackend(str(tmp_path / "runs/s/study.journal"))
    study = optuna.create_study(study_name="s", storage=optuna.storages.JournalStorage(journal))
    for x in (0.5, 0.2, 0.4):
        study.add_trial(
            optuna.trial.create_trial(
                value=x,
                params={"x": x},
                user_attrs={"config": {"x": x}, "seed": 1},
                distributions={"x": optuna.distributions.FloatDistribution(0, 2)},
            )
        )
    study.set_user_attr("seed_runs", {"0": {"7": 0.3, "8": 0.4}, "2": {"7": 0.9}})
    assert main(["sweep", "best", "s", "--export", "best.yaml"]) == 0
    note = (
        "note: seed runs are recorded for trial(s) 0, 2 (the best mean: trial 0, 0.4 over 3 runs), not for "
        "trial 1, the best now; `lightopt sweep best s --seeds 2` trains them"
    )
    assert capsys.readouterr().out.splitlines()[1] == note
    assert f"# {note}\n" in (tmp_path / "best.yaml").read_text()
