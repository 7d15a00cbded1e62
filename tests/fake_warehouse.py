"""A warehouse answered by a function, as httpx's ``MockTransport`` answers requests.

``HandlerWarehouse(handler)`` passes every query to ``handler(sql, params)`` and returns the
frame it returns; what the handler raises is what the query raises (a
:class:`monitor.errors.WarehouseError` for a warehouse's failure, as an adapter would). The SQL
is the real SQL the engine built for the given dialect (DuckDB's by default), so planning and
batching tests assert on it without a warehouse to run it. A real adapter's ``query`` is itself
a handler: ``Recorder(inner.query)`` passes each query on and notes it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeAlias

import pandas as pd

from monitor.dialects import Dialect, DuckDBDialect
from monitor.warehouse.base import Warehouse

Handler: TypeAlias = Callable[[str, Mapping[str, object]], pd.DataFrame]


class HandlerWarehouse(Warehouse):
    """Every query, a ping (``SELECT 1``) and a column lookup included, is ``handler``'s to
    answer; ``on_close`` runs when the warehouse is closed (a wrapped adapter's ``close``)."""

    def __init__(
        self,
        handler: Handler,
        *,
        name: str = "default",
        dialect: Dialect | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name)
        self.handler = handler
        self.dialect = dialect if dialect is not None else DuckDBDialect()
        self._on_close = on_close

    def _query(
        self, sql: str, params: Mapping[str, object], *, timeout: float | None
    ) -> pd.DataFrame:
        return self.handler(sql, params)

    def ping(self) -> None:
        self.handler("SELECT 1", {})

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()


@dataclass(frozen=True)
class Call:
    """One query a :class:`Recorder` passed on, and how many rows it returned."""

    sql: str
    params: Mapping[str, object]
    rows: int


class Recorder:
    """A handler that passes each query to ``answer`` and records it (failed ones are not)."""

    def __init__(self, answer: Handler) -> None:
        self.answer = answer
        self.calls: list[Call] = []

    def __call__(self, sql: str, params: Mapping[str, object]) -> pd.DataFrame:
        frame = self.answer(sql, params)
        self.calls.append(Call(sql, dict(params), len(frame)))
        return frame

    @property
    def sql(self) -> list[str]:
        return [c.sql for c in self.calls]

    @property
    def rows(self) -> list[int]:
        return [c.rows for c in self.calls]


def recorded(inner: Warehouse) -> tuple[HandlerWarehouse, Recorder]:
    """``inner`` behind a handler that records every query sent to it (closing the one closes
    ``inner``)."""
    recorder = Recorder(inner.query)
    warehouse = HandlerWarehouse(
        recorder, name=inner.name, dialect=inner.dialect, on_close=inner.close
    )
    return warehouse, recorder
