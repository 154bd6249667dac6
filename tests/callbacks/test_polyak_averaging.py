"""lightopt.callbacks.polyak_averaging: arithmetic and EMA Polyak averaging (§8.7.3, eq. 8.39)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, TensorDataset

from lightopt.callbacks.polyak_averaging import PolyakAveraging

X = torch.randn(16, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
Y = X @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64) + 0.3


class Regression(LightningModule):
    """Linear regression in float64, SGD with momentum, so the iterates wander and differ."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.layer = torch.nn.Linear(3, 1).double()

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.5)


class Validated(Regression):
    """Records the weights that validation sees."""

    def __init__(self):
        super().__init__()
        self.seen_in_validation = []

    def validation_step(self, batch, batch_idx):
        self.seen_in_validation.append(flat(self).clone())


class Quadratic(LightningModule):
    """J(θ) = ½λθ², gradient descent with ε = 1.9/λ: θ ← (1 − 1.9)θ oscillates around 0."""

    def __init__(self, lam=4.0):
        super().__init__()
        self.lam = lam
        self.theta = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))

    def training_step(self, batch, batch_idx):
        return 0.5 * self.lam * (self.theta**2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1.9 / self.lam)


class Iterates(Callback):
    """θ after every optimizer step; Iterates.at[k] is θ after step index k (zero-based)."""

    def __init__(self):
        self.at = []

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.at.append(flat(pl_module).clone())


def flat(module):
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def loader(batch_size=4):
    return DataLoader(TensorDataset(X, Y), batch_size=batch_size)  # 4 batches per epoch, no shuffling


def fit(module, callbacks, tmp_path, steps=10, data=None, ckpt_path=None, **kwargs):
    kwargs.setdefault("enable_checkpointing", False)
    trainer = Trainer(
        max_steps=steps,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        limit_val_batches=1,
        **kwargs,
    )
    validation = loader() if isinstance(module, Validated) else None
    trainer.fit(module, data or loader(), validation, ckpt_path=ckpt_path)
    return trainer


def ema_closed_form(iterates, alpha):
    """Σ_{i=1}^{T} (1 − α) α^{T−i} θ^(i) plus the initial-copy term α^T θ^(1)."""
    T = len(iterates)
    total = sum((1 - alpha) * alpha ** (T - i) * theta for i, theta in enumerate(iterates, start=1))
    return total + alpha**T * iterates[0]


# --- the averages equal their closed forms ----------------------------------------------------------


@pytest.mark.parametrize(("start_step", "every_n_steps"), [(0, 1), (3, 1), (2, 3)])
def test_ema_equals_closed_form(tmp_path, start_step, every_n_steps):
    iterates, module = Iterates(), Regression()
    averaging = PolyakAveraging(decay=0.7, start_step=start_step, every_n_steps=every_n_steps)
    fit(module, [iterates, averaging], tmp_path)
    averaged = iterates.at[start_step::every_n_steps]
    assert averaging.num_updates == len(averaged)
    torch.testing.assert_close(flat(module), ema_closed_form(averaged, 0.7), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("start_step", [0, 4, 9])
def test_arithmetic_equals_mean_of_iterates_since_start_step(tmp_path, start_step):
    iterates, module = Iterates(), Regression()
    fit(module, [iterates, PolyakAveraging(mode="arithmetic", start_step=start_step)], tmp_path)
    expected = torch.stack(iterates.at[start_step:]).mean(dim=0)
    torch.testing.assert_close(flat(module), expected, rtol=1e-12, atol=1e-14)


def test_start_epoch_starts_at_the_first_step_of_that_epoch(tmp_path):
    iterates, module = Iterates(), Regression()
    fit(module, [iterates, PolyakAveraging(mode="arithmetic", start_epoch=2)], tmp_path)  # 4 steps per epoch
    torch.testing.assert_close(flat(module), torch.stack(iterates.at[8:]).mean(dim=0), rtol=1e-12, atol=1e-14)


def test_arithmetic_average_damps_oscillation(tmp_path):
    iterates, module = Iterates(), Quadratic(lam=4.0)
    fit(module, [iterates, PolyakAveraging(mode="arithmetic")], tmp_path, steps=20, data=DataLoader(torch.zeros(20, 1)))
    last = iterates.at[-1].abs().item()
    assert last == pytest.approx(0.9**20, rel=1e-9)  # (1 − 1.9)^20
    assert abs(module.theta.item()) < last / 5


# --- Lightning's behaviour, and the guards before the first update ------------------------------------


def test_validation_sees_the_average_only_once_averaging_began(tmp_path):
    iterates, module = Iterates(), Validated()
    fit(module, [iterates, PolyakAveraging(mode="arithmetic", start_step=6)], tmp_path, steps=12)
    # validation after epochs 1, 2, 3 (steps 4, 8, 12); the sanity check comes first
    _sanity, after_4, after_8, _ = module.seen_in_validation
    torch.testing.assert_close(after_4, iterates.at[3])  # no average yet: the current weights
    torch.testing.assert_close(after_8, torch.stack(iterates.at[6:8]).mean(dim=0))


def test_no_update_keeps_the_last_iterate_and_warns(tmp_path):
    iterates, module = Iterates(), Regression()
    with pytest.warns(UserWarning, match=r"averaged no iterate \(start_step=50.*keeps its last iterate"):
        fit(module, [iterates, PolyakAveraging(start_step=50)], tmp_path, steps=5)
    assert torch.equal(flat(module), iterates.at[-1])


class Crash(Callback):
    def __init__(self, at_step):
        self.at_step = at_step

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == self.at_step:
            raise RuntimeError("simulated crash")


@pytest.mark.parametrize(("mode", "start_step"), [("ema", 2), ("arithmetic", 5), ("ema", 10)])
def test_crash_and_resume_equals_uninterrupted(tmp_path, mode, start_step):
    """Checkpoint every 4 steps (one epoch), crash at step 10, resume from the step-8 checkpoint.

    start_step=10 checkpoints before averaging began, start_step=2 and 5 mid-average.
    """

    def make():
        return PolyakAveraging(mode, decay=0.8 if mode == "ema" else None, start_step=start_step, every_n_steps=2)

    uninterrupted = Regression()
    fit(uninterrupted, [make()], tmp_path / "a", steps=16)

    def checkpoints():
        return ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_train_steps=4, filename="{step}")

    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(Regression(), [make(), checkpoints(), Crash(10)], tmp_path / "b", steps=16, enable_checkpointing=True)
    resumed, averaging = Regression(seed=1), make()  # a different init: everything must come from the checkpoint
    fit(
        resumed,
        [averaging, checkpoints()],
        tmp_path / "b",
        steps=16,
        enable_checkpointing=True,
        ckpt_path=str(tmp_path / "ckpt" / "step=8.ckpt"),
    )
    assert averaging.num_updates == len(range(start_step, 16, 2))
    assert torch.equal(flat(resumed), flat(uninterrupted))


def test_checkpoint_holds_the_average_and_the_last_iterate(tmp_path):
    iterates, module = Iterates(), Regression()
    trainer = fit(module, [iterates, PolyakAveraging(mode="arithmetic")], tmp_path, steps=4)
    # after fit the model holds θ̂; a checkpoint saved now stores θ̂ as state_dict
    trainer.save_checkpoint(tmp_path / "end.ckpt")
    checkpoint = torch.load(tmp_path / "end.ckpt", weights_only=False)
    saved = torch.cat([checkpoint["state_dict"][k].flatten() for k in ("layer.weight", "layer.bias")])
    torch.testing.assert_close(saved, torch.stack(iterates.at).mean(dim=0))


class Normalized(LightningModule):
    """float32, with batch-norm buffers: floating running statistics and an integer num_batches_tracked."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(3, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 2)
        )

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("use_buffers", [True, False])
@pytest.mark.parametrize("mode", ["ema", "arithmetic"])
def test_in_place_update_equals_averaged_model_update_parameters(mode, use_buffers):
    """The lists-and-foreach update against torch's AveragedModel.update_parameters, over 60 updates.

    EMA is the same op (foreach lerp with weight 1 - decay): bit-identical. The arithmetic mean is a
    lerp with weight 1/(t+1) instead of torch's per-tensor a + (c - a)/(t+1) on CPU: equal up to float32
    rounding. n_averaged is equal in both modes; integer buffers (counters) are the model's own, where
    torch stores a truncated weighted mix of the two counts. Before update 31 both averaged
    models load a state with t = 10, as a checkpoint restore does: the lists and t must be rebuilt.
    """
    model, generator = Normalized(), torch.Generator().manual_seed(1)
    decay = 0.9 if mode == "ema" else None
    averaging = PolyakAveraging(mode, decay=decay, use_buffers=use_buffers)
    averaging.setup(None, model, "fit")
    kwargs = dict(multi_avg_fn=get_ema_multi_avg_fn(decay)) if mode == "ema" else {}
    reference = AveragedModel(model, use_buffers=use_buffers, **kwargs)
    for step in range(60):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=generator))
        model(torch.randn(5, 3, generator=generator) * (step + 1))  # train mode: batch norm updates its buffers
        if step == 30:  # a restore with another t: the running mean's weight must follow it
            state = reference.state_dict()
            state["n_averaged"] = torch.tensor(10)
            reference.load_state_dict(state)
            averaging._average_model.load_state_dict(state)
        averaging.on_train_batch_end(SimpleNamespace(global_step=step + 1, current_epoch=0), model, None, None, step)
        reference.update_parameters(model)
    ours = averaging._average_model.state_dict()
    assert ours.keys() == reference.state_dict().keys()
    assert averaging.num_updates == 60 and int(ours["n_averaged"]) == 10 + 30
    current = dict(model.state_dict())
    for name, expected in reference.state_dict().items():
        if name.endswith("num_batches_tracked") and use_buffers:
            assert torch.equal(ours[name], current[name.removeprefix("module.")]), name
        elif mode == "ema" or not expected.is_floating_point():
            assert torch.equal(ours[name], expected), name
        else:
            torch.testing.assert_close(ours[name], expected, rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize(
    ("kwargs", "exception", "match"),
    [
        (dict(mode="swa"), ValueError, r"`mode` must be one of 'ema', 'arithmetic', but got mode='swa'\."),
        (dict(decay=1.0), ValueError, r"`decay` must be in \[0, 1\), but got decay=1\.0\."),
        (dict(decay=1.5), ValueError, r"`decay` must be in \[0, 1\), but got decay=1\.5\."),
        (dict(decay=-0.1), ValueError, r"`decay` must be in \[0, 1\)"),
        (dict(decay="0.9"), TypeError, r"`decay` must be a real number"),
        (dict(mode="arithmetic", decay=0.9), ValueError, r"`decay` applies only to mode='ema'"),
        (dict(start_step=-1), ValueError, r"`start_step` must be an integer >= 0, but got start_step=-1\."),
        (dict(start_step=1.0), TypeError, r"`start_step` must be an integer"),
        (dict(start_epoch=-1), ValueError, r"`start_epoch` must be an integer >= 0"),
        (dict(every_n_steps=0), ValueError, r"`every_n_steps` must be an integer >= 1"),
        (dict(use_buffers="yes"), TypeError, r"`use_buffers` must be True or False"),
    ],
)
def test_bad_input(kwargs, exception, match):
    with pytest.raises(exception, match=match):
        PolyakAveraging(**kwargs)


def test_edges_are_accepted():
    assert PolyakAveraging(decay=0.0).decay == 0.0
    assert PolyakAveraging(decay=0.999999).decay == 0.999999
    assert PolyakAveraging(mode="arithmetic").decay is None
    assert PolyakAveraging(start_step=0, start_epoch=0, every_n_steps=1).every_n_steps == 1
