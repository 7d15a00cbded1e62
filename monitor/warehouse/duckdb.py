"""DuckDB, the embedded default warehouse: a file opened read-only for each query."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import duckdb
import pandas as pd

from monitor.config import DuckDBWarehouseConfig
from monitor.dialects import DuckDBDialect
from monitor.errors import QueryFailed, QueryTimeout, WarehouseUnavailable
from monitor.warehouse.base import Warehouse


class DuckDBWarehouse(Warehouse):
    """Opens the file read-only per query, so a loader process can write between runs
    and ``sql`` checks cannot modify data."""

    dialect = DuckDBDialect()

    def __init__(self, name: str, config: DuckDBWarehouseConfig) -> None:
        super().__init__(name)
        self.path = Path(config.path)
        self.statement_timeout = config.statement_timeout
        self._lock = threading.Lock()
        self._running: set[duckdb.DuckDBPyConnection] = set()

    def _connect(self) -> duckdb.DuckDBPyConnection:
        if not self.path.exists():
            raise WarehouseUnavailable(f"DuckDB file {self.path} does not exist")
        try:
            con = duckdb.connect(str(self.path), read_only=True)
            con.execute("SET TimeZone = 'UTC'")
        except duckdb.Error as exc:
            raise WarehouseUnavailable(f"cannot open DuckDB file {self.path}: {exc}") from None
        return con

    def query(
        self, sql: str, params: Mapping[str, object], *, timeout: float | None = None
    ) -> pd.DataFrame:
        con = self._connect()
        limit = timeout if timeout is not None else self.statement_timeout
        timer = threading.Timer(limit, con.interrupt)
        with self._lock:
            self._running.add(con)
        timer.start()
        try:
            return con.execute(sql, dict(params)).df()
        except duckdb.InterruptException:
            raise QueryTimeout(f"query ran past {limit:g}s and was cancelled") from None
        except duckdb.Error as exc:
            raise QueryFailed(str(exc).strip()) from None
        finally:
            timer.cancel()
            with self._lock:
                self._running.discard(con)
            con.close()

    def ping(self) -> None:
        self.query("SELECT 1", {})

    def close(self) -> None:
        with self._lock:
            for con in self._running:
                con.interrupt()
