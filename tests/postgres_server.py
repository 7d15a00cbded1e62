"""A real PostgreSQL server for the tests, on loopback in a temporary directory.

Uses the Debian package's binaries (``/usr/lib/postgresql/<version>/bin``: initdb, pg_ctl). When
the tests run as root (as CI does), the server runs as the ``postgres`` system user through
``runuser``, since PostgreSQL refuses to run as root. Without the binaries the tests that need
the server are skipped, except under ``CI=true``, where that is a failure (CI must install the
``postgresql`` package).

Fixtures: ``postgres_server`` (session scope: one cluster for the whole run) and
``postgres_dsn`` (a fresh, empty database per test, dropped afterwards).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest


@dataclass(frozen=True)
class _Control:
    prefix: list[str]
    bindir: Path
    options: str
    log: Path


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    datadir: Path
    control: _Control

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def start(self) -> None:
        """Start the server (again) and wait until it takes connections."""
        c = self.control
        start = _run(
            c.prefix,
            [str(c.bindir / "pg_ctl"), "-D", str(self.datadir), "-o", c.options, "-l", str(c.log),
             "-w", "-t", "60", "start"],
        )  # fmt: skip
        if start.returncode != 0:
            log = c.log.read_text() if c.log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {start.stderr or start.stdout}\n{log}")
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: every session is cut, as in a failover or a restart)."""
        c = self.control
        _run(c.prefix, [str(c.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"])


def _bindir() -> Path | None:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("pg_ctl")
    return Path(found).resolve().parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _runner() -> tuple[list[str], str | None]:
    """The command prefix that runs the server as a non-root user, and that user."""
    if os.geteuid() != 0:
        return [], None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root but there is no 'postgres' user to run PostgreSQL as")
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--"], "postgres"
    return ["su", "postgres", "-s", "/bin/sh", "-c"], "postgres"


def _run(prefix: list[str], cmd: list[str]) -> subprocess.CompletedProcess[str]:
    if prefix and prefix[0] == "su":
        import shlex

        full = [*prefix, " ".join(shlex.quote(c) for c in cmd)]
    else:
        full = [*prefix, *cmd]
    return subprocess.run(full, capture_output=True, text=True, timeout=120, check=False)


class PostgresUnavailable(Exception):
    """The Debian package's binaries are not installed."""


@contextmanager
def running_postgres(max_connections: int = 50) -> Iterator[PostgresServer]:
    """A PostgreSQL server on loopback in a temporary directory, stopped and deleted after;
    PostgresUnavailable without the binaries. The benchmarks use it too."""
    bindir = _bindir()
    if bindir is None or not (bindir / "initdb").exists():
        raise PostgresUnavailable("PostgreSQL binaries not found (apt-get install postgresql)")
    prefix, user = _runner()
    root = Path(tempfile.mkdtemp(prefix="kpimon-pg-"))
    datadir, sockdir = root / "data", root / "sock"
    sockdir.mkdir()
    if user is not None:
        entry = pwd.getpwnam(user)
        for p in (root, sockdir):
            os.chown(p, entry.pw_uid, entry.pw_gid)
    init = _run(
        prefix,
        [
            str(bindir / "initdb"),
            "-D",
            str(datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        ],
    )
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {init.stderr or init.stdout}")
    port = _free_port()
    options = (
        f"-p {port} -h 127.0.0.1 -k {sockdir} -c fsync=off -c synchronous_commit=off "
        f"-c full_page_writes=off -c max_connections={max_connections} "
        "-c log_min_messages=warning"
    )
    server = PostgresServer(
        host="127.0.0.1", port=port, user="postgres", datadir=datadir,
        control=_Control(prefix, bindir, options, root / "server.log"),
    )  # fmt: skip
    try:
        server.start()
        yield server
    finally:
        _run(prefix, [str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"])
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        with running_postgres() as server:
            yield server
    except PostgresUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """The DSN of a fresh, empty database on the test server (superuser ``postgres``)."""
    name = "kpimon_" + uuid.uuid4().hex[:12]
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_server.dsn(name)
    finally:
        with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


__all__ = ["PostgresServer", "PostgresUnavailable", "postgres_dsn", "postgres_server", "running_postgres"]
