"""PostgreSQL through psycopg 3: a small pool, read-only transactions, a statement timeout.

Each query borrows a connection from a pool of at most ``pool_size``, runs in a ``READ ONLY``
transaction with ``SET LOCAL statement_timeout``, and gives the connection back (or drops it if
it broke). Sessions use ``TimeZone`` UTC, which the :class:`PostgresDialect` expressions rely on.
Results come back as a DataFrame with timestamps as naive UTC and ``numeric`` as float.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Mapping

import pandas as pd
import psycopg
import psycopg.errors

from monitor.config import PostgresWarehouseConfig
from monitor.dialects import PostgresDialect
from monitor.errors import QueryFailed, QueryTimeout, WarehouseError, WarehouseUnavailable
from monitor.warehouse.base import Warehouse, bound_value

log = logging.getLogger(__name__)

# Type OIDs that need normalising: timestamp, timestamptz (to naive UTC), numeric (to float).
_TIMESTAMP_OIDS = {1114, 1184}
_NUMERIC_OID = 1700
# Extra seconds past the statement timeout before the client cancels on its own.
_CLIENT_GRACE = 5.0
_CONNECT_TIMEOUT = 10


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
        self._slots = threading.BoundedSemaphore(self.pool_size)
        self._lock = threading.Lock()
        self._idle: list[psycopg.Connection[tuple[object, ...]]] = []
        self._busy: set[psycopg.Connection[tuple[object, ...]]] = set()
        self._closed = False

    # -- connections ---------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
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
            raise WarehouseUnavailable(
                f"warehouse {self.name!r}: cannot connect to PostgreSQL: {_message(exc)}"
            ) from None
        try:
            conn.execute("SET TIME ZONE 'UTC'")
            conn.commit()
            conn.read_only = True
        except psycopg.Error as exc:
            conn.close()
            raise WarehouseUnavailable(
                f"warehouse {self.name!r}: cannot set up the session: {_message(exc)}"
            ) from None
        return conn

    def _checkout(self, wait: float) -> tuple[psycopg.Connection[tuple[object, ...]], bool]:
        """A connection and whether it was reused from the pool."""
        if not self._slots.acquire(timeout=wait):
            raise QueryTimeout(
                f"warehouse {self.name!r}: all {self.pool_size} connections stayed busy "
                f"for {wait:g}s"
            )
        try:
            with self._lock:
                if self._closed:
                    raise WarehouseUnavailable(f"warehouse {self.name!r} is closed")
                conn = self._idle.pop() if self._idle else None
            reused = conn is not None
            if conn is None or conn.closed:
                conn, reused = self._connect(), False
            with self._lock:
                self._busy.add(conn)
            return conn, reused
        except BaseException:
            self._slots.release()
            raise

    def _checkin(self, conn: psycopg.Connection[tuple[object, ...]], healthy: bool) -> None:
        with self._lock:
            self._busy.discard(conn)
            keep = healthy and not self._closed and not conn.closed and not conn.broken
            if keep:
                self._idle.append(conn)
        if not keep:
            with contextlib.suppress(Exception):
                conn.close()
        self._slots.release()

    # -- queries -------------------------------------------------------------------------------

    def query(
        self, sql: str, params: Mapping[str, object], *, timeout: float | None = None
    ) -> pd.DataFrame:
        limit = float(timeout if timeout is not None else self.statement_timeout)
        bound = {k: bound_value(v) for k, v in params.items()}
        deadline = time.monotonic() + limit
        conn, reused = self._checkout(limit)
        try:
            frame = self._run(conn, sql, bound, limit, deadline, retry_allowed=reused)
        except _Stale:
            # A pooled connection the server had dropped (restart, idle timeout): retry once
            # on a fresh one. Read-only queries are safe to repeat.
            self._checkin(conn, healthy=False)
            conn, _ = self._checkout(max(deadline - time.monotonic(), 0.1))
            try:
                frame = self._run(conn, sql, bound, limit, deadline, retry_allowed=False)
            except BaseException:
                self._checkin(conn, healthy=_healthy(conn))
                raise
        except BaseException:
            self._checkin(conn, healthy=_healthy(conn))
            raise
        self._checkin(conn, healthy=True)
        return frame

    def _run(
        self,
        conn: psycopg.Connection[tuple[object, ...]],
        sql: str,
        params: dict[str, object],
        limit: float,
        deadline: float,
        *,
        retry_allowed: bool,
    ) -> pd.DataFrame:
        remaining = max(deadline - time.monotonic(), 0.001)
        # The server enforces the statement timeout; the client cancels too if the answer does
        # not come within a grace period after it (a stuck network, a server that ignores it).
        timer = threading.Timer(remaining + _CLIENT_GRACE, _cancel, args=(conn,))
        timer.daemon = True
        timer.start()
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
        except psycopg.errors.QueryCanceled as exc:
            _rollback(conn)
            if self._closed:
                raise WarehouseUnavailable(
                    f"warehouse {self.name!r} closed while the query ran"
                ) from None
            raise QueryTimeout(
                f"warehouse {self.name!r}: query ran past its {limit:g}s statement timeout "
                f"after {time.monotonic() - started:.1f}s and was cancelled ({_message(exc)})"
            ) from None
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if self._closed:
                raise WarehouseUnavailable(
                    f"warehouse {self.name!r} closed while the query ran"
                ) from None
            if conn.broken or conn.closed:
                if retry_allowed:
                    log.info("warehouse %s: pooled connection lost (%s), retrying", self.name, exc)
                    raise _Stale() from None
                raise WarehouseUnavailable(
                    f"warehouse {self.name!r}: connection lost: {_message(exc)}"
                ) from None
            _rollback(conn)
            raise QueryFailed(f"warehouse {self.name!r}: {_message(exc)}") from None
        except psycopg.Error as exc:
            _rollback(conn)
            raise QueryFailed(f"warehouse {self.name!r}: {_message(exc)}") from None
        except WarehouseError:
            raise
        except Exception as exc:  # a conversion bug must still surface as the adapter's error
            _rollback(conn)
            raise QueryFailed(f"warehouse {self.name!r}: {type(exc).__name__}: {exc}") from None
        finally:
            timer.cancel()

    def ping(self) -> None:
        self.query("SELECT 1 AS ok", {}, timeout=min(self.statement_timeout, 30.0))

    def close(self) -> None:
        """Cancel running statements and close every connection; later queries fail."""
        with self._lock:
            self._closed = True
            busy = list(self._busy)
            idle, self._idle = self._idle, []
        for conn in busy:
            _cancel(conn)
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.close()


def _healthy(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    return (
        not conn.closed
        and not conn.broken
        and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    )


def _rollback(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    with contextlib.suppress(psycopg.Error):
        conn.rollback()


class _Stale(Exception):
    """Internal: the connection died under the query; the caller may retry once."""


def _cancel(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    with contextlib.suppress(Exception):
        cancel_safe = getattr(conn, "cancel_safe", None)
        if cancel_safe is not None:
            cancel_safe(timeout=5.0)
        else:
            conn.cancel()


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
