"""ConfigureOptimizersMixin: optimizers and schedules from constructor arguments, in real Trainer runs."""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import yaml
from lightning.pytorch.cli import LightningCLI
from torch.optim.lr_scheduler import ReduceLROnPlateau, StepLR
from torch.utils.data import DataLoader, TensorDataset

import lightopt.optim
from lightopt import ConfigureOptimizersMixin
from lightopt.schedules import LinearDecay, MomentumSchedule, WarmupThen

X = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
Y = X @ torch.tensor([[0.5], [-1.0], [0.25], [2.0]]) + 0.1
SGD_CONFIG = {"class_path": "lightopt.optim.SGD", "init_args": {"lr": 0.1, "momentum": 0.9}}


class Tiny(ConfigureOptimizersMixin, L.LightningModule):
    def __init__(
        self,
        optimizer: dict[str, Any] = SGD_CONFIG,
        lr_scheduler: dict[str, Any] | list[dict[str, Any]] | None = None,
        batch_size: int = 8,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.body = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Tanh())
            self.head = torch.nn.Linear(8, 1)
        self.training_steps = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.training_steps += 1
        x, y = batch
        return F.mse_loss(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(X, Y), batch_size=self.hparams.batch_size)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(X, Y), batch_size=32)


class ManualTiny(Tiny):
    """NaturalGradient's closure returns per-example losses, so it runs under manual optimization."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> None:
        self.training_steps += 1
        x, y = batch
        self.optimizers().step(lambda: F.mse_loss(self(x), y, reduction="none").squeeze(1))


def fit(model: L.LightningModule, tmp_path, **kwargs: Any) -> L.Trainer:
    settings = dict(
        default_root_dir=tmp_path,
        max_epochs=1,
        limit_train_batches=4,
        limit_val_batches=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer = L.Trainer(**{**settings, **kwargs})
    trainer.fit(model)
    return trainer


def linear_decay(**init_args: Any) -> dict[str, Any]:
    return {"class_path": "lightopt.schedules.LinearDecay", "init_args": init_args}


@pytest.mark.parametrize(
    ("scheduler", "cls", "interval", "frequency"),
    [
        (linear_decay(tau=10), LinearDecay, "step", 1),
        (
            {"class_path": "LinearDecay", "init_args": {"tau": 10}, "interval": "epoch", "frequency": 2},
            LinearDecay,
            "epoch",
            2,
        ),
        ({"class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {"step_size": 1}}, StepLR, "epoch", 1),
        ({"class_path": "StepLR", "init_args": {"step_size": 3, "gamma": 0.5}, "interval": "step"}, StepLR, "step", 1),
        (
            {"class_path": "MomentumSchedule", "init_args": {"milestones": [2], "values": [0.5, 0.9]}},
            MomentumSchedule,
            "step",
            1,
        ),
    ],
)
def test_builds_the_declared_optimizer_and_schedule_with_its_interval(tmp_path, scheduler, cls, interval, frequency):
    trainer = fit(Tiny(lr_scheduler=scheduler), tmp_path)
    optimizer = trainer.optimizers[0]
    assert type(optimizer) is lightopt.optim.SGD
    assert (optimizer.defaults["lr"], optimizer.defaults["momentum"]) == (0.1, 0.9)
    (config,) = trainer.lr_scheduler_configs
    assert type(config.scheduler) is cls
    assert (config.interval, config.frequency) == (interval, frequency)
    assert config.scheduler.optimizer is optimizer


def test_without_a_schedule_configure_optimizers_returns_the_optimizer():
    optimizer = Tiny(optimizer={"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}}).configure_optimizers()
    assert type(optimizer) is torch.optim.Adam and optimizer.defaults["lr"] == 0.01


@pytest.mark.parametrize(("frequency", "tau"), [(1, 8), (2, 4)])
def test_linear_decay_without_tau_decays_over_the_whole_run(tmp_path, frequency, tau):
    schedule = {**linear_decay(final_ratio=0.1), "frequency": frequency}
    trainer = fit(Tiny(lr_scheduler=schedule), tmp_path, max_epochs=2, limit_train_batches=4)
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.tau == tau
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.1)


def test_linear_decay_nested_in_a_warmup_gets_the_steps_after_it(tmp_path):
    schedule = {
        "class_path": "lightopt.schedules.WarmupThen",
        "init_args": {"warmup_steps": 2, "after": linear_decay(final_ratio=0.1)},
    }
    trainer = fit(Tiny(lr_scheduler=schedule), tmp_path, max_epochs=2, limit_train_batches=3)
    assert type(trainer.lr_scheduler_configs[0].scheduler) is WarmupThen
    # τ = 6 − 2: the decay reaches ε_τ exactly at the last step (with τ = 6 it would still be above it).
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.1)


def test_a_list_of_schedules_steps_them_all(tmp_path):
    momentum = {"class_path": "MomentumSchedule", "init_args": {"milestones": [2], "values": [0.5, 0.9]}}
    schedules = [linear_decay(tau=4), momentum]
    trainer = fit(Tiny(lr_scheduler=schedules), tmp_path)
    assert [type(c.scheduler) for c in trainer.lr_scheduler_configs] == [LinearDecay, MomentumSchedule]
    assert [c.interval for c in trainer.lr_scheduler_configs] == ["step", "step"]
    group = trainer.optimizers[0].param_groups[0]
    assert (group["lr"], group["momentum"]) == (pytest.approx(0.001), 0.9)


def test_reduce_on_plateau_monitors_val_loss_by_default(tmp_path):
    schedule = {"class_path": "ReduceLROnPlateau", "init_args": {"patience": 0}}
    trainer = fit(Tiny(lr_scheduler=schedule), tmp_path, max_epochs=2)
    (config,) = trainer.lr_scheduler_configs
    assert isinstance(config.scheduler, ReduceLROnPlateau)
    assert (config.monitor, config.interval, config.reduce_on_plateau) == ("val_loss", "epoch", True)


def test_reduce_on_plateau_with_a_metric_that_is_not_logged_names_the_logged_ones(tmp_path):
    schedule = {"class_path": "ReduceLROnPlateau", "init_args": {}, "monitor": "val_acc"}
    with pytest.raises(Exception, match=r"val_acc.*\n?.*val_loss"):
        fit(Tiny(lr_scheduler=schedule), tmp_path)


CLI_CONFIG = """
trainer:
  max_epochs: 2
  limit_train_batches: 2
  limit_val_batches: 1
  accelerator: cpu
  logger: false
  enable_checkpointing: false
  enable_progress_bar: false
  enable_model_summary: false
model:
  optimizer:
    class_path: lightopt.optim.RMSProp
    init_args: {lr: 0.01, momentum: 0.5}
  lr_scheduler:
    class_path: lightopt.schedules.LinearDecay
    init_args: {final_ratio: 0.1}
"""


@pytest.mark.parametrize(("overrides", "lr"), [([], 0.01), (["--model.optimizer.init_args.lr=0.05"], 0.05)])
def test_lightning_cli_yaml_config(tmp_path, monkeypatch, overrides, lr):
    monkeypatch.setattr("sys.argv", ["train.py"])
    config = tmp_path / "config.yaml"
    config.write_text(CLI_CONFIG)
    args = ["--config", str(config), f"--trainer.default_root_dir={tmp_path}", *overrides]
    cli = LightningCLI(Tiny, run=False, args=args, save_config_callback=None, seed_everything_default=0)
    cli.trainer.fit(cli.model)
    optimizer = cli.trainer.optimizers[0]
    assert type(optimizer) is lightopt.optim.RMSProp
    assert (optimizer.defaults["lr"], optimizer.defaults["momentum"]) == (lr, 0.5)
    scheduler = cli.trainer.lr_scheduler_configs[0].scheduler
    assert (type(scheduler), scheduler.tau) == (LinearDecay, 4)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * lr)


def test_a_sweep_sets_one_init_arg_through_lightning_cli_and_keeps_the_default_class(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["train.py"])
    args = {
        "model": {"class_path": "tests.test_mixin.Tiny", "init_args": {"optimizer": {"init_args": {"lr": 0.02}}}},
        "trainer": {"default_root_dir": str(tmp_path), "logger": False, "accelerator": "cpu"},
    }
    cli = LightningCLI(
        L.LightningModule,
        subclass_mode_model=True,
        run=False,
        args=args,
        save_config_callback=None,
        seed_everything_default=0,
    )
    optimizer = cli.model.configure_optimizers()
    assert type(optimizer) is lightopt.optim.SGD
    assert (optimizer.defaults["lr"], optimizer.defaults["momentum"]) == (0.02, 0.9)


def test_hparams_yaml_is_plain_and_a_checkpoint_restores_the_config(tmp_path):
    optimizer = {**SGD_CONFIG, "no_decay_bias_and_norm": True}
    optimizer["init_args"] = {**SGD_CONFIG["init_args"], "weight_decay": 0.01}
    model = Tiny(optimizer=optimizer, lr_scheduler=linear_decay(tau=4, final_ratio=0.5))
    trainer = fit(model, tmp_path, logger=L.pytorch.loggers.CSVLogger(tmp_path))
    saved = yaml.safe_load((tmp_path / "lightning_logs" / "version_0" / "hparams.yaml").read_text())
    assert saved == {"optimizer": optimizer, "lr_scheduler": linear_decay(tau=4, final_ratio=0.5), "batch_size": 8}

    trainer.save_checkpoint(tmp_path / "tiny.ckpt")
    restored = Tiny.load_from_checkpoint(tmp_path / "tiny.ckpt")
    assert restored.hparams == model.hparams
    config = restored.configure_optimizers()
    rebuilt = config["optimizer"]
    assert (type(rebuilt), type(config["lr_scheduler"]["scheduler"])) == (lightopt.optim.SGD, LinearDecay)
    assert [len(g["params"]) for g in rebuilt.param_groups] == [2, 4]
    assert [g["weight_decay"] for g in rebuilt.param_groups] == [0.01, 0.0]


def test_resuming_from_a_checkpoint_matches_an_uninterrupted_run(tmp_path):
    config = dict(lr_scheduler=linear_decay(tau=8))
    uninterrupted = Tiny(**config)
    fit(uninterrupted, tmp_path / "a", max_epochs=2)

    first = fit(Tiny(**config), tmp_path / "b", max_epochs=1)
    first.save_checkpoint(tmp_path / "b.ckpt")
    resumed = Tiny(**config)
    trainer = L.Trainer(
        default_root_dir=tmp_path / "b",
        max_epochs=2,
        limit_train_batches=4,
        limit_val_batches=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(resumed, ckpt_path=tmp_path / "b.ckpt")
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 8
    for a, b in zip(uninterrupted.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def names(model: torch.nn.Module, group: dict[str, Any]) -> set[str]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {by_id[id(p)] for p in group["params"]}


def test_no_decay_on_biases_and_normalization_weights(tmp_path):
    optimizer = {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01}, "no_decay_bias_and_norm": True}
    model = Tiny(optimizer=optimizer)
    decay, no_decay = fit(model, tmp_path).optimizers[0].param_groups
    assert names(model, decay) == {"body.0.weight", "head.weight"}
    assert decay["weight_decay"] == 0.01  # AdamW's default
    assert names(model, no_decay) == {"body.0.bias", "body.1.weight", "body.1.bias", "head.bias"}
    assert no_decay["weight_decay"] == 0.0


def test_the_split_is_a_no_op_without_weight_decay():
    model = Tiny(optimizer={**SGD_CONFIG, "no_decay_bias_and_norm": True})
    (group,) = model.configure_optimizers().param_groups
    assert len(group["params"]) == 6


class HeadLR(Tiny):
    def optimizer_param_groups(self) -> list[dict[str, Any]]:
        return [{"params": self.body.parameters()}, {"params": self.head.parameters(), "lr": 0.01}]


def test_param_groups_hook_overrides_per_group_and_composes_with_the_split(tmp_path):
    optimizer = {
        "class_path": "lightopt.optim.SGD",
        "init_args": {"lr": 0.1, "weight_decay": 0.001},
        "no_decay_bias_and_norm": True,
    }
    model = HeadLR(optimizer=optimizer, lr_scheduler=linear_decay(tau=4, final_ratio=0.5))
    groups = fit(model, tmp_path).optimizers[0].param_groups
    assert [names(model, g) for g in groups] == [
        {"body.0.weight"},
        {"body.0.bias", "body.1.weight", "body.1.bias"},
        {"head.weight"},
        {"head.bias"},
    ]
    assert [g["weight_decay"] for g in groups] == [0.001, 0.0, 0.001, 0.0]
    assert [g["lr"] for g in groups] == pytest.approx([0.05, 0.05, 0.005, 0.005])  # the schedule scales each ε₀


class ParamsHook(Tiny):
    def optimizer_param_groups(self):
        return self.head.parameters()


def test_param_groups_hook_may_return_plain_parameters():
    model = ParamsHook()
    (group,) = model.configure_optimizers().param_groups
    assert names(model, group) == {"head.weight", "head.bias"}


OPTIMIZER_ARGS = {
    "SGD": {"lr": 0.05, "momentum": 0.9},
    "NaturalGradient": {"lr": 0.5},
    "Newton": {"solver": "cg", "cg_max_iter": 10, "damping": 1.0},  # Hessian-free: fast enough for a test
}


@pytest.mark.parametrize("name", lightopt.optim.__all__)
def test_each_lightopt_optimizer_through_its_class_path(tmp_path, name):
    config = {"class_path": f"lightopt.optim.{name}", "init_args": OPTIMIZER_ARGS.get(name, {})}
    model = (ManualTiny if name == "NaturalGradient" else Tiny)(optimizer=config, batch_size=32)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = fit(model, tmp_path, max_epochs=2)
    assert type(trainer.optimizers[0]) is getattr(lightopt.optim, name)
    assert trainer.global_step == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("class_path", ["torch.optim.LBFGS", "lightopt.optim.LBFGS"])
def test_second_order_optimizers_get_lightnings_closure(tmp_path, class_path):
    model = Tiny(optimizer={"class_path": class_path, "init_args": {"max_iter": 4}}, batch_size=32)
    trainer = fit(model, tmp_path, max_epochs=2)
    assert trainer.global_step == 2
    assert model.training_steps > 2  # the optimizer re-evaluated the loss through the closure


ERRORS = [
    (
        {"optimizer": {"class_path": "lightopt.optim.SDG", "init_args": {"lr": 0.1}}},
        ValueError,
        r"'lightopt.optim.SDG' names no class.*Did you mean 'lightopt.optim.SGD'",
    ),
    (
        {"optimizer": {"class_path": "lightop.optim.Adam", "init_args": {}}},
        ValueError,
        r"`optimizer.class_path` 'lightop.optim.Adam' names no class.*'lightopt.optim.Adam'",
    ),
    (
        {"optimizer": {"class_path": "SGD", "init_args": {"lr": 0.1}}},
        ValueError,
        r"'SGD' is ambiguous; use any of the following: lightopt.optim.SGD, torch.optim.SGD",
    ),
    (
        {"optimizer": {"class_path": "torch.nn.Linear", "init_args": {}}},
        TypeError,
        r"`optimizer.class_path` must name a torch.optim.Optimizer class",
    ),
    ({"optimizer": "lightopt.optim.SGD"}, TypeError, r"`optimizer` must be a dict with a string `class_path`"),
    (
        {"optimizer": {"class_path": "lightopt.optim.SGD", "init_args": [0.1]}},
        TypeError,
        r"`optimizer.init_args` must be a dict",
    ),
    (
        {"optimizer": {"class_path": "lightopt.optim.SGD", "init_args": {"lr": -1.0}}},
        ValueError,
        r"optimizer.init_args: `lr` must be >= 0, but got lr=-1.0.",
    ),
    (
        {"optimizer": {"class_path": "lightopt.optim.SGD", "init_args": {"lrr": 0.1}}},
        TypeError,
        r"optimizer.init_args: SGD has no argument 'lrr'. Did you mean 'lr'\?",
    ),
    (
        {"optimizer": {"class_path": "lightopt.optim.SGD", "init_args": {}}},
        ValueError,
        r"optimizer.init_args: `lr` is required: pass SGD\(params, lr=\.\.\.\)",
    ),
    (
        {"optimizer": {**SGD_CONFIG, "no_decay_bias_and_norm": "yes"}},
        TypeError,
        r"`optimizer.no_decay_bias_and_norm` must be True or False",
    ),
    (
        {"optimizer": {"class_path": "torch.optim.LBFGS", "init_args": {}, "no_decay_bias_and_norm": True}},
        ValueError,
        r"needs an optimizer with `weight_decay`, but LBFGS has none",
    ),
    ({"optimizer": None}, ValueError, r"Tiny has no `optimizer` in self.hparams"),
    (
        {"lr_scheduler": {"class_path": "lightopt.optim.Adam", "init_args": {}}},
        TypeError,
        r"`lr_scheduler.class_path` must name a torch.optim.lr_scheduler.LRScheduler class",
    ),
    (
        {"lr_scheduler": {"class_path": "lightopt.schedules.tau_from_passes", "init_args": {}}},
        TypeError,
        r"must name a torch.optim.lr_scheduler.LRScheduler class, but 'lightopt.schedules.tau_from_passes'",
    ),
    (
        {"lr_scheduler": {"class_path": "LinearDecy", "init_args": {"tau": 5}}},
        ValueError,
        r"'LinearDecy' names no class.*Did you mean 'LinearDecay'",
    ),
    ({"lr_scheduler": linear_decay(tau=0)}, ValueError, r"lr_scheduler.init_args: `tau` must be an integer >= 1"),
    ({"lr_scheduler": linear_decay()}, ValueError, r"`lr_scheduler.init_args.tau` is not set and the run length"),
    (
        {"lr_scheduler": {**linear_decay(tau=5), "interval": "batch"}},
        ValueError,
        r"`lr_scheduler.interval` must be one of 'step', 'epoch', but got lr_scheduler.interval='batch'",
    ),
    (
        {"lr_scheduler": {**linear_decay(tau=5), "frequency": 0}},
        ValueError,
        r"`lr_scheduler.frequency` must be an integer >= 1",
    ),
    (
        {"lr_scheduler": {"class_path": "ReduceLROnPlateau", "init_args": {}, "monitor": None}},
        ValueError,
        r"`lr_scheduler.monitor` must name a logged metric for ReduceLROnPlateau",
    ),
    (
        {"lr_scheduler": [linear_decay(tau=5), {"class_path": "StepLR", "init_args": {}}]},
        TypeError,
        r"lr_scheduler\[1\].init_args: .*step_size",
    ),
    ({"lr_scheduler": "LinearDecay"}, TypeError, r"`lr_scheduler` must be a dict, a list of dicts or None"),
]


@pytest.mark.parametrize(("config", "exception", "match"), ERRORS)
def test_bad_configs_raise_with_the_config_location(config, exception, match):
    model = Tiny(**config)
    with pytest.raises(exception, match=match):
        model.configure_optimizers()


def test_a_run_of_unknown_length_asks_for_tau(tmp_path):
    with pytest.raises(ValueError, match=r"init_args.tau` is not set.*set `tau`"):
        fit(Tiny(lr_scheduler=linear_decay()), tmp_path, max_epochs=-1, max_steps=-1)
