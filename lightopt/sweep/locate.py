"""Find a stored study and open its storage, without importing torch or Lightning.

``lightopt sweep show``, ``sweep best`` and ``lightopt tensorboard`` read a study back; they start in
a fraction of a second because this module imports only Optuna and lightopt's storage layer. The
sweep runner opens its storage through the same :func:`open_storage`, so the default journal path
and the messages are written once.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from lightopt.runconfig import ConfigError
from lightopt.sweep.database import database_error, is_transient, open_database, redact
from lightopt.sweep.journal import JournalFile
from lightopt.sweep.storage import GuardedStorage
from lightopt.sweep.tally import best_of

__all__ = ["JOURNAL_NAME", "NotRunYet", "best_trial", "find_study", "open_storage", "optuna_quiet", "study_dir"]

JOURNAL_NAME = "study.journal"


class NotRunYet(ConfigError):
    """The study's default journal file does not exist: the sweep has not been run yet."""


def study_dir(log_dir: str | Path, name: str) -> Path:
    """Where a study's trial logs (``trial_NNNN/``) and default journal file live."""
    return Path(log_dir) / name


def open_storage(
    url: str | None, default_dir: Path, *, create: bool = True, where: str = "study.storage", file: str | None = None
) -> tuple[BaseStorage, str]:
    """The storage for ``url`` (None: the default journal file under ``default_dir``) and its description.

    ``create=False`` refuses to make a new file (for ``show`` and ``best``). Raises
    :class:`~lightopt.runconfig.ConfigError` naming ``where`` when it cannot be opened.
    """
    if url is None or "://" not in url:
        path = default_dir / JOURNAL_NAME if url is None else Path(url)
        if path.is_dir():
            raise ConfigError(f"`{where}` {str(path)!r} is a folder: give the journal file (such as "
                              f"{path / '<study name>' / JOURNAL_NAME}) or a database URL.", file)
        if not create and not path.is_file():
            raise ConfigError(f"`{where}`: no study journal at {path}; give the sweep file or --storage.", file)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"`{where}` cannot be opened: {error}", file) from None
        # JournalFile: a lock that names its holder, a tail checked and repaired; StorageError when it cannot
        return GuardedStorage(optuna.storages.JournalStorage(JournalFile(path)), str(path)), str(path)
    from lightopt.sweep import recovery  # imports Lightning: only for a database

    try:  # the password never reaches a message or an output line; the heartbeat finds other machines' dead workers
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            opened = open_database(url, heartbeat_interval=recovery.HEARTBEAT_S, grace_period=recovery.GRACE_PERIOD_S)
    except Exception as error:  # noqa: BLE001 - drivers raise their own types; all mean "unreachable"
        raise ConfigError(f"`{where}` {redact(url)!r} cannot be opened: {database_error(error, url)}", file) from None
    # Optuna's cache over the database, as optuna.create_study would add; then outages are ridden out
    return GuardedStorage(optuna.storages.get_storage(opened), redact(url), transient=is_transient,
                          explain=lambda error: database_error(error.__cause__ or error, url)), redact(url)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best COMPLETE trial (ties: the lower number), or None; only that trial is copied."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = best_of(complete, study.direction == optuna.study.StudyDirection.MINIMIZE)
    return None if best is None else copy.deepcopy(best)


@contextlib.contextmanager
def optuna_quiet() -> Iterator[None]:
    """Optuna's per-trial log lines (and failure tracebacks) are replaced by lightopt's progress lines."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def find_study(
    file_or_name: str, storage: str | None = None, log_dir: str = "runs", configs: Sequence[str] = (),
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
        from lightopt.sweep import config  # the full check of the file: imports its classes

        sweep = config.load(file_or_name, configs, (), cli)
        if sweep.study is None:
            raise ConfigError("the file has no `study` block, so it names no study.", sweep.path)
        name, default_dir = sweep.study.name, study_dir(sweep.study.log_dir, sweep.study.name)
        url = storage if storage is not None else sweep.study.storage
    else:
        name, default_dir, url = file_or_name, study_dir(log_dir, file_or_name), storage
    if url is None and not (default_dir / JOURNAL_NAME).is_file():
        how = (f"lightopt sweep run {file_or_name}" if sweep is not None
               else f"lightopt sweep run FILE (the sweep file of study {name!r})")
        where = "" if sweep is not None else f"; if it ran with another log_dir, give --log-dir, or --storage"
        raise NotRunYet(f"study {name!r} has not been run yet (no journal at {default_dir / JOURNAL_NAME}): run it "
                        f"with `{how}`{where}.")
    where = "--storage" if storage is not None else ("study.storage" if sweep else "FILE_or_NAME")
    with optuna_quiet():
        opened, described = open_storage(url, default_dir, create=False, where=where,
                                          file=sweep.path if sweep and storage is None else None)
        try:
            study = optuna.load_study(study_name=name, storage=opened)
        except KeyError:
            names = [s.study_name for s in optuna.get_all_study_summaries(opened)]
            if sweep is not None and not names:
                raise NotRunYet(f"study {name!r} has not been run yet ({described} holds no study): run it with "
                                f"`lightopt sweep run {file_or_name}`.") from None
            raise ConfigError(
                f"no study named {name!r} in {described}; studies there: {', '.join(names) or 'none'}."
            ) from None
    return study, sweep, described
