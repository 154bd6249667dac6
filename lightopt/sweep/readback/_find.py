"""Find a stored study from a sweep file or a study name; opens, never creates, and imports no torch for a name."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna

from lightopt.runconfig import ConfigError
from lightopt.sweep.store import JOURNAL_NAME, open_storage, optuna_quiet, study_dir

__all__ = ["NotRunYet", "find_study"]


class NotRunYet(ConfigError):
    """The study's default journal file does not exist: the sweep has not been run yet."""


def find_study(
    file_or_name: str,
    storage: str | None = None,
    log_dir: str = "runs",
    configs: Sequence[str] = (),
    cli: Mapping[str, Any] | None = None,
) -> tuple[optuna.Study, Any, str]:
    """The stored study of a sweep file, or of a study name (default storage under ``log_dir``).

    Opens, never creates: a missing journal file or study is a :class:`~lightopt.runconfig.ConfigError`
    (:class:`NotRunYet` when the default journal is not there yet, with the command that runs it).
    Returns ``(study, sweep file or None, storage description)``. ``configs`` and ``cli`` are the
    base run configs and LightningCLI classes the sweep ran with (``--config``, ``--model-class``, ...).
    Given a study name, nothing here imports torch or Lightning; a sweep file is checked in full,
    so its classes are imported.
    """
    sweep = None
    if Path(file_or_name).is_file() or file_or_name.endswith((".yaml", ".yml")):
        from lightopt.sweep.spec import load  # the full check of the file: imports its classes

        sweep = load(file_or_name, configs, (), cli)
        if sweep.study is None:
            raise ConfigError("the file has no `study` block, so it names no study.", sweep.path)
        name, default_dir = sweep.study.name, study_dir(sweep.study.log_dir, sweep.study.name)
        url = storage if storage is not None else sweep.study.storage
    else:
        name, default_dir, url = file_or_name, study_dir(log_dir, file_or_name), storage
    if url is None and not (default_dir / JOURNAL_NAME).is_file():
        how = (
            f"lightopt sweep run {file_or_name}"
            if sweep is not None
            else f"lightopt sweep run FILE (the sweep file of study {name!r})"
        )
        where = "" if sweep is not None else "; if it ran with another log_dir, give --log-dir, or --storage"
        raise NotRunYet(
            f"study {name!r} has not been run yet (no journal at {default_dir / JOURNAL_NAME}): run it "
            f"with `{how}`{where}."
        )
    where = "--storage" if storage is not None else ("study.storage" if sweep else "FILE_or_NAME")
    with optuna_quiet():
        opened, described = open_storage(
            url, default_dir, create=False, where=where, file=sweep.path if sweep and storage is None else None
        )
        try:
            study = optuna.load_study(study_name=name, storage=opened)
        except KeyError:
            names = [s.study_name for s in optuna.get_all_study_summaries(opened)]
            if sweep is not None and not names:
                raise NotRunYet(
                    f"study {name!r} has not been run yet ({described} holds no study): run it with "
                    f"`lightopt sweep run {file_or_name}`."
                ) from None
            raise ConfigError(
                f"no study named {name!r} in {described}; studies there: {', '.join(names) or 'none'}."
            ) from None
    if sweep is not None and sweep.search.deferred:  # a {range_test: true} entry: the bounds its study recorded
        from lightopt.sweep.spec import recorded_range_test, with_recorded_bounds

        record = recorded_range_test(study.user_attrs)
        sweep = sweep if record is None else with_recorded_bounds(sweep, record)
    return study, sweep, described
