"""What a ``databricks-sql-connector`` failure means, as the adapter's own errors.

The connector raises its DB-API errors (``ServerOperationError`` for SQL the warehouse refused,
``RequestError`` with a ``context`` dict for HTTP failures: the Thrift method, the status, the
server's reason), and lets ``urllib3`` and socket errors escape raw. :func:`classify` maps each to
:class:`QueryFailed`, :class:`QueryTimeout`, :class:`WarehouseAuthError` or
:class:`WarehouseUnavailable` with a one-line message that names the real HTTP status and call;
:func:`retry_after` reads the server's ``Retry-After``.

The connector also logs each failed request itself, at ERROR and with an empty message when the
server's answer had no Thrift body; the adapter reports every failure once, with more context, so
:func:`quiet_connector_logs` drops those lines (and the connector's other complaints about what
the adapter does on purpose).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from monitor.errors import (
    QueryFailed,
    QueryTimeout,
    WarehouseAuthError,
    WarehouseError,
    WarehouseUnavailable,
)
from monitor.warehouse.base import DriverErrors, driver_error
from monitor.warehouse.databricks_auth import OAuthError

# Markers of a statement the warehouse stopped for running past STATEMENT_TIMEOUT.
_TIMEOUT_MARKERS = ("QUERY_EXECUTION_TIMEOUT_EXCEEDED", "STATEMENT_TIMEOUT", "timed out")
_INVALID_SESSION_MARKERS = ("Invalid SessionHandle", "INVALID_HANDLE", "session does not exist")


@functools.cache
def driver_errors() -> DriverErrors:
    """The connector's exception classes -> the kind of failure (imported when first used).

    SQL the warehouse refused is the query's failure (a timeout, by its text); an HTTP, Thrift
    or session failure is the warehouse's, made precise by the HTTP status (:func:`classify`).
    """
    from databricks.sql import exc as dberr

    return {
        **dict.fromkeys(
            (
                dberr.ServerOperationError,
                dberr.DatabaseError,
                dberr.DataError,
                dberr.IntegrityError,
                dberr.InternalError,
                dberr.NotSupportedError,
                dberr.ProgrammingError,
                dberr.ReydenThriftUnsupportedError,
                dberr.TransactionError,
            ),
            QueryFailed,
        ),
        **dict.fromkeys(
            (
                dberr.Error,
                dberr.InterfaceError,
                dberr.OperationalError,
                dberr.InvalidServerResponseError,
                dberr.RequestError,
                dberr.CursorAlreadyClosedError,
                dberr.MaxRetryDurationError,
                dberr.NonRecoverableNetworkError,
                dberr.SessionAlreadyClosedError,
                dberr.UnsafeToRetryError,
                dberr.TelemetryRateLimitError,
                dberr.TelemetryNonRateLimitError,
            ),
            WarehouseUnavailable,
        ),
    }


def classify(
    exc: BaseException, *, opening: bool = False, elapsed: float = 0.0, limit: float = 0.0
) -> WarehouseError:
    """The adapter's error for a connector (or urllib3, or socket) exception, ``exc`` kept as
    its cause (the connector's exceptions carry no credentials: the token travels in headers,
    which they do not hold)."""
    error = _classify(exc, opening=opening, elapsed=elapsed, limit=limit)
    error.__cause__ = exc
    return error


def _classify(exc: BaseException, *, opening: bool, elapsed: float, limit: float) -> WarehouseError:
    from databricks.sql import exc as dberr

    # a failed session (opening one, or one the server no longer knows) is the warehouse's,
    # even where the connector calls it a database error; refused SQL never is
    query_failed = driver_error(exc, driver_errors()) is QueryFailed and (
        isinstance(exc, dberr.ServerOperationError) or not (opening or is_invalid_session(exc))
    )
    if query_failed:
        text = describe(exc)
        if any(m.lower() in text.lower() for m in _TIMEOUT_MARKERS) or (
            limit and elapsed >= limit and "cancel" in text.lower()
        ):
            return QueryTimeout(f"statement timeout ({limit:g}s): {text}")
        return QueryFailed(text)
    oauth = _find(exc, OAuthError)
    if isinstance(oauth, OAuthError):
        return WarehouseAuthError(str(oauth)) if oauth.refused else WarehouseUnavailable(str(oauth))
    failure = http_failure(exc)
    if failure is not None:
        status, code, reason = failure
        said = f": {reason}" if reason else ""
        if code in (401, 403):
            return WarehouseAuthError(f"credentials refused ({status}){said}")
        if code in (429, 503):
            return WarehouseUnavailable(f"busy or starting ({status}){said}")
        action = "cannot open a session" if opening else "request failed"
        return WarehouseUnavailable(f"{action}: {status}{said}")
    action = "cannot open a session" if opening else "request failed"
    return WarehouseUnavailable(f"{action}: {describe(exc)}")


def http_failure(exc: BaseException) -> tuple[str, int, str] | None:
    """``("HTTP 503 on ExecuteStatement", 503, "TEMPORARILY_UNAVAILABLE")`` for a request the
    server answered with an error status; None for anything else."""
    context = _context(exc)
    code = context.get("http-code")
    if not isinstance(code, int) or code < 400:
        return None
    method = context.get("method")
    status = f"HTTP {code} on {method}" if method else f"HTTP {code}"
    # The connector prefixes the server's reason headers with ": " (and its own text with more)
    reason = str(context.get("error-message") or "").strip().lstrip(":").strip()
    return status, code, reason


def retry_after(exc: BaseException) -> float | None:
    """Seconds the warehouse asked to wait (``Retry-After`` of an HTTP 429 or 503), if any."""
    context = _context(exc)
    if context.get("http-code") not in (429, 503):
        return None
    delay = context.get("bounded-retry-delay")
    return float(delay) if isinstance(delay, int | float) else None


def is_invalid_session(exc: BaseException) -> bool:
    text = str(exc)
    return any(m in text for m in _INVALID_SESSION_MARKERS)


def describe(exc: BaseException) -> str:
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


def _context(exc: BaseException) -> dict[str, Any]:
    from databricks.sql import exc as dberr

    found = _find(exc, dberr.RequestError)
    context = getattr(found, "context", None)
    return context if isinstance(context, dict) else {}


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


class _ConnectorNoise(logging.Filter):
    """Drops the connector's log lines about what the adapter reports or does on purpose."""

    PREFIXES = (
        # every failed request, reported by the adapter with its status and warehouse
        "ThriftBackend.attempt_request:",
        # the connector's own retries are off on purpose (see the adapter's _transport_kwargs)
        "Legacy retry behavior is enabled",
        # a session dropped after a failure is closed best-effort, often over a dead connection
        "Attempt to close session raised",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(self.PREFIXES))


_NOISY_LOGGERS = ("databricks.sql.backend.thrift_backend", "databricks.sql.session")


def quiet_connector_logs() -> None:
    """Install the filter on the connector's loggers (once)."""
    for name in _NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ConnectorNoise) for f in logger.filters):
            logger.addFilter(_ConnectorNoise())
