"""CurvatureMonitor: eq. 8.10 on quadratics, and no trace of the monitor in training."""

import csv
import re
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from lightopt.callbacks.curvature_monitor import CurvatureMonitor
from lightopt.optim import SGD

KEYS = ["gTg", "grad_norm", "gTHg", "predicted_change", "ratio"]
DOMINATES = "curvature term dominates"


def spd_matrix(eigenvalues, seed=0):
    q, _ = torch.linalg.qr(
        torch.randn(
            len(eigenvalues), len(eigenvalues), generator=torch.Generator().manual_seed(seed), dtype=torch.float64
        )
    )
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T


class Quadratic(L.LightningModule):
    """J(θ) = ½θᵀAθ − bᵀθ, plus a frozen parameter (a constant) and one the loss never uses."""

    def __init__(self, A, b, lr, dtype=torch.float64):
        super().__init__()
        self.register_buffer("A", A.to(dtype))
        self.register_buffer("b", b.to(dtype))
        self.theta = torch.nn.Parameter(torch.linspace(-1.0, 2.0, len(b), dtype=dtype))
        self.frozen = torch.nn.Parameter(torch.ones(3, dtype=dtype), requires_grad=False)
        self.unused = torch.nn.Parameter(torch.zeros(2, dtype=dtype))
        self.lr = lr

    def J(self, theta):
        return 0.5 * theta @ self.A @ theta - self.b @ theta

    def training_step(self, batch, batch_idx):
        return self.J(self.theta) + self.frozen.sum()

    def configure_optimizers(self):
        return SGD(self.parameters(), lr=self.lr)


class Recorder(L.Callback):
    """Keeps θ at every step, as the monitor sees it."""

    def __init__(self):
        self.thetas = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.thetas[trainer.global_step] = pl_module.theta.detach().clone()


def fit(module, callbacks, tmp_path, max_steps=3, data=None, csv_logger=True, **kwargs):
    trainer = L.Trainer(
        max_steps=max_steps,
        max_epochs=kwargs.pop("max_epochs", -1),
        accelerator="cpu",
        callbacks=callbacks,
        logger=CSVLogger(tmp_path, name="logs") if csv_logger else False,
        log_every_n_steps=1,
        default_root_dir=tmp_path,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )
    trainer.fit(module, torch.utils.data.DataLoader(data if data is not None else [0.0] * 4))
    return trainer


def read_rows(trainer, prefix="curvature/"):
    """{step: {key without prefix: float}} for the monitor's rows of metrics.csv."""
    trainer.logger.save()
    rows = {}
    with open(Path(trainer.logger.log_dir) / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            values = {k[len(prefix) :]: float(v) for k, v in row.items() if k.startswith(prefix) and v != ""}
            if values:
                rows[int(row["step"])] = values
    return rows


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_quadratic_gives_gAg_and_the_exact_change_of_a_gradient_step(tmp_path, dtype, tol):
    """On a quadratic eq. 8.10 has no higher-order terms: the prediction is J(θ − εg) − J(θ)."""
    eigenvalues = [5.0, 2.0, 1.0, 0.5]
    A, b, lr = spd_matrix(eigenvalues), torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64), 0.15
    module, recorder = Quadratic(A, b, lr, dtype), Recorder()
    monitor = CurvatureMonitor(every_n_steps=1, top_eigenvalue=True, power_iterations=30)
    trainer = fit(module, [recorder, monitor], tmp_path, max_steps=3)

    rows = read_rows(trainer)
    assert sorted(rows) == [0, 1, 2]
    exact = Quadratic(A, b, lr)
    for step, row in rows.items():
        theta = recorder.thetas[step].double()
        g = A @ theta - b
        assert row["gTg"] == pytest.approx((g @ g).item(), rel=tol, abs=tol)
        assert row["grad_norm"] == pytest.approx(g.norm().item(), rel=tol, abs=tol)
        assert row["gTHg"] == pytest.approx((g @ A @ g).item(), rel=tol, abs=tol)
        change = (exact.J(theta - lr * g) - exact.J(theta)).item()
        assert row["predicted_change"] == pytest.approx(change, rel=tol, abs=tol)
        assert row["ratio"] == pytest.approx(0.5 * lr * (g @ A @ g / (g @ g)).item(), rel=tol, abs=tol)
        assert row["top_eigenvalue"] == pytest.approx(max(eigenvalues), abs=1e-4)
    assert monitor.last_metrics["curvature/gTHg"] == rows[2]["gTHg"]


class Noisy(L.LightningModule):
    """Dropout (RNG), BatchNorm (buffers) and its own `self.log` calls: all things the monitor must not disturb."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, 8),
            torch.nn.BatchNorm1d(8),
            torch.nn.Tanh(),
            torch.nn.Dropout(0.3),
            torch.nn.Linear(8, 1),
        )
        self.net[1].requires_grad_(False)  # a layer that does not require grad is skipped

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        self.log_dict({"draw": torch.rand(())}, on_step=True, on_epoch=True)
        return {"loss": loss}

    def configure_optimizers(self):
        return SGD(self.parameters(), lr=0.05, momentum=0.9)


def noisy_fit(tmp_path, callbacks):
    torch.manual_seed(1)
    x = torch.randn(48, 4)
    data = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True).sin())
    module = Noisy()
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        callbacks=callbacks,
        logger=CSVLogger(tmp_path, name="logs"),
        log_every_n_steps=1,
        default_root_dir=tmp_path,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=8, shuffle=True))
    return module, trainer


def test_training_with_the_monitor_is_bit_identical_to_training_without_it(tmp_path):
    plain, plain_trainer = noisy_fit(tmp_path / "plain", [])
    monitor = CurvatureMonitor(every_n_steps=1, top_eigenvalue=True, power_iterations=3)
    watched, watched_trainer = noisy_fit(tmp_path / "watched", [monitor])

    assert set(monitor.last_metrics) == {f"curvature/{k}" for k in [*KEYS, "top_eigenvalue"]}
    for (name, a), (_, b) in zip(plain.state_dict().items(), watched.state_dict().items()):
        assert torch.equal(a, b), name  # parameters and BatchNorm running statistics
    assert watched.training and all(m.training for m in watched.modules())
    assert "log" not in watched.__dict__ and "log_dict" not in watched.__dict__
    assert plain_trainer.logged_metrics.keys() == watched_trainer.logged_metrics.keys()
    for key, value in plain_trainer.logged_metrics.items():
        assert torch.equal(value, watched_trainer.logged_metrics[key]), key
    assert len(read_rows(watched_trainer)) == watched_trainer.global_step == 12


def test_every_n_steps_and_logged_keys(tmp_path):
    A, b = spd_matrix([3.0, 1.0]), torch.tensor([1.0, 1.0], dtype=torch.float64)
    trainer = fit(Quadratic(A, b, 0.1), [CurvatureMonitor(every_n_steps=3, prefix="c.")], tmp_path, max_steps=7)
    rows = read_rows(trainer, prefix="c.")
    assert sorted(rows) == [0, 3, 6]
    assert all(sorted(row) == sorted(KEYS) for row in rows.values())


@pytest.mark.parametrize("lr, flagged", [(0.6, True), (0.4, False)])
def test_warns_when_the_step_is_too_large_for_the_curvature(tmp_path, lr, flagged):
    """A = 4I makes the ratio ½ε·4 exactly: 1.2 for ε = 0.6, 0.8 for ε = 0.4."""
    A, b = 4.0 * torch.eye(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    monitor = CurvatureMonitor(every_n_steps=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(Quadratic(A, b, lr), [monitor], tmp_path, max_steps=5, csv_logger=False)
    messages = [str(w.message) for w in caught if DOMINATES in str(w.message)]
    assert monitor.last_metrics["curvature/ratio"] == pytest.approx(2 * lr, rel=1e-12)
    # Five flagged measurements warn at the 1st, 2nd and 4th only.
    assert len(messages) == (3 if flagged else 0)
    if flagged:
        assert "at step 3" in messages[-1] and "4 such measurements" in messages[-1]
        assert monitor.state_dict() == {"flagged": 5}


def test_state_dict_round_trip_and_none_disables_warnings(tmp_path):
    monitor = CurvatureMonitor()
    monitor.load_state_dict({"flagged": 7})
    assert monitor.state_dict() == {"flagged": 7}
    monitor.load_state_dict({})
    assert monitor.state_dict() == {"flagged": 0}
    assert CurvatureMonitor(every_n_steps=5).state_key != CurvatureMonitor(every_n_steps=6).state_key

    silent = CurvatureMonitor(every_n_steps=1, warn_ratio=None)
    A, b = 4.0 * torch.eye(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(Quadratic(A, b, 0.6), [silent], tmp_path, max_steps=2, csv_logger=False)
    assert silent.last_metrics["curvature/ratio"] > 1
    assert not [w for w in caught if DOMINATES in str(w.message)]


class Manual(Quadratic):
    """Manual optimization: its training_step steps the optimizer, so re-running it is not allowed."""

    def __init__(self, *args):
        super().__init__(*args)
        self.automatic_optimization = False
        self.calls = 0

    def training_step(self, batch, batch_idx):
        self.calls += 1
        opt = self.optimizers()
        opt.zero_grad()
        loss = self.J(self.theta)
        self.manual_backward(loss)
        opt.step()


def test_manual_optimization_needs_loss_fn_and_loss_fn_replaces_training_step(tmp_path):
    A, b = spd_matrix([2.0, 1.0]), torch.tensor([1.0, 0.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="pass `loss_fn="):
        fit(Manual(A, b, 0.1), [CurvatureMonitor(every_n_steps=1)], tmp_path, max_steps=2, csv_logger=False)

    module, recorder = Manual(A, b, 0.1), Recorder()
    monitor = CurvatureMonitor(every_n_steps=1, loss_fn=lambda m, batch: m.J(m.theta))
    fit(module, [recorder, monitor], tmp_path, max_steps=2, csv_logger=False)
    assert module.calls == 2  # training_step was not called again
    g = A @ recorder.thetas[1] - b
    assert monitor.last_metrics["curvature/gTHg"] == pytest.approx((g @ A @ g).item(), rel=1e-12)


@pytest.mark.parametrize(
    "kwargs, exception, match",
    [
        (dict(every_n_steps=0), ValueError, "`every_n_steps` must be an integer >= 1, but got every_n_steps=0."),
        (dict(every_n_steps=2.0), TypeError, "`every_n_steps` must be an integer"),
        (dict(top_eigenvalue=1), TypeError, "`top_eigenvalue` must be True or False"),
        (dict(power_iterations=0), ValueError, "`power_iterations` must be an integer >= 1"),
        (dict(warn_ratio="1"), TypeError, "`warn_ratio` must be a real number"),
        (dict(warn_ratio=float("nan")), ValueError, "`warn_ratio` must not be NaN"),
        (dict(loss_fn="loss"), TypeError, "`loss_fn` must be callable"),
        (dict(prefix=None), TypeError, "`prefix` must be a string"),
        (dict(seed=-1), ValueError, "`seed` must be an integer >= 0"),
    ],
)
def test_bad_arguments(kwargs, exception, match):
    with pytest.raises(exception, match=re.escape(match)):
        CurvatureMonitor(**kwargs)


def test_boundaries_are_accepted():
    monitor = CurvatureMonitor(every_n_steps=1, power_iterations=1, warn_ratio=0, seed=0, prefix="")
    assert (monitor.every_n_steps, monitor.power_iterations, monitor.warn_ratio) == (1, 1, 0.0)


def test_figure_8_1_example_writes_a_png_and_a_summary(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    from examples.figure_8_1 import main

    output = tmp_path / "figure.png"
    argv = [
        "--epochs",
        "1",
        "--limit-train-batches",
        "6",
        "--every-n-steps",
        "2",
        "--output",
        str(output),
        "--log-dir",
        str(tmp_path),
    ]
    assert main(argv) == 0
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "6 steps" in out and "Spearman" in out and "Verdict:" in out
    assert list(tmp_path.glob("figure_8_1/version_0/metrics.csv"))


class _Identity(torch.autograd.Function):
    """The identity, with a backward that refuses to run: marks where a double backward fails."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("this backward is not implemented")


class _SquareWithoutDoubleBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.square()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return _Identity.apply(2 * x * grad)


class BadLoss(Quadratic):
    def __init__(self, kind):
        super().__init__(torch.eye(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64), 0.1)
        self.kind = kind

    def training_step(self, batch, batch_idx):
        if self.kind == "dict without loss":
            return {"objective": self.J(self.theta)}
        if self.kind == "no double backward":
            return {"loss": _SquareWithoutDoubleBackward.apply(self.theta).sum()}
        return {"loss": self.J(self.theta)}


@pytest.mark.parametrize(
    "kind, loss_fn, exception, match",
    [
        ("twice differentiable", lambda m, batch: 2 * m.theta, TypeError, r"scalar tensor loss, but got Tensor\(2,\)"),
        ("dict without loss", None, ValueError, "without a 'loss' key"),
        ("no double backward", None, ValueError, "twice differentiable"),
    ],
)
def test_losses_it_cannot_use_are_reported(kind, loss_fn, exception, match):
    with pytest.raises(exception, match=match):
        CurvatureMonitor(loss_fn=loss_fn).measure(BadLoss(kind), batch=None, batch_idx=0, lr=0.1)


def test_measure_outside_a_trainer_matches_the_quadratic():
    module = BadLoss("twice differentiable")
    metrics = CurvatureMonitor(prefix="").measure(module, batch=None, batch_idx=0, lr=0.1)
    g = module.theta.detach()  # A = I, b = 0: g = θ and gᵀHg = gᵀg
    assert metrics["gTg"] == metrics["gTHg"] == pytest.approx((g @ g).item(), rel=1e-12)
