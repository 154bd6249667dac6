"""lightopt's callbacks to Lightning's standard: ``@override`` hooks, ``__all__``, one checkpoint entry per instance."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

import lightopt.callbacks
from lightopt.callbacks import (
    Continuation,
    CoordinateDescent,
    CurvatureMonitor,
    EarlyStopping,
    GradientClipping,
    GradientMonitor,
    Initialization,
    PolyakAveraging,
    StochasticCurriculum,
)
from lightopt.sweep import PruningCallback, PyTorchLightningPruningCallback
from tests.callbacks.test_callback_pairs import X_TRAIN, Y_TRAIN, Regression

HARD = np.array([True, False] * 32)  # one difficulty per training example (64)


def _lightopt_callback_classes():
    """Every Lightning Callback class defined in lightopt, public or not (the library's and the sweep's)."""
    names = ["lightopt"] + [info.name for info in pkgutil.walk_packages(lightopt.__path__, "lightopt.")]
    for name in names:
        for value in vars(importlib.import_module(name)).values():
            if inspect.isclass(value) and issubclass(value, Callback) and value.__module__ == name:
                yield value


CALLBACK_CLASSES = sorted(_lightopt_callback_classes(), key=lambda c: f"{c.__module__}.{c.__qualname__}")


def _hooks(cls):
    """(name, function) for each method of ``cls`` that overrides one of a base class."""
    for name, value in vars(cls).items():
        func = value.fget if isinstance(value, property) else value
        if name.startswith("__") or not callable(func):
            continue
        if any(name in vars(base) for base in cls.__mro__[1:] if base is not object):
            yield name, func


def test_the_callbacks_found_include_the_library_the_sweep_and_the_private_ones():
    found = {cls.__qualname__ for cls in CALLBACK_CLASSES}
    assert {"EarlyStopping", "PolyakAveraging", "GradientMonitor", "PruningCallback"} <= found
    assert {PruningCallback, PyTorchLightningPruningCallback} <= set(CALLBACK_CLASSES)
    assert any(name.startswith("_") for name in found)  # e.g. pretraining's and retrain's own callbacks


@pytest.mark.parametrize("cls", CALLBACK_CLASSES, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_every_hook_is_marked_override(cls):
    hooks = dict(_hooks(cls))
    assert hooks, f"{cls.__name__} overrides no hook"
    unmarked = sorted(name for name, func in hooks.items() if not getattr(func, "__override__", False))
    assert unmarked == [], f"{cls.__name__}: hooks without @override: {unmarked}"


def test_every_public_callbacks_module_has_all():
    for info in pkgutil.iter_modules(lightopt.callbacks.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"lightopt.callbacks.{info.name}")
        assert hasattr(module, "__all__"), info.name
        assert all(hasattr(module, name) for name in module.__all__), info.name
    for name in lightopt.callbacks.__all__:
        assert hasattr(lightopt.callbacks, name)


# Two instances of each stateful callback, told apart by their arguments, in one real Trainer run.
PAIRS = {
    "EarlyStopping": lambda: [EarlyStopping("val_loss", patience=50), EarlyStopping("train_loss", patience=50)],
    "CoordinateDescent": lambda: [
        CoordinateDescent([["net.0"], ["net.1", "net.3"]], steps_per_block=3),
        CoordinateDescent([["net.0", "net.1"], ["net.3"]], steps_per_block=4),
    ],
    "Continuation": lambda: [Continuation("temperature", [1.0, 0.5, 0.25]), Continuation("noise", [0.1, 0.0])],
    "CurvatureMonitor": lambda: [CurvatureMonitor(every_n_steps=3), CurvatureMonitor(every_n_steps=5, prefix="c2/")],
    "GradientClipping": lambda: [GradientClipping(1e6), GradientClipping(0.05, algorithm="value", seed=1)],
    "GradientMonitor": lambda: [GradientMonitor(log_every_n_steps=2), GradientMonitor(log_every_n_steps=3)],
    "Initialization": lambda: [Initialization("orthogonal", seed=1), Initialization(bias="relu", seed=2)],
    # two training loaders, each drawn by one curriculum's sampler (see _TwoCurricula)
    "StochasticCurriculum": lambda: [
        StochasticCurriculum(HARD, [0.25, 0.5, 0.75], seed=0),
        StochasticCurriculum(HARD, [0.5], seed=1, log=False),
    ],
}


class _TwoCurricula(Regression):
    """Regression trained on two loaders of the same data, each sampled by one curriculum."""

    def __init__(self, curricula):
        super().__init__()
        self.curricula = list(curricula)

    def training_step(self, batch, batch_idx):
        loss = sum(torch.nn.functional.mse_loss(self(x), y) for x, y in batch.values())
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def train_dataloader(self):
        data = TensorDataset(X_TRAIN, Y_TRAIN)
        return {f"c{i}": DataLoader(data, batch_size=8, sampler=c.sampler) for i, c in enumerate(self.curricula)}


MODELS = {"StochasticCurriculum": _TwoCurricula}


def _same(a, b):
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


class _StatesAtStart(Callback):
    """Records the watched callbacks' states when training starts (after a checkpoint was restored)."""

    def __init__(self, watched):
        self.watched, self.states = watched, None

    def on_train_start(self, trainer, pl_module):
        self.states = [callback.state_dict() for callback in self.watched]


def _run(callbacks, root, max_epochs, ckpt_path=None, make_model=lambda callbacks: Regression()):
    seed_everything(0, verbose=False)
    model = make_model(callbacks)
    model.temperature, model.noise = 1.0, 0.1
    watch = _StatesAtStart(callbacks)
    trainer = Trainer(
        default_root_dir=root,
        callbacks=[*callbacks, watch, ModelCheckpoint(dirpath=root, save_last=True)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        max_epochs=max_epochs,
        log_every_n_steps=1,
    )
    trainer.fit(model, ckpt_path=ckpt_path)
    return watch.states


@pytest.mark.parametrize("name", list(PAIRS))
def test_two_instances_coexist_in_a_checkpoint_and_resume_each_their_own_state(tmp_path, name):
    first = PAIRS[name]()
    assert first[0].state_key != first[1].state_key
    make_model = MODELS.get(name, lambda callbacks: Regression())
    _run(first, tmp_path, max_epochs=2, make_model=make_model)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)["callbacks"]
    for callback in first:  # each instance under its own key, holding its own state
        assert _same(saved[callback.state_key], callback.state_dict())
    assert not _same(first[0].state_dict(), first[1].state_dict())

    second = PAIRS[name]()
    restored = _run(second, tmp_path, max_epochs=3, ckpt_path=tmp_path / "last.ckpt", make_model=make_model)
    for callback, state in zip(first, restored):
        assert _same(state, saved[callback.state_key])


def test_early_stopping_state_dicts_compare_with_equality_and_keep_theta_star_in_the_checkpoint(tmp_path):
    early_stopping = EarlyStopping("val_loss", patience=50)
    _run([early_stopping], tmp_path, max_epochs=2)
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert checkpoint["callbacks"][early_stopping.state_key] == early_stopping.state_dict()
    best = checkpoint["early_stopping_best_weights"][early_stopping.state_key]
    assert best.keys() == Regression().state_dict().keys()


def test_state_keys_of_callbacks_that_cannot_share_a_run_still_differ():
    hard = np.array([True, False] * 32)
    curricula = StochasticCurriculum(hard, [0.5], seed=0), StochasticCurriculum(hard, [0.5], seed=1)
    assert curricula[0].state_key != curricula[1].state_key
    averagers = PolyakAveraging(decay=0.9), PolyakAveraging(mode="arithmetic")
    assert averagers[0].state_key != averagers[1].state_key


def test_gradient_monitor_and_pruning_states_saved_before_their_state_keys_still_load():
    monitor = GradientMonitor()
    monitor.on_load_checkpoint(None, None, {"callbacks": {"GradientMonitor": {"nonfinite_steps": 4}}})
    assert monitor.state_dict()["nonfinite_steps"] == 4
    pruning = PruningCallback(None, "val_loss")
    pruning.on_load_checkpoint(None, None, {"callbacks": {"PruningCallback": {"rounds": 3, "history": [(3, 0.5)]}}})
    assert pruning.state_dict()["rounds"] == 3 and pruning.history == [(3, 0.5)]


#: Stateful callbacks that refuse a second instance in one Trainer, with the reason in their error.
ONE_PER_TRAINER = {
    "PolyakAveraging": "must be the Trainer's only weight-averaging callback",
}


def test_every_stateful_callback_has_a_state_key_and_a_two_instance_test():
    stateful = [cls for cls in CALLBACK_CLASSES if cls.state_dict is not Callback.state_dict]
    assert [cls.__qualname__ for cls in stateful if cls.state_key is Callback.state_key] == []
    library = {cls.__qualname__ for cls in stateful if cls.__module__.startswith("lightopt.callbacks.")}
    assert library == set(PAIRS) | set(ONE_PER_TRAINER)


@pytest.mark.parametrize(
    "second",
    [lambda: PolyakAveraging(mode="arithmetic"), lambda: EMAWeightAveraging(decay=0.5)],
    ids=["polyak", "lightning-ema"],
)
def test_polyak_averaging_refuses_a_second_weight_average_in_its_trainer(tmp_path, second):
    """Lightning's WeightAveraging keeps one average per checkpoint (``state_dict``, ``current_model_state``)."""
    with pytest.raises(ValueError, match=ONE_PER_TRAINER["PolyakAveraging"]):
        _run([PolyakAveraging(decay=0.9), second()], tmp_path, max_epochs=1)
    other = second()  # either order: the error names the other callback and says the fix
    with pytest.raises(
        ValueError, match=rf"also has {type(other).__name__}: a checkpoint holds one average\. Keep one"
    ):
        _run([other, PolyakAveraging(decay=0.9)], tmp_path, max_epochs=1)
