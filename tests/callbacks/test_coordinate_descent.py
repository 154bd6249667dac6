"""lightopt.callbacks.coordinate_descent: block coordinate descent (§8.7.2)."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from lightopt.callbacks.coordinate_descent import CoordinateDescent, active_block

ALPHA = 0.01


def exact_coordinate_descent(sweeps, alpha=ALPHA, x=(1.0, 1.0)):
    """The book's example, exact minimization per coordinate: ∂f/∂x1 = 0 gives x1 = x2/(1 + α)."""
    x1, x2 = x
    for _ in range(sweeps):
        x1 = x2 / (1 + alpha)
        x2 = x1 / (1 + alpha)
    return x1, x2


class Coupled(LightningModule):
    """f(x) = (x1 − x2)² + α(x1² + x2²) in float64, trained with SGD at lr = 1/(2(1 + α)) by default."""

    def __init__(self, lr=1 / (2 * (1 + ALPHA)), momentum=0.0):
        super().__init__()
        self.x1 = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
        self.x2 = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
        self.lr, self.momentum = lr, momentum

    def training_step(self, batch, batch_idx):
        return (self.x1 - self.x2) ** 2 + ALPHA * (self.x1**2 + self.x2**2)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)


class ThreeLayers(LightningModule):
    """Three linear layers and a free scale; SGD with momentum and weight decay (both move params without a step)."""

    def __init__(self):
        super().__init__()
        layers = torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)
        self.net = torch.nn.Sequential(*layers)
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.seen_requires_grad = []

    def training_step(self, batch, batch_idx):
        self.seen_requires_grad.append({n: p.requires_grad for n, p in self.named_parameters()})
        x = batch
        return (self.scale * self.net(x) - x.sum(1, keepdim=True)).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)


class Recorder(Callback):
    """Parameters after every optimizer step, and which gradients reached the optimizer."""

    def __init__(self):
        self.params, self.grad_is_none = [], []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grad_is_none.append({n: p.grad is None for n, p in pl_module.named_parameters()})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.params.append({n: p.detach().clone() for n, p in pl_module.named_parameters()})


def fit(module, callbacks, steps, tmp_path, ckpt_path=None, **kwargs):
    kwargs = dict(logger=False, enable_checkpointing=False) | kwargs
    trainer = Trainer(
        max_steps=steps,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kwargs,
    )
    batch = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    # every batch the same, so that a run resumed mid-epoch sees what an uninterrupted one does
    trainer.fit(module, DataLoader(batch.repeat(16, 1), batch_size=4), ckpt_path=ckpt_path)
    return trainer


BLOCKS = ["net.0", ["net.2.weight", "net.2.bias"], ["net.3", "scale"]]
BLOCK_PARAMS = [
    {"net.0.weight", "net.0.bias"},
    {"net.2.weight", "net.2.bias"},
    {"net.3.weight", "net.3.bias", "scale"},
]


# --- the book's example ---------------------------------------------------------------------------


def test_book_number_with_exact_coordinate_minimization():
    """Each sweep multiplies x2 by (1 + α)^-2: after 10 sweeps x2 = 0.8195445."""
    x1, x2 = exact_coordinate_descent(10)
    assert x2 == pytest.approx((1 + ALPHA) ** -20, rel=1e-14)
    assert round(x2, 7) == 0.8195445
    assert x1 == pytest.approx((1 + ALPHA) ** -19, rel=1e-14)


@pytest.mark.parametrize("steps_per_block", [1, 3])
def test_callback_reproduces_exact_coordinate_descent(tmp_path, steps_per_block):
    """lr = 1/(2(1 + α)) solves each coordinate's subproblem in one step; further steps stay put."""
    model = Coupled()
    fit(model, [CoordinateDescent([["x1"], ["x2"]], steps_per_block)], 20 * steps_per_block, tmp_path)
    x1, x2 = exact_coordinate_descent(10)
    assert model.x1.item() == pytest.approx(x1, rel=1e-12)
    assert model.x2.item() == pytest.approx(x2, rel=1e-12)
    assert round(model.x2.item(), 7) == 0.8195445


def test_without_the_callback_gradient_descent_moves_both_coordinates(tmp_path):
    """The control: plain SGD moves both coordinates at once and stays on the diagonal x1 = x2 from (1, 1);
    coordinate descent ends with x1 = (1 + α)·x2."""
    model = Coupled()
    fit(model, [], 20, tmp_path)
    assert model.x1.item() == model.x2.item()
    x1, x2 = exact_coordinate_descent(10)
    assert x1 == pytest.approx((1 + ALPHA) * x2, rel=1e-14)


# --- the cycle and the freezing -------------------------------------------------------------------


def test_active_block_cycle():
    assert [active_block(s, 3, 2) for s in range(13)] == [0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2, 0]
    assert [active_block(s, 1, 5) for s in range(3)] == [0, 0, 0]


@pytest.mark.parametrize("toggle", [False, True])
def test_only_the_active_block_moves_under_momentum_and_weight_decay(tmp_path, toggle):
    seed_everything(0)
    model, recorder = ThreeLayers(), Recorder()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    callback = CoordinateDescent(BLOCKS, steps_per_block=2, toggle_requires_grad=toggle)
    fit(model, [callback, recorder], 14, tmp_path)
    assert callback.step == 14
    expected = [BLOCK_PARAMS[active_block(s, 3, 2)] for s in range(14)]
    for step, (after, none) in enumerate(zip(recorder.params, recorder.grad_is_none)):
        moved = {n for n in after if not torch.equal(after[n], before[n])}
        assert moved == expected[step], f"step {step}"  # frozen blocks are bit-identical
        assert {n for n, is_none in none.items() if not is_none} == expected[step]
        before = after
    if toggle:  # autograd skipped the inactive blocks, and the flags were restored afterwards
        assert {n for n, flag in model.seen_requires_grad[0].items() if flag} == BLOCK_PARAMS[0]
        assert {n for n, flag in model.seen_requires_grad[2].items() if flag} == BLOCK_PARAMS[1]
        assert all(p.requires_grad for p in model.parameters())
    else:
        assert all(all(seen.values()) for seen in model.seen_requires_grad)


def test_gradient_accumulation_counts_optimizer_steps(tmp_path):
    seed_everything(0)
    callback = CoordinateDescent(BLOCKS)
    trainer = fit(ThreeLayers(), [callback], 5, tmp_path, accumulate_grad_batches=3)
    assert trainer.global_step == callback.step == 5
    assert callback.active == active_block(5, 3, 1) == 2


@pytest.mark.parametrize(
    ("unassigned", "moves"),
    [("train", {"net.0.weight", "net.0.bias", "scale"}), ("freeze", {"net.0.weight", "net.0.bias"})],
)
def test_unassigned_parameters(tmp_path, unassigned, moves):
    seed_everything(0)
    model, recorder = ThreeLayers(), Recorder()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    blocks = ["net.0", "net.2", "net.3"]  # `scale` is in no block
    fit(model, [CoordinateDescent(blocks, unassigned=unassigned, toggle_requires_grad=True), recorder], 1, tmp_path)
    assert {n for n, p in recorder.params[0].items() if not torch.equal(p, before[n])} == moves
    assert model.scale.requires_grad  # restored


def test_frozen_parameters_stay_out_of_blocks(tmp_path):
    """A parameter frozen before fitting is not 'unassigned', and a block of only frozen ones is an error."""
    seed_everything(0)
    model = ThreeLayers()
    model.scale.requires_grad_(False)
    fit(model, [CoordinateDescent(["net.0", "net.2", "net.3"])], 1, tmp_path)
    model = ThreeLayers()
    model.net[0].requires_grad_(False)
    with pytest.raises(ValueError, match=r"Block 0 \('net.0'\) has no trainable parameters"):
        fit(model, [CoordinateDescent(["net.0", "net.2", "net.3", "scale"])], 1, tmp_path)


# --- checkpoints ----------------------------------------------------------------------------------


class CrashAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError("crash")


def run(tmp_path, crash_at=None, ckpt_path=None):
    seed_everything(0)
    model = ThreeLayers()
    callback = CoordinateDescent(BLOCKS, steps_per_block=2)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_last=True, save_top_k=0)
    callbacks = [callback, checkpoint] + ([CrashAt(crash_at)] if crash_at is not None else [])
    if crash_at is None:
        fit(model, callbacks, 10, tmp_path, ckpt_path=ckpt_path, enable_checkpointing=True)
    else:
        with pytest.raises(RuntimeError, match="crash"):
            fit(model, callbacks, 10, tmp_path, enable_checkpointing=True)
    return model, callback


@pytest.mark.filterwarnings("ignore:.*resuming from a checkpoint that ended before the epoch ended.*")
@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_crash_and_resume_equals_uninterrupted_run(tmp_path):
    """Crash after 5 steps (mid-block: block 2's first step done) and resume from the last checkpoint."""
    whole, whole_callback = run(tmp_path / "whole")
    run(tmp_path / "crash", crash_at=5)
    last = tmp_path / "crash" / "ckpt" / "last.ckpt"
    saved = torch.load(last, weights_only=False)["callbacks"][whole_callback.state_key]
    assert saved == {"step": 5, "active": 2}
    resumed, resumed_callback = run(tmp_path / "crash", ckpt_path=last)
    assert resumed_callback.step == whole_callback.step == 10
    for (name, a), b in zip(whole.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name


def test_state_key_tells_instances_apart():
    a, b = CoordinateDescent(["net.0", "net.2"]), CoordinateDescent(["net.0", "net.2"], steps_per_block=2)
    assert a.state_key != b.state_key
    b.load_state_dict({})  # fields added later default
    assert b.step == 0
    b.load_state_dict({"step": 3})
    assert (b.step, b.active) == (3, 1)


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exception", "match"),
    [
        (dict(blocks=[]), ValueError, r"`blocks` must name at least one block, but got blocks=\[\]"),
        (dict(blocks="net.0"), TypeError, "`blocks` must be a list"),
        (dict(blocks=[3]), TypeError, "must be a module name or a list of parameter names"),
        (dict(blocks=[[]]), ValueError, "must name at least one parameter"),
        (
            dict(blocks=["net.0"], steps_per_block=0),
            ValueError,
            r"`steps_per_block` must be an integer >= 1, but got steps_per_block=0\.",
        ),
        (dict(blocks=["net.0"], steps_per_block=1.5), TypeError, "`steps_per_block` must be an integer"),
        (dict(blocks=["net.0"], unassigned="ignore"), ValueError, "`unassigned` must be one of 'error', 'train'"),
        (dict(blocks=["net.0"], toggle_requires_grad=1), TypeError, "`toggle_requires_grad` must be True or False"),
    ],
)
def test_bad_arguments(kwargs, exception, match):
    with pytest.raises(exception, match=match):
        CoordinateDescent(**kwargs)


@pytest.mark.parametrize(
    ("blocks", "match"),
    [
        (["encoder", "net.2"], r"module 'encoder'.*Use any of the following: 'net', 'net.0', 'net.2', 'net.3'\."),
        ([["net.9"], ["net.0"]], r"'net.9', which matches no parameter\. Use any of the following: 'scale'"),
        (["net.0", "net.2"], r"`scale`, `net.3.weight`, `net.3.bias` are in no block"),
        (["net", "net.0", "scale"], r"Parameter `net.0.weight` is in block 0 and in block 1"),
    ],
)
def test_bad_blocks_raise_when_fitting_starts(tmp_path, blocks, match):
    seed_everything(0)
    with pytest.raises(ValueError, match=match):
        fit(ThreeLayers(), [CoordinateDescent(blocks)], 1, tmp_path)
