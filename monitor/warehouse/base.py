"""The interface every warehouse adapter implements."""

from __future__ import annotations

import datetime as dt
import decimal
from abc import abstractmethod
from collections.abc import Mapping
from typing import TypeAlias

import pandas as pd

from monitor.closing import Closing
from monitor.dialects import Dialect
from monitor.errors import WarehouseError

# A driver's exception classes -> the adapter's error for each: every class the driver exports
# is a key (tests/test_warehouse_errors.py), so a driver upgrade that adds one fails a test
# instead of surfacing as something else.
DriverErrors: TypeAlias = Mapping[type[BaseException], type[WarehouseError]]


class Warehouse(Closing):
    """A connection to one warehouse, shared by every check that queries it.

    Adapters are thread-safe: the scheduler runs checks on several threads at once. They raise
    only :class:`monitor.errors.WarehouseError` subclasses, never a driver's own exception, and
    leave the warehouse's name out of their messages: :meth:`query` attaches it to the error.
    ``with`` closes a warehouse as the block ends::

        with open_warehouse("lake", config) as warehouse:
            warehouse.ping()
    """

    dialect: Dialect

    def __init__(self, name: str) -> None:
        self.name = name
        self._reachable: bool | None = None  # as the last query found it; None: not tried yet

    def mark_reachable(self, reachable: bool) -> bool | None:
        """Record whether the last query reached the warehouse; return what was known before
        (None: nothing), so a caller can tell a warehouse that came back from one always up."""
        before, self._reachable = self._reachable, reachable
        return before

    def query(
        self, sql: str, params: Mapping[str, object], *, timeout: float | None = None
    ) -> pd.DataFrame:
        """Run one read-only query with bound parameters and return its rows.

        :raises monitor.errors.WarehouseError: with ``warehouse`` set to this warehouse's name.
        """
        try:
            return self._query(sql, params, timeout=timeout)
        except WarehouseError as exc:
            if exc.warehouse is None:
                exc.warehouse = self.name
            raise

    @abstractmethod
    def _query(
        self, sql: str, params: Mapping[str, object], *, timeout: float | None
    ) -> pd.DataFrame:
        """The adapter's own query: what :meth:`query` promises, errors not yet named."""

    @abstractmethod
    def ping(self) -> None:
        """Raise :class:`monitor.errors.WarehouseError` unless the warehouse answers."""

    def columns(self, table: str) -> dict[str, str]:
        """Column name -> type of ``table`` (empty when the table does not exist)."""
        from monitor.queries import columns_query

        query = columns_query(table, self.dialect)
        frame = self.query(query.sql, query.params)
        return {str(row[0]): str(row[1]) for row in frame.itertuples(index=False)}

    def close(self) -> None:  # adapters without a session have nothing to close
        """Release connections and cancel statements still running."""


def driver_error(exc: BaseException, table: DriverErrors) -> type[WarehouseError] | None:
    """The adapter's error class for a driver exception: the table's entry for the nearest of
    its classes (None: not the driver's, e.g. a socket error the driver let through)."""
    for cls in type(exc).__mro__:
        kind = table.get(cls)
        if kind is not None:
            return kind
    return None


def bound_value(value: object) -> object:
    """A parameter value every driver binds natively: numpy scalars unwrapped, aware datetimes
    as naive UTC (the dialects read naive timestamps as UTC)."""
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    item = getattr(value, "item", None)
    if item is not None and not isinstance(value, str | bytes | decimal.Decimal):
        return item()
    return value
