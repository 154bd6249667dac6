"""The Initialization callback inside real Lightning fits: schemes per layer type, resume, scale check."""

import csv
import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

from lightopt.callbacks import Initialization

X = torch.randn(32, 2, 5, 5, generator=torch.Generator().manual_seed(0))
Y = torch.randint(0, 3, (32,), generator=torch.Generator().manual_seed(1))


class ConvLSTM(L.LightningModule):
    """Conv2d → LSTM over the 9 spatial positions → Linear hidden → Linear head, 3 classes."""

    def __init__(self, seed=0, lr=0.1):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(2, 4, 3)
        self.lstm = torch.nn.LSTM(4, 6, num_layers=2)
        self.hidden = torch.nn.Linear(6, 8)
        self.head = torch.nn.Linear(8, 3)
        self.lr = lr

    def forward(self, x):
        h = self.conv(x).relu().flatten(2).permute(2, 0, 1)  # (9, batch, 4)
        out, _ = self.lstm(h)
        return self.head(self.hidden(out[-1]).relu())

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class MLP(L.LightningModule):
    """A deep ReLU MLP with a BatchNorm, on 20 inputs."""

    def __init__(self, lr=0.0):
        super().__init__()
        torch.manual_seed(0)
        layers = [torch.nn.Linear(20, 64), torch.nn.BatchNorm1d(64), torch.nn.ReLU()]
        for _ in range(3):
            layers += [torch.nn.Linear(64, 64), torch.nn.ReLU()]
        self.net = torch.nn.Sequential(*layers, torch.nn.Linear(64, 2))
        self.lr = lr

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class WeightsAtTrainStart(Callback):
    """Records the weights training starts from (after initialization and any checkpoint restore)."""

    def on_fit_start(self, trainer, pl_module):  # for max_steps=0, which never starts training
        self.on_train_start(trainer, pl_module)

    def on_train_start(self, trainer, pl_module):
        self.weights = {n: p.detach().clone() for n, p in pl_module.state_dict().items()}


def fit(module, tmp_path, callbacks, steps=2, data=(X, Y), ckpt_path=None, **kwargs):
    kwargs = {"logger": False, "enable_checkpointing": False, **kwargs}
    probe = WeightsAtTrainStart()
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_steps=steps,
        accelerator="cpu",
        callbacks=[*callbacks, probe],
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*data), batch_size=16)
    trainer.fit(module, loader, ckpt_path=ckpt_path)
    return trainer, probe.weights


def test_applies_each_scheme_to_its_layer_type_from_scratch(tmp_path):
    callback = Initialization(
        "normalized_uniform",
        conv_weight="sparse",
        k=5,
        recurrent_weight="orthogonal",
        bias="relu",
        output_layer="head",
        output_marginals=[1, 1, 2],
        seed=0,
    )
    _, w = fit(ConvLSTM(), tmp_path, [callback])
    assert callback.initialized
    # Conv: exactly k = 5 of the C_in·k_h·k_w = 18 incoming weights of every output channel.
    assert (w["conv.weight"].reshape(4, 18) != 0).sum(dim=1).tolist() == [5] * 4
    assert w["conv.bias"].eq(torch.tensor(0.1)).all()
    # LSTM: every (H, H) gate block of weight_hh is orthogonal; forget gate b_if + b_hf = 1, others 0.
    for layer in ("l0", "l1"):
        for block in w[f"lstm.weight_hh_{layer}"].chunk(4):
            torch.testing.assert_close(block.T @ block, torch.eye(6), rtol=0, atol=1e-5)
        total = w[f"lstm.bias_ih_{layer}"] + w[f"lstm.bias_hh_{layer}"]
        torch.testing.assert_close(total, torch.tensor([0.0] * 6 + [1.0] * 6 + [0.0] * 12))
    # Linear: eq. 8.23 bound; ReLU bias 0.1 on the hidden layer; softmax(b) = c on the head.
    assert w["hidden.weight"].abs().max() <= math.sqrt(6 / 14)
    assert w["hidden.bias"].eq(torch.tensor(0.1)).all()
    torch.testing.assert_close(torch.softmax(w["head.bias"], 0), torch.tensor([0.25, 0.25, 0.5]))


def test_keep_leaves_the_layers_defaults(tmp_path):
    module = ConvLSTM()
    before = {n: p.detach().clone() for n, p in module.state_dict().items()}
    _, w = fit(module, tmp_path, [Initialization("keep", bias="keep", lstm_forget_bias=None)])
    for name in before:
        assert torch.equal(w[name], before[name]), name


def test_a_seed_gives_the_same_weights_whatever_the_model_was_built_with(tmp_path):
    _, a = fit(ConvLSTM(seed=1), tmp_path, [Initialization("he_normal", seed=3)])
    _, b = fit(ConvLSTM(seed=2), tmp_path, [Initialization("he_normal", seed=3)])
    _, c = fit(ConvLSTM(seed=1), tmp_path, [Initialization("he_normal", seed=4)])
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert not torch.equal(a["hidden.weight"], c["hidden.weight"])


@pytest.mark.parametrize("first_callbacks", [[Initialization(seed=0)], []], ids=["with-state", "without-state"])
def test_resuming_from_a_checkpoint_keeps_its_weights(tmp_path, first_callbacks):
    # A checkpoint written with the callback (its state says initialized) or without it (only
    # trainer.ckpt_path tells): either way the resumed fit starts from the checkpoint's weights.
    first, _ = fit(ConvLSTM(), tmp_path, first_callbacks, steps=2)
    path = tmp_path / "resume.ckpt"
    first.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    states = [v for k, v in checkpoint["callbacks"].items() if k.startswith("Initialization")]
    assert states == ([{"initialized": True, "seed": 0}] if first_callbacks else [])

    _, fresh = fit(ConvLSTM(seed=5), tmp_path, [Initialization(seed=0)], steps=0)  # what a re-init gives
    callback = Initialization(seed=0)
    _, resumed = fit(ConvLSTM(seed=5), tmp_path, [callback], steps=4, ckpt_path=path)
    assert callback.initialized
    for name, value in checkpoint["state_dict"].items():
        assert torch.equal(resumed[name], value), name
    assert not torch.equal(resumed["hidden.weight"], fresh["hidden.weight"])  # the check can fail


def test_a_second_fit_with_the_same_callback_continues_from_the_current_weights(tmp_path):
    module, callback = ConvLSTM(), Initialization(seed=0)
    fit(module, tmp_path, [callback], steps=2)
    after_first = {n: p.detach().clone() for n, p in module.state_dict().items()}
    _, second = fit(module, tmp_path, [callback], steps=2)
    for name in after_first:
        assert torch.equal(second[name], after_first[name]), name


def layer_output_stds(module, x):
    stds = {}

    def hook(name):
        def record(module, args, output):
            stds.setdefault(name, output.std().item())

        return record

    hooks = [m.register_forward_hook(hook(n)) for n, m in module.named_modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        module(x)
    for h in hooks:
        h.remove()
    return stds


X_MLP = torch.randn(64, 20, generator=torch.Generator().manual_seed(2)) * 3.0
Y_MLP = torch.randint(0, 2, (64,), generator=torch.Generator().manual_seed(3))


def test_scale_check_rescales_every_layer_to_the_target_std_and_logs_it(tmp_path):
    # lr = 0 keeps the rescaled weights; BatchNorm and data shuffling are off the path being checked.
    module = MLP(lr=0.0)
    callback = Initialization(
        "normalized_normal", check_scale=True, target_std=1.0, scale_tol=0.01, output_layer="net.9", seed=0
    )
    logger = CSVLogger(tmp_path)
    trainer, _ = fit(module, tmp_path, [callback], steps=1, data=(X_MLP, Y_MLP), logger=logger, log_every_n_steps=1)
    stds = layer_output_stds(module.train(), X_MLP[:16])
    for name in ("net.0", "net.3", "net.5", "net.7"):
        assert abs(stds[name] - 1.0) <= 0.01, (name, stds[name])
        assert trainer.callback_metrics[f"init/act_std/{name}"].item() == pytest.approx(stds[name], rel=1e-5)
    assert "init/scale/net.9" not in trainer.callback_metrics  # the output layer is not rescaled

    with open(logger.log_dir + "/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged = {key for row in rows for key, value in row.items() if value}
    expected = {f"init/{kind}/{name}" for kind in ("act_std", "grad_std") for name in stds}
    expected |= {f"init/scale/net.{i}" for i in (0, 3, 5, 7)}
    assert expected <= logged
    grad_std = float(next(row["init/grad_std/net.0"] for row in rows if row["init/grad_std/net.0"]))
    assert grad_std > 0


def test_scale_check_without_target_only_measures_and_restores_buffers(tmp_path):
    checked, plain = MLP(lr=0.0), MLP(lr=0.0)
    trainer, _ = fit(checked, tmp_path, [Initialization(seed=0, check_scale=True)], steps=1, data=(X_MLP, Y_MLP))
    fit(plain, tmp_path, [Initialization(seed=0)], steps=1, data=(X_MLP, Y_MLP))
    # Same weights, and BatchNorm's running statistics saw only the one training step.
    for (name, a), b in zip(checked.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(a, b), name
    assert trainer.callback_metrics["init/act_std/net.0"] > 0
    assert not any(key.startswith("init/scale") for key in trainer.callback_metrics)


def test_a_resumed_fit_skips_the_scale_check(tmp_path):
    first, _ = fit(MLP(lr=0.1), tmp_path, [Initialization(seed=0)], steps=4, data=(X_MLP, Y_MLP))
    first.save_checkpoint(tmp_path / "mlp.ckpt")
    callback = Initialization(seed=0, check_scale=True, target_std=1.0)
    trainer, _ = fit(MLP(), tmp_path, [callback], steps=6, data=(X_MLP, Y_MLP), ckpt_path=tmp_path / "mlp.ckpt")
    assert not any(key.startswith("init/") for key in trainer.callback_metrics)


BAD_ARGUMENTS = [
    (
        dict(weight="normalised_uniform"),
        ValueError,
        r"`weight` must be one of 'heuristic_uniform', .*'keep', but got weight='normalised_uniform'\. "
        r"Did you mean 'normalized_uniform'\?",
    ),
    (dict(conv_weight="xavier"), ValueError, r"`conv_weight` must be one of .* but got conv_weight='xavier'\.$"),
    (dict(recurrent_weight="orthogonall"), ValueError, r"Did you mean 'orthogonal'\?"),
    (dict(bias="relu_bias"), ValueError, r"`bias` must be one of 'zeros', 'relu', 'keep'.*Did you mean 'relu'\?"),
    (dict(weight=None), TypeError, r"`weight` must be a scheme name \(str\), but got weight=None"),
    (dict(k=0), ValueError, r"`k` must be an integer >= 1, but got k=0\."),
    (dict(k=1.5), TypeError, r"`k` must be an integer, but got k=1.5"),
    (dict(std=-1.0), ValueError, r"`std` must be > 0, but got std=-1.0\."),
    (dict(gain=0), ValueError, r"`gain` must be > 0"),
    (dict(relu_bias="0.1"), TypeError, r"`relu_bias` must be a real number"),
    (dict(output_layer="head", output_marginals=[3, 0, 1]), ValueError, r"must all be finite and > 0 .*pseudo-count"),
    (dict(output_layer="head", output_marginals="abc"), TypeError, r"`class_frequencies` must be a sequence"),
    (dict(output_marginals=[1, 1]), ValueError, r"name it with `output_layer=\.\.\.`"),
    (dict(output_layer=3), TypeError, r"`output_layer` must be a module name"),
    (dict(seed=-1), ValueError, r"`seed` must be an integer >= 0, but got seed=-1\."),
    (dict(check_scale=1), TypeError, r"`check_scale` must be True or False"),
    (dict(target_std=1.0), ValueError, r"pass check_scale=True"),
    (dict(check_scale=True, target_std=0.0), ValueError, r"`target_std` must be > 0"),
    (dict(max_scale_iters=0), ValueError, r"`max_scale_iters` must be an integer >= 1"),
    (dict(scale_tol=-0.1), ValueError, r"`scale_tol` must be > 0"),
    (dict(input_fn="x"), TypeError, r"`input_fn` must be callable"),
]


@pytest.mark.parametrize("kwargs, exception, match", BAD_ARGUMENTS)
def test_bad_arguments_raise_before_any_fit(kwargs, exception, match):
    with pytest.raises(exception, match=match):
        Initialization(**kwargs)


class NoLayers(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))

    def training_step(self, batch, batch_idx):
        return self.w.sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize(
    "module, kwargs, match",
    [
        (
            ConvLSTM,
            dict(output_layer="heads"),
            r"but got output_layer='heads'\. Did you mean 'head'\? Layers found: conv",
        ),
        (ConvLSTM, dict(weight="sparse", k=7), r"layer 'lstm' \(LSTM\) failed: `k` must be <= the fan-in m=4 "),
        (ConvLSTM, dict(output_layer="lstm", output_marginals=[1, 1]), r"output layer 'lstm' is a LSTM"),
        (NoLayers, {}, r"found no nn.Linear"),
    ],
    ids=["unknown-output-layer", "k-above-fan-in", "marginals-on-lstm", "no-layers"],
)
def test_problems_found_at_fit_start_name_the_layer(tmp_path, module, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit(module(), tmp_path, [Initialization(**kwargs)])


def test_a_mapping_batch_needs_input_fn(tmp_path):
    class DictMLP(MLP):
        def training_step(self, batch, batch_idx):
            return torch.nn.functional.cross_entropy(self(batch["x"]), batch["y"])

    class DictData(torch.utils.data.Dataset):
        def __len__(self):
            return 32

        def __getitem__(self, i):
            return {"x": X_MLP[i], "y": Y_MLP[i]}

    def fit_dict(callback):
        trainer = L.Trainer(
            default_root_dir=tmp_path,
            max_steps=1,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[callback],
        )
        trainer.fit(DictMLP(), torch.utils.data.DataLoader(DictData(), batch_size=16))
        return trainer

    with pytest.raises(TypeError, match="pass `input_fn`"):
        fit_dict(Initialization(check_scale=True))
    trainer = fit_dict(Initialization(check_scale=True, input_fn=lambda batch: batch["x"]))
    assert "init/act_std/net.0" in trainer.callback_metrics
