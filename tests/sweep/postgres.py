"""A real PostgreSQL server on 127.0.0.1 for the many-machines tests, started once per test process.

The server runs from a fresh ``initdb`` in a temporary directory, as an unprivileged user
(``postgres`` when the tests run as root, since PostgreSQL refuses to run as root; else the
current user), on a free port of 127.0.0.1 with its unix socket in that directory. TCP clients
authenticate with a password (scram-sha-256) as the role ``lightopt``; each test gets a database
of its own from :func:`postgres_db`. ``.ci/install`` installs the server when it is missing.

Use it by importing the fixtures into a test module: ``from tests.sweep.postgres import postgres_db``.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["PostgresServer", "start_postgres", "postgres_server", "postgres_db", "free_port"]

ROLE, PASSWORD = "lightopt", "s3cret-test-pw"
_WAIT_S = 60  # pg_ctl's bound on start and stop


def _binary(name: str) -> str | None:
    """``name`` from PATH, else from the newest /usr/lib/postgresql/<version>/bin (Debian's layout)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return candidates[-1] if candidates else None


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PostgresServer:
    """A running server: where it listens, the test role's credentials, and how to stop it."""

    base: Path
    port: int
    prefix: list[str]  # runs a command as the server's user
    pg_ctl: str
    _databases: itertools.count = None  # type: ignore[assignment]

    def url(self, database: str, password: str | None = PASSWORD, port: int | None = None) -> str:
        auth = ROLE if password is None else f"{ROLE}:{password}"
        return f"postgresql://{auth}@127.0.0.1:{port or self.port}/{database}"

    def admin(self, sql: str) -> None:
        """Run ``sql`` as the superuser over the unix socket (trust authentication), autocommit."""
        import sqlalchemy

        engine = sqlalchemy.create_engine(
            f"postgresql://postgres@/postgres?host={self.base}&port={self.port}",
            isolation_level="AUTOCOMMIT",
            poolclass=sqlalchemy.pool.NullPool,
        )
        try:
            with engine.connect() as connection:
                connection.exec_driver_sql(sql)
        finally:
            engine.dispose()

    def new_database(self) -> str:
        """A fresh, empty database owned by the test role; returns its name."""
        if self._databases is None:
            self._databases = itertools.count()
        name = f"test_{next(self._databases)}"
        self.admin(f"CREATE DATABASE {name} OWNER {ROLE}")
        return name

    def halt(self) -> None:
        """Stop the server as an administrator restarting it would; keep its data.

        ``pg_ctl stop -m fast``: connections are cut.
        """
        subprocess.run(
            [*self.prefix, self.pg_ctl, "-D", str(self.base / "data"), "-m", "fast", "-w", "-t", str(_WAIT_S), "stop"],
            capture_output=True,
            text=True,
            timeout=_WAIT_S + 10,
            cwd=self.base,
            check=True,
        )

    def start(self) -> None:
        """Start the halted server again, on the same port and data."""
        subprocess.run(
            [
                *self.prefix,
                self.pg_ctl,
                "-D",
                str(self.base / "data"),
                "-l",
                str(self.base / "server.log"),
                "-o",
                _options(self.port, self.base),
                "-w",
                "-t",
                str(_WAIT_S),
                "start",
            ],
            capture_output=True,
            text=True,
            timeout=_WAIT_S + 10,
            cwd=self.base,
            check=True,
        )

    def stop(self) -> None:
        subprocess.run(
            [*self.prefix, self.pg_ctl, "-D", str(self.base / "data"), "-m", "fast", "-w", "-t", str(_WAIT_S), "stop"],
            capture_output=True,
            text=True,
            timeout=_WAIT_S + 10,
            cwd=self.base,
        )
        shutil.rmtree(self.base, ignore_errors=True)


def _options(port: int, base: Path) -> str:
    return (
        f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
        f"-c full_page_writes=off -c max_connections=60 -c shared_buffers=16MB"
    )


def start_postgres() -> PostgresServer:
    """initdb, start and configure a server; raises RuntimeError saying why when it cannot."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise RuntimeError(
            "PostgreSQL's initdb/pg_ctl not found on PATH or under /usr/lib/postgresql/*/bin: "
            "run `bash .ci/install` (it installs Debian's postgresql package)."
        )
    # /tmp itself, not pytest's tmp_path: pytest's directories are private to the test user, and the
    # server's user must reach its data directory and socket.
    base = Path(tempfile.mkdtemp(prefix="lightopt-pg-", dir="/tmp"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError(
                "the tests run as root and PostgreSQL refuses root, but there is no `postgres` user "
                "to run it as: install Debian's postgresql package (`bash .ci/install`)."
            ) from None
        os.chown(base, user.pw_uid, user.pw_gid)
        prefix = [shutil.which("runuser") or "runuser", "-u", "postgres", "--"]
    pwfile = base / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if prefix:
        os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)

    def run(*command: str, timeout: float = _WAIT_S + 10) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=timeout, cwd=base)

    done = run(
        initdb,
        "-D",
        str(base / "data"),
        "-U",
        "postgres",
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
        f"--pwfile={pwfile}",
        "-E",
        "UTF8",
        "--no-sync",
    )
    if done.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"initdb failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-800:]}")
    for _ in range(3):  # another process may take the free port first
        port = free_port()
        done = run(
            pg_ctl,
            "-D",
            str(base / "data"),
            "-l",
            str(base / "server.log"),
            "-o",
            _options(port, base),
            "-w",
            "-t",
            str(_WAIT_S),
            "start",
        )
        if done.returncode == 0:
            break
    else:
        log = (base / "server.log").read_text()[-800:] if (base / "server.log").is_file() else ""
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start within {_WAIT_S} s: {done.stderr.strip()} {log}")
    server = PostgresServer(base, port, prefix, pg_ctl)
    try:
        server.admin(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
    except Exception:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One server per test process (each xdist worker has its own port and directory)."""
    try:
        server = start_postgres()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
        pytest.fail(f"could not start a PostgreSQL server for the database tests: {error}", pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def postgres_db(postgres_server: PostgresServer) -> tuple[PostgresServer, str]:
    """``(server, name)`` of a fresh database for one test."""
    return postgres_server, postgres_server.new_database()
