"""Every first-order optimizer under Lightning's mixed precision: bf16-mixed, and 16-mixed with a GradScaler.

On a GPU, ``precision="16-mixed"`` comes with a ``GradScaler``: Lightning unscales the gradients,
skips steps whose gradients overflowed, and calls ``optimizer.step()`` without a closure.
``"bf16-mixed"`` needs no scaler and passes the closure. Both run here on the CPU (Lightning's
``MixedPrecision`` plugin with ``torch.amp.GradScaler("cpu")`` for the scaled case), so the paths are
the ones a GPU takes; only the kernels differ. Where lightopt's optimizer equals a ``torch.optim``
one, both are fitted under the same precision and must end at the same parameters.
"""

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from lightopt.optim import SGD, AdaGrad, Adam, RMSProp

X = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
Y = X @ torch.linspace(-1, 1, 5).unsqueeze(1) + 0.1


class Regression(L.LightningModule):
    def __init__(self, make_optimizer):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        self.make_optimizer = make_optimizer
        self.losses = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x).float(), y)
        self.losses.append(loss.item())
        return loss

    def configure_optimizers(self):
        return self.make_optimizer(self.parameters())


def _precision(kind):
    if kind == "16-mixed":  # as on CUDA: a GradScaler, and step() without a closure
        return {"plugins": [MixedPrecision(precision="16-mixed", device="cpu", scaler=torch.amp.GradScaler("cpu"))]}
    return {"precision": kind}


def fit(make_optimizer, kind, steps=15):
    module = Regression(make_optimizer)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=16)
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **_precision(kind),
    )
    trainer.fit(module, loader)
    return module, trainer


PAIRS = {
    "SGD": (lambda p: SGD(p, lr=0.05), lambda p: torch.optim.SGD(p, lr=0.05)),
    "SGD momentum": (lambda p: SGD(p, lr=0.05, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    "SGD Nesterov lookahead": (
        lambda p: SGD(p, lr=0.05, momentum=0.9, nesterov=True),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
    ),
    "AdaGrad": (lambda p: AdaGrad(p, lr=0.1, eps=1e-7), lambda p: torch.optim.Adagrad(p, lr=0.1, eps=1e-7)),
    "Adam": (lambda p: Adam(p, lr=0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
}
OWN_KERNELS = {  # RMSProp has δ inside the root (torch's outside): its own kernels, no torch twin
    "RMSProp": lambda p: RMSProp(p, lr=0.01),
    "RMSProp momentum": lambda p: RMSProp(p, lr=0.01, momentum=0.9),
    "RMSProp Nesterov lookahead": lambda p: RMSProp(p, lr=0.01, momentum=0.9, nesterov=True),
}


@pytest.mark.parametrize("kind", ["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("name", list(PAIRS))
def test_matches_torch_under_mixed_precision(name, kind):
    ours, theirs = PAIRS[name]
    module, trainer = fit(ours, kind)
    reference, _ = fit(theirs, kind)
    for p, q in zip(module.parameters(), reference.parameters()):
        assert p.dtype == torch.float32  # the master weights stay float32; autocast only lowers the matmuls
        torch.testing.assert_close(p.detach(), q.detach())
    assert module.losses[-1] < module.losses[0]
    for state in trainer.optimizers[0].state.values():
        assert all(v.dtype == torch.float32 for v in state.values() if torch.is_tensor(v) and v.numel() > 1)


@pytest.mark.parametrize("kind", ["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("name", list(OWN_KERNELS))
def test_rmsprop_trains_under_mixed_precision(name, kind):
    module, trainer = fit(OWN_KERNELS[name], kind)
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert module.losses[-1] < module.losses[0]
    assert trainer.global_step == 15


def test_grad_scaler_skips_an_overflowed_step_and_the_optimizer_state_stays_clean():
    """A step whose scaled gradients overflow is skipped by the scaler: the velocity must not take it in."""

    class Overflowing(Regression):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * 1e30 if self.global_step == 2 else loss  # inf in float16 once scaled

    module = Overflowing(lambda p: SGD(p, lr=0.05, momentum=0.9, nesterov=True))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=16)
    scaler = torch.amp.GradScaler("cpu")
    trainer = L.Trainer(
        max_steps=6,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        plugins=[MixedPrecision(precision="16-mixed", device="cpu", scaler=scaler)],
    )
    trainer.fit(module, loader)
    assert scaler.get_scale() < 2.0**16  # the overflow was seen and the scale backed off
    assert all(torch.isfinite(p).all() for p in module.parameters())
    optimizer = trainer.optimizers[0]
    assert all(torch.isfinite(optimizer.velocity(p)).all() for p in module.parameters())


@pytest.mark.parametrize("optimizer", [SGD, RMSProp])
def test_interim_mode_runs_under_bf16_and_says_what_to_use_under_a_grad_scaler(optimizer):
    make = lambda p: optimizer(p, lr=0.01, momentum=0.9, nesterov=True, mode="interim")  # noqa: E731
    module, _ = fit(make, "bf16-mixed")  # bf16 passes the closure: the interim point is evaluated
    assert module.losses[-1] < module.losses[0]
    with pytest.raises(
        ValueError,
        match=rf"{optimizer.__name__}\(nesterov=True, mode='interim'\).*use "
        r"mode='lookahead' there",
    ):
        fit(make, "16-mixed")
