"""lightopt.callbacks.gradient_clipping: the book's norm clipping and random step (§8.2.4, §10.11.1)."""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.plugins.precision import MixedPrecision
from torch.utils.data import DataLoader

from lightopt.callbacks.gradient_clipping import (
    GradientClipping,
    clip_by_norm_,
    clip_by_value_,
    random_step_,
    total_norm,
)


class Linear(LightningModule):
    """J = Σ_k c_k·w_k, so g = c whatever w is; the loss is NaN at the steps in `nan_at`."""

    def __init__(self, coefficients, nan_at=(), lr=1.0, dtype=torch.float64):
        super().__init__()
        self.c = [torch.tensor(c, dtype=dtype) for c in coefficients]
        self.w = torch.nn.ParameterList(torch.nn.Parameter(torch.ones(len(c), dtype=dtype)) for c in coefficients)
        self.nan_at, self.lr = set(nan_at), lr

    def training_step(self, batch, batch_idx):
        loss = sum((c * w).sum() for c, w in zip(self.c, self.w))
        return loss * math.nan if self.global_step in self.nan_at else loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class Grads(Callback):
    """The gradients the optimizer steps with, per step (placed after the clipping callback)."""

    def __init__(self):
        self.seen = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.seen.append([p.grad.detach().clone() for p in pl_module.parameters()])


def fit(module, callbacks, steps=1, **kwargs):
    trainer = Trainer(
        max_steps=steps,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=kwargs.pop("default_root_dir", None),
        **kwargs,
    )
    trainer.fit(module, DataLoader(torch.zeros(steps, 1)))
    return trainer


# --- the pure math ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_norm_clipping_is_exact_book_rule(dtype):
    g = [torch.tensor([6.0, 8.0], dtype=dtype)]
    assert clip_by_norm_(g, 1.0) == (10.0, True)
    assert torch.equal(g[0], torch.tensor([0.6, 0.8], dtype=dtype))

    small = [torch.tensor([0.3, 0.4], dtype=dtype)]
    norm, clipped = clip_by_norm_(small, 1.0)
    assert not clipped and norm == pytest.approx(0.5)
    assert torch.equal(small[0], torch.tensor([0.3, 0.4], dtype=dtype))


def test_torch_clip_grad_norm_lands_just_below_the_threshold():
    """torch multiplies by v/(‖g‖ + 1e-6): the norm is 10/(10 + 1e-6) = 0.9999999, not 1."""
    p = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    p.grad = torch.tensor([6.0, 8.0], dtype=torch.float64)
    torch.nn.utils.clip_grad_norm_([p], max_norm=1.0)
    assert p.grad.norm().item() == pytest.approx(0.9999999, rel=0, abs=1e-12)
    assert p.grad.norm().item() < 1.0

    book = [torch.tensor([6.0, 8.0], dtype=torch.float64)]
    clip_by_norm_(book, 1.0)
    assert book[0].norm().item() == 1.0


def test_one_joint_scale_over_all_tensors():
    g = [torch.tensor([3.0]), torch.tensor([4.0])]  # each alone is above v = 1
    assert clip_by_norm_(g, 1.0) == (5.0, True)
    torch.testing.assert_close(torch.cat(g), torch.tensor([0.6, 0.8]), rtol=0, atol=1e-7)


def test_value_clipping_is_element_wise():
    g = [torch.tensor([6.0, -0.5]), torch.tensor([-8.0])]
    assert clip_by_value_(g, 1.0)
    assert torch.equal(torch.cat(g), torch.tensor([1.0, -0.5, -1.0]))
    assert not clip_by_value_([torch.tensor([0.2, -0.9])], 1.0)


def test_random_step_has_norm_v_and_is_seeded():
    def draw(seed):
        g = [torch.full((3, 2), math.nan, dtype=torch.float64), torch.full((4,), math.inf, dtype=torch.float64)]
        random_step_(g, 0.7, torch.Generator().manual_seed(seed))
        return torch.cat([t.flatten() for t in g])

    first = draw(5)
    assert total_norm([first]).item() == pytest.approx(0.7, rel=1e-14)
    assert torch.equal(first, draw(5))
    assert not torch.equal(first, draw(6))


# --- in a fit --------------------------------------------------------------------------------------


def test_fit_clips_jointly_and_logs(tmp_path):
    module = Linear([[3.0], [4.0]])
    trainer = fit(module, [GradientClipping(clip_val=1.0)], default_root_dir=tmp_path, log_every_n_steps=1)
    torch.testing.assert_close(torch.cat(list(module.w)), torch.tensor([0.4, 0.2], dtype=torch.float64))
    metrics = trainer.callback_metrics
    assert float(metrics["grad_clip/norm"]) == pytest.approx(5.0)
    assert float(metrics["grad_clip/clipped"]) == 1.0 and float(metrics["grad_clip/random_steps"]) == 0.0


def test_fit_value_mode(tmp_path):
    module = Linear([[6.0, -0.5]])
    fit(module, [GradientClipping(clip_val=1.0, algorithm="value")], default_root_dir=tmp_path)
    torch.testing.assert_close(module.w[0].detach(), torch.tensor([0.0, 1.5], dtype=torch.float64))


def run_with_nan(tmp_path, seed, steps=4):
    module = Linear([[3.0, 4.0], [1.0]], nan_at={1}, lr=0.1)
    grads, clipping = Grads(), GradientClipping(clip_val=0.5, seed=seed)
    trainer = fit(module, [clipping, grads], steps=steps, default_root_dir=tmp_path, log_every_n_steps=4)
    return module, grads, clipping, trainer


def test_nan_gradient_becomes_a_seeded_random_step_of_norm_v(tmp_path):
    module, grads, clipping, trainer = run_with_nan(tmp_path, seed=3)
    assert trainer.global_step == 4 and clipping.num_random_steps == 1 and clipping.num_clipped == 3
    logged = trainer.callback_metrics  # written at step 3: counts since the previous write
    assert float(logged["grad_clip/clipped"]) == 3.0 and float(logged["grad_clip/random_steps"]) == 1.0
    assert all(torch.isfinite(p).all() for p in module.parameters())
    step = torch.cat(grads.seen[1])
    assert total_norm([step]).item() == pytest.approx(0.5, rel=1e-14)
    expected = [torch.zeros(2, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)]
    random_step_(expected, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(step, torch.cat(expected))  # documented: N(0, I) in float64 on the CPU, in order
    for other in (0, 2, 3):  # the finite steps are clipped as usual
        assert torch.cat(grads.seen[other]).norm().item() == pytest.approx(0.5)

    again = run_with_nan(tmp_path, seed=3)[1]
    assert torch.equal(torch.cat(again.seen[1]), step)
    assert not torch.equal(torch.cat(run_with_nan(tmp_path, seed=4)[1].seen[1]), step)


def test_on_nonfinite_raise_names_the_parameters(tmp_path):
    module = Linear([[3.0, 4.0], [1.0]], nan_at={0})
    with pytest.raises(ValueError, match=r"Non-finite gradient at step 0 in w\.0, w\.1"):
        fit(module, [GradientClipping(clip_val=1.0, on_nonfinite="raise")], default_root_dir=tmp_path)


def test_under_a_grad_scaler_the_scaler_skips_the_nonfinite_step(tmp_path):
    module = Linear([[3.0, 4.0]], nan_at={0}, dtype=torch.float32)
    clipping = GradientClipping(clip_val=1.0)
    plugin = MixedPrecision(precision="16-mixed", device="cpu", scaler=torch.amp.GradScaler("cpu"))
    trainer = fit(module, [clipping], plugins=[plugin], default_root_dir=tmp_path, log_every_n_steps=1)
    assert clipping.num_random_steps == 0 and float(trainer.callback_metrics["grad_clip/random_steps"]) == 0.0
    assert torch.equal(module.w[0].detach(), torch.ones(2))  # step skipped by the scaler


def test_generator_state_round_trips():
    first = GradientClipping(clip_val=1.0, seed=1)
    random_step_([torch.zeros(3)], 1.0, first._generator)
    resumed = GradientClipping(clip_val=1.0, seed=99)
    resumed.load_state_dict(first.state_dict())
    a, b = [torch.zeros(5)], [torch.zeros(5)]
    random_step_(a, 1.0, first._generator)
    random_step_(b, 1.0, resumed._generator)
    assert torch.equal(a[0], b[0])


def test_refuses_to_clip_twice_with_the_trainer(tmp_path):
    with pytest.raises(ValueError, match="remove `gradient_clip_val`"):
        fit(Linear([[1.0]]), [GradientClipping(clip_val=1.0)], gradient_clip_val=1.0, default_root_dir=tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "exception", "match"),
    [
        (dict(clip_val=0.0), ValueError, r"`clip_val` must be > 0, but got clip_val=0.0\."),
        (dict(clip_val=-1.0), ValueError, r"`clip_val` must be > 0"),
        (dict(clip_val=math.inf), ValueError, r"`clip_val` must be finite"),
        (dict(clip_val=math.nan), ValueError, r"`clip_val` must not be NaN"),
        (dict(clip_val="1"), TypeError, r"`clip_val` must be a real number"),
        (dict(clip_val=1.0, algorithm="l2"), ValueError, r"`algorithm` must be one of 'norm', 'value'"),
        (dict(clip_val=1.0, on_nonfinite="skip"), ValueError, r"`on_nonfinite` must be one of 'random_step', 'raise'"),
        (dict(clip_val=1.0, seed=-1), ValueError, r"`seed` must be an integer >= 0"),
        (dict(clip_val=1.0, seed=1.5), TypeError, r"`seed` must be an integer"),
        (dict(clip_val=1.0, log=1), TypeError, r"`log` must be True or False"),
    ],
)
def test_bad_input(kwargs, exception, match):
    with pytest.raises(exception, match=match):
        GradientClipping(**kwargs)


def test_smallest_threshold_is_accepted():
    assert GradientClipping(clip_val=1e-300).clip_val == 1e-300
