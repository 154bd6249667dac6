"""Tests for lightopt.schedules: eq. 8.14, warmup composition, the momentum schedule, Lightning wiring."""

from __future__ import annotations

import copy
import csv
import functools
import io
import math

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from torch.optim.lr_scheduler import CosineAnnealingLR, ExponentialLR, LinearLR, ReduceLROnPlateau, StepLR

import lightopt.optim
from lightopt.schedules import LinearDecay, MomentumSchedule, WarmupThen, tau_from_passes


def _two_groups(optimizer_cls=lightopt.optim.SGD, lrs=(0.1, 0.03), **kwargs):
    torch.manual_seed(0)
    a, b = torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(2))
    return optimizer_cls([{"params": [a], "lr": lrs[0]}, {"params": [b], "lr": lrs[1]}], lr=lrs[0], **kwargs)


def _run(optimizer, scheduler, steps, key="lr"):
    """Values of param_group[key] seen by each of ``steps`` optimizer steps, per group."""
    seen = []
    for _ in range(steps):
        seen.append([_read(group, key) for group in optimizer.param_groups])
        optimizer.zero_grad()
        sum((p**2).sum() for group in optimizer.param_groups for p in group["params"]).backward()
        optimizer.step()
        scheduler.step()
    return seen


def _read(group, key):
    return group["betas"][0] if key == "betas" else group[key]


def _eq_8_14(lr0, k, tau, ratio):
    alpha = min(k, tau) / tau
    return (1 - alpha) * lr0 + alpha * ratio * lr0


# --- LinearDecay -------------------------------------------------------------------------------


def test_linear_decay_book_values():
    eps0, tau, ratio = 0.1, 100, 0.01
    eps_tau = ratio * eps0
    opt = _two_groups(lrs=(eps0, eps0))
    lrs = [group_lrs[0] for group_lrs in _run(opt, LinearDecay(opt, tau=tau, final_ratio=ratio), tau + 51)]
    expected = {
        0: eps0,
        1: eps0 - (eps0 - eps_tau) / tau,
        tau // 2: (eps0 + eps_tau) / 2,
        tau: eps_tau,
        tau + 50: eps_tau,
    }
    for k, value in expected.items():
        assert lrs[k] == pytest.approx(value, rel=1e-12, abs=0), k


def test_linear_decay_equals_torch_linear_lr_per_group():
    tau, ratio, steps = 37, 0.05, 60
    ours = _two_groups()
    theirs = _two_groups()
    got = _run(ours, LinearDecay(ours, tau=tau, final_ratio=ratio), steps)
    want = _run(theirs, LinearLR(theirs, start_factor=1.0, end_factor=ratio, total_iters=tau), steps)
    for k, (g, w) in enumerate(zip(got, want)):
        assert g == pytest.approx(w, rel=1e-12, abs=0)
        # each group decays from its own initial lr (0.1 and 0.03)
        assert g == pytest.approx([_eq_8_14(0.1, k, tau, ratio), _eq_8_14(0.03, k, tau, ratio)], rel=1e-12, abs=0)


def test_linear_decay_edges_accepted():
    opt = _two_groups()
    assert _run(opt, LinearDecay(opt, tau=1, final_ratio=1.0), 3) == [[0.1, 0.03]] * 3  # constant
    opt = _two_groups()
    assert _run(opt, LinearDecay(opt, tau=1, final_ratio=1e-12), 2)[1][0] == pytest.approx(1e-13)


def test_tau_from_passes():
    assert tau_from_passes(390) == 78_000  # the default: 200 passes
    assert tau_from_passes(10, passes=0.25) == 2  # round(2.5) rounds to even
    assert tau_from_passes(1, passes=0.1) == 1  # at least one step
    assert tau_from_passes(3, passes=1e-300) == 1


# --- WarmupThen --------------------------------------------------------------------------------

AFTERS = {
    "StepLR": (functools.partial(StepLR, step_size=3, gamma=0.5), lambda lr0, j: lr0 * 0.5 ** (j // 3)),
    "ExponentialLR": (functools.partial(ExponentialLR, gamma=0.9), lambda lr0, j: lr0 * 0.9**j),
    "CosineAnnealingLR": (
        functools.partial(CosineAnnealingLR, T_max=8),
        lambda lr0, j: lr0 * (1 + math.cos(math.pi * j / 8)) / 2,
    ),
    "LinearDecay": (functools.partial(LinearDecay, tau=6, final_ratio=0.1), lambda lr0, j: _eq_8_14(lr0, j, 6, 0.1)),
}


@pytest.mark.parametrize("warmup_steps", [0, 4])
@pytest.mark.parametrize("name", list(AFTERS))
def test_warmup_then_values(name, warmup_steps):
    after, closed_form = AFTERS[name]
    start = 0.25
    opt = _two_groups()
    got = _run(opt, WarmupThen(opt, warmup_steps, after, start_factor=start), 16)
    for k, lrs in enumerate(got):
        for lr, lr0 in zip(lrs, (0.1, 0.03)):
            if k < warmup_steps:
                want = lr0 * (start + (1 - start) * k / warmup_steps)  # 1. linear warmup
            else:
                want = closed_form(lr0, k - warmup_steps)  # 2. the schedule, from ε₀, shifted by warmup_steps
            assert lr == pytest.approx(want, rel=1e-12, abs=1e-15), (k, lr0)


def test_warmup_then_accepts_any_factory():
    by_partial, by_lambda = _two_groups(), _two_groups()
    want = _run(by_partial, WarmupThen(by_partial, 2, functools.partial(LinearDecay, tau=3), start_factor=0.5), 8)
    got = _run(by_lambda, WarmupThen(by_lambda, 2, lambda opt: LinearDecay(opt, 3), start_factor=0.5), 8)
    assert got == want
    with pytest.raises(TypeError, match="T_max"):
        WarmupThen(_two_groups(), 2, CosineAnnealingLR)  # a missing argument surfaces torch's own error


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*will be overridden by `LightningCLI")
def test_warmup_then_from_lightning_cli_yaml(tmp_path, monkeypatch):
    from lightning.pytorch.cli import LightningCLI
    from lightning.pytorch.demos.boring_classes import BoringModel

    config = tmp_path / "config.yaml"
    config.write_text(
        "seed_everything: 0\n"
        "trainer: {logger: false, enable_checkpointing: false}\n"
        "optimizer:\n"
        "  class_path: lightopt.optim.SGD\n"
        "  init_args: {lr: 0.2, momentum: 0.9}\n"
        "lr_scheduler:\n"
        "  class_path: lightopt.schedules.WarmupThen\n"
        "  init_args:\n"
        "    warmup_steps: 3\n"
        "    start_factor: 0.5\n"
        "    after:\n"
        "      class_path: lightopt.schedules.LinearDecay\n"
        "      init_args: {tau: 5}\n"
    )
    monkeypatch.setattr("sys.argv", ["lightopt"])
    cli = LightningCLI(
        BoringModel,
        run=False,
        args=["--config", str(config), f"--trainer.default_root_dir={tmp_path}"],
        save_config_callback=None,
    )
    optimizers, schedulers = cli.model.configure_optimizers()
    assert isinstance(schedulers[0], WarmupThen)
    lrs = [lr for (lr,) in _run(optimizers[0], schedulers[0], 10)]
    warmup = [0.2 * (0.5 + 0.5 * k / 3) for k in range(3)]
    assert lrs == pytest.approx(warmup + [_eq_8_14(0.2, j, 5, 0.01) for j in range(7)], rel=1e-12)


# --- MomentumSchedule --------------------------------------------------------------------------

MOMENTUM_OPTIMIZERS = {
    "lightopt.SGD": (functools.partial(lightopt.optim.SGD, momentum=0.1), "momentum"),
    "lightopt.SGD-nesterov": (functools.partial(lightopt.optim.SGD, momentum=0.1, nesterov=True), "momentum"),
    "lightopt.RMSProp": (lightopt.optim.RMSProp, "momentum"),
    "torch.SGD": (torch.optim.SGD, "momentum"),
    "torch.RMSprop": (functools.partial(torch.optim.RMSprop, momentum=0.1), "momentum"),
    "lightopt.Adam": (lightopt.optim.Adam, "betas"),
    "torch.AdamW": (torch.optim.AdamW, "betas"),
}


@pytest.mark.parametrize("name", list(MOMENTUM_OPTIMIZERS))
@pytest.mark.parametrize(
    "ramp, expected",
    [
        (False, [0.5, 0.5, 0.5, 0.9, 0.9, 0.99, 0.99, 0.99]),
        (True, [0.5, 0.5 + 0.4 / 3, 0.5 + 0.8 / 3, 0.9, 0.945, 0.99, 0.99, 0.99]),
    ],
)
def test_momentum_schedule_values(name, ramp, expected):
    cls, key = MOMENTUM_OPTIMIZERS[name]
    opt = _two_groups(cls)
    beta2 = opt.param_groups[0]["betas"][1] if key == "betas" else None
    got = _run(opt, MomentumSchedule(opt, milestones=[3, 5], values=[0.5, 0.9, 0.99], ramp=ramp), 8, key=key)
    assert [a for a, _ in got] == pytest.approx(expected, rel=1e-12)
    assert all(a == b for a, b in got)  # every group gets the same α
    if key == "betas":
        assert all(g["betas"][1] == beta2 for g in opt.param_groups)  # ρ2 untouched
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.03]  # learning rates pass through


def test_momentum_schedule_composes_with_lr_schedules():
    opt = _two_groups(momentum=0.2)
    decay = LinearDecay(opt, tau=4)
    momentum = MomentumSchedule(opt, milestones=[2], values=[0.5, 0.9])
    chained = torch.optim.lr_scheduler.ChainedScheduler([decay, momentum])
    lrs = _run(opt, chained, 6)
    assert [lr[0] for lr in lrs] == pytest.approx([_eq_8_14(0.1, k, 4, 0.01) for k in range(6)], rel=1e-12)
    assert momentum.get_last_momentum() == [0.9, 0.9]


def test_momentum_schedule_from_zero_on_lightopt_rmsprop():
    opt = _two_groups(lightopt.optim.RMSProp)
    got = _run(opt, MomentumSchedule(opt, milestones=[2], values=[0.0, 0.9]), 4, key="momentum")
    assert [m[0] for m in got] == [0.0, 0.0, 0.9, 0.9]
    assert all(torch.isfinite(p).all() for g in opt.param_groups for p in g["params"])


# --- state_dict round trip: interrupted run == uninterrupted run --------------------------------

ROUND_TRIPS = {
    "LinearDecay": lambda opt: [LinearDecay(opt, tau=7, final_ratio=0.1)],
    "WarmupThen": lambda opt: [WarmupThen(opt, 3, functools.partial(CosineAnnealingLR, T_max=6), start_factor=0.2)],
    "MomentumSchedule+LinearDecay": lambda opt: [
        LinearDecay(opt, tau=9),
        MomentumSchedule(opt, milestones=[2, 6], values=[0.5, 0.9, 0.99], ramp=True),
    ],
}


@pytest.mark.parametrize("name", list(ROUND_TRIPS))
@pytest.mark.parametrize("stop_at", [2, 5])
def test_state_dict_round_trip_resumes_exactly(name, stop_at):
    def fresh():
        opt = _two_groups(momentum=0.3)
        return opt, ROUND_TRIPS[name](opt)

    opt, scheds = fresh()
    uninterrupted = [(g["lr"], g["momentum"]) for g in _snapshots(opt, scheds, 12)]
    final = [p.detach().clone() for g in opt.param_groups for p in g["params"]]

    opt, scheds = fresh()
    first = [(g["lr"], g["momentum"]) for g in _snapshots(opt, scheds, stop_at)]
    buffer = io.BytesIO()
    torch.save(
        {
            "opt": opt.state_dict(),
            "scheds": [s.state_dict() for s in scheds],
            "params": [p.detach() for g in opt.param_groups for p in g["params"]],
        },
        buffer,
    )
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)

    opt, scheds = fresh()  # Lightning's order: build, then load the optimizer, then the schedulers
    with torch.no_grad():
        for p, saved in zip([p for g in opt.param_groups for p in g["params"]], checkpoint["params"]):
            p.copy_(saved)
    opt.load_state_dict(checkpoint["opt"])
    for sched, state in zip(scheds, checkpoint["scheds"]):
        sched.load_state_dict(state)
    second = [(g["lr"], g["momentum"]) for g in _snapshots(opt, scheds, 12 - stop_at)]

    assert first + second == uninterrupted
    resumed = [p.detach() for g in opt.param_groups for p in g["params"]]
    assert all(torch.equal(a, b) for a, b in zip(resumed, final))


def _snapshots(opt, scheds, steps):
    """Copies of param group 0 as each step saw it."""
    seen = []
    for _ in range(steps):
        seen.append(copy.copy(opt.param_groups[0]))
        opt.zero_grad()
        sum((p**2).sum() for g in opt.param_groups for p in g["params"]).backward()
        opt.step()
        for sched in scheds:
            sched.step()
    return seen


# --- Lightning ---------------------------------------------------------------------------------


class _TinyModule(pl.LightningModule):
    def __init__(self, with_momentum_schedule):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.with_momentum_schedule = with_momentum_schedule

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def train_dataloader(self):
        x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)

    def configure_optimizers(self):
        optimizer = lightopt.optim.SGD(self.parameters(), lr=0.1, momentum=0.5)
        decay = {"scheduler": LinearDecay(optimizer, tau=6, final_ratio=0.01), "interval": "step"}
        if not self.with_momentum_schedule:
            return {"optimizer": optimizer, "lr_scheduler": decay}
        momentum = MomentumSchedule(optimizer, milestones=[3, 7], values=[0.5, 0.9, 0.99])
        return [optimizer], [decay, {"scheduler": momentum, "interval": "step", "name": "momentum-schedule"}]


@pytest.mark.parametrize("with_momentum_schedule", [False, True])
def test_lightning_fit_logs_the_schedules(tmp_path, with_momentum_schedule):
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        max_steps=10,
        log_every_n_steps=1,
        logger=CSVLogger(tmp_path),
        callbacks=[LearningRateMonitor(logging_interval="step", log_momentum=True)],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(_TinyModule(with_momentum_schedule))
    assert trainer.global_step == 10
    with open(tmp_path / "lightning_logs" / "version_0" / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("lr-SGD")]
    assert [int(row["step"]) for row in rows] == list(range(10))
    assert [float(row["lr-SGD"]) for row in rows] == pytest.approx(
        [_eq_8_14(0.1, k, 6, 0.01) for k in range(10)], rel=1e-12
    )
    if with_momentum_schedule:
        expected = [0.5] * 3 + [0.9] * 4 + [0.99] * 3
        assert [float(row["momentum-schedule-momentum"]) for row in rows] == expected
    else:
        assert [float(row["lr-SGD-momentum"]) for row in rows] == [0.5] * 10


# --- bad input ---------------------------------------------------------------------------------


def _returns_plateau(opt):
    return ReduceLROnPlateau(opt)


BAD = [
    # (build from an optimizer, exception, match)
    (lambda o: LinearDecay(o, tau=0), ValueError, r"`tau` must be an integer >= 1, but got tau=0\."),
    (lambda o: LinearDecay(o, tau=-3), ValueError, r"`tau` must be an integer >= 1, but got tau=-3\."),
    (lambda o: LinearDecay(o, tau=10.0), TypeError, r"`tau` must be an integer, but got tau=10\.0"),
    (
        lambda o: LinearDecay(o, 10, final_ratio=0),
        ValueError,
        r"`final_ratio` must be in \(0, 1\], but got final_ratio=0: .*LinearLR",
    ),
    (
        lambda o: LinearDecay(o, 10, final_ratio=-0.1),
        ValueError,
        r"`final_ratio` must be in \(0, 1\], but got final_ratio=-0\.1\.",
    ),
    (lambda o: LinearDecay(o, 10, final_ratio=1.000001), ValueError, r"\(0, 1\], but got final_ratio=1\.000001\."),
    (lambda o: LinearDecay(o, 10, final_ratio="0.01"), TypeError, r"`final_ratio` must be a real number"),
    (
        lambda o: tau_from_passes(0),
        ValueError,
        r"`steps_per_epoch` must be an integer >= 1, but got steps_per_epoch=0\.",
    ),
    (lambda o: tau_from_passes(100.0), TypeError, r"`steps_per_epoch` must be an integer"),
    (lambda o: tau_from_passes(100, passes=0), ValueError, r"`passes` must be > 0, but got passes=0\.0\."),
    (lambda o: tau_from_passes(100, passes=math.inf), ValueError, r"`passes` must be finite, but got passes=inf\."),
    (
        lambda o: WarmupThen(o, -1, LinearDecay),
        ValueError,
        r"`warmup_steps` must be an integer >= 0, but got warmup_steps=-1\.",
    ),
    (
        lambda o: WarmupThen(o, 2.5, LinearDecay),
        TypeError,
        r"`warmup_steps` must be an integer, but got warmup_steps=2\.5",
    ),
    (
        lambda o: WarmupThen(o, 5, LinearDecay, start_factor=0),
        ValueError,
        r"`start_factor` must be in \(0, 1\], but got start_factor=0\.0\.",
    ),
    (
        lambda o: WarmupThen(o, 5, LinearDecay, start_factor=1.5),
        ValueError,
        r"`start_factor` must be in \(0, 1\], but got start_factor=1\.5\.",
    ),
    (
        lambda o: WarmupThen(o, 5, {"class_path": "torch.optim.lr_scheduler.StepLR"}),
        TypeError,
        r"`after` must be a callable .*class_path",
    ),
    (lambda o: WarmupThen(o, 5, StepLR(o, 2)), TypeError, r"`after` must be a callable .*an instance after=.*StepLR"),
    (lambda o: WarmupThen(o, 5, _returns_plateau), ValueError, r"got ReduceLROnPlateau.*side by side.*'monitor'"),
    (
        lambda o: WarmupThen(o, 5, lambda opt: 3),
        TypeError,
        r"`after` must return a torch.optim.lr_scheduler.LRScheduler, but it returned 3",
    ),
    (lambda o: WarmupThen(o, 5, lambda opt: StepLR(_two_groups(), 2)), ValueError, r"on the optimizer it is given"),
    (
        lambda o: MomentumSchedule(o, [5, 5], [0.5, 0.9, 0.99]),
        ValueError,
        r"`milestones` must be strictly increasing, but got milestones=\[5, 5\]\.",
    ),
    (
        lambda o: MomentumSchedule(o, [9, 5], [0.5, 0.9, 0.99]),
        ValueError,
        r"strictly increasing, but got milestones=\[9, 5\]\.",
    ),
    (
        lambda o: MomentumSchedule(o, [0], [0.5, 0.9]),
        ValueError,
        r"`milestones\[0\]` must be an integer >= 1, but got milestones\[0\]=0\.",
    ),
    (
        lambda o: MomentumSchedule(o, 5, [0.5, 0.9]),
        TypeError,
        r"`milestones` must be a list of integers, but got milestones=5\.",
    ),
    (
        lambda o: MomentumSchedule(o, [5], [0.5]),
        ValueError,
        r"one more entry than `milestones`.*got 1 values for 1 milestones",
    ),
    (
        lambda o: MomentumSchedule(o, [5], [0.5, 1.0]),
        ValueError,
        r"`values\[1\]` must be in \[0, 1\), but got values\[1\]=1\.0\.",
    ),
    (
        lambda o: MomentumSchedule(o, [5], [-0.1, 0.9]),
        ValueError,
        r"`values\[0\]` must be in \[0, 1\), but got values\[0\]=-0\.1\.",
    ),
    (
        lambda o: MomentumSchedule(o, [5], 0.9),
        TypeError,
        r"`values` must be a list of momentum values, but got values=0\.9\.",
    ),
    (
        lambda o: MomentumSchedule(o, [5], [0.5, 0.9], ramp="yes"),
        TypeError,
        r"`ramp` must be True or False, but got ramp='yes'",
    ),
    (
        lambda o: MomentumSchedule(torch.optim.Adagrad(o.param_groups[0]["params"]), [5], [0.5, 0.9]),
        TypeError,
        r"`optimizer` must have `momentum`.*or `betas`.*Adagrad.*use any of the following",
    ),
    (
        lambda o: MomentumSchedule(torch.optim.RMSprop(o.param_groups[0]["params"]), [5], [0.0, 0.9]),
        ValueError,
        r"`values\[0\]` must be > 0 for torch.optim.RMSprop.*lightopt.optim.RMSProp",
    ),
    (
        lambda o: MomentumSchedule(_two_groups(momentum=0.9, nesterov=True), [5], [0.0, 0.9]),
        ValueError,
        r"`values` must be in \(0, 1\) with nesterov=True.*values=\[0\.0, 0\.9\]",
    ),
]


@pytest.mark.parametrize("build, error, match", BAD, ids=[f"{i:02d}-{e.__name__}" for i, (_, e, _) in enumerate(BAD)])
def test_bad_arguments(build, error, match):
    opt = _two_groups(momentum=0.3)
    with pytest.raises(error, match=match):
        build(opt)
    # raised before touching the learning rates or momentum
    assert [(g["lr"], g["momentum"]) for g in opt.param_groups] == [(0.1, 0.3), (0.03, 0.3)]


def test_edges_accepted():
    opt = _two_groups(momentum=0.3)
    assert (
        _run(opt, WarmupThen(opt, 1, functools.partial(LinearDecay, tau=1, final_ratio=1.0), start_factor=1.0), 3)
        == [[0.1, 0.03]] * 3
    )
    opt = _two_groups(momentum=0.3)
    got = _run(opt, MomentumSchedule(opt, milestones=[1], values=[0.0, 0.999999]), 3, key="momentum")
    assert [m[0] for m in got] == [0.0, 0.999999, 0.999999]
    opt = _two_groups(momentum=0.3)
    assert _run(opt, MomentumSchedule(opt, milestones=[], values=[0.7]), 2, key="momentum") == [[0.7, 0.7]] * 2
