"""lightopt.callbacks.curriculum: stochastic curriculum and continuation (§8.7.6)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from lightopt.callbacks.curriculum import (
    Continuation,
    CurriculumSampler,
    StochasticCurriculum,
    linear_schedule,
    schedule_value,
)

N = 400
HARD = torch.arange(N) % 10 < 3  # 30% of the examples are hard
SCHEDULE = [0.1, 0.3, 0.6, 0.9]


class Indexed(LightningModule):
    """A linear model on fixed random features; records the example indices of every batch and σ."""

    def __init__(self):
        super().__init__()
        self.features = torch.randn(N, 3, generator=torch.Generator().manual_seed(1))
        self.layer = torch.nn.Linear(3, 1)
        self.sigma = 1.0
        self.register_buffer("temperature", torch.tensor(5.0))
        self.seen: dict[int, list[int]] = {}
        self.sigmas: list[tuple[int, int, float, float]] = []

    def training_step(self, batch, batch_idx):
        (index,) = batch
        self.seen.setdefault(self.current_epoch, []).extend(index.tolist())
        self.sigmas.append((self.current_epoch, self.global_step, self.sigma, self.temperature.item()))
        x = self.features[index]
        return (self.layer(x).squeeze(1) - x.sum(1)).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def loader(curriculum, size=N):
    return DataLoader(TensorDataset(torch.arange(size)), batch_size=50, sampler=curriculum.sampler)


def make_trainer(tmp_path, callbacks, epochs, **kwargs):
    kwargs = dict(logger=False, enable_checkpointing=False) | kwargs
    return Trainer(
        max_epochs=epochs,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kwargs,
    )


class Fractions(Callback):
    def __init__(self):
        self.logged = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.logged.append(float(trainer.callback_metrics["curriculum/hard_fraction"]))


# --- stochastic curriculum ------------------------------------------------------------------------


def test_each_epoch_mixes_easy_and_hard_and_follows_the_schedule(tmp_path):
    seed_everything(0)
    curriculum, fractions, model = StochasticCurriculum(HARD, SCHEDULE, seed=3), Fractions(), Indexed()
    make_trainer(tmp_path, [curriculum, fractions], epochs=5).fit(model, loader(curriculum))
    hard = HARD.numpy()
    for epoch in range(5):
        indices = np.array(model.seen[epoch])
        assert len(indices) == N
        h = schedule_value(SCHEDULE, epoch)  # epoch 4 holds the last value, 0.9
        share = hard[indices].mean()
        assert 0 < share < 1  # both easy and hard examples
        assert abs(share - h) <= 4 * math.sqrt(h * (1 - h) / N), (epoch, share, h)
    assert curriculum.history == [0.1, 0.3, 0.6, 0.9, 0.9]
    assert fractions.logged == pytest.approx(curriculum.history)  # logged as float32


def test_fraction_within_binomial_error_over_many_epochs():
    """4 standard errors at N = 5000 draws, 20 epochs of a linear schedule, scores with a threshold."""
    scores = np.random.default_rng(0).random(1000)
    schedule = linear_schedule(0.05, 0.95, 20)
    curriculum = StochasticCurriculum(scores, schedule, threshold=0.8, num_samples=5000, seed=7)
    hard = scores > 0.8
    for epoch, h in enumerate(schedule):
        indices = np.array(curriculum.sampler.indices(epoch))
        assert abs(hard[indices].mean() - h) <= 4 * math.sqrt(h * (1 - h) / 5000)


def test_groups_are_drawn_without_replacement_until_exhausted():
    sampler = StochasticCurriculum(HARD, [0.2], seed=0).sampler
    indices = np.array(sampler.indices(0))
    hard = HARD.numpy()[indices]
    assert hard.sum() <= 120 and len(set(indices[hard].tolist())) == hard.sum()  # ~80 of 120 hard: no repeats
    assert len(set(indices[~hard].tolist())) == 280  # ~320 easy draws cover all 280 easy examples
    only_hard = np.array(StochasticCurriculum(HARD, [1.0]).sampler.indices(0))
    assert set(only_hard.tolist()) == set(np.flatnonzero(HARD.numpy()).tolist())


def test_same_seed_same_order_and_epochs_differ():
    a, b, c = (StochasticCurriculum(HARD, SCHEDULE, seed=s).sampler for s in (5, 5, 6))
    for epoch in range(3):
        a.set_epoch(epoch), b.set_epoch(epoch), c.set_epoch(epoch)
        assert list(a) == list(b) == list(a)  # and iterating twice gives the same order
        assert list(a) != list(c)
    assert a.indices(0) != a.indices(1)
    assert isinstance(a, CurriculumSampler) and len(a) == N


def test_callable_schedule_is_checked_each_epoch(tmp_path):
    curriculum = StochasticCurriculum(HARD, lambda epoch: 0.5 + epoch)
    with pytest.raises(ValueError, match=r"`schedule\(epoch\)` must be in \[0, 1\], but got schedule\(epoch\)=1.5"):
        make_trainer(tmp_path, [curriculum], epochs=2).fit(Indexed(), loader(curriculum))


def test_difficulty_length_must_match_the_data_set(tmp_path):
    curriculum = StochasticCurriculum(HARD[:300], SCHEDULE)
    with pytest.raises(ValueError, match="`difficulty` has 300 entries, but the training data set has 400 examples"):
        make_trainer(tmp_path, [curriculum], epochs=1).fit(Indexed(), loader(curriculum))


def test_the_training_loader_must_use_the_sampler(tmp_path):
    curriculum = StochasticCurriculum(HARD, SCHEDULE)
    plain = DataLoader(TensorDataset(torch.arange(N)), batch_size=50, shuffle=True)
    with pytest.raises(ValueError, match=r"sampler=curriculum.sampler"):
        make_trainer(tmp_path, [curriculum], epochs=1).fit(Indexed(), plain)


class CrashAtEpoch(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == 3:
            raise RuntimeError("crash")


def run(tmp_path, crash_at=None, ckpt_path=None):
    seed_everything(0)
    model, curriculum = Indexed(), StochasticCurriculum(HARD, SCHEDULE, seed=11)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_epochs=1, save_last=True)
    callbacks = [curriculum, checkpoint] + ([CrashAtEpoch(crash_at)] if crash_at is not None else [])
    trainer = make_trainer(tmp_path, callbacks, epochs=4, enable_checkpointing=True)
    if crash_at is None:
        trainer.fit(model, loader(curriculum), ckpt_path=ckpt_path)
    else:
        with pytest.raises(RuntimeError, match="crash"):
            trainer.fit(model, loader(curriculum))
    return model, curriculum


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_crash_and_resume_equals_uninterrupted_run(tmp_path):
    whole, whole_curriculum = run(tmp_path / "whole")
    run(tmp_path / "crash", crash_at=2)  # last checkpoint: end of epoch 1
    last = tmp_path / "crash" / "ckpt" / "last.ckpt"
    saved = torch.load(last, weights_only=False)["callbacks"][whole_curriculum.state_key]
    assert saved == {"epoch": 1, "history": [0.1, 0.3]}
    resumed, resumed_curriculum = run(tmp_path / "crash", ckpt_path=last)
    assert sorted(resumed.seen) == [2, 3]
    assert resumed.seen[2] == whole.seen[2] and resumed.seen[3] == whole.seen[3]
    assert resumed_curriculum.history == whole_curriculum.history == [0.1, 0.3, 0.6, 0.9]
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "exception", "match"),
    [
        (dict(schedule=[0.1, 1.2]), ValueError, r"`schedule\[1\]` must be in \[0, 1\], but got schedule\[1\]=1.2\."),
        (dict(schedule=[-0.1]), ValueError, r"`schedule\[0\]` must be in \[0, 1\], but got schedule\[0\]=-0.1\."),
        (dict(schedule=[]), ValueError, r"`schedule` must have at least one value"),
        (dict(schedule="0.5"), TypeError, r"`schedule` must be a list of numbers or a callable"),
        (
            dict(difficulty=torch.zeros(N, 2, dtype=torch.bool)),
            ValueError,
            r"non-empty 1-D array, but got shape \(400, 2\)",
        ),
        (dict(difficulty=[]), ValueError, r"non-empty 1-D array"),
        (dict(difficulty=["a", "b"]), TypeError, r"booleans or real numbers"),
        (dict(difficulty=torch.rand(N)), ValueError, r"`threshold` is required when `difficulty` holds scores"),
        (dict(threshold=0.5), ValueError, r"`threshold` must be None when `difficulty` is a boolean mask"),
        (dict(difficulty=torch.zeros(N, dtype=torch.bool)), ValueError, r"marks no example as hard"),
        (dict(difficulty=torch.ones(N, dtype=torch.bool)), ValueError, r"marks no example as easy"),
        (dict(num_samples=0), ValueError, r"`num_samples` must be an integer >= 1, but got num_samples=0\."),
        (dict(seed=-1), ValueError, r"`seed` must be an integer >= 0, but got seed=-1\."),
        (dict(log="yes"), TypeError, r"`log` must be True or False"),
    ],
)
def test_stochastic_curriculum_bad_arguments(kwargs, exception, match):
    kwargs = dict(difficulty=HARD, schedule=SCHEDULE) | kwargs
    with pytest.raises(exception, match=match):
        StochasticCurriculum(**kwargs)


@pytest.mark.parametrize("schedule", [[0.0], [1.0], [0.0, 1.0]])
def test_schedule_accepts_the_edges(schedule):
    curriculum = StochasticCurriculum(HARD, schedule)
    hard = HARD.numpy()[curriculum.sampler.indices(0)]
    assert hard.mean() == schedule[0]


def test_linear_schedule():
    assert linear_schedule(0.1, 0.5, 5) == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert linear_schedule(1.0, 0.0, 3) == [1.0, 0.5, 0.0]
    assert linear_schedule(0.2, 0.7, 1) == [0.7]
    with pytest.raises(ValueError, match=r"`num` must be an integer >= 1, but got num=0\."):
        linear_schedule(0.0, 1.0, 0)


# --- continuation ---------------------------------------------------------------------------------


def read_csv(logger):
    with open(f"{logger.log_dir}/metrics.csv") as f:
        return list(csv.DictReader(f))


def test_continuation_per_epoch_sets_and_logs_the_schedule(tmp_path):
    seed_everything(0)
    model, logger = Indexed(), CSVLogger(tmp_path, name="cont")
    schedule = linear_schedule(1.0, 0.0, 3)
    callback = Continuation("sigma", schedule)
    plain = DataLoader(TensorDataset(torch.arange(100)), batch_size=50)
    make_trainer(tmp_path, [callback], epochs=4, logger=logger, log_every_n_steps=1).fit(model, plain)
    per_epoch = {epoch: sigma for epoch, _, sigma, _ in model.sigmas}
    assert per_epoch == {0: 1.0, 1: 0.5, 2: 0.0, 3: 0.0}
    assert all(sigma == per_epoch[epoch] for epoch, _, sigma, _ in model.sigmas)  # constant within an epoch
    logged = [(int(r["epoch"]), float(r["continuation/sigma"])) for r in read_csv(logger) if r["continuation/sigma"]]
    assert logged == [(0, 1.0), (1, 0.5), (2, 0.0), (3, 0.0)]
    assert callback.state_dict() == {"value": 0.0}


def test_continuation_per_step_on_a_dotted_tensor_attribute(tmp_path):
    seed_everything(0)
    model, logger = Indexed(), CSVLogger(tmp_path, name="cont")
    model.blur = torch.nn.Module()
    model.blur.sigma = 0.0
    callback = Continuation("temperature", lambda step: 5.0 / (1 + step), interval="step")
    blur = Continuation("blur.sigma", [0.3, 0.2, 0.1], interval="step", log=False)
    plain = DataLoader(TensorDataset(torch.arange(100)), batch_size=25)
    make_trainer(tmp_path, [callback, blur], epochs=2, logger=logger, log_every_n_steps=1).fit(model, plain)
    assert [(step, t) for _, step, _, t in model.sigmas] == [(s, pytest.approx(5.0 / (1 + s))) for s in range(8)]
    assert isinstance(model.temperature, torch.Tensor) and model.blur.sigma == 0.1
    logged = [
        (int(r["step"]), float(r["continuation/temperature"]))
        for r in read_csv(logger)
        if r.get("continuation/temperature")
    ]
    assert logged == [(s, pytest.approx(5.0 / (1 + s))) for s in range(8)]


def test_continuation_restores_its_value_when_resuming(tmp_path):
    callback = Continuation("sigma", [1.0, 0.5])
    callback.load_state_dict({"value": 0.25})
    model = Indexed()
    callback.on_fit_start(None, model)
    assert model.sigma == 0.25
    fresh = Continuation("sigma", [1.0])
    fresh.load_state_dict({})  # fields added later default
    assert fresh.value is None
    assert callback.state_key != Continuation("sigma", [1.0], interval="step").state_key


def test_continuation_unknown_attribute_lists_numeric_ones(tmp_path):
    callback = Continuation("sigmaa", [1.0])
    plain = DataLoader(TensorDataset(torch.arange(100)), batch_size=50)
    with pytest.raises(ValueError, match=r"`attribute` 'sigmaa' is not an attribute of Indexed.*'sigma'"):
        make_trainer(tmp_path, [callback], epochs=1).fit(Indexed(), plain)


@pytest.mark.parametrize(
    ("kwargs", "exception", "match"),
    [
        (dict(attribute=""), TypeError, r"`attribute` must be a non-empty string"),
        (dict(attribute=3), TypeError, r"`attribute` must be a non-empty string, but got attribute=3\."),
        (dict(schedule=[]), ValueError, r"`schedule` must have at least one value"),
        (dict(schedule=[1.0, math.nan]), ValueError, r"`schedule\[1\]` must not be NaN"),
        (dict(schedule=[1.0, "x"]), TypeError, r"`schedule\[1\]` must be a real number"),
        (dict(interval="batch"), ValueError, r"`interval` must be one of 'epoch', 'step', but got interval='batch'\."),
    ],
)
def test_continuation_bad_arguments(kwargs, exception, match):
    kwargs = dict(attribute="sigma", schedule=[1.0, 0.0]) | kwargs
    with pytest.raises(exception, match=match):
        Continuation(**kwargs)
