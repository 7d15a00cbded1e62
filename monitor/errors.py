"""The error hierarchy: every failure the monitor reports to a user is one of these."""

from __future__ import annotations


class KpiMonitorError(Exception):
    """Base class of the monitor's own errors."""


class ConfigError(KpiMonitorError):
    """The configuration file is missing, unreadable or invalid.

    ``problems`` holds one line per invalid field, each naming the field path.
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))

    def render(self) -> str:
        lines = [f"invalid configuration {self.source}:"]
        lines.extend(f"  {p}" for p in self.problems)
        return "\n".join(lines)


class UnknownCheck(KpiMonitorError, KeyError):
    """A name that no configured check has (a lookup error, hence also a :class:`KeyError`).

    ``names`` holds the names asked for; the HTTP API answers 404 for it.
    """

    def __init__(self, *names: str, message: str | None = None) -> None:
        self.names = names
        super().__init__(message or ", ".join(f"no check named {n!r}" for n in names))

    # KeyError's str() is the repr of its argument: the message is read by people
    __str__ = KpiMonitorError.__str__


class WarehouseError(KpiMonitorError):
    """A warehouse could not answer a query.

    ``detail`` says what went wrong; ``warehouse`` is the configured warehouse's name, set once
    as the error leaves the adapter (:meth:`monitor.warehouse.Warehouse.query`). ``str()`` names
    the warehouse, for a message that stands alone; a line that names the warehouse itself (a
    log field, ``validate --connect``) shows ``detail``.
    """

    def __init__(self, detail: str, *, warehouse: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.warehouse = warehouse

    def __str__(self) -> str:
        return f"warehouse {self.warehouse!r}: {self.detail}" if self.warehouse else self.detail


class WarehouseUnavailable(WarehouseError):
    """The warehouse could not be reached or refused the connection."""


class WarehouseAuthError(WarehouseUnavailable):
    """The warehouse (or its token endpoint) refused the credentials: retrying with the same
    ones cannot help."""


class QueryFailed(WarehouseError):
    """The warehouse rejected or failed one query (bad SQL, missing table, permissions)."""


class QueryTimeout(WarehouseError):
    """A query ran past its statement timeout and was cancelled."""


class MalformedResult(WarehouseError):
    """A query answered, but not with the columns and types the check needs."""


class StateStoreError(KpiMonitorError):
    """The state store could not be read or written."""
