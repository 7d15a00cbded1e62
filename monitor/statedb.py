"""The state store's database: an embedded SQLite file, or a PostgreSQL database.

Both speak the same SQL (``ON CONFLICT`` upserts, ``?`` placeholders translated for psycopg);
only the DDL of the auto-numbered outbox id and the transaction and connection handling differ.
One connection, used under a lock: the state store's writes are small and ordered.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from monitor import statefile
from monitor.errors import StateStoreError

Row = tuple[Any, ...]


class Executor(Protocol):
    def execute(self, sql: str, params: tuple[object, ...] = ...) -> object: ...

    def executemany(self, sql: str, params: list[tuple[object, ...]]) -> object: ...


class Database(ABC):
    """What the state store needs from a database."""

    name: str  # for messages: a path, or a URL without its password
    serial: str  # DDL of an auto-numbered primary key
    # appended to a SELECT whose rows a transaction is about to change: SQLite's transactions
    # take the whole database's write lock at BEGIN IMMEDIATE, PostgreSQL locks the rows
    row_lock = ""

    @abstractmethod
    def script(self, ddl: str) -> None:
        """Run schema statements (idempotent)."""

    @abstractmethod
    def add_column(self, table: str, column: str, ddl_type: str) -> None:
        """Add a nullable column unless the table has it (a store made by an older version)."""

    @abstractmethod
    def read(self, sql: str, params: tuple[object, ...] = ()) -> list[Row]: ...

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Executor]:
        """All statements run inside commit together or not at all."""

    @abstractmethod
    def ping(self, timeout: float) -> None:
        """Raise StateStoreError unless the database answers and a write could start now,
        waiting at most about ``timeout`` seconds for a lock; writes nothing."""

    @abstractmethod
    def close(self) -> None: ...


# --- what the records (monitor/records/) share: instants as stored, cursors read ---------

# checks, inside a write's transaction, that this replica still holds the lease on a name
# (see StateStore.fence)
Fence = Callable[[Executor, str], None]
# a write's transaction, fenced by the lease on a name (see StateStore._fenced)
Fenced = Callable[[str], AbstractContextManager[Executor]]
BATCH = 500  # rows per statement or transaction of a bulk delete: short transactions


def instant(moment: datetime) -> str:
    """Fixed width in UTC, so that instants compare as text in SQL (isoformat drops zero
    microseconds)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def parse(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def rowcount(cursor: object) -> int:
    return max(int(getattr(cursor, "rowcount", 0)), 0)


def fetchone(cursor: object) -> Row | None:
    row: Row | None = getattr(cursor, "fetchone")()  # noqa: B009 - sqlite3 and psycopg cursors
    return row


def fetchall(cursor: object) -> list[Row]:
    rows: list[Row] = getattr(cursor, "fetchall")()  # noqa: B009 - sqlite3 and psycopg cursors
    return rows


def delete_keys(database: Database, table: str, column: str, keys: Sequence[object]) -> None:
    """Delete the rows whose ``column`` is among ``keys``, in short transactions."""
    for start in range(0, len(keys), BATCH):
        batch = keys[start : start + BATCH]
        with database.transaction() as db:
            db.execute(
                f"DELETE FROM {table} WHERE {column} IN ({', '.join('?' * len(batch))})",
                tuple(batch),
            )


BUSY_TIMEOUT_SECONDS = 10.0  # how long a statement waits for another connection's lock
# the store's transactions take milliseconds; one left open this long belongs to a hung process
IDLE_IN_TRANSACTION_MS = 5000


class SQLiteDatabase(Database):
    """An SQLite file in WAL mode. ``exclusive`` (the daemon's store) locks the file against a
    second daemon; writes are refused once the file was deleted or replaced under us."""

    serial = "INTEGER PRIMARY KEY AUTOINCREMENT"

    def __init__(self, path: str | Path, *, exclusive: bool = False) -> None:
        self.name = str(path)
        self._lock = threading.Lock()
        self._file = None if self.name == ":memory:" else Path(path)
        self._holder: statefile.FileLock | None = None
        try:
            if self._file is not None:
                self._file.parent.mkdir(parents=True, exist_ok=True)
                if exclusive:
                    self._holder = statefile.FileLock(self._file)
            self._db = sqlite3.connect(
                path, check_same_thread=False, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # a write can start: a read-only file or directory is refused here, with its cause
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("ROLLBACK")
            self._opened = statefile.identity(self._file) if self._file is not None else None
        except (sqlite3.Error, OSError) as exc:
            if self._holder is not None:
                self._holder.release()
            raise StateStoreError(statefile.open_failure(Path(path), exc)) from None

    def _refuse_if_moved(self) -> None:
        if self._file is not None and self._opened is not None:
            problem = statefile.moved(self._file, self._opened)
            if problem is not None:
                raise StateStoreError(problem)

    def script(self, ddl: str) -> None:
        with self._lock, _errors(self.name):
            self._db.executescript(ddl)

    def add_column(self, table: str, column: str, ddl_type: str) -> None:
        with self._lock, _errors(self.name):
            # SQLite has no ADD COLUMN IF NOT EXISTS
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {ddl_type}")

    def read(self, sql: str, params: tuple[object, ...] = ()) -> list[Row]:
        with self._lock, _errors(self.name):
            return self._db.execute(sql, params).fetchall()

    @contextmanager
    def transaction(self) -> Iterator[Executor]:
        with self._lock, _errors(self.name):
            self._refuse_if_moved()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def ping(self, timeout: float) -> None:
        self._refuse_if_moved()
        if self._file is not None:
            short = statefile.room(self._file)
            if short:
                raise StateStoreError("; ".join(short))
        # A save of ours that waits for another connection's lock holds self._lock for up to the
        # busy timeout: a ping waiting that long would outlast the readiness probe's own timeout.
        deadline = time.monotonic() + timeout
        if not self._lock.acquire(timeout=timeout):
            raise StateStoreError(
                f"state store {self.name} cannot be written now: a statement of ours has waited "
                f"over {timeout:g} s, most likely for another connection's write lock"
            )
        try:
            with _errors(self.name):
                self._db.execute("SELECT count(*) FROM meta").fetchall()
                wait = max(deadline - time.monotonic(), 0.0)
                self._db.execute(f"PRAGMA busy_timeout = {round(wait * 1000)}")
                try:
                    # the write lock that every save takes (in WAL mode, reads go on while another
                    # connection holds it); rolled back at once, it writes nothing
                    self._db.execute("BEGIN IMMEDIATE")
                    self._db.execute("ROLLBACK")
                except sqlite3.Error as exc:
                    raise StateStoreError(
                        f"state store {self.name} cannot be written: {exc}"
                    ) from None
                finally:
                    self._db.execute(f"PRAGMA busy_timeout = {round(BUSY_TIMEOUT_SECONDS * 1000)}")
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._holder is not None:
                self._holder.release()


class PostgresDatabase(Database):
    """A PostgreSQL database (psycopg 3); the connection is reopened after it breaks."""

    serial = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
    row_lock = " FOR UPDATE"

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.name = _redact(url)
        self._url = url
        self._timeout = timeout
        self._lock = threading.Lock()
        self._conn: Any = None
        with self._lock:
            self._connection()

    def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                self._conn = psycopg.connect(
                    self._url,
                    autocommit=True,
                    connect_timeout=int(self._timeout),
                    application_name="kpi-monitor",
                    # a process stopped inside a transaction (SIGSTOP, a frozen VM) must not keep
                    # its row locks, a lease's among them: the server ends such a session
                    options=f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}",
                )
            except psycopg.Error as exc:
                raise StateStoreError(
                    f"cannot connect to the state database {self.name}: {_first_line(exc)}"
                ) from None
        return self._conn

    def another(self) -> PostgresDatabase:
        """A second connection to the same database (the replicas' lease renewals, which must
        never wait behind the check runs' writes on this one)."""
        return PostgresDatabase(self._url, self._timeout)

    def script(self, ddl: str) -> None:
        with self.transaction() as tx:
            tx.execute(_SCHEMA_LOCK)
            for statement in filter(str.strip, ddl.split(";")):
                tx.execute(statement)

    def add_column(self, table: str, column: str, ddl_type: str) -> None:
        with self.transaction() as tx:
            tx.execute(_SCHEMA_LOCK)
            tx.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {ddl_type}")

    def read(self, sql: str, params: tuple[object, ...] = ()) -> list[Row]:
        import psycopg

        with self._lock:
            try:
                rows = self._connection().execute(_placeholders(sql), _to_text(params)).fetchall()
            except psycopg.Error as exc:
                raise StateStoreError(f"state database {self.name}: {_first_line(exc)}") from None
        return [tuple(map(_from_text, row)) for row in rows]

    @contextmanager
    def transaction(self) -> Iterator[Executor]:
        import psycopg

        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction():
                    yield _Translating(conn)
            except psycopg.Error as exc:
                raise StateStoreError(f"state database {self.name}: {_first_line(exc)}") from None

    def ping(self, timeout: float) -> None:
        # an UPDATE that matches no row still needs a writable database (not a read-only
        # transaction or a standby) and the table's row lock mode; it changes nothing
        with self.transaction() as tx:
            tx.execute(f"SET LOCAL lock_timeout = {round(timeout * 1000)}")
            tx.execute("SELECT count(*) FROM meta")
            tx.execute("UPDATE meta SET value = value WHERE 1 = 0")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()


# Replicas starting at once create and upgrade the schema one at a time: two concurrent
# CREATE TABLE IF NOT EXISTS of one table collide in PostgreSQL's catalog.
_SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(7453298217)"


class _Translating:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> object:
        return self._conn.execute(_placeholders(sql), _to_text(params))

    def executemany(self, sql: str, params: list[tuple[object, ...]]) -> object:
        with self._conn.cursor() as cursor:
            cursor.executemany(_placeholders(sql), [_to_text(row) for row in params])
        return None


# PostgreSQL text cannot hold NUL, which strings from DuckDB or Databricks (a segment value) can.
# Such a string is stored as this marker and its JSON form (ASCII: NUL is written \u0000), and so
# is a string that starts with the marker, so every string reads back exactly as it was written.
# The marker is a Unicode noncharacter, reserved for a program's own use; a string without NUL
# that does not start with it is stored as it is.
_MARKED = "\ufdd0"


def _to_text(params: tuple[object, ...]) -> tuple[object, ...]:
    return tuple(
        _MARKED + json.dumps(p)
        if isinstance(p, str) and ("\x00" in p or p.startswith(_MARKED))
        else p
        for p in params
    )


def _from_text(value: object) -> object:
    if isinstance(value, str) and value.startswith(_MARKED):
        return json.loads(value[len(_MARKED) :])
    return value


def _placeholders(sql: str) -> str:
    # the store's SQL has no other question marks or percent signs
    return sql.replace("?", "%s")


@contextmanager
def _errors(name: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise StateStoreError(f"state store {name}: {exc}") from None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
