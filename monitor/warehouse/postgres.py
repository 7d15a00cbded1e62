"""PostgreSQL through psycopg 3: a small pool, read-only transactions, a statement timeout.

Each query borrows a connection from a pool of at most ``pool_size``, runs in a ``READ ONLY``
transaction with ``SET LOCAL statement_timeout``, and gives the connection back (or drops it if
it broke). Sessions use ``TimeZone`` UTC, which the :class:`PostgresDialect` expressions rely on.
Results come back as a DataFrame with timestamps as naive UTC and ``numeric`` as float.

The server enforces the statement timeout. When no answer comes within a grace period after it
(a hung network, a stuck server), the client sends a cancel request and then shuts the
connection's socket down: the query fails at once as :class:`QueryTimeout` and its pool slot is
free for the next query, instead of waiting until TCP gives up on the connection.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Mapping

import pandas as pd
import psycopg
import psycopg.errors

from monitor.config import PostgresWarehouseConfig
from monitor.dialects import PostgresDialect
from monitor.errors import QueryFailed, QueryTimeout, WarehouseError, WarehouseUnavailable
from monitor.warehouse.base import DriverErrors, Warehouse, bound_value, driver_error
from monitor.warehouse.pool import SessionPool

log = logging.getLogger(__name__)

# Type OIDs that need normalising: timestamp, timestamptz (to naive UTC), numeric (to float).
_TIMESTAMP_OIDS = {1114, 1184}
_NUMERIC_OID = 1700
# Extra seconds past the statement timeout before the client gives up on the answer itself.
_CLIENT_GRACE = 5.0
_CONNECT_TIMEOUT = 10
# Seconds a cancel request may take (it opens a connection of its own).
_CANCEL_TIMEOUT = 2.0

_Conn = psycopg.Connection[tuple[object, ...]]

# A query's driver exception -> its kind. OperationalError and InterfaceError are a lost
# connection only when the connection is in fact gone (see PostgresWarehouse._failure);
# a connection attempt that fails is WarehouseUnavailable whatever the class (a refused
# password has no class of its own there: libpq gives no SQLSTATE for it).
DRIVER_ERRORS: DriverErrors = {
    psycopg.errors.QueryCanceled: QueryTimeout,
    psycopg.OperationalError: WarehouseUnavailable,
    psycopg.InterfaceError: WarehouseUnavailable,
    psycopg.Error: QueryFailed,
    psycopg.DatabaseError: QueryFailed,
    psycopg.DataError: QueryFailed,
    psycopg.IntegrityError: QueryFailed,
    psycopg.InternalError: QueryFailed,
    psycopg.NotSupportedError: QueryFailed,
    psycopg.ProgrammingError: QueryFailed,
}


# A "%" that is not part of a %(name)s placeholder nor already doubled.
_LONE_PERCENT = re.compile(r"(?<!%)%(?!%|\(\w+\)s)")


def _escape_percent(sql: str) -> str:
    """SQL text with literal ``%`` doubled for psycopg, placeholders untouched.

    Check SQL is written by operators (``where``, ``sql``), who write ``LIKE 'a%'`` or ``a % b``
    as they would anywhere else; only ``%(name)s`` is a placeholder.
    """
    return _LONE_PERCENT.sub("%%", sql)


class PostgresWarehouse(Warehouse):
    """A PostgreSQL database, shared by every check that queries it (thread-safe)."""

    dialect = PostgresDialect()

    def __init__(self, name: str, config: PostgresWarehouseConfig) -> None:
        super().__init__(name)
        self._dsn = config.dsn.get_secret_value()
        self.statement_timeout = float(config.statement_timeout)
        self.pool_size = int(config.pool_size)
        self._pool: SessionPool[_Conn] = SessionPool(
            self.pool_size, "connections", close_session=_close, reusable=lambda c: not c.closed
        )

    def _connect(self) -> _Conn:
        try:
            conn = psycopg.connect(
                self._dsn,
                connect_timeout=_CONNECT_TIMEOUT,
                application_name="kpi-monitor",
                autocommit=False,
                # No server-side prepared statements: they break behind PgBouncer's
                # transaction pooling, and a check's query runs only every few minutes.
                prepare_threshold=None,
            )
        except psycopg.Error as exc:
            raise WarehouseUnavailable(f"cannot connect to PostgreSQL: {_message(exc)}") from exc
        try:
            conn.execute("SET TIME ZONE 'UTC'")
            conn.commit()
            conn.read_only = True
        except psycopg.Error as exc:
            conn.close()
            raise WarehouseUnavailable(f"cannot set up the session: {_message(exc)}") from exc
        return conn

    # -- queries -------------------------------------------------------------------------------

    def _query(
        self, sql: str, params: Mapping[str, object], *, timeout: float | None
    ) -> pd.DataFrame:
        limit = float(timeout if timeout is not None else self.statement_timeout)
        bound = {k: bound_value(v) for k, v in params.items()}
        deadline = time.monotonic() + limit
        lease = self._pool.checkout(limit, self._connect)
        conn = lease.session
        try:
            frame = self._run(conn, sql, bound, limit, deadline, retry_allowed=lease.reused)
        except _Stale:
            # A pooled connection the server had dropped (restart, idle timeout): retry once
            # on a fresh one. Read-only queries are safe to repeat.
            self._pool.checkin(lease, healthy=False)
            lease = self._pool.checkout(max(deadline - time.monotonic(), 0.1), self._connect)
            try:
                frame = self._run(lease.session, sql, bound, limit, deadline, retry_allowed=False)
            except BaseException:
                self._pool.checkin(lease, healthy=_healthy(lease.session))
                raise
        except BaseException:
            self._pool.checkin(lease, healthy=_healthy(lease.session))
            raise
        self._pool.checkin(lease, healthy=True)
        return frame

    def _run(
        self,
        conn: _Conn,
        sql: str,
        params: dict[str, object],
        limit: float,
        deadline: float,
        *,
        retry_allowed: bool,
    ) -> pd.DataFrame:
        remaining = max(deadline - time.monotonic(), 0.001)
        # The server enforces the statement timeout; the watchdog stops waiting for its answer
        # a grace period after it (a stuck network, a server that ignores it).
        watchdog = _Watchdog(conn, remaining + _CLIENT_GRACE)
        started = time.monotonic()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT set_config('statement_timeout', %(ms)s, true)",
                    {"ms": str(max(int(remaining * 1000), 1))},
                )
                cur.execute(_escape_percent(sql), params)
                if cur.description is None:
                    frame = pd.DataFrame()
                else:
                    names = [d.name for d in cur.description]
                    oids = [d.type_code for d in cur.description]
                    frame = _frame(cur.fetchall(), names, oids)
            conn.rollback()  # read-only: nothing to commit
            return frame
        except psycopg.Error as exc:
            raise self._failure(exc, conn, watchdog, limit, started, retry_allowed) from exc
        except WarehouseError:
            raise
        except Exception as exc:  # a conversion bug must still surface as the adapter's error
            _rollback(conn)
            raise QueryFailed(f"{type(exc).__name__}: {exc}") from exc
        finally:
            watchdog.stop()

    def _failure(
        self,
        exc: psycopg.Error,
        conn: _Conn,
        watchdog: _Watchdog,
        limit: float,
        started: float,
        retry_allowed: bool,
    ) -> Exception:
        """What a query's driver exception means: the table's kind, made precise by what
        became of the connection (the pool closed, the watchdog cut it, the server dropped it)."""
        kind = driver_error(exc, DRIVER_ERRORS) or QueryFailed
        if kind is QueryTimeout:
            _rollback(conn)
            if self._pool.closed:
                return WarehouseUnavailable("closed while the query ran")
            return QueryTimeout(
                f"query ran past its {limit:g}s statement timeout after "
                f"{time.monotonic() - started:.1f}s and was cancelled ({_message(exc)})"
            )
        if issubclass(kind, WarehouseUnavailable):
            if self._pool.closed:
                return WarehouseUnavailable("closed while the query ran")
            if watchdog.fired:
                return QueryTimeout(
                    f"no answer within the {limit:g}s statement timeout (plus "
                    f"{_CLIENT_GRACE:g}s grace); the connection was cut and the statement "
                    "cancelled"
                )
            if conn.broken or conn.closed:
                if retry_allowed:
                    log.info(
                        "pooled connection lost, retrying on a new one",
                        extra={"fields": {"warehouse": self.name, "error": _message(exc)}},
                    )
                    return _Stale()
                return WarehouseUnavailable(f"connection lost: {_message(exc)}")
            kind = QueryFailed  # the connection still works: the server failed this query
        _rollback(conn)
        return kind(_message(exc))

    def ping(self) -> None:
        self.query("SELECT 1 AS ok", {}, timeout=min(self.statement_timeout, 30.0))

    def close(self) -> None:
        """Cancel running statements and close every connection; later queries fail.

        Returns once the running queries were cut (a few seconds at most, even when the network
        hangs); their callers get :class:`WarehouseUnavailable`.
        """
        stoppers = [
            threading.Thread(target=_stop, args=(conn,), name="kpimon-postgres-cancel", daemon=True)
            for conn in self._pool.close()
        ]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join(_CANCEL_TIMEOUT + 1.0)


class _Watchdog:
    """Stops waiting for a statement's answer after ``after`` seconds: a cancel request (the
    server may still be there), then the connection's socket is shut down, which wakes the
    blocked driver at once. Never touches the connection once :meth:`stop` returned, so a
    connection given back to the pool is safe from it."""

    def __init__(self, conn: _Conn, after: float) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._stopped = False
        self.fired = False
        self._timer = threading.Timer(after, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self.fired = True
        _cancel(self._conn)
        with self._lock:
            if not self._stopped:
                _shut_down(self._conn)

    def stop(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._stopped = True


def _healthy(conn: _Conn) -> bool:
    return (
        not conn.closed
        and not conn.broken
        and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    )


def _rollback(conn: _Conn) -> None:
    with contextlib.suppress(psycopg.Error):
        conn.rollback()


class _Stale(Exception):
    """Internal: the connection died under the query; the caller may retry once."""


def _cancel(conn: _Conn) -> None:
    with contextlib.suppress(Exception):
        cancel_safe = getattr(conn, "cancel_safe", None)
        if cancel_safe is not None:
            cancel_safe(timeout=_CANCEL_TIMEOUT)
        else:
            conn.cancel()


def _shut_down(conn: _Conn) -> None:
    """Shut the connection's socket down under the driver: a call blocked on it returns at once
    (closing the descriptor instead would leave that call waiting)."""
    with contextlib.suppress(OSError, psycopg.Error):
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


def _stop(conn: _Conn) -> None:
    """Stop a connection's running statement at shutdown: cancel it, then cut the socket."""
    _cancel(conn)
    _shut_down(conn)


def _close(conn: _Conn) -> None:
    with contextlib.suppress(Exception):
        conn.close()


def _message(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = primary or first_line
    state = getattr(exc, "sqlstate", None)
    return f"{text} (SQLSTATE {state})" if state else text


def _frame(rows: list[tuple[object, ...]], names: list[str], oids: list[int]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows, columns=names, coerce_float=True)
    for i, oid in enumerate(oids):
        col = frame.columns[i]
        if oid in _TIMESTAMP_OIDS:
            series = pd.to_datetime(frame.iloc[:, i], utc=True)
            frame[col] = series.dt.tz_localize(None)
        elif oid == _NUMERIC_OID:
            frame[col] = pd.to_numeric(frame.iloc[:, i].astype("float64"), errors="coerce")
    return frame
