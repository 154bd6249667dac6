"""Where a study lives and how its storage opens, without importing torch or Lightning.

``lightopt sweep show``, ``sweep best`` and ``lightopt tensorboard`` read a study back; they start in
a fraction of a second because this layer imports only Optuna. The sweep runner opens its storage
through the same :func:`open_storage`, so the default journal path and the messages are written once.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from optuna.storages import BaseStorage

from lightopt.runconfig import ConfigError
from lightopt.sweep.store._database import database_error, is_transient, open_database, redact
from lightopt.sweep.store._journal import JournalFile
from lightopt.sweep.store._outcomes import GRACE_PERIOD_S, HEARTBEAT_S
from lightopt.sweep.store._storage import GuardedStorage

__all__ = ["JOURNAL_NAME", "open_storage", "study_dir"]

JOURNAL_NAME = "study.journal"


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
            raise ConfigError(
                f"`{where}` {str(path)!r} is a folder: give the journal file (such as "
                f"{path / '<study name>' / JOURNAL_NAME}) or a database URL.",
                file,
            )
        if not create and not path.is_file():
            raise ConfigError(f"`{where}`: no study journal at {path}; give the sweep file or --storage.", file)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"`{where}` cannot be opened: {error}", file) from None
        # JournalFile: a lock that names its holder, a tail checked and repaired; StorageError when it cannot
        return GuardedStorage(optuna.storages.JournalStorage(JournalFile(path)), str(path)), str(path)
    try:  # the password never reaches a message or an output line; the heartbeat finds other machines' dead workers
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            opened = open_database(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_PERIOD_S)
    except Exception as error:
        raise ConfigError(f"`{where}` {redact(url)!r} cannot be opened: {database_error(error, url)}", file) from None
    # Optuna's cache over the database, as optuna.create_study would add; then outages are ridden out
    return GuardedStorage(
        optuna.storages.get_storage(opened),
        redact(url),
        transient=is_transient,
        explain=lambda error: database_error(error.__cause__ or error, url),
    ), redact(url)
