"""Warehouse adapters: one class per engine behind the :class:`Warehouse` interface."""

from __future__ import annotations

from monitor.config import (
    AnyWarehouseConfig,
    Config,
    DuckDBWarehouseConfig,
    PostgresWarehouseConfig,
)
from monitor.warehouse.base import Warehouse

__all__ = ["Warehouse", "open_warehouse", "open_warehouses"]


def open_warehouse(name: str, config: AnyWarehouseConfig) -> Warehouse:
    """The adapter for one configured warehouse; drivers are imported only when used."""
    if isinstance(config, DuckDBWarehouseConfig):
        from monitor.warehouse.duckdb import DuckDBWarehouse

        return DuckDBWarehouse(name, config)
    if isinstance(config, PostgresWarehouseConfig):
        from monitor.warehouse.postgres import PostgresWarehouse

        return PostgresWarehouse(name, config)
    from monitor.warehouse.databricks import DatabricksWarehouse

    return DatabricksWarehouse(name, config)


def open_warehouses(config: Config) -> dict[str, Warehouse]:
    return {name: open_warehouse(name, wh) for name, wh in config.all_warehouses().items()}
