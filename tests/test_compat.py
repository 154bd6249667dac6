"""lightopt._compat's wrappers around other libraries' private names: the contracts they rely on."""

from __future__ import annotations

import importlib.metadata

import lightning as L
from lightning.fabric.utilities import registry

from lightopt import _compat


class _Marker(L.Callback):
    pass


class _EntryPoint:
    """What Lightning uses of an ``importlib.metadata.EntryPoint``: ``name`` and ``load()``."""

    name = "marker"

    def load(self):
        return _Marker


def test_trainers_inside_the_block_read_the_entry_points_once_and_each_get_fresh_callbacks(monkeypatch, tmp_path):
    calls = []

    def entry_points(group=None):
        calls.append(group)
        return [_EntryPoint()] if group == "lightning.pytorch.callbacks_factory" else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    _compat._entry_points.cache_clear()
    before = registry.entry_points
    try:
        with _compat.lightning_entry_points_read_once():
            trainers = [L.Trainer(logger=False, default_root_dir=tmp_path, enable_progress_bar=False) for _ in range(3)]
        assert registry.entry_points is before
    finally:
        _compat._entry_points.cache_clear()
    markers = [[c for c in t.callbacks if isinstance(c, _Marker)] for t in trainers]
    assert [len(m) for m in markers] == [1, 1, 1]
    assert len({id(m[0]) for m in markers}) == 3
    assert calls == ["lightning.pytorch.callbacks_factory"]


def test_heartbeat_base_is_what_optuna_checks_for_a_heartbeat(tmp_path):
    import optuna
    import pytest

    from lightopt._compat import heartbeat_base

    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'h.db'}", heartbeat_interval=60)
    assert isinstance(storage, heartbeat_base())
    assert not isinstance(optuna.storages.InMemoryStorage(), heartbeat_base())
