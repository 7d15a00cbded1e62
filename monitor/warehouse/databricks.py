"""Databricks SQL warehouses through ``databricks-sql-connector`` (Thrift over HTTPS).

One adapter per configured warehouse, shared by every check:

* **Sessions.** A small pool (default at most 4, :mod:`monitor.warehouse.pool`) of connector
  sessions, each used by one query at a time and reused across checks. A session is opened
  lazily with ``STATEMENT_TIMEOUT`` and ``TIMEZONE=UTC`` as session configuration; it is dropped
  after any transport failure and reopened by the next query, and replaced when the server no
  longer knows it (a warehouse restart, an expired session) or after it sat idle for
  ``SESSION_MAX_IDLE_SECONDS``.
* **Timeouts.** The warehouse enforces ``STATEMENT_TIMEOUT`` (a per-call ``timeout`` differing
  from the session's value is applied with ``SET STATEMENT_TIMEOUT`` first). The adapter also
  bounds the whole call: past the timeout plus a grace period it stops waiting, cancels the
  statement and raises :class:`QueryTimeout`, even if the server or the network hangs. The
  session is abandoned then: its pool slot is free for the next query at once, and the session is
  closed whenever its stuck request returns (``SOCKET_TIMEOUT_SECONDS`` at most).
* **Retries.** Transport failures (HTTP 429 and 5xx, refused or reset connections, timeouts) are
  retried ``retries`` times on a new session within the call's time budget, after exponential
  backoff or the ``Retry-After`` the warehouse sent, whichever is longer; a ``Retry-After`` past
  the budget fails the call at once. The connector's own retries are off: it would re-send
  ExecuteStatement after a read timeout, sleep at least 5 s per retry, and report a refused
  retry without its HTTP status or ``Retry-After``. Read-only queries are safe to repeat.
* **Errors.** Only :mod:`monitor.errors` types leave the adapter
  (:mod:`monitor.warehouse.databricks_errors` maps them): SQL errors as :class:`QueryFailed` with
  the warehouse's message, timeouts as :class:`QueryTimeout`, and everything about reaching the
  warehouse as :class:`WarehouseUnavailable`, naming the HTTP status and call that failed.
* **Cancellation.** CancelOperation goes out on a connection of its own: the connector serialises
  a session's requests, and a running query holds its session through every long poll. While the
  statement's id is not known yet (ExecuteStatement still waiting), CloseSession stops it instead.
  ``close()`` cancels the running statements this way and returns within
  ``CLOSE_WAIT_SECONDS``.
* **Telemetry** is off (``enable_telemetry=False``).

Authentication: a personal access token (``access_token`` / ``DATABRICKS_TOKEN``) or OAuth
machine-to-machine client credentials (``client_id`` + ``client_secret`` /
``DATABRICKS_CLIENT_ID`` + ``DATABRICKS_CLIENT_SECRET``), exchanged at the workspace's
``/oidc/v1/token`` endpoint and refreshed before they expire
(:mod:`monitor.warehouse.databricks_auth`). Where and how to connect:
:mod:`monitor.warehouse.databricks_endpoint`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from monitor.config import DatabricksWarehouseConfig
from monitor.dialects import DatabricksDialect
from monitor.errors import (
    MalformedResult,
    QueryFailed,
    QueryTimeout,
    WarehouseAuthError,
    WarehouseError,
    WarehouseUnavailable,
)
from monitor.warehouse.base import Warehouse, bound_value
from monitor.warehouse.databricks_endpoint import Endpoint
from monitor.warehouse.databricks_errors import (
    classify,
    describe,
    is_invalid_session,
    quiet_connector_logs,
    retry_after,
)
from monitor.warehouse.pool import Lease, SessionPool

log = logging.getLogger(__name__)

# Seconds a single HTTP call (one Thrift RPC) may take. Databricks answers each RPC quickly
# (long polls last seconds); a stuck socket is cut here rather than after the connector's 900 s.
SOCKET_TIMEOUT_SECONDS = 60.0
# Seconds a CancelOperation or CloseSession sent to stop a statement may take.
CANCEL_TIMEOUT_SECONDS = 5.0
# How long a cancellation waits for the statement's id before closing its session instead.
STATEMENT_ID_PATIENCE_SECONDS = 1.0
# How long close() waits for the running statements to stop. The daemon closes warehouses
# after a 7 s grace for running checks and promises to exit within 10 s of SIGTERM.
CLOSE_WAIT_SECONDS = 2.0
# An idle session older than this is closed and a fresh one opened instead.
SESSION_MAX_IDLE_SECONDS = 600.0
# How many sessions (concurrent statements) one adapter opens at most.
DEFAULT_MAX_SESSIONS = 4
# Backoff between retries: BASE * 2**attempt seconds, capped, with jitter.
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 8.0


def _grace(timeout: float) -> float:
    """Extra seconds the client waits past the statement timeout before giving up itself."""
    return min(max(2.0, 0.1 * timeout), 30.0)


@dataclass(eq=False)
class _Session:
    conn: Any  # databricks.sql.client.Connection
    statement_timeout: int
    last_used: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class _Call:
    """One running query(), as close() and the deadline watchdog see it."""

    lease: Lease[_Session] | None = None
    cursor: Any = None
    stop: threading.Event = field(default_factory=threading.Event)  # cancelled: closing or late
    done: threading.Event = field(default_factory=threading.Event)  # the worker finished
    wake: threading.Event = field(default_factory=threading.Event)  # done, or given up on
    result: pd.DataFrame | None = None
    error: BaseException | None = None

    @property
    def cancelled(self) -> bool:
        return self.stop.is_set()


class _Retry(Exception):
    """Internal: the attempt failed in a way that a new session may fix."""

    def __init__(
        self, error: WarehouseError, *, immediate: bool = False, after: float | None = None
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.immediate = immediate
        self.after = after  # the warehouse's Retry-After


class DatabricksWarehouse(Warehouse):
    """A Databricks SQL warehouse, shared by every check that queries it (thread-safe)."""

    dialect = DatabricksDialect()

    def __init__(
        self,
        name: str,
        config: DatabricksWarehouseConfig,
        *,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
    ) -> None:
        super().__init__(name)
        quiet_connector_logs()
        self._endpoint = Endpoint.from_config(name, config)
        self._credentials = self._endpoint.credentials()
        self.statement_timeout = float(config.statement_timeout)
        self.retries = max(0, int(config.retries))
        self.max_sessions = max(1, int(max_sessions))
        self._pool: SessionPool[_Session] = SessionPool(
            self.max_sessions,
            "sessions",
            close_session=_discard,
            reusable=lambda s: time.monotonic() - s.last_used <= SESSION_MAX_IDLE_SECONDS,
        )
        self._lock = threading.Lock()
        self._calls: set[_Call] = set()

    # -- sessions ------------------------------------------------------------------------------

    def _open(self, statement_timeout: int) -> _Session:
        from databricks import sql as dbsql

        try:
            conn = dbsql.connect(
                **self._endpoint.session_kwargs(
                    statement_timeout, SOCKET_TIMEOUT_SECONDS, self._credentials
                )
            )
        except Exception as exc:
            error = classify(exc, opening=True)
            if isinstance(error, WarehouseAuthError):
                raise error from exc
            raise _Retry(error, after=retry_after(exc)) from exc
        return _Session(conn=conn, statement_timeout=statement_timeout)

    # -- queries -------------------------------------------------------------------------------

    def _query(
        self, sql: str, params: Mapping[str, object], *, timeout: float | None
    ) -> pd.DataFrame:
        limit = float(timeout if timeout is not None else self.statement_timeout)
        if limit <= 0:
            raise ValueError("timeout must be positive")
        bound = {k: bound_value(v) for k, v in params.items()}
        call = _Call()
        with self._lock:
            self._pool.refuse_if_closed()
            self._calls.add(call)
        grace = _grace(limit)
        deadline = time.monotonic() + limit + grace
        worker = threading.Thread(
            target=self._work,
            args=(call, sql, bound, limit, deadline),
            name=f"kpimon-databricks-{self.name}",
            daemon=True,
        )
        worker.start()
        try:
            call.wake.wait(max(deadline - time.monotonic(), 0.0))
            if call.done.is_set():
                if call.error is not None:
                    raise call.error
                assert call.result is not None
                return call.result
            if call.cancelled:
                raise WarehouseUnavailable("closed while the query ran; it was cancelled")
            # The server did not stop the statement (or the network hangs): stop waiting, free
            # the session's pool slot, cancel the statement in the background.
            self._give_up(call)
            raise QueryTimeout(
                f"no answer within the {limit:g}s statement timeout (plus {grace:g}s grace); "
                "the statement was cancelled"
            )
        finally:
            with self._lock:
                self._calls.discard(call)

    def _work(
        self, call: _Call, sql: str, params: dict[str, object], limit: float, deadline: float
    ) -> None:
        try:
            call.result = self._attempts(call, sql, params, limit, deadline)
        except BaseException as exc:
            call.error = exc
        finally:
            call.done.set()
            call.wake.set()

    def _attempts(
        self, call: _Call, sql: str, params: dict[str, object], limit: float, deadline: float
    ) -> pd.DataFrame:
        statement_timeout = max(1, math.ceil(limit))
        attempt = 0
        while True:
            if call.cancelled:
                raise WarehouseUnavailable("the query was cancelled")
            try:
                return self._attempt(call, sql, params, limit, statement_timeout, deadline)
            except _Retry as retry:
                left = deadline - time.monotonic()
                if attempt >= self.retries or call.cancelled or left <= 0.5:
                    raise retry.error from retry.error.__cause__
                delay = 0.0 if retry.immediate else _backoff(attempt)
                if retry.after is not None:
                    if retry.after >= left - 0.5:
                        raise type(retry.error)(
                            f"{retry.error.detail}; it asked to retry after {retry.after:g}s, "
                            f"past the {limit:g}s statement timeout"
                        ) from retry.error.__cause__
                    delay = max(delay, retry.after)
                if delay >= left - 0.5:
                    raise retry.error from retry.error.__cause__
                log.info(
                    "warehouse request failed; retrying",
                    extra={
                        "fields": {
                            "warehouse": self.name,
                            "error": retry.error.detail,
                            "retry_in_s": round(delay, 1),
                            "retry": f"{attempt + 1}/{self.retries}",
                        }
                    },
                )
                if call.stop.wait(delay):
                    raise WarehouseUnavailable("the query was cancelled") from None
                attempt += 1

    def _attempt(
        self,
        call: _Call,
        sql: str,
        params: dict[str, object],
        limit: float,
        statement_timeout: int,
        deadline: float,
    ) -> pd.DataFrame:
        lease = self._pool.reserve(max(deadline - time.monotonic(), 0.0))
        call.lease = lease  # from here on, giving up on the call frees the slot
        try:
            self._pool.fill(lease, lambda: self._open(statement_timeout))
        except BaseException:
            call.lease = None
            raise
        session = lease.session
        healthy = False
        started = time.monotonic()
        try:
            if session.statement_timeout != statement_timeout:
                self._execute(call, session, f"SET STATEMENT_TIMEOUT = {statement_timeout}", {})
                session.statement_timeout = statement_timeout
            # A fresh cursor per statement: a cancellation must never hit a finished statement.
            frame = self._execute(call, session, sql, params)
            healthy = not call.cancelled
            return frame
        except MalformedResult:
            healthy = not call.cancelled  # the session itself is fine
            raise
        except WarehouseError:
            raise
        except Exception as exc:
            if call.cancelled or self._pool.closed:
                raise WarehouseUnavailable(
                    "the query was cancelled (shutting down, or past its deadline)"
                ) from None
            error = classify(exc, elapsed=time.monotonic() - started, limit=limit)
            if isinstance(error, (QueryFailed, QueryTimeout)):
                healthy = True  # the session itself is fine
                raise error from exc
            if isinstance(error, WarehouseAuthError):
                raise error from exc
            raise _Retry(error, immediate=is_invalid_session(exc), after=retry_after(exc)) from exc
        finally:
            call.lease = None
            session.last_used = time.monotonic()
            self._pool.checkin(lease, healthy=healthy)

    def _execute(
        self, call: _Call, session: _Session, sql: str, params: dict[str, object]
    ) -> pd.DataFrame:
        if call.cancelled:
            raise WarehouseUnavailable("the query was cancelled")
        cursor = session.conn.cursor()
        call.cursor = cursor
        try:
            cursor.execute(sql, params or None)
            return _fetch_frame(cursor)
        finally:
            call.cursor = None
            with contextlib.suppress(Exception):
                cursor.close()

    # -- cancellation --------------------------------------------------------------------------

    def _give_up(self, call: _Call) -> None:
        """Stop waiting for a call: its pool slot is free at once, its statement cancelled."""
        call.stop.set()
        lease = call.lease
        if lease is not None:
            self._pool.abandon(lease)
        self._interrupt(call)

    def _interrupt(self, call: _Call) -> None:
        """Stop the call's statement, from a thread of its own: CancelOperation once its id is
        known (ExecuteStatement may still be waiting for the statement), else CloseSession."""

        def interrupt() -> None:
            deadline = time.monotonic() + STATEMENT_ID_PATIENCE_SECONDS
            while not call.done.is_set():
                session = call.lease.opened if call.lease is not None else None
                cursor = call.cursor
                statement = _statement_id(cursor) if cursor is not None else None
                late = time.monotonic() >= deadline
                if session is not None and (statement is not None or late):
                    self._stop_statement(session, statement)
                    return
                if late:
                    return  # no session (opening one, or between attempts): nothing to stop
                call.done.wait(0.05)

        threading.Thread(target=interrupt, name="kpimon-databricks-cancel", daemon=True).start()

    def _stop_statement(self, session: _Session, statement: object) -> None:
        try:
            channel = self._endpoint.side_channel(session.conn, CANCEL_TIMEOUT_SECONDS)
            if statement is not None:
                channel.cancel_command(statement)
            else:
                channel.close_session(session.conn.session.session_id)
        except Exception as exc:
            log.warning(
                "could not cancel a running statement; the warehouse stops it at its "
                "statement timeout",
                extra={"fields": {"warehouse": self.name, "error": describe(exc)}},
            )

    def ping(self) -> None:
        self.query("SELECT 1 AS ok", {}, timeout=min(self.statement_timeout, 60.0))

    def close(self) -> None:
        """Cancel running statements, close every session; later queries fail.

        Returns within ``CLOSE_WAIT_SECONDS``; callers still waiting then get
        :class:`WarehouseUnavailable`.
        """
        self._pool.close()
        with self._lock:
            calls = list(self._calls)
        for call in calls:
            call.stop.set()
            self._interrupt(call)
        deadline = time.monotonic() + CLOSE_WAIT_SECONDS
        for call in calls:
            call.done.wait(max(deadline - time.monotonic(), 0.0))
        for call in calls:
            call.wake.set()


def _discard(session: _Session) -> None:
    def close() -> None:
        with contextlib.suppress(Exception):
            session.conn.close()

    # Closing talks to the server (CloseSession), through the session's own request lock, which
    # a stuck call may hold until its socket times out: never let it block a caller.
    threading.Thread(target=close, name="kpimon-databricks-close", daemon=True).start()


def _backoff(attempt: int) -> float:
    base = min(BACKOFF_BASE_SECONDS * (2**attempt), BACKOFF_MAX_SECONDS)
    return float(base * (0.75 + random.random() / 2))  # noqa: S311 - jitter, not crypto


def _fetch_frame(cursor: Any) -> pd.DataFrame:
    """All rows of the cursor's result (Arrow when pyarrow is installed, else row tuples)."""
    description = cursor.description or []
    names = [str(d[0]) for d in description]
    kinds = [str(d[1]).lower() for d in description]
    if importlib.util.find_spec("pyarrow") is None:
        rows = [tuple(r) for r in cursor.fetchall()]
        fetched: Any = None
    else:
        rows, fetched = [], cursor.fetchall_arrow()
    try:
        if fetched is None:
            frame = pd.DataFrame.from_records(rows, columns=names)
        else:
            frame = fetched.to_pandas()
            frame.columns = names
        return _normalise(frame, kinds)
    except Exception as exc:  # the warehouse answered, but not in a shape pandas can hold
        raise MalformedResult(f"cannot read the result: {type(exc).__name__}: {exc}") from exc


def _normalise(frame: pd.DataFrame, kinds: list[str]) -> pd.DataFrame:
    """Timestamps as naive UTC (the session time zone is UTC), decimals as floats."""
    for i, kind in enumerate(kinds):
        col = frame.iloc[:, i]
        if kind == "timestamp":
            converted = pd.to_datetime(col, utc=True).dt.tz_localize(None)
        elif kind == "decimal":
            converted = pd.to_numeric(col.astype("float64"), errors="coerce")
        else:
            continue
        frame.isetitem(i, converted.to_numpy())
    return frame


def _statement_id(cursor: Any) -> object:
    """The running statement's handle (``active_command_id``; ``active_op_handle`` before 4.1)."""
    for attribute in ("active_command_id", "active_op_handle"):
        handle = getattr(cursor, attribute, None)
        if handle is not None:
            return handle
    return None
