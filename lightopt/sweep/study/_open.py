"""Open a sweep's study: create it or load it (same direction, metric and search space), and seed its sampler.

Storage: by default an Optuna journal file, ``<log_dir>/<study name>/study.journal``
(``JournalStorage`` over :class:`~lightopt.sweep.store.JournalFile`, Optuna's file backend with a
lock that names its holder and a tail that is never built on when damaged): one append-only file,
no server, safe for several processes on one machine, so multi-worker runs share it as is. SQLite
would also be embedded, but concurrent writers there meet "database is locked". Any Optuna
database URL (``sqlite:///...``, ``postgresql://...``) or a path to a journal file may be given
instead. Either is wrapped in :class:`~lightopt.sweep.store.GuardedStorage` (trials created with
their worker recorded; a database outage retried for a bounded time).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import warnings
import zlib
from collections.abc import Mapping
from typing import Any

import optuna

from lightopt.sweep.spec import (
    StudySpec,
    SweepFile,
    check_resume,
    derive_seed,
    describe_space,
    failed_only_clashes,
    recorded_range_test,
)
from lightopt.sweep.store import WARM_START, open_storage, study_dir
from lightopt.sweep.study._warm import find_source

__all__ = ["open_study", "run_sampler_seed"]


def open_study(
    sweep: SweepFile,
    storage_url: str | None = None,
    name: str | None = None,
    *,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    range_test: Mapping[str, Any] | None = None,
) -> tuple[optuna.Study, str]:
    """Create the sweep's study, or load it when it exists (same direction, metric and search space required).

    ``sampler``/``pruner`` objects replace the file's ``study.sampler``/``study.pruner``. The study
    that ``study.warm_start`` names is found and checked here, before anything is written; the copy
    itself is :func:`~lightopt.sweep.study.warm_start`'s. ``range_test`` is the record of a range
    test run for this study (:func:`~lightopt.sweep.study.settle_range_test`); a record stored
    earlier is kept when none is given.
    """
    spec = sweep.study
    name = name or spec.name
    url = storage_url if storage_url is not None else spec.storage
    storage, described = open_storage(
        url,
        study_dir(spec.log_dir, name),
        where="--storage" if storage_url else "study.storage",
        file=None if storage_url else sweep.path,
    )
    exists = check_resume(storage, name, sweep)  # before anything is written
    done = exists and WARM_START in storage.get_study_user_attrs(storage.get_study_id_from_name(name))
    if spec.warm_start is not None and not done:
        find_source(sweep, storage_url, name)  # the study to warm start from, checked before any write
    clashes = failed_only_clashes(storage, name, sweep.search)
    if clashes:  # Optuna cannot mix them with the failed trials' draws: those become a study of their own
        aside = _set_aside(storage, url, name, spec.log_dir)
        print(
            f"study {name!r} had only failed trials, and `search` changed how they were drawn "
            f"({'; '.join(clashes)}), which one Optuna study cannot mix: they are kept as study {aside!r} "
            f"(logs in {study_dir(spec.log_dir, aside)}), and {name!r} starts again.",
            file=sys.stderr,
            flush=True,
        )
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        directions=list(spec.directions),
        load_if_exists=True,
        sampler=sampler or spec.make_sampler(sweep.search),
        pruner=pruner or spec.make_pruner(),
    )
    with warnings.catch_warnings():  # Optuna calls it experimental; optuna-dashboard then names the objective
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(spec.metrics))
    attrs = {"metric": spec.metric, "seed": spec.seed, "file": sweep.path, "space": describe_space(sweep.search)}
    if spec.multi_objective:  # `metric` stays the first one's: the one trials are pruned on
        attrs["metrics"] = list(spec.metrics)
    recorded = range_test if range_test is not None else recorded_range_test(study.user_attrs)
    if recorded is not None:
        attrs["range_test"] = dict(recorded)
    study.set_user_attr("lightopt", attrs)
    return study, described


def run_sampler_seed(spec: StudySpec, already: int, shared: bool) -> int | None:
    """The sampler's seed for a run that finds ``already`` trials in its study (None: unseeded).

    A new study on the embedded storage keeps the file's seed, so a one-worker sweep draws the same
    parameters every time. A resumed study mixes in the trial count, or a seeded random sampler would
    draw its first parameters again; a shared database (``shared``) also mixes in the host and process,
    since machines that start the same file together find the same count and would otherwise all draw
    the same parameters. The seed is :func:`~lightopt.sweep.spec.derive_seed`'s, the sweep's one scheme.

    Example:
        >>> from lightopt.sweep.spec import StudySpec
        >>> spec = StudySpec(name="s", sampler={"name": "random", "seed": 3})
        >>> run_sampler_seed(spec, 0, False), run_sampler_seed(spec, 5, False) == run_sampler_seed(spec, 5, False)
        (3, True)
    """
    seed = spec.sampler.get("seed", spec.seed)
    if seed is None or (already == 0 and not shared):
        return seed
    host = [zlib.crc32(socket.gethostname().encode()), os.getpid()] if shared else []
    return derive_seed(seed, already, *host)


def _set_aside(storage: optuna.storages.BaseStorage, url: str | None, name: str, log_dir: str) -> str:
    """Move the study ``name`` to a new name, ``<name>-failed-K``, with its trials' logs; returns the new name.

    The study is copied (Optuna's ``copy_study``: trials, attributes) into the same storage, or with
    the default journal (``url`` None) into the new name's own journal, then deleted; its
    ``trial_NNNN/`` folders and its TensorBoard study run move to the new name's folder. Nothing
    is lost, and ``lightopt sweep show <name>-failed-K`` reads it back.
    """
    existing = set(optuna.get_all_study_names(storage))
    number = 1
    while f"{name}-failed-{number}" in existing or study_dir(log_dir, f"{name}-failed-{number}").exists():
        number += 1
    aside = f"{name}-failed-{number}"
    target = storage if url is not None else open_storage(None, study_dir(log_dir, aside))[0]
    optuna.copy_study(from_study_name=name, from_storage=storage, to_storage=target, to_study_name=aside)
    optuna.delete_study(study_name=name, storage=storage)
    source, destination = study_dir(log_dir, name), study_dir(log_dir, aside)
    destination.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("trial_*")) + [p for p in (source / "study", source / "plots") if p.exists()]:
        shutil.move(str(path), str(destination / path.name))
    return aside
