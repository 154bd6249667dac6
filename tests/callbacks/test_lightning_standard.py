"""lightopt's callbacks to Lightning's standard: ``@override`` hooks, ``__all__``, one checkpoint entry per instance."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

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
from tests.callbacks.test_callback_pairs import Regression

CALLBACK_CLASSES = [
    c for c in vars(lightopt.callbacks).values() if inspect.isclass(c) and issubclass(c, Callback)
] + [PruningCallback, PyTorchLightningPruningCallback]


def _hooks(cls):
    """(name, function) for each method of ``cls`` that overrides one of a base class."""
    for name, value in vars(cls).items():
        func = value.fget if isinstance(value, property) else value
        if name.startswith("__") or not callable(func):
            continue
        if any(name in vars(base) for base in cls.__mro__[1:] if base is not object):
            yield name, func


@pytest.mark.parametrize("cls", CALLBACK_CLASSES, ids=lambda c: c.__name__)
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
}


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


def _run(callbacks, root, max_epochs, ckpt_path=None):
    seed_everything(0, verbose=False)
    model = Regression()
    model.temperature, model.noise = 1.0, 0.1
    watch = _StatesAtStart(callbacks)
    trainer = Trainer(
        default_root_dir=root, callbacks=[*callbacks, watch, ModelCheckpoint(dirpath=root, save_last=True)],
        logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        max_epochs=max_epochs, log_every_n_steps=1,
    )
    trainer.fit(model, ckpt_path=ckpt_path)
    return watch.states


@pytest.mark.parametrize("name", list(PAIRS))
def test_two_instances_coexist_in_a_checkpoint_and_resume_each_their_own_state(tmp_path, name):
    first = PAIRS[name]()
    assert first[0].state_key != first[1].state_key
    _run(first, tmp_path, max_epochs=2)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)["callbacks"]
    for callback in first:  # each instance under its own key, holding its own state
        assert _same(saved[callback.state_key], callback.state_dict())
    assert not _same(first[0].state_dict(), first[1].state_dict())

    second = PAIRS[name]()
    restored = _run(second, tmp_path, max_epochs=3, ckpt_path=tmp_path / "last.ckpt")
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
