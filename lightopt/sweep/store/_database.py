"""Optuna's database storage for sweeps on many machines: safe to open from many workers at once, no password shown.

Every worker of a sweep on several machines opens the same database URL (``postgresql://...``) with
:func:`open_database`. It differs from a bare ``optuna.storages.RDBStorage(url)`` in three ways:

1. Creating Optuna's tables in a new database is serialized (a PostgreSQL advisory lock; a retry
   elsewhere): SQLAlchemy's create-if-missing is check-then-create, so workers that start at the
   same instant on an empty database otherwise fail with "duplicate key value violates unique
   constraint pg_type_typname_nsp_index".
2. Pooled connections are checked before use (``pool_pre_ping``), so a connection that the server
   or a firewall dropped during a long trial is replaced instead of failing the trial's report.
3. Connecting gives up after :data:`CONNECT_TIMEOUT_S` seconds (unless the URL sets
   ``connect_timeout``), so an unreachable host is an error, not a hang.

:func:`redact` hides the password in every URL lightopt prints.
"""

from __future__ import annotations

import random
import re
import time
from typing import Any

import optuna

__all__ = [
    "open_database",
    "grpc_proxy",
    "redact",
    "database_error",
    "is_transient",
    "STORAGE_ENV",
    "CONNECT_TIMEOUT_S",
]

STORAGE_ENV = "LIGHTOPT_STORAGE"
"""The environment variable ``lightopt sweep`` commands take ``--storage`` from when it is not given."""

CONNECT_TIMEOUT_S = 10

# Any 64-bit constant; every lightopt worker takes this lock while it creates Optuna's tables.
_SCHEMA_LOCK = 0x6C696768746F7074  # "lightopt"
_USERINFO = re.compile(r"^(?P<head>[\w+.-]+://[^:/@?#]*):(?P<password>[^@]*)@")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<password>[^&#]*)", re.IGNORECASE)


def redact(url: str) -> str:
    """``url`` with its password, in the user info or in a ``password=`` query parameter, replaced by ``***``.

    Example:
        >>> redact("postgresql://lightopt:s3cret@db.example.org:5432/sweeps")
        'postgresql://lightopt:***@db.example.org:5432/sweeps'
        >>> redact("postgresql://db.example.org/sweeps?user=me&password=s3cret")
        'postgresql://db.example.org/sweeps?user=me&password=***'
        >>> redact("sqlite:///runs/study.db")
        'sqlite:///runs/study.db'
    """
    url = _USERINFO.sub(r"\g<head>:***@", url, count=1)
    return _QUERY_PASSWORD.sub(r"\g<head>***", url)


def _passwords(url: str) -> list[str]:
    found = [m.group("password") for m in (_USERINFO.match(url), *_QUERY_PASSWORD.finditer(url)) if m]
    return [p for p in found if p]


def database_error(error: BaseException, url: str) -> str:
    """One line saying why ``url`` could not be opened, without its password.

    Example:
        >>> database_error(ConnectionError("no route to db.example.org\\nmore"), "postgresql://u:pw@db.example.org/x")
        'ConnectionError: no route to db.example.org'
    """
    if isinstance(error, ImportError):
        missing = getattr(error.__cause__ or error, "name", None) or "a database driver"
        if missing == "grpc":
            return "the module 'grpc' is not installed: pip install grpcio"
        return (
            f"the driver {missing!r} is not installed; install lightopt's `postgres` extra for PostgreSQL "
            f"(pip install 'lightopt[postgres]') or the driver the URL names"
        )
    text = str(error).strip()
    line = text.splitlines()[0] if text else ""
    if not line.startswith("("):  # SQLAlchemy's errors already start with "(driver.ErrorType)"
        line = f"{type(error).__name__}: {line}" if line else type(error).__name__
    for password in _passwords(url):  # drivers do not echo passwords; this is a second line of defence
        if len(password) >= 4:  # (a shorter one would garble words such as "password")
            line = line.replace(password, "***")
    return re.sub(r"\s{2,}", " ", redact(line))


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` (or an error it wraps) is the database or the network being away, worth retrying.

    True for SQLAlchemy's ``OperationalError`` and ``InterfaceError`` (connection refused, the server
    closed the connection, "the database system is starting up", "terminating connection due to
    administrator command"), any driver error that invalidated its connection, ``ConnectionError``
    and gRPC's ``UNAVAILABLE``; False for everything else (a bad query, a constraint, a finished trial).

    Example:
        >>> is_transient(ConnectionRefusedError(111, "Connection refused")), is_transient(ValueError("x"))
        (True, False)
    """
    import sqlalchemy

    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, ConnectionError)):
            return True
        if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
            return True
        code = getattr(error, "code", None)
        if callable(code) and getattr(code(), "name", None) == "UNAVAILABLE":  # grpc.RpcError
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def open_database(url: str, **storage_kwargs: Any) -> optuna.storages.BaseStorage:
    """An ``optuna.storages.RDBStorage`` for ``url`` that many workers may open at the same instant.

    A ``grpc://host:port`` URL gives a client of Optuna's gRPC storage proxy instead (:func:`grpc_proxy`).

    ``storage_kwargs`` go to ``RDBStorage`` (e.g. ``heartbeat_interval``); ``engine_kwargs`` among
    them are merged over lightopt's (``pool_pre_ping=True`` and a connect timeout). Raises what the
    driver raises when the server cannot be reached or refuses the credentials, before anything is
    written; :func:`database_error` turns that into one line.
    """
    import sqlalchemy

    if url.startswith("grpc://"):
        return grpc_proxy(url)
    engine_kwargs = {"pool_pre_ping": True, **_connect_timeout(url), **storage_kwargs.pop("engine_kwargs", {})}
    if sqlalchemy.engine.make_url(url).get_backend_name() != "postgresql":
        return _with_retry(lambda: optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **storage_kwargs))
    # One connection holds a session-level advisory lock while this process creates (or finds) the tables.
    lock_engine = sqlalchemy.create_engine(
        url,
        poolclass=sqlalchemy.pool.NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args=engine_kwargs.get("connect_args", {}),
    )
    try:
        with lock_engine.connect() as connection:  # wrong credentials or no server: raises here
            connection.exec_driver_sql("SET lock_timeout = '120s'")
            connection.exec_driver_sql(f"SELECT pg_advisory_lock({_SCHEMA_LOCK})")
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **storage_kwargs)
            finally:
                connection.exec_driver_sql(f"SELECT pg_advisory_unlock({_SCHEMA_LOCK})")
    finally:
        lock_engine.dispose()


def grpc_proxy(url: str, timeout: float = CONNECT_TIMEOUT_S) -> optuna.storages.BaseStorage:
    """A client of the Optuna gRPC storage proxy at ``grpc://host[:port]`` (port 13000 by default).

    The proxy (``optuna.storages.run_grpc_proxy_server``) holds the one database connection pool
    and a cache for all workers; see the README's "Many machines". Raises ``ConnectionError`` when
    no proxy answers within ``timeout`` seconds.
    """
    import warnings
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"a gRPC storage URL must be grpc://host[:port], but got {url!r}.")
    host, port = parts.hostname, parts.port or 13000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        proxy = optuna.storages.GrpcStorageProxy(host=host, port=port)
    try:
        proxy.wait_server_ready(timeout=timeout)
    except ConnectionError:
        proxy.close()
        raise ConnectionError(f"no Optuna gRPC storage proxy answered at {host}:{port} within {timeout:g} s") from None
    return proxy


def _connect_timeout(url: str) -> dict[str, Any]:
    import sqlalchemy

    parsed = sqlalchemy.engine.make_url(url)
    if parsed.get_backend_name() not in ("postgresql", "mysql", "mariadb") or "connect_timeout" in parsed.query:
        return {}
    return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}


def _with_retry(make: Any, attempts: int = 4) -> optuna.storages.RDBStorage:
    """``make()``, again after a short pause when another process was creating the same tables."""
    import sqlalchemy

    for _ in range(attempts - 1):
        try:
            return make()
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            time.sleep(0.2 + random.random() * 0.5)
    return make()
