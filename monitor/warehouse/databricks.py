"""Databricks SQL warehouses through ``databricks-sql-connector`` (Thrift over HTTPS).

One adapter per configured warehouse, shared by every check:

* **Sessions.** A small pool (default at most 4) of connector sessions, each used by one query at
  a time and reused across checks. A session is opened lazily with ``STATEMENT_TIMEOUT`` and
  ``TIMEZONE=UTC`` as session configuration; it is dropped after any transport failure and
  reopened by the next query, and replaced when the server no longer knows it (a warehouse
  restart, an expired session) or after it sat idle for ``SESSION_MAX_IDLE_SECONDS``.
* **Timeouts.** The warehouse enforces ``STATEMENT_TIMEOUT`` (a per-call ``timeout`` differing
  from the session's value is applied with ``SET STATEMENT_TIMEOUT`` first). The adapter also
  bounds the whole call: past the timeout plus a grace period it cancels the statement, drops the
  session and raises :class:`QueryTimeout`, even if the server or the network hangs.
* **Retries.** Transport failures (HTTP 429/503, refused or reset connections, timeouts) are
  retried ``retries`` times with exponential backoff, on a new session, within the call's time
  budget. The connector's own retry loop is kept short on purpose: it sleeps at least
  ``_retry_delay_max`` (>= 5 s) per retry and re-sends ExecuteStatement after a read timeout.
  Read-only queries are safe to repeat.
* **Errors.** Only :mod:`monitor.errors` types leave the adapter: SQL errors as
  :class:`QueryFailed` with the warehouse's message, timeouts as :class:`QueryTimeout`, and
  everything about reaching the warehouse (including refused credentials and the raw ``urllib3``
  errors the connector lets escape) as :class:`WarehouseUnavailable`.
* **Shutdown.** ``close()`` cancels running statements (CancelOperation) and closes sessions.
* **Telemetry** is off (``enable_telemetry=False``).

Authentication: a personal access token (``access_token`` / ``DATABRICKS_TOKEN``) or OAuth
machine-to-machine client credentials (``client_id`` + ``client_secret`` /
``DATABRICKS_CLIENT_ID`` + ``DATABRICKS_CLIENT_SECRET``), exchanged at the workspace's
``/oidc/v1/token`` endpoint and refreshed before they expire.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import logging
import math
import os
import random
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from monitor.config import DatabricksWarehouseConfig
from monitor.dialects import DatabricksDialect
from monitor.errors import (
    MalformedResult,
    QueryFailed,
    QueryTimeout,
    WarehouseError,
    WarehouseUnavailable,
)
from monitor.warehouse.base import Warehouse, bound_value

log = logging.getLogger(__name__)

# Seconds a single HTTP call (one Thrift RPC) may take. Databricks answers each RPC quickly
# (long polls last seconds); a stuck socket is cut here rather than after the connector's 900 s.
SOCKET_TIMEOUT_SECONDS = 60.0
# An idle session older than this is closed and a fresh one opened instead.
SESSION_MAX_IDLE_SECONDS = 600.0
# How many sessions (concurrent statements) one adapter opens at most.
DEFAULT_MAX_SESSIONS = 4
# Backoff between retries: BASE * 2**attempt seconds, capped, with jitter.
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 8.0
# Markers of a statement the warehouse stopped for running past STATEMENT_TIMEOUT.
_TIMEOUT_MARKERS = ("QUERY_EXECUTION_TIMEOUT_EXCEEDED", "STATEMENT_TIMEOUT", "timed out")
_INVALID_SESSION_MARKERS = ("Invalid SessionHandle", "INVALID_HANDLE", "session does not exist")


def _grace(timeout: float) -> float:
    """Extra seconds the client waits past the statement timeout before giving up itself."""
    return min(max(2.0, 0.1 * timeout), 30.0)


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    host: str | None
    http_path: str | None
    token: str | None
    client_id: str | None
    client_secret: str | None
    connection_uri: str | None
    catalog: str | None
    schema: str | None
    ca_file: str | None


def _settings(name: str, config: DatabricksWarehouseConfig) -> _Settings:
    env = os.environ

    def secret(value: Any) -> str | None:
        return value.get_secret_value() if value is not None else None

    s = _Settings(
        host=config.server_hostname or env.get("DATABRICKS_HOST") or None,
        http_path=config.http_path or env.get("DATABRICKS_HTTP_PATH") or None,
        token=secret(config.access_token) or env.get("DATABRICKS_TOKEN") or None,
        client_id=config.client_id or env.get("DATABRICKS_CLIENT_ID") or None,
        client_secret=secret(config.client_secret) or env.get("DATABRICKS_CLIENT_SECRET") or None,
        connection_uri=config.connection_uri,
        catalog=config.catalog,
        schema=config.schema_,
        ca_file=config.tls_trusted_ca_file,
    )
    missing = []
    if not s.connection_uri:
        if not s.host:
            missing.append("server_hostname (or DATABRICKS_HOST)")
        if not s.http_path:
            missing.append("http_path (or DATABRICKS_HTTP_PATH)")
    if not s.token and not (s.client_id and s.client_secret):
        missing.append(
            "access_token (or DATABRICKS_TOKEN), or client_id and client_secret "
            "(or DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET)"
        )
    if missing:
        raise WarehouseUnavailable(
            f"databricks warehouse {name!r} is not configured: missing " + "; ".join(missing)
        )
    return s


def _hostname(host: str) -> str:
    """``https://adb-1.2.azuredatabricks.net/`` -> ``adb-1.2.azuredatabricks.net``."""
    parsed = urllib.parse.urlsplit(host if "//" in host else f"//{host}")
    return parsed.netloc or host


# ---------------------------------------------------------------------------------------------
# OAuth machine-to-machine (client credentials)
# ---------------------------------------------------------------------------------------------


class OAuthClientCredentials:
    """A connector ``credentials_provider`` for a service principal's OAuth M2M secret.

    Exchanges the client id and secret for an access token at ``<workspace>/oidc/v1/token``
    (scope ``all-apis``), caches it and gets a new one a minute before it expires.
    """

    def __init__(
        self, token_url: str, client_id: str, client_secret: str, ca_file: str | None = None
    ) -> None:
        self.token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._ca_file = ca_file
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def auth_type(self) -> str:
        return "oauth-m2m"

    def __call__(self, *args: object, **kwargs: object) -> Callable[[], dict[str, str]]:
        return self.headers

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def token(self) -> str:
        with self._lock:
            if self._token is None or time.monotonic() >= self._expires:
                self._token, lifetime = self._fetch()
                self._expires = time.monotonic() + max(lifetime - 60.0, lifetime / 2)
            return self._token

    def _fetch(self) -> tuple[str, float]:
        body = urllib.parse.urlencode({"grant_type": "client_credentials", "scope": "all-apis"})
        basic = base64.b64encode(f"{self._client_id}:{self._client_secret}".encode()).decode()
        request = urllib.request.Request(  # noqa: S310 - the URL is the configured workspace
            self.token_url,
            data=body.encode(),
            headers={
                "Authorization": f"Basic {basic}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
            method="POST",
        )
        context = None
        if self.token_url.startswith("https:"):
            context = ssl.create_default_context(cafile=self._ca_file)
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=SOCKET_TIMEOUT_SECONDS, context=context
            ) as response:
                payload = json.loads(response.read().decode())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:200]
            raise OAuthError(f"OAuth token request refused (HTTP {exc.code}): {detail}") from None
        except (OSError, ValueError) as exc:
            raise OAuthError(f"OAuth token request failed: {exc}") from None
        token = payload.get("access_token")
        if not isinstance(token, str) or not token:
            raise OAuthError("OAuth token response has no access_token")
        return token, float(payload.get("expires_in") or 3600)


class OAuthError(Exception):
    """The OAuth token endpoint refused the client credentials or could not be reached."""


# ---------------------------------------------------------------------------------------------
# The adapter
# ---------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Session:
    conn: Any  # databricks.sql.client.Connection
    statement_timeout: int
    last_used: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class _Call:
    """One running query(), as close() and the deadline watchdog see it."""

    session: _Session | None = None
    cursor: Any = None
    cancelled: bool = False
    done: threading.Event = field(default_factory=threading.Event)  # the worker finished
    wake: threading.Event = field(default_factory=threading.Event)  # done, or given up on
    result: pd.DataFrame | None = None
    error: BaseException | None = None


class _Retry(Exception):
    """Internal: the attempt failed in a way that a new session may fix."""

    def __init__(self, error: WarehouseError, *, immediate: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.immediate = immediate


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
        self._settings = _settings(name, config)
        self.statement_timeout = float(config.statement_timeout)
        self.retries = max(0, int(config.retries))
        self.max_sessions = max(1, int(max_sessions))
        self._slots = threading.BoundedSemaphore(self.max_sessions)
        self._lock = threading.Lock()
        self._idle: list[_Session] = []
        self._calls: set[_Call] = set()
        self._closed = False
        self._credentials: OAuthClientCredentials | None = None
        s = self._settings
        if not s.token and s.client_id and s.client_secret:
            self._credentials = OAuthClientCredentials(
                self._token_url(), s.client_id, s.client_secret, s.ca_file
            )

    def _token_url(self) -> str:
        s = self._settings
        if s.connection_uri:
            parts = urllib.parse.urlsplit(s.connection_uri)
            return f"{parts.scheme}://{parts.netloc}/oidc/v1/token"
        assert s.host is not None
        return f"https://{_hostname(s.host)}/oidc/v1/token"

    # -- sessions ------------------------------------------------------------------------------

    def _connect_kwargs(self, statement_timeout: int) -> dict[str, Any]:
        s = self._settings
        kwargs: dict[str, Any] = {
            "server_hostname": _hostname(s.host) if s.host else "localhost",
            "http_path": s.http_path or "",
            "session_configuration": {
                "STATEMENT_TIMEOUT": str(statement_timeout),
                "TIMEZONE": "UTC",
            },
            "enable_telemetry": False,
            "user_agent_entry": "kpi-monitor",
            "use_cloud_fetch": False,
            "_socket_timeout": SOCKET_TIMEOUT_SECONDS,
            # Keep the connector's own retries out of the way: the adapter retries on a new
            # session with its own backoff and deadline. The connector's policy sleeps at least
            # _retry_delay_max (>= 5 s) before each 429/503 retry and, after a socket read
            # timeout, re-sends ExecuteStatement even with one attempt; a 1 s retry budget
            # (measured from the start of the request) makes it give up instead of waiting or
            # re-sending (tests/test_warehouse_databricks.py pins both).
            "_retry_stop_after_attempts_count": 1,
            "_retry_stop_after_attempts_duration": 1.0,
            "_retry_delay_min": 0.1,
            "_retry_delay_max": 5.0,
        }
        if s.catalog:
            kwargs["catalog"] = s.catalog
        if s.schema:
            kwargs["schema"] = s.schema
        if self._credentials is not None:
            kwargs["credentials_provider"] = self._credentials
        else:
            kwargs["access_token"] = s.token
        if s.connection_uri:
            kwargs["_connection_uri"] = s.connection_uri
        if s.ca_file:
            kwargs["_tls_trusted_ca_file"] = s.ca_file
        return kwargs

    def _open(self, statement_timeout: int) -> _Session:
        from databricks import sql as dbsql

        try:
            conn = dbsql.connect(**self._connect_kwargs(statement_timeout))
        except Exception as exc:
            raise self._classify(exc, opening=True) from None
        return _Session(conn=conn, statement_timeout=statement_timeout)

    def _checkout(self, wait: float, statement_timeout: int) -> _Session:
        if not self._slots.acquire(timeout=max(wait, 0.0)):
            raise QueryTimeout(
                f"warehouse {self.name!r}: all {self.max_sessions} sessions stayed busy "
                f"for {wait:.1f}s"
            )
        try:
            stale: list[_Session] = []
            session = None
            with self._lock:
                if self._closed:
                    raise WarehouseUnavailable(f"warehouse {self.name!r} is closed")
                while self._idle:
                    candidate = self._idle.pop()
                    if time.monotonic() - candidate.last_used > SESSION_MAX_IDLE_SECONDS:
                        stale.append(candidate)
                    else:
                        session = candidate
                        break
            for old in stale:
                self._discard(old)
            return session if session is not None else self._open(statement_timeout)
        except BaseException:
            self._slots.release()
            raise

    def _checkin(self, session: _Session | None, healthy: bool) -> None:
        if session is not None:
            keep = False
            with self._lock:
                if healthy and not self._closed:
                    session.last_used = time.monotonic()
                    self._idle.append(session)
                    keep = True
            if not keep:
                self._discard(session)
        self._slots.release()

    @staticmethod
    def _discard(session: _Session) -> None:
        def close() -> None:
            with contextlib.suppress(Exception):
                session.conn.close()

        # Closing talks to the server (CloseSession): never let it block a caller.
        threading.Thread(target=close, name="kpimon-databricks-close", daemon=True).start()

    # -- queries -------------------------------------------------------------------------------

    def query(
        self, sql: str, params: Mapping[str, object], *, timeout: float | None = None
    ) -> pd.DataFrame:
        limit = float(timeout if timeout is not None else self.statement_timeout)
        if limit <= 0:
            raise ValueError("timeout must be positive")
        bound = {k: bound_value(v) for k, v in params.items()}
        call = _Call()
        with self._lock:
            if self._closed:
                raise WarehouseUnavailable(f"warehouse {self.name!r} is closed")
            self._calls.add(call)
        deadline = time.monotonic() + limit + _grace(limit)
        worker = threading.Thread(
            target=self._work,
            args=(call, sql, bound, limit, deadline),
            name=f"kpimon-databricks-{self.name}",
            daemon=True,
        )
        worker.start()
        try:
            call.wake.wait(max(deadline - time.monotonic(), 0.0))
            if not call.done.is_set() and call.cancelled:
                raise WarehouseUnavailable(
                    f"warehouse {self.name!r} closed while the query ran; it was cancelled"
                )
            if not call.done.is_set():
                # The server did not stop the statement (or the network hangs): stop waiting,
                # cancel it in the background, and never reuse that session.
                call.cancelled = True
                self._cancel(call)
                raise QueryTimeout(
                    f"warehouse {self.name!r}: no answer within the {limit:g}s statement "
                    "timeout (plus grace); the statement was cancelled"
                )
            if call.error is not None:
                raise call.error
            assert call.result is not None
            return call.result
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
                raise WarehouseUnavailable(f"warehouse {self.name!r}: the query was cancelled")
            try:
                return self._attempt(call, sql, params, limit, statement_timeout, deadline)
            except _Retry as retry:
                left = deadline - time.monotonic()
                if attempt >= self.retries or call.cancelled or left <= 0.5:
                    raise retry.error from None
                delay = 0.0 if retry.immediate else _backoff(attempt)
                if delay >= left - 0.5:
                    raise retry.error from None
                log.info(
                    "warehouse %s: %s; retrying in %.1fs (%d/%d)",
                    self.name,
                    retry.error,
                    delay,
                    attempt + 1,
                    self.retries,
                )
                time.sleep(delay)
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
        wait = max(deadline - time.monotonic(), 0.0)
        try:
            session = self._checkout(wait, statement_timeout)
        except WarehouseUnavailable as exc:
            if self._closed or _is_auth_failure(exc):
                raise
            raise _Retry(exc) from None
        call.session = session
        healthy = False
        started = time.monotonic()
        try:
            if session.statement_timeout != statement_timeout:
                self._execute(call, session, f"SET STATEMENT_TIMEOUT = {statement_timeout}", {})
                session.statement_timeout = statement_timeout
            # A fresh cursor per statement: close() must never cancel a finished statement's id.
            frame = self._execute(call, session, sql, params)
            healthy = not call.cancelled
            return frame
        except MalformedResult:
            healthy = not call.cancelled  # the session itself is fine
            raise
        except WarehouseError:
            raise
        except Exception as exc:
            if call.cancelled or self._closed:
                raise WarehouseUnavailable(
                    f"warehouse {self.name!r}: the query was cancelled (adapter closing or "
                    "past its deadline)"
                ) from None
            error = self._classify(exc, elapsed=time.monotonic() - started, limit=limit)
            if isinstance(error, (QueryFailed, QueryTimeout)):
                healthy = True  # the session itself is fine
                raise error from None
            if _is_auth_failure(error):
                raise error from None
            raise _Retry(error, immediate=_is_invalid_session(exc)) from None
        finally:
            call.session = None
            self._checkin(session, healthy=healthy)

    def _execute(
        self, call: _Call, session: _Session, sql: str, params: dict[str, object]
    ) -> pd.DataFrame:
        if call.cancelled:
            raise WarehouseUnavailable(f"warehouse {self.name!r}: the query was cancelled")
        cursor = session.conn.cursor()
        call.cursor = cursor
        try:
            cursor.execute(sql, params or None)
            return _fetch_frame(cursor)
        finally:
            call.cursor = None
            with contextlib.suppress(Exception):
                cursor.close()

    def _classify(
        self,
        exc: BaseException,
        *,
        opening: bool = False,
        elapsed: float = 0.0,
        limit: float = 0.0,
    ) -> WarehouseError:
        """The adapter's error for a connector (or urllib3, or socket) exception."""
        from databricks.sql import exc as dberr

        where = f"warehouse {self.name!r}"
        text = _describe(exc)
        if isinstance(exc, dberr.ServerOperationError) or (
            isinstance(exc, dberr.DatabaseError)
            and not isinstance(exc, dberr.OperationalError)
            and not _is_invalid_session(exc)
            and not opening
        ):
            if any(m.lower() in text.lower() for m in _TIMEOUT_MARKERS) or (
                limit and elapsed >= limit and "cancel" in text.lower()
            ):
                return QueryTimeout(f"{where}: statement timeout ({limit:g}s): {text}")
            return QueryFailed(f"{where}: {text}")
        code = _http_code(exc)
        if code in (401, 403):
            return WarehouseUnavailable(
                f"{where}: the warehouse refused the credentials (HTTP {code}): {text}"
            )
        if _find(exc, OAuthError) is not None:
            return WarehouseUnavailable(f"{where}: {_find(exc, OAuthError)}")
        action = "cannot open a session" if opening else "request failed"
        if _find(exc, dberr.MaxRetryDurationError) is not None:
            # The connector only gives up this way when the server asked it to come back later.
            text = f"the warehouse is busy or starting (HTTP 429/503, retry later): {text}"
        return WarehouseUnavailable(f"{where}: {action}: {text}")

    @staticmethod
    def _cancel(call: _Call, patience: float = 10.0) -> None:
        """Send CancelOperation for the call's statement, in the background.

        The statement id is known only once ExecuteStatement has answered (it may hold the
        request for a while waiting for inline results), so keep looking for it a little.
        CancelOperation also shares the connector's request lock with the running call.
        """

        def cancel() -> None:
            deadline = time.monotonic() + patience
            while not call.done.is_set() and time.monotonic() < deadline:
                cursor = call.cursor
                if cursor is not None and _statement_id(cursor) is not None:
                    with contextlib.suppress(Exception):
                        cursor.cancel()
                    return
                time.sleep(0.05)

        threading.Thread(target=cancel, name="kpimon-databricks-cancel", daemon=True).start()

    def ping(self) -> None:
        self.query("SELECT 1 AS ok", {}, timeout=min(self.statement_timeout, 60.0))

    def close(self) -> None:
        """Cancel running statements, close every session; later queries fail."""
        with self._lock:
            self._closed = True
            calls = list(self._calls)
            idle, self._idle = self._idle, []
        for call in calls:
            call.cancelled = True
            self._cancel(call)
        for session in idle:
            self._discard(session)
        # Give the cancellations a moment so statements stop before the process exits, then
        # release the callers still waiting.
        deadline = time.monotonic() + 5.0
        for call in calls:
            call.done.wait(max(deadline - time.monotonic(), 0.0))
        for call in calls:
            call.wake.set()


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


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
        raise MalformedResult(f"cannot read the result: {type(exc).__name__}: {exc}") from None


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


def _find(exc: BaseException | None, kind: type[BaseException]) -> BaseException | None:
    """``exc`` or an exception it wraps (cause, context, connector context) of type ``kind``."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, kind):
            return e
        stack.extend([e.__cause__, e.__context__])
        stack.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
        context = getattr(e, "context", None)
        if isinstance(context, dict):
            original = context.get("original-exception")
            if isinstance(original, BaseException):
                stack.append(original)
    return None


def _http_code(exc: BaseException) -> int | None:
    context = getattr(exc, "context", None)
    if isinstance(context, dict):
        code = context.get("http-code")
        if isinstance(code, int):
            return code
    return None


def _is_auth_failure(exc: BaseException) -> bool:
    return isinstance(exc, WarehouseUnavailable) and (
        "refused the credentials" in str(exc) or "OAuth token request" in str(exc)
    )


def _is_invalid_session(exc: BaseException) -> bool:
    text = str(exc)
    return any(m in text for m in _INVALID_SESSION_MARKERS)


def _describe(exc: BaseException) -> str:
    """A one-line message for an exception, without secrets (headers are never included)."""
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    message = str(message).strip().splitlines()[0] if str(message).strip() else type(exc).__name__
    context = getattr(exc, "context", None)
    if isinstance(context, dict):
        extra = context.get("error-message") or ""
        original = context.get("original-exception")
        if original is not None and str(original) not in message:
            extra = f"{extra} {original}".strip()
        if extra and str(extra) not in message:
            message = f"{message} ({extra})"
    if type(exc).__module__.startswith("urllib3") or isinstance(exc, OSError):
        message = f"{type(exc).__name__}: {message}"
    return message
