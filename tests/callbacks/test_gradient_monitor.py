"""lightopt.callbacks.gradient_monitor: per-layer norms, update ratios and the §8.2 flags."""

from __future__ import annotations

import csv
import math
import re
import warnings

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger, Logger
from torch.utils.data import DataLoader, TensorDataset

from lightopt.callbacks.gradient_monitor import GradientMonitor

X = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
Y = X @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]])


class Net(LightningModule):
    """`body` then `head`; `scale` multiplies the head's weights, `nan_in` poisons one layer's gradient."""

    def __init__(self, body, head, lr=0.01, scale=1.0, nan_in=None, nan_at=None):
        super().__init__()
        torch.manual_seed(0)
        self.body, self.head = body, head
        with torch.no_grad():
            self.head.weight.mul_(scale)
        self.lr, self.nan_in, self.nan_at = lr, nan_in, nan_at

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.head(self.body(x)), y)
        if self.nan_in is not None and (self.nan_at is None or self.global_step in self.nan_at):
            loss = loss + math.nan * self.get_submodule(self.nan_in).weight.sum()
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def mlp(**kwargs):
    torch.manual_seed(0)
    return Net(torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU()), torch.nn.Linear(16, 1), **kwargs)


def sigmoid_chain(depth=30):
    torch.manual_seed(0)
    layers = [torch.nn.Linear(4, 8), torch.nn.Sigmoid()]
    for _ in range(depth - 2):
        layers += [torch.nn.Linear(8, 8), torch.nn.Sigmoid()]
    return Net(torch.nn.Sequential(*layers), torch.nn.Linear(8, 1))


class ByHand(Callback):
    """Per-layer norms of g and θ before each step and of Δθ across it, computed directly."""

    def __init__(self, layers):
        self.layers, self.before, self.steps = layers, None, []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.before = {n: [p.detach().clone() for p in pl_module.get_submodule(n).parameters()] for n in self.layers}
        grads = {n: torch.cat([p.grad.flatten() for p in pl_module.get_submodule(n).parameters()]) for n in self.layers}
        self.steps.append({"grad": {n: g.norm().item() for n, g in grads.items()}})
        self.steps[-1]["grad"]["total"] = torch.cat(list(grads.values())).norm().item()

    def on_train_batch_end(self, trainer, pl_module, *args):
        weight, delta = {}, {}
        for n, before in self.before.items():
            after = list(pl_module.get_submodule(n).parameters())
            weight[n] = torch.cat([b.flatten() for b in before])
            delta[n] = torch.cat([(b - a.detach()).flatten() for b, a in zip(before, after)])
        self.steps[-1]["weight"] = {n: w.norm().item() for n, w in weight.items()}
        self.steps[-1]["weight"]["total"] = torch.cat(list(weight.values())).norm().item()
        self.steps[-1]["update"] = {n: delta[n].norm().item() / weight[n].norm().item() for n in weight}
        all_delta, all_weight = torch.cat(list(delta.values())), torch.cat(list(weight.values()))
        self.steps[-1]["update"]["total"] = all_delta.norm().item() / all_weight.norm().item()


def fit(module, callbacks, tmp_path, steps=4, log_every_n_steps=1, **kwargs):
    trainer = Trainer(
        max_steps=steps,
        callbacks=callbacks,
        logger=CSVLogger(tmp_path),
        log_every_n_steps=log_every_n_steps,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kwargs,
    )
    trainer.fit(module, DataLoader(TensorDataset(X, Y), batch_size=8))
    return trainer


def rows(trainer):
    """The CSV logger's rows, keyed by step (the module's and the monitor's rows merged), empty cells dropped."""
    trainer.logger.save()
    merged = {}
    with open(f"{trainer.logger.log_dir}/metrics.csv") as f:
        for r in csv.DictReader(f):
            values = {k: float(v) for k, v in r.items() if v and k not in ("step", "epoch")}
            merged.setdefault(int(r["step"]), {}).update(values)
    return merged


class Recorder(Logger):
    """A logger that keeps every `log_metrics` call."""

    def __init__(self):
        super().__init__()
        self.calls = []

    @property
    def name(self):
        return "recorder"

    @property
    def version(self):
        return 0

    def log_metrics(self, metrics, step=None):
        self.calls.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def monitor_warnings(record):
    return [str(w.message) for w in record if "GradientMonitor" in str(w.message)]


def test_logged_norms_equal_norms_by_hand(tmp_path):
    hand = ByHand(["body.0", "head"])
    trainer = fit(mlp(lr=1e-3), [GradientMonitor(), hand], tmp_path)
    logged = rows(trainer)
    assert sorted(logged) == [0, 1, 2, 3]
    for step, expected in enumerate(hand.steps):
        for kind, key in (("grad", "grad_norm"), ("weight", "weight_norm"), ("update", "update_ratio")):
            for layer, value in expected[kind].items():
                assert logged[step][f"{key}/{layer}"] == pytest.approx(value, rel=1e-5), (step, key, layer)
        assert logged[step]["grad_flags/vanishing"] == 0 and logged[step]["grad_flags/exploding"] == 0


@pytest.mark.parametrize(("every", "measured"), [(4, (3, 7)), (3, (2, 5))])
def test_log_every_n_steps_is_respected(tmp_path, every, measured):
    """Trainer writes every 2 steps; the monitor measures every `every` steps, a multiple of 2 or not."""
    hand = ByHand(["body.0", "head"])
    monitor = GradientMonitor(log_every_n_steps=every, update_ratio_bounds=None)
    trainer = fit(mlp(), [monitor, hand], tmp_path, steps=8, log_every_n_steps=2)
    logged = rows(trainer)
    assert sorted(step for step, values in logged.items() if "grad_norm/total" in values) == list(measured)
    for step in measured:
        for kind, key in (("grad", "grad_norm"), ("weight", "weight_norm"), ("update", "update_ratio")):
            assert logged[step][f"{key}/total"] == pytest.approx(hand.steps[step][kind]["total"], rel=1e-5)
    assert hand.steps[5]["grad"]["total"] != pytest.approx(hand.steps[3]["grad"]["total"], rel=1e-5)


def test_one_logger_call_per_measurement_and_monitorable_keys(tmp_path):
    """Every value goes to each logger in one call per measurement; only the monitorable keys reach
    `callback_metrics`, and none goes through Lightning's own logger writes."""
    hand = ByHand(["body.0", "head"])
    recorders = [Recorder(), Recorder()]
    monitor = GradientMonitor(log_every_n_steps=2)
    trainer = Trainer(
        max_steps=4,
        callbacks=[monitor, hand],
        logger=recorders,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(mlp(), DataLoader(TensorDataset(X, Y), batch_size=8))
    layers = ("body.0", "head", "total")
    keys = {f"{kind}/{layer}" for kind in ("grad_norm", "weight_norm", "update_ratio") for layer in layers}
    keys |= {f"grad_flags/{flag}" for flag in ("vanishing", "exploding", "update_ratio", "nonfinite")}
    for recorder in recorders:
        ours = [(step, m) for step, m in recorder.calls if "grad_norm/total" in m]
        assert [step for step, _ in ours] == [1, 3]
        assert all(set(m) == keys for _, m in ours)
        assert ours[-1][1]["grad_norm/head"] == pytest.approx(hand.steps[3]["grad"]["head"], rel=1e-5)
        own = [k for _, m in recorder.calls if "loss" in m for k in m]  # Lightning's writes of the module's values
        assert own and not any(k.startswith(("grad_", "weight_", "update_")) for k in own)
    assert monitor.last_metrics == ours[-1][1]
    monitored = {k: float(v) for k, v in trainer.callback_metrics.items() if k != "loss"}
    assert monitored == {
        "grad_norm/total": pytest.approx(hand.steps[3]["grad"]["total"], rel=1e-5),
        "grad_flags/vanishing": 0.0,
        "grad_flags/exploding": 0.0,
        "grad_flags/update_ratio": 0.0,
        "grad_flags/nonfinite": 0.0,
    }
    assert set(trainer.logged_metrics) == {"loss"}


def test_healthy_model_raises_no_flag(tmp_path):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer = fit(mlp(lr=1e-3), [GradientMonitor()], tmp_path)
    assert monitor_warnings(record) == []
    for values in rows(trainer).values():
        assert {k: v for k, v in values.items() if k.startswith("grad_flags/")} == {
            "grad_flags/vanishing": 0.0,
            "grad_flags/exploding": 0.0,
            "grad_flags/update_ratio": 0.0,
            "grad_flags/nonfinite": 0.0,
        }


@pytest.mark.parametrize(
    ("make", "flag", "pattern"),
    [
        (
            sigmoid_chain,
            "grad_flags/vanishing",
            r"vanishing gradients at step (\d+): body\.0, body\.2, body\.4 \(\+\d+ more\)",
        ),
        (
            lambda: mlp(scale=1e5, lr=0.0),
            "grad_flags/exploding",
            r"exploding gradients at step (\d+): total gradient norm",
        ),
        (lambda: mlp(lr=1e-7), "grad_flags/update_ratio", r"outside \[1e-05, 0\.1\] at step (\d+) in body\.0, head"),
    ],
)
def test_flags_trigger_and_warn_once_per_interval(tmp_path, make, flag, pattern):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer = fit(make(), [GradientMonitor(warn_every_n_steps=3)], tmp_path)
    assert all(values[flag] >= 1 for values in rows(trainer).values())
    steps = [int(m.group(1)) for m in map(re.compile(pattern).search, monitor_warnings(record)) if m]
    assert steps == [0, 3]  # flagged at steps 0-3, warned at most once per 3 steps


def test_vanishing_threshold_is_relative_to_the_largest_layer(tmp_path):
    hand = ByHand([f"body.{i}" for i in range(0, 58, 2)] + ["head"])
    with pytest.warns(UserWarning, match="vanishing gradients"):
        monitor = GradientMonitor(vanishing_threshold=1e-5, update_ratio_bounds=None)
        trainer = fit(sigmoid_chain(), [monitor, hand], tmp_path, steps=1)
    grads = hand.steps[0]["grad"]
    largest = max(v for k, v in grads.items() if k != "total")
    expected = sum(v < 1e-5 * largest for k, v in grads.items() if k != "total")
    assert expected > 10
    assert rows(trainer)[0]["grad_flags/vanishing"] == expected


class ZeroNonFinite(Callback):
    """Placed after the monitor: keeps a poisoned step from spreading NaN into the weights."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        for p in pl_module.parameters():
            p.grad.nan_to_num_(0.0, 0.0, 0.0)


def test_nonfinite_gradient_is_named(tmp_path):
    monitor = GradientMonitor(check_every_step=True)
    with pytest.warns(UserWarning, match=r"non-finite gradients at step 0 in head\.$"):
        trainer = fit(
            mlp(nan_in="head", nan_at={0}), [monitor, ZeroNonFinite()], tmp_path, steps=4, log_every_n_steps=2
        )
    logged = rows(trainer)
    assert logged[1]["grad_flags/nonfinite"] == 1.0 and logged[3]["grad_flags/nonfinite"] == 0.0  # since last write

    with pytest.raises(ValueError, match=r"non-finite gradients at step 0 in body\.0\. Check"):
        fit(mlp(nan_in="body.0"), [GradientMonitor(raise_on_nonfinite=True)], tmp_path, steps=2)


@pytest.mark.parametrize(("check_every_step", "raises"), [(False, False), (True, True)])
def test_between_logging_steps_only_check_every_step_looks(tmp_path, check_every_step, raises):
    monitor = GradientMonitor(log_every_n_steps=4, check_every_step=check_every_step, raise_on_nonfinite=True)
    module = mlp(nan_in="head", nan_at={1})  # measured at step 3 only
    if raises:
        with pytest.raises(ValueError, match="at step 1 in head"):
            fit(module, [monitor, ZeroNonFinite()], tmp_path, steps=4, log_every_n_steps=2)
    else:
        trainer = fit(module, [monitor, ZeroNonFinite()], tmp_path, steps=4, log_every_n_steps=2)
        assert rows(trainer)[3]["grad_flags/nonfinite"] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "exception", "match"),
    [
        (
            dict(log_every_n_steps=0),
            ValueError,
            r"`log_every_n_steps` must be an integer >= 1, but got log_every_n_steps=0\.",
        ),
        (dict(log_every_n_steps=2.0), TypeError, r"`log_every_n_steps` must be an integer"),
        (dict(vanishing_threshold=0.0), ValueError, r"`vanishing_threshold` must be in \(0, 1\)"),
        (dict(vanishing_threshold=1.0), ValueError, r"`vanishing_threshold` must be in \(0, 1\)"),
        (dict(exploding_threshold=0.0), ValueError, r"`exploding_threshold` must be > 0"),
        (dict(exploding_threshold="big"), TypeError, r"`exploding_threshold` must be a real number"),
        (dict(update_ratio_bounds=(1e-3,)), TypeError, r"`update_ratio_bounds` must be a pair"),
        (dict(update_ratio_bounds=(-1.0, 1.0)), ValueError, r"`update_ratio_bounds\[0\]` must be >= 0"),
        (dict(update_ratio_bounds=(0.1, 0.1)), ValueError, r"`update_ratio_bounds\[1\]` must be > 0.1"),
        (dict(check_every_step=None), TypeError, r"`check_every_step` must be True or False"),
        (dict(raise_on_nonfinite=1), TypeError, r"`raise_on_nonfinite` must be True or False"),
        (dict(warn_every_n_steps=0), ValueError, r"`warn_every_n_steps` must be an integer >= 1"),
    ],
)
def test_bad_input(kwargs, exception, match):
    with pytest.raises(exception, match=match):
        GradientMonitor(**kwargs)


def test_edges_are_accepted_and_flags_can_be_turned_off():
    monitor = GradientMonitor(
        log_every_n_steps=1,
        vanishing_threshold=None,
        exploding_threshold=None,
        update_ratio_bounds=None,
    )
    assert monitor.vanishing_threshold is None and monitor.update_ratio_bounds is None
    assert GradientMonitor(update_ratio_bounds=(0.0, 1e-300)).update_ratio_bounds == (0.0, 1e-300)
