"""Failing trials: NaN losses, exceptions, out of memory; their reasons and logs; the early stop of a sweep."""

from __future__ import annotations

import io
import resource
import signal
import socket
from pathlib import Path
from typing import Any

import lightning
import optuna
import pytest
import torch
from optuna.trial import TrialState

from examples.digits import DigitsDataModule, DigitsMLP
from lightopt.cli import main
from lightopt.sweep import SweepConfigError, run_sweep
from lightopt.sweep.spec import parse
from lightopt.sweep.study import FailureWatch, failure_signature
from lightopt.sweep.trial import LossCheck, NonFiniteLossError
from tests.sweep.fault_helpers import lightopt
from tests.sweep.helpers import sweep_dict, write

# The optimizer's own NaN check (lightopt.optim.NonFiniteError) would stop these fits first: off, so that
# LossCheck's reasons are what these tests see.
UNCHECKED_SGD = {"class_path": "lightopt.optim.SGD", "init_args": {"lr": 0.2, "momentum": 0.9, "check_finite_every": 0}}


class FailingMLP(DigitsMLP):
    """DigitsMLP that fails in training step 3 as ``fail`` says: nan, raise, oom, memory (or never: none)."""

    def __init__(self, fail: str = "none", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fail = fail

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        loss = super().training_step(batch, batch_idx)
        if self.trainer.global_step < 2 or self.fail == "none":
            return loss
        if self.fail == "nan":
            return loss * float("nan")
        if self.fail == "raise":
            raise ValueError(f"bad learning rate {self.trainer.optimizers[0].param_groups[0]['lr']:.6f}")
        if self.fail == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        raise MemoryError()


def _failing(tmp_path, fail, **study):
    data = sweep_dict(tmp_path, **study)
    data["model"] = {"class_path": "tests.sweep.test_failures.FailingMLP", "init_args": {"hidden": 16, "fail": fail}}
    data["optimizer"]["init_args"]["check_finite_every"] = 0  # LossCheck's reasons, not the optimizer's
    return data


def test_each_kind_of_failure_is_recorded_with_its_reason_and_log_and_the_sweep_goes_on(tmp_path):
    data = _failing(tmp_path, "none", sampler="grid", n_trials=5)
    data["search"] = {"model.init_args.fail": {"choices": ["nan", "raise", "oom", "memory", "none"]}}
    out = io.StringIO()
    result = run_sweep(parse(data, "sweep.yaml"), out=out)
    trials = {t.params["model.init_args.fail"]: t for t in result.study.trials}
    assert len(trials) == 5 and result.stopped is None
    assert trials["none"].state == TrialState.COMPLETE
    expected = {
        "nan": "NonFiniteLossError: training loss is nan at step 3",
        "raise": "ValueError: bad learning rate 0.",
        "oom": "out of memory (OutOfMemoryError): CUDA out of memory. Tried to allocate 2.00 GiB",
        "memory": "out of memory (MemoryError)",
    }
    for kind, reason in expected.items():
        trial = trials[kind]
        assert trial.state == TrialState.FAIL and trial.user_attrs["fail_reason"].startswith(reason)
        where = "on_train_batch_end" if kind == "nan" else "training_step"
        assert "Traceback" in trial.user_attrs["traceback"] and where in trial.user_attrs["traceback"]
        log = (tmp_path / "s" / f"trial_{trial.number:04d}" / "error.txt").read_text()
        assert log.startswith(trial.user_attrs["fail_reason"] + "\n") and "Traceback" in log
        assert f"trial {trial.number} failed: {reason}" in out.getvalue()
    assert not (tmp_path / "s" / f"trial_{trials['none'].number:04d}" / "error.txt").exists()


class NaNValidationMLP(DigitsMLP):
    """DigitsMLP whose ``val_loss`` is NaN while its training loss stays finite."""

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", torch.tensor(float("nan")))


def test_a_nan_validation_metric_is_logged_too(tmp_path):
    data = sweep_dict(tmp_path, n_trials=1)
    data["model"]["class_path"] = "tests.sweep.test_failures.NaNValidationMLP"
    result = run_sweep(parse(data), out=io.StringIO())
    trial = result.study.trials[0]
    assert trial.state == TrialState.FAIL and trial.user_attrs["fail_reason"] == "val_loss is nan at step 1"
    log = (tmp_path / "s" / "trial_0000" / "error.txt").read_text()
    assert log.startswith("val_loss is nan at step 1\n\nno traceback")


@pytest.mark.parametrize(
    "every, nan_from, match",
    [
        (1, 2, "training loss is nan at step 3"),
        (3, 4, "between steps 5 and 7"),  # read back at steps 3, 4 (the epoch's end) and 7
        (100, 2, "between steps 1 and 4"),  # read back before the validation round at the epoch's end (4 steps)
    ],
)
def test_loss_check_stops_the_fit_at_the_first_check_after_the_loss_turns_nan(tmp_path, every, nan_from, match):
    class NaNFrom(DigitsMLP):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * float("nan") if self.trainer.global_step >= nan_from else loss

    trainer = lightning.Trainer(
        max_epochs=3,
        limit_train_batches=4,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[LossCheck(every)],
        default_root_dir=tmp_path,
    )
    with pytest.raises(NonFiniteLossError, match=match):
        trainer.fit(NaNFrom(hidden=8, optimizer=UNCHECKED_SGD), datamodule=DigitsDataModule(batch_size=32))


@pytest.mark.parametrize("stop_after, trials, code", [(3, 3, 1), (0, 5, 0)])
def test_a_sweep_whose_trials_all_fail_alike_stops_with_one_line_and_exit_1(
    tmp_path, monkeypatch, capsys, stop_after, trials, code
):
    monkeypatch.chdir(tmp_path)
    path = write(
        tmp_path / "s.yaml", _failing(tmp_path / "runs", "raise", n_trials=5, stop_after_same_failures=stop_after)
    )
    assert main(["sweep", "run", str(path)]) == code
    err = capsys.readouterr().err
    study = optuna.load_study(
        study_name="s",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "runs" / "s" / "study.journal"))
        ),
    )
    assert [t.state for t in study.trials] == [TrialState.FAIL] * trials
    if code:  # the learning rates differ, the reasons differ only in numbers
        assert (
            err.count("\n") == 1 and "its first 3 trials all failed the same way: ValueError: bad learning rate" in err
        )
        assert str(tmp_path / "runs" / "s" / "trial_0000" / "error.txt") in err
    else:
        assert err == ""


@pytest.mark.parametrize(
    "reasons, ran",
    [
        (["E: x at 1", "E: x at 2"], 2),  # stops after the second
        ([None, "E: x at 1", "E: x at 1"], 5),  # None: a trial that did not fail came first
        (["E: x at 1", "F: x at 1", "F: x at 1"], 5),  # two kinds of failure
        (["E: x at 1", ""], 5),  # "": failed without a recorded reason (a crash)
    ],
)
def test_failure_watch_stops_only_when_every_trial_failed_alike(reasons, ran):
    def objective(trial):
        reason = reasons[trial.number] if trial.number < len(reasons) else None
        if reason is None:
            return 1.0
        if reason:
            trial.set_user_attr("fail_reason", reason)
        raise RuntimeError(reason)

    study = optuna.create_study()
    watch = FailureWatch(2)
    study.optimize(objective, n_trials=5, callbacks=[watch], catch=(RuntimeError,))
    assert len(study.trials) == ran and (watch.stopped is not None) == (ran == 2)


def test_failure_signature_ignores_numbers_only():
    assert failure_signature("CUDA out of memory. Tried to allocate 2.00 GiB (0x7f3a)") == failure_signature(
        "CUDA out of memory. Tried to allocate 512.5 GiB (0x1b)"
    )
    assert failure_signature("ValueError: x") != failure_signature("TypeError: x")


@pytest.mark.parametrize(
    "value, match",
    [
        (
            -1,
            "`study.stop_after_same_failures` must be an integer >= 0 \\(0: never stop\\), "
            "but got stop_after_same_failures=-1.",
        ),
        (True, "but got stop_after_same_failures=True"),
        ("3", "but got stop_after_same_failures='3'"),
        (1.5, "but got stop_after_same_failures=1.5"),
    ],
)
def test_stop_after_same_failures_is_checked(tmp_path, value, match):
    with pytest.raises(SweepConfigError, match=match):
        parse(sweep_dict(tmp_path, stop_after_same_failures=value))


def test_stop_after_same_failures_accepts_zero(tmp_path):
    assert parse(sweep_dict(tmp_path, stop_after_same_failures=0)).study.stop_after_same_failures == 0
    assert parse(sweep_dict(tmp_path)).study.stop_after_same_failures == 3


def _dying(tmp_path, how, **study):
    data = sweep_dict(Path("runs"), n_trials=1, **study)
    data["model"] = {"class_path": "tests.sweep.fault_helpers.DyingMLP", "init_args": {"hidden": 16, "how": how}}
    write(tmp_path / "s.yaml", data)
    return tmp_path / "runs" / "s" / "study.journal"


def _trials(journal):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    return optuna.load_study(study_name="s", storage=storage).trials


def test_sys_exit_in_user_code_is_a_failed_trial_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    _dying(tmp_path, "sys.exit", stop_after_same_failures=0)
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "run", "s.yaml", "--n-trials", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # no traceback
    trials = _trials(tmp_path / "runs" / "s" / "study.journal")
    assert [(t.state, t.user_attrs["fail_reason"]) for t in trials] == [(TrialState.FAIL, "SystemExit: 3")] * 2
    assert "2 trials: 0 complete, 0 pruned, 2 failed" in captured.out
    assert (Path(trials[0].user_attrs["log_dir"]) / "error.txt").read_text().startswith("SystemExit: 3\n")


def _no_core_file() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a segfault's core dump takes long and fills the disk


def test_a_trial_that_segfaults_its_worker_is_retried_once_then_recorded_failed(tmp_path):
    journal = _dying(tmp_path, "segfault")
    first = lightopt("sweep", "run", "s.yaml", cwd=tmp_path, preexec_fn=_no_core_file)
    assert first.returncode == -signal.SIGSEGV  # the process dies with the trial: nothing can be said then
    second = lightopt("sweep", "run", "s.yaml", cwd=tmp_path, preexec_fn=_no_core_file)
    assert second.returncode == -signal.SIGSEGV
    assert second.stdout.splitlines()[0] == (
        "trial 0 was left RUNNING by a worker that died: recorded as failed; it "
        "will be retried (from its last checkpoint if it has one)"
    )
    third = lightopt("sweep", "run", "s.yaml", cwd=tmp_path)
    assert third.returncode == 0 and third.stderr == ""
    host = socket.gethostname()
    reason = f"its worker died 2 times (last: pid {_pid(journal, 1)} on host {host}); not retried again"
    assert third.stdout.splitlines()[0] == (
        f"trial 1 was left RUNNING by a worker that died: recorded as failed, "
        f"{reason} (study.retries sets how often it is retried)"
    )
    trials = _trials(journal)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert trials[1].user_attrs["retry_of"] == 0 and trials[1].user_attrs["fail_reason"] == reason
    assert "running up to 0 more (n_trials=1)" in third.stdout  # it counts: the study is done
    assert "2 trials: 0 complete, 0 pruned, 2 failed" in third.stdout


def _pid(journal, number):
    return _trials(journal)[number].user_attrs["worker"]["pid"]


def test_study_retries_0_records_a_trial_that_exits_hard_as_failed_at_once(tmp_path):
    journal = _dying(tmp_path, "os._exit", retries=0)
    assert lightopt("sweep", "run", "s.yaml", cwd=tmp_path).returncode == 3
    done = lightopt("sweep", "run", "s.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _trials(journal)[0].user_attrs["fail_reason"].startswith("its worker died 1 time (last: pid ")


@pytest.mark.parametrize("value", [-1, True, "1", 0.5])
def test_study_retries_is_checked(tmp_path, value):
    with pytest.raises(
        SweepConfigError,
        match=r"`study.retries` must be an integer >= 0 \(0: a trial whose worker "
        rf"died is not run again\), but got retries={value!r}.",
    ):
        parse(sweep_dict(tmp_path, retries=value))
