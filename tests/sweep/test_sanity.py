"""The sanity check runs once per study and process, and a trial's result does not depend on it."""

from __future__ import annotations

import io
from typing import Any

import lightning as L
import torch

from examples.digits import DigitsDataModule, DigitsMLP
from lightopt.sweep import PruningCallback, run_sweep
from lightopt.sweep.spec import parse
from lightopt.sweep.trial import fit_trial
from tests.sweep.helpers import sweep_dict

MODELS: list[DropoutMLP] = []  # every DropoutMLP built, in order


class DropoutMLP(DigitsMLP):
    """DigitsMLP with dropout (training draws from torch's global generator); counts its sanity-check batches."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.net.insert(3, torch.nn.Dropout(0.5))
        self.sanity_batches = 0
        MODELS.append(self)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.sanity_batches += self.trainer.sanity_checking
        super().validation_step(batch, batch_idx)


def _sweep(tmp_path, **trainer: Any) -> dict[str, Any]:
    data = sweep_dict(tmp_path)
    data["model"]["class_path"] = "tests.sweep.test_sanity.DropoutMLP"
    data["trainer"].update(trainer)
    return data


def test_only_the_first_trial_of_a_study_runs_the_sanity_check(tmp_path):
    MODELS.clear()
    result = run_sweep(parse(_sweep(tmp_path), "sweep.yaml"), out=io.StringIO())
    assert [t.state.name for t in result.study.trials] == ["COMPLETE"] * 3
    assert [m.sanity_batches for m in MODELS] == [2, 0, 0]
    MODELS.clear()
    run_sweep(parse(_sweep(tmp_path / "other"), "sweep.yaml"), out=io.StringIO())
    assert [m.sanity_batches for m in MODELS] == [2, 0, 0]  # another study checks again


def test_a_file_that_sets_num_sanity_val_steps_keeps_it_in_every_trial(tmp_path):
    MODELS.clear()
    run_sweep(parse(_sweep(tmp_path, num_sanity_val_steps=1), "sweep.yaml"), out=io.StringIO())
    assert [m.sanity_batches for m in MODELS] == [1, 1, 1]


def _fit(config: dict[str, Any], directory, name: str) -> tuple[list[tuple[int, float]], list[torch.Tensor]]:
    pruning = PruningCallback(None, "val_loss")
    run = fit_trial(config, 7, pruning, directory, name)
    return pruning.history, [p.detach().clone() for p in run.model.parameters()]


def test_a_trial_gives_the_same_result_with_and_without_the_sanity_check(tmp_path):
    config = parse(_sweep(tmp_path), "sweep.yaml").run
    MODELS.clear()
    with_check = _fit(config, tmp_path, "first")
    without_check = _fit(config, tmp_path, "second")
    assert [m.sanity_batches for m in MODELS] == [2, 0]
    assert with_check[0] == without_check[0] and len(with_check[0]) == 2
    for a, b in zip(with_check[1], without_check[1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_model_draws_from_the_global_generator_so_the_test_above_can_fail(tmp_path):
    """The control for the test above: one number drawn before the fit changes this model's result."""

    def fit(draw: bool) -> list[torch.Tensor]:
        L.seed_everything(7, verbose=False)
        model = DropoutMLP(hidden=16)
        if draw:
            torch.rand(1)
        trainer = L.Trainer(
            max_epochs=1,
            limit_train_batches=4,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp_path,
        )
        trainer.fit(model, datamodule=DigitsDataModule())
        return [p.detach().clone() for p in model.parameters()]

    assert any(not torch.equal(a, b) for a, b in zip(fit(False), fit(True)))
