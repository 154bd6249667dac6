"""lightopt's first-order optimizers inside real Lightning fits."""

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from lightopt.optim import SGD, AdaGrad, Adam, RMSProp

X = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
Y = X @ torch.linspace(-1, 1, 5).unsqueeze(1) + 0.1


class Regression(L.LightningModule):
    def __init__(self, make_optimizer, dtype=torch.float64):
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(5, 1).to(dtype)
        self.make_optimizer = make_optimizer

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x.to(self.layer.weight.dtype)), y.to(self.layer.weight.dtype))

    def configure_optimizers(self):
        return self.make_optimizer(self.parameters())


def fit(module, steps=12, **trainer_kwargs):
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=64)
    options = dict(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer = L.Trainer(**{**options, **trainer_kwargs})
    trainer.fit(module, loader)
    return trainer


@pytest.mark.parametrize("optimizer", [SGD, RMSProp])
def test_interim_mode_uses_lightnings_closure_and_matches_lookahead(optimizer):
    """The two Nesterov modes hold θ and θ + αv of the same trajectory."""
    kwargs = dict(lr=0.05, momentum=0.9, nesterov=True)
    interim = Regression(lambda p: optimizer(p, mode="interim", **kwargs))
    lookahead = Regression(lambda p: optimizer(p, mode="lookahead", **kwargs))
    fit(interim)
    trainer = fit(lookahead)
    opt = trainer.optimizers[0]
    for p_interim, p_lookahead in zip(interim.parameters(), lookahead.parameters()):
        velocity = opt.velocity(p_lookahead) if optimizer is SGD else opt.state[p_lookahead]["velocity"]
        theta = p_lookahead.detach() - 0.9 * velocity
        torch.testing.assert_close(p_interim.detach(), theta, rtol=1e-10, atol=1e-12)


def scaler_plugin():
    """16-bit mixed precision with a gradient scaler, as on CUDA: Lightning then calls step() without a closure."""
    return MixedPrecision(precision="16-mixed", device="cpu", scaler=torch.amp.GradScaler("cpu"))


def test_lookahead_mode_trains_under_a_grad_scaler_and_interim_says_why_not():
    module = Regression(lambda p: SGD(p, lr=0.05, momentum=0.9, nesterov=True), dtype=torch.float32)
    before = module.layer.weight.detach().clone()
    fit(module, steps=5, plugins=[scaler_plugin()])
    assert not torch.equal(before, module.layer.weight.detach())

    module = Regression(lambda p: SGD(p, lr=0.05, momentum=0.9, nesterov=True, mode="interim"), dtype=torch.float32)
    with pytest.raises(ValueError, match="mode='lookahead'"):
        fit(module, steps=5, plugins=[scaler_plugin()])


SWITCHES = {
    "SGD": (lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True), lambda p: SGD(p, lr=1.0)),
    "RMSProp": (lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.5), lambda p: RMSProp(p)),
    "Adam": (lambda p: torch.optim.Adam(p, lr=0.01), lambda p: Adam(p)),
    "AdaGrad": (lambda p: torch.optim.Adagrad(p, lr=0.1), lambda p: AdaGrad(p)),
}


@pytest.mark.parametrize("name", SWITCHES)
def test_a_checkpoint_of_torch_optim_resumes_with_the_lightopt_class_of_the_same_name(name, tmp_path):
    """Switch the import mid-project and resume from the torch.optim checkpoint: the run goes on as torch's would."""
    theirs, ours = SWITCHES[name]
    uninterrupted = Regression(theirs)
    fit(uninterrupted, steps=8)

    first = Regression(theirs)
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=4, save_top_k=-1)
    fit(first, steps=4, callbacks=[checkpoint], enable_checkpointing=True, default_root_dir=tmp_path)
    (path,) = tmp_path.glob("*.ckpt")

    resumed = Regression(ours)
    trainer = L.Trainer(
        max_steps=8,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=64)
    trainer.fit(resumed, loader, ckpt_path=path)
    assert type(trainer.optimizers[0]).__module__.startswith("lightopt.optim")
    for a, b in zip(resumed.parameters(), uninterrupted.parameters()):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-12, atol=1e-14)
