"""lightopt._compat's wrappers around other libraries' private names: the contracts they rely on."""

from __future__ import annotations

import importlib.metadata

import lightning as L
import pytest
import torch
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


def test_weight_average_module_is_the_module_that_weight_averaging_swaps_in():
    import torch
    from lightning.pytorch.callbacks import WeightAveraging

    model = L.LightningModule()
    model.layer = torch.nn.Linear(2, 1)
    averaging = WeightAveraging()
    assert _compat.weight_average_module(averaging) is None  # before fitting
    averaging.setup(L.Trainer(logger=False), model, "fit")
    module = _compat.weight_average_module(averaging)
    assert module is not model and module.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(module.state_dict()[k], v) for k, v in model.state_dict().items())


def test_worker_start_method_tells_spawning_strategies_apart():
    kwargs = {"accelerator": "cpu", "logger": False}
    assert _compat.worker_start_method(L.Trainer(**kwargs)) is None
    assert _compat.worker_start_method(L.Trainer(strategy="ddp", devices=2, **kwargs)) is None
    assert _compat.worker_start_method(L.Trainer(strategy="ddp_spawn", devices=2, **kwargs)) == "spawn"
    assert _compat.worker_start_method(L.Trainer(strategy="ddp_fork", devices=2, **kwargs)) == "fork"


def test_stored_user_attrs_sees_what_another_handle_wrote():
    import optuna

    study = optuna.create_study()
    trial = study.ask()
    frozen = study.get_trials(deepcopy=False)[0]  # another view of the trial, as another process has
    study._storage.set_trial_user_attr(frozen._trial_id, "pruned_at", 3)
    assert "pruned_at" not in trial.user_attrs  # the Trial object's cached copy misses it
    assert _compat.stored_user_attrs(trial) == {"pruned_at": 3}


def test_heartbeat_base_is_what_optuna_checks_for_a_heartbeat(tmp_path):
    import optuna
    import pytest

    from lightopt._compat import heartbeat_base

    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'h.db'}", heartbeat_interval=60)
    assert isinstance(storage, heartbeat_base())
    assert not isinstance(optuna.storages.InMemoryStorage(), heartbeat_base())


def test_compat_strong_wolfe_returns_a_step_that_satisfies_both_conditions():
    a = 4.0  # φ(ε) = J(x + εd) with J = 2θ², d = −g: the exact step is 1/4
    x = torch.tensor([1.0], dtype=torch.float64)
    d = -(a * x)

    def obj(x0, t, direction):
        theta = x0 + t * direction
        return float(0.5 * a * theta @ theta), a * theta

    f, g = obj(x, 0.0, d)
    gtd = g.dot(d)
    f_new, g_new, t, evals = _compat.strong_wolfe(
        obj, x, 1.0, d, f, g, gtd, c1=1e-4, c2=0.1, tolerance_change=1e-9, max_ls=25
    )
    assert isinstance(t, float) and isinstance(f_new, float) and evals >= 1
    assert f_new <= f + 1e-4 * t * float(gtd)
    assert abs(float(g_new.dot(d))) <= 0.1 * abs(float(gtd))
    assert t == pytest.approx(0.25, rel=1e-12)  # cubic interpolation of a quadratic is exact


def test_cached_trials_from_sees_trials_another_handle_finished_and_skips_other_storages(tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=url, study_name="s")
    other = optuna.load_study(storage=url, study_name="s")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    running = other.ask()
    study_id = _compat.study_storage(study).get_study_id_from_name("s")
    wrapper = type("Wrapper", (), {})()  # as lightopt's GuardedStorage keeps the storage it wraps
    wrapper.inner = _compat.study_storage(study)
    assert [(t.number, t.state.name) for t in _compat.cached_trials_from(wrapper, study_id, 1)] == [
        (1, "COMPLETE"),
        (2, "RUNNING"),
    ]
    other.tell(running, 0.5)  # finished by another handle: the next look sees it
    assert [t.state.name for t in _compat.cached_trials_from(wrapper, study_id, 2)] == ["COMPLETE"]
    assert _compat.cached_trials_from(wrapper, study_id, 3) == []
    assert _compat.cached_trials_from(optuna.storages.InMemoryStorage(), 0, 0) is None


def _cache_state(storage, study_id):
    """What Optuna's cache holds of a study: its trials (number, id, state, user attributes) and its bookkeeping."""
    info = storage._studies[study_id]
    trials = sorted((t.number, t._trial_id, t.state.name, sorted(t.user_attrs)) for t in info.trials.values())
    return trials, sorted(info.unfinished_trial_ids), info.last_finished_trial_id


def test_the_refresh_leaves_optunas_cache_as_optunas_own_refresh_would(tmp_path):
    """Trials finished, started and changed by another handle, in any order: the cache after lightopt's refresh
    equals the cache of a twin handle refreshed by Optuna itself, step by step."""
    import optuna

    url = f"sqlite:///{tmp_path / 'study.db'}"
    ours = optuna.create_study(storage=url, study_name="s")
    twin = optuna.load_study(storage=url, study_name="s")
    other = optuna.load_study(storage=url, study_name="s")
    study_id = _compat.study_storage(ours).get_study_id_from_name("s")
    mine, theirs = _compat.study_storage(ours), _compat.study_storage(twin)

    def look():
        _compat.refresh_trial_cache(mine, study_id)
        theirs._read_trials_from_remote_storage(study_id)
        assert _cache_state(mine, study_id) == _cache_state(theirs, study_id)

    look()  # an empty study
    other.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    first, second = other.ask(), other.ask()
    look()
    other.tell(second, 0.1)  # the later one finishes first: the earlier stays open below the frontier
    second_id = second._trial_id
    look()
    first.set_user_attr("seen", True)  # an open trial changes: read again
    look()
    assert "seen" in mine._studies[study_id].trials[first.number].user_attrs
    other.tell(first, state=optuna.trial.TrialState.PRUNED)
    other.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    look()
    claimed = other.ask()
    claimed.set_user_attr("worker", {"host": "elsewhere", "pid": 1})  # a sweep worker's trial: read once ...
    look()
    claimed.suggest_float("x", 0, 1)
    claimed.report(0.5, 1)
    _compat.refresh_trial_cache(mine, study_id)  # ... and not again while it runs
    assert mine._studies[study_id].trials[claimed.number].params == {}
    other.tell(claimed, 0.25)  # finished: read in full
    look()
    assert mine._studies[study_id].trials[claimed.number].params == {"x": claimed.params["x"]}
    assert mine._studies[study_id].last_finished_trial_id > second_id
    assert not mine._studies[study_id].unfinished_trial_ids


def test_a_trial_read_finished_is_kept_and_not_read_again(tmp_path):
    """``remember_finished`` keeps a finished trial in the cache: the next get_trial and refresh do not read it."""
    import optuna
    import sqlalchemy

    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=url, study_name="s")
    storage = _compat.study_storage(study)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
    _compat.refresh_trial_cache(storage, study._study_id)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    study.tell(trial, 0.5)
    statements = []
    sqlalchemy.event.listen(storage._backend.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    finished = storage._backend.get_trial(trial._trial_id)
    _compat.remember_finished(storage, finished)
    first = storage._backend.get_trial(storage.get_trial_id_from_study_id_trial_number(study._study_id, 0))
    _compat.remember_finished(storage, first)  # already held finished: replaced by the same trial
    read = len(statements)
    assert storage.get_trial(trial._trial_id) is finished  # from the cache
    _compat.refresh_trial_cache(storage, study._study_id)
    assert len(statements) == read + 1  # the list of trials to look at, and no read of the trial itself
    assert storage._studies[study._study_id].last_finished_trial_id == trial._trial_id
    running = study.ask()  # a trial not finished is never kept
    _compat.remember_finished(storage, storage._backend.get_trial(running._trial_id))
    assert storage._get_cached_trial(running._trial_id) is None
    _compat.remember_finished(optuna.storages.InMemoryStorage(), finished)  # no cache: nothing to do


def test_created_trial_is_a_copy_of_the_trial_as_the_database_has_it(tmp_path):
    import optuna

    from lightopt.sweep.store import GuardedStorage

    url = f"sqlite:///{tmp_path / 'study.db'}"
    guarded = GuardedStorage(optuna.storages.get_storage(url), "study.db")
    study = optuna.create_study(storage=guarded, study_name="s")
    trial_id = guarded.create_new_trial(study._study_id)
    kept = _compat.created_trial(guarded, trial_id)
    read = guarded.inner._backend.get_trial(trial_id)
    assert (kept.number, kept.state, kept.user_attrs, kept.params, kept.datetime_start) == (
        read.number,
        read.state,
        read.user_attrs,
        read.params,
        read.datetime_start,
    )
    assert _compat.created_trial(guarded, trial_id) is not kept  # a copy each time: the caller may change it
    assert _compat.created_trial(guarded, trial_id + 99) is None
    assert _compat.created_trial(optuna.storages.InMemoryStorage(), 0) is None


def test_set_user_attrs_writes_through_the_storage_batch_call_or_one_by_one(tmp_path):
    import optuna

    from lightopt.sweep.store import GuardedStorage

    url = f"sqlite:///{tmp_path / 'study.db'}"
    attrs = {"epochs": 3, "global_step": 30, "final_value": 0.25}
    trial = optuna.create_study(storage=GuardedStorage(optuna.storages.get_storage(url), "db"), study_name="s").ask()
    _compat.set_user_attrs(trial, attrs)
    assert {k: trial.user_attrs[k] for k in attrs} == attrs  # the trial's own copy, as set_user_attr keeps it
    stored = optuna.load_study(storage=url, study_name="s").trials[0].user_attrs
    assert {k: stored[k] for k in attrs} == attrs
    other = optuna.create_study().ask()  # no batch call: one set_user_attr each
    _compat.set_user_attrs(other, attrs)
    assert {k: other.user_attrs[k] for k in attrs} == attrs
    assert not _compat.rdb_set_trial_user_attrs(optuna.storages.InMemoryStorage(), 0, attrs)


def test_finished_trials_kept_in_the_cache_share_their_attribute_strings(tmp_path):
    """Two trials with the same recorded config, read finished from the database (by the refresh, and by
    ``remember_finished``): the cache holds one copy of each equal string, and the attributes are unchanged."""
    import optuna

    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=url, study_name="s")
    other = optuna.load_study(storage=url, study_name="s")
    storage = _compat.study_storage(study)
    config = {
        "model": {"class_path": "my_project.models.Classifier", "init_args": {"hidden": [64, 32], "act": "relu"}},
        "trainer": {"logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger"}], "max_epochs": 3},
        "note": "x" * 300,  # long strings are left as they are
    }
    for value in (0.1, 0.2, 0.3):
        trial = other.ask()
        trial.set_user_attr("config", config)
        trial.set_user_attr("worker", {"host": "node-7", "pid": 4})
        other.tell(trial, value)
    _compat.refresh_trial_cache(storage, study._study_id)
    held = storage._studies[study._study_id].trials
    _compat.remember_finished(storage, storage._backend.get_trial(held[2]._trial_id))
    first, second, third = (held[n].user_attrs for n in range(3))
    for attrs in (first, second, third):
        assert attrs == {"config": config, "worker": {"host": "node-7", "pid": 4}}
    for later in (second, third):
        model, logger = later["config"]["model"], later["config"]["trainer"]["logger"][0]
        assert model["class_path"] is first["config"]["model"]["class_path"]
        assert model["init_args"]["act"] is first["config"]["model"]["init_args"]["act"]
        assert logger["class_path"] is first["config"]["trainer"]["logger"][0]["class_path"]
        assert later["worker"]["host"] is first["worker"]["host"]
        assert [k1 is k2 for k1, k2 in zip(later["config"], first["config"])] == [True] * 3
        assert later["config"]["note"] == config["note"]
