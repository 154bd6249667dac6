"""The one place where lightopt touches other libraries' private names.

Each wrapper here pins down the contract lightopt relies on, and ``tests/optim`` checks it, so
that a change upstream fails one small test instead of an optimizer far away.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: the storage helpers below serve `lightopt sweep show`
    import optuna
    import torch

ObjectiveFn = Callable[["torch.Tensor", float, "torch.Tensor"], "tuple[float, torch.Tensor]"]


def strong_wolfe(
    obj_func: ObjectiveFn,
    x: torch.Tensor,
    t: float,
    d: torch.Tensor,
    f: float,
    g: torch.Tensor,
    gtd: torch.Tensor,
    *,
    c1: float,
    c2: float,
    tolerance_change: float,
    max_ls: int,
) -> tuple[float, torch.Tensor, float, int]:
    """torch's strong-Wolfe line search (bracketing and cubic-interpolation zoom), as used by LBFGS.

    ``obj_func(x, t, d)`` returns the loss (a float) and the flat gradient at ``x + t·d`` and must
    leave the parameters at ``x``. ``f``, ``g`` and ``gtd = gᵀd`` describe the point ``x``; ``t``
    is the first trial step. Returns ``(f_new, g_new, t, evaluations)`` for the accepted step, or
    for the best point bracketed when ``max_ls`` evaluations did not satisfy the conditions
    ``f(x + t d) <= f + c1·t·gtd`` and ``|g(x + t d)ᵀd| <= c2·|gtd|``.
    """
    from torch.optim.lbfgs import _strong_wolfe as _torch_strong_wolfe

    f_new, g_new, t_new, evals = _torch_strong_wolfe(
        obj_func, x, t, d, f, g, gtd, c1=c1, c2=c2, tolerance_change=tolerance_change, max_ls=max_ls
    )
    return float(f_new), g_new, float(t_new), int(evals)


@functools.cache
def _entry_points(group: str) -> tuple[Any, ...]:
    return tuple(importlib.metadata.entry_points(group=group))


@contextlib.contextmanager
def lightning_entry_points_read_once() -> Iterator[None]:
    """Inside the block, a Lightning ``Trainer`` reads its callback entry points once per process.

    ``Trainer.__init__`` looks for external callbacks in the ``lightning.pytorch.callbacks_factory``
    entry-point group (``lightning.fabric.utilities.registry._load_external_callbacks`` calls the
    module's ``entry_points(group=...)``), which reads the metadata of every installed distribution:
    5 ms of CPU and more of I/O per Trainer, a noticeable share of a short sweep trial. Inside the
    block the group's entry points are listed once and kept; each factory is still called for every
    Trainer, so every Trainer gets callbacks of its own, as without the block.
    """
    from lightning.fabric.utilities import registry

    before = registry.entry_points

    def entry_points(group: str | None = None) -> Any:
        return before() if group is None else _entry_points(group)

    registry.entry_points = entry_points
    try:
        yield
    finally:
        registry.entry_points = before


def study_storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study reads and writes (Optuna's ``Study`` has no public getter for it).

    lightopt's crash recovery needs it to set the state of another worker's trial by number.
    """
    return study._storage


def _trial_cache(storage: optuna.storages.BaseStorage) -> Any:
    """Optuna's ``_CachedStorage`` that ``storage`` is or wraps (through ``inner``), or None.

    Optuna wraps every ``RDBStorage`` a study opens in ``_CachedStorage`` (lightopt's
    ``GuardedStorage`` and the like keep the storage they wrap as ``inner``).
    """
    from optuna.storages._cached_storage import _CachedStorage

    for _ in range(4):
        if isinstance(storage, _CachedStorage):
            return storage
        storage = storage.__dict__.get("inner")
        if storage is None:
            return None
    return None


def cached_trials_from(
    storage: optuna.storages.BaseStorage, study_id: int, start: int, refresh: bool = True
) -> list[optuna.trial.FrozenTrial] | None:
    """The trials numbered ``start`` and up from Optuna's cache in front of a database; None if not one.

    The refresh (:func:`refresh_trial_cache`) reads from the database only the trials not seen
    finished yet, whatever the study's size, where ``get_trial`` of a trial not finished is a round
    trip of its own. The cache holds the trials by number; they are returned as they are, not copied.
    """
    cache = _trial_cache(storage)
    if cache is None:
        return None
    if refresh or study_id not in cache._studies:  # never read: nothing cached to reuse
        refresh_trial_cache(cache, study_id)
    with cache._lock:
        cached = cache._studies[study_id].trials
        trials = []
        while start + len(trials) in cached:
            trials.append(cached[start + len(trials)])
    return trials


def refresh_trial_cache(cache: Any, study_id: int) -> None:
    """Optuna's ``_CachedStorage._read_trials_from_remote_storage``, without re-reading trials it holds finished.

    Optuna's refresh reads in full (the trial and its five relations: six queries) every trial
    not seen finished by an earlier refresh, including one that this process has just read
    finished with ``get_trial`` (as ``study.optimize`` does after each trial, for its callbacks,
    and :func:`remember_finished` keeps), and every running trial at every look. Here the trials
    a refresh would read are first listed with their states (one query); only those whose state
    changed, or that the cache does not hold finished or running with a sweep worker's record,
    are read in full: another worker's running trial is read once, then again when it finishes.
    The cache's bookkeeping (``unfinished_trial_ids``, ``last_finished_trial_id``) is updated as
    Optuna's refresh updates it, from the same trials.
    """
    import sqlalchemy
    from optuna.storages._cached_storage import _StudyInfo
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    backend = cache._backend
    with cache._lock:
        study = cache._studies.setdefault(study_id, _StudyInfo())
        newer = models.TrialModel.trial_id > study.last_finished_trial_id
        if study.unfinished_trial_ids:
            newer = sqlalchemy.or_(models.TrialModel.trial_id.in_(study.unfinished_trial_ids), newer)
        with _create_scoped_session(backend.scoped_session) as session:
            listed = (
                session.query(models.TrialModel.trial_id, models.TrialModel.number, models.TrialModel.state)
                .filter(models.TrialModel.study_id == study_id, newer)
                .all()
            )
        held, unread = [], set()
        for trial_id, number, state in listed:
            trial = study.trials.get(number)
            if trial is not None and trial._trial_id == trial_id and trial.state == state and _settled(trial):
                held.append(trial)
            else:
                unread.add(trial_id)
        read = backend._get_trials(study_id, None, unread, max(unread)) if unread else []
        for trial in read:
            if trial.state.is_finished():  # kept for good
                share_strings(trial)
        if read:
            cache._add_trials_to_cache(study_id, read)
        for trial in (*held, *read):
            if not trial.state.is_finished():
                study.unfinished_trial_ids.add(trial._trial_id)
                continue
            study.last_finished_trial_id = max(study.last_finished_trial_id, trial._trial_id)
            study.unfinished_trial_ids.discard(trial._trial_id)


def _settled(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a look at the study need not read ``trial`` again while its state is unchanged.

    A finished trial never changes. A running one that carries its worker's record (lightopt's
    ``worker`` attribute, written when a sweep creates or claims it) changes only in what its fit
    writes (parameters, reported values, attributes), which the sweep's looks do not use until it
    finishes; its state changing to finished brings it to a full read. Optuna's own refresh (its
    sampler's and pruner's reads) still reads every running trial in full.
    """
    from optuna.trial import TrialState

    return trial.state.is_finished() or (trial.state == TrialState.RUNNING and "worker" in trial.user_attrs)


#: Strings up to this length in a finished trial's attributes are interned (:func:`share_strings`).
_SHARED_MAX = 256


def share_strings(trial: optuna.trial.FrozenTrial) -> None:
    """Make the strings of ``trial``'s user attributes (keys, and values up to 256 characters) the interned ones.

    Every trial records the same keys and mostly the same strings (a run config's class paths and
    option names, the worker's host), but Optuna decodes each trial's attributes from JSON of
    their own, so a study's trials each hold copies: 3.7 KB per trial of a small recorded config,
    2.1 KB with the strings shared. Equal values, changed in place (Optuna's ``user_attrs`` is the
    trial's own dict); for the finished trials a process keeps for good: in Optuna's cache of a
    database study, and in a journal study's replay (through lightopt's state index).
    """
    attrs = trial.user_attrs
    shared = _shared(attrs)
    attrs.clear()
    attrs.update(shared)


def _shared(value: Any) -> Any:
    if isinstance(value, dict):
        return {sys.intern(k) if isinstance(k, str) else k: _shared(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shared(v) for v in value]
    if isinstance(value, str) and len(value) <= _SHARED_MAX:
        return sys.intern(value)
    return value


def remember_finished(storage: optuna.storages.BaseStorage, trial: optuna.trial.FrozenTrial) -> None:
    """Keep ``trial``, just read finished from the database, in Optuna's cache in front of it (if any).

    A finished trial never changes again (Optuna refuses every write to it), so the copy read is
    the trial for good: the next ``get_trial`` of it is answered from the cache, and the next
    refresh (:func:`refresh_trial_cache`) does not read it again. Optuna's cache keeps a trial
    read finished only through its own refresh. Not copied: Optuna's cache hands out the trials
    it holds as they are, and callers do not change them.
    """
    cache = _trial_cache(storage)
    if cache is None or not trial.state.is_finished():
        return
    with cache._lock:
        place = cache._trial_id_to_study_id_and_number.get(trial._trial_id)
        if place is not None and place[1] == trial.number:  # a trial of a study this cache follows
            share_strings(trial)
            cache._studies[place[0]].trials[trial.number] = trial


def created_trial(storage: optuna.storages.BaseStorage, trial_id: int) -> optuna.trial.FrozenTrial | None:
    """A copy of the trial ``trial_id`` as Optuna's cache recorded it when this process created it; None if not held.

    ``_CachedStorage.create_new_trial`` keeps the trial it created (as the database has it then);
    ``study.ask`` reads it straight back from the database (``Trial.__init__``: six queries).
    """
    import copy

    cache = _trial_cache(storage)
    if cache is None:
        return None
    with cache._lock:
        place = cache._trial_id_to_study_id_and_number.get(trial_id)
        trial = None if place is None else cache._studies[place[0]].trials.get(place[1])
        return None if trial is None or trial._trial_id != trial_id else copy.deepcopy(trial)


def rdb_set_trial_user_attrs(storage: optuna.storages.BaseStorage, trial_id: int, attrs: dict[str, Any]) -> bool:
    """Write ``attrs`` to the trial in one transaction if ``storage`` is (Optuna's cache in front of) an ``RDBStorage``.

    Returns whether it did (False: not a database; nothing written). ``RDBStorage`` has no call
    for several attributes: each ``set_trial_user_attr`` is a transaction of its own (a read of
    the trial, the upsert, a commit). Here the trial is read once, with the same check (a finished
    trial is refused), and on PostgreSQL and SQLite all the attributes go in one upsert statement
    (Optuna's own statement for one attribute, given several rows); on other databases one upsert
    per attribute, as Optuna writes them; one commit.
    """
    import json
    import sqlite3

    import sqlalchemy.dialects.postgresql
    import sqlalchemy.dialects.sqlite
    from optuna.storages import RDBStorage
    from optuna.storages._cached_storage import _CachedStorage
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    if isinstance(storage, _CachedStorage):
        storage = storage._backend
    if not isinstance(storage, RDBStorage):
        return False
    if not attrs:
        return True
    dialect = storage.engine.name
    model = models.TrialUserAttributeModel
    with _create_scoped_session(storage.scoped_session, True) as session:
        if dialect == "postgresql" or (dialect == "sqlite" and sqlite3.sqlite_version_info >= (3, 24, 0)):
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
            storage.check_trial_is_updatable(trial_id, trial.state)
            insert = (sqlalchemy.dialects.postgresql if dialect == "postgresql" else sqlalchemy.dialects.sqlite).insert
            rows = [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()]
            statement = insert(model).values(rows)
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=[model.trial_id, model.key], set_={"value_json": statement.excluded.value_json}
                )
            )
        else:
            for key, value in attrs.items():
                storage._set_trial_attr_without_commit(session, model, trial_id, key, value)
    return True


def set_user_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """``trial.set_user_attr`` for each of ``attrs``, in one write where the storage offers one.

    lightopt's ``GuardedStorage`` offers ``set_trial_user_attrs`` (one transaction on a
    database); the trial's own copy of its attributes is updated as ``set_user_attr`` does.
    """
    write = getattr(trial.storage, "set_trial_user_attrs", None)
    if write is None or len(attrs) < 2:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    write(trial._trial_id, dict(attrs))
    trial._cached_frozen_trial.user_attrs.update(attrs)


def stop_requested(study: optuna.Study) -> bool:
    """Whether ``study.stop()`` was called in the last ``study.optimize`` (e.g. by a finished ``GridSampler``).

    lightopt's worker calls ``study.optimize`` one trial at a time and must honour it across calls.
    """
    return bool(getattr(study, "_stop_flag", False))


def weight_average_module(callback: Any) -> torch.nn.Module | None:
    """The module a Lightning ``WeightAveraging`` callback swaps into the model for validation, or ``None``.

    ``WeightAveraging`` keeps its ``AveragedModel`` in ``_average_model`` (created at ``setup`` for
    fitting) and swaps ``_average_model.module``'s parameters and buffers with the model's at
    ``on_validation_epoch_start``/``on_validation_epoch_end``. lightopt's ``EarlyStopping`` needs
    the module to keep the weights that validation scored.
    """
    average = callback._average_model
    return None if average is None else average.module


def worker_start_method(trainer: Any) -> str | None:
    """How the Trainer's strategy starts the processes that run the fit: ``"spawn"``, ``"fork"``, ... or ``None``.

    ``None`` when the fit runs in this process (one device, or ``ddp``, whose launcher starts the
    other ranks as copies of the script and keeps rank 0 here). ``ddp_spawn``, ``ddp_fork`` and
    ``ddp_notebook`` use Lightning's ``_MultiProcessingLauncher`` (its ``_start_method``): the
    callbacks the caller holds are copies of the ones that run. lightopt's pruning callback needs
    to know, to carry its decision back through the trial's storage.
    """
    from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

    launcher = trainer.strategy.launcher
    if not isinstance(launcher, _MultiProcessingLauncher):
        return None
    return str(launcher._start_method)


def stored_user_attrs(trial: optuna.Trial) -> dict[str, Any]:
    """The trial's user attributes as its storage holds them now.

    ``Trial.user_attrs`` answers from the copy the ``Trial`` object cached (``_cached_frozen_trial``),
    which misses attributes another process wrote; lightopt's pruning callback reads a decision
    made in a worker process of ``ddp_spawn`` this way. ``Trial`` keeps its id in ``_trial_id``.
    """
    return trial.storage.get_trial_user_attrs(trial._trial_id)


def heartbeat_base() -> type:
    """Optuna's ``BaseHeartbeat``, the interface of storages with a heartbeat (it lives in a private module).

    Optuna's ``is_heartbeat_enabled`` and ``fail_stale_trials`` test ``isinstance(storage, BaseHeartbeat)``,
    so lightopt's storage wrapper must subclass it to keep the heartbeat of the storage it wraps.
    """
    from optuna.storages._heartbeat import BaseHeartbeat

    return BaseHeartbeat
