"""What the adapters make of their drivers' exceptions: every class a driver exports has a kind,
and the driver's exception stays attached as the cause.

Each driver's table is checked against the classes the installed driver exports, so an upgrade
that adds one fails here rather than in production. What each kind leads to (a timeout, a
warehouse down, a check's own failure) is pinned by the adapters' own tests.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import databricks.sql.exc
import duckdb
import psycopg
import pytest

from monitor.config import DuckDBWarehouseConfig
from monitor.errors import QueryFailed, QueryTimeout, WarehouseError
from monitor.warehouse import duckdb as duckdb_adapter
from monitor.warehouse import postgres
from monitor.warehouse.base import DriverErrors, driver_error
from monitor.warehouse.databricks_errors import driver_errors

# Exported, but never raised out of a query: DB-API warnings, and psycopg's Rollback (a caller
# raises it to end a transaction block).
NOT_RAISED: set[type[BaseException]] = {
    psycopg.Rollback,
    psycopg.Warning,
    duckdb.Warning,
    databricks.sql.exc.Warning,
}


def exported_exceptions(module: ModuleType) -> set[type[BaseException]]:
    return {
        v
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, BaseException) and v not in NOT_RAISED
    }


@pytest.mark.parametrize(
    ("driver", "table"),
    [
        (duckdb, duckdb_adapter.DRIVER_ERRORS),
        (psycopg, postgres.DRIVER_ERRORS),
        (databricks.sql.exc, driver_errors()),
    ],
    ids=["duckdb", "psycopg", "databricks-sql-connector"],
)
def test_every_exception_class_a_driver_exports_has_a_kind_in_its_adapters_table(
    driver: ModuleType, table: DriverErrors
) -> None:
    unmapped = sorted(c.__name__ for c in exported_exceptions(driver) - set(table))
    assert unmapped == [], f"{driver.__name__} exceptions without a kind: {unmapped}"
    assert all(issubclass(kind, WarehouseError) for kind in table.values())


def test_a_class_the_table_does_not_name_takes_the_kind_of_its_nearest_named_base() -> None:
    class NewInDriver(psycopg.errors.QueryCanceled):
        pass

    assert driver_error(NewInDriver(), postgres.DRIVER_ERRORS) is QueryTimeout
    assert driver_error(OSError(), postgres.DRIVER_ERRORS) is None


def test_a_failed_query_names_its_warehouse_and_keeps_the_drivers_exception_as_its_cause(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w.duckdb"
    duckdb.connect(str(path)).close()
    warehouse = duckdb_adapter.DuckDBWarehouse("lake", DuckDBWarehouseConfig(kind="duckdb", path=str(path)))
    try:
        with pytest.raises(QueryFailed) as failed:
            warehouse.query("SELECT * FROM no_such_table", {})
    finally:
        warehouse.close()
    assert failed.value.warehouse == "lake"
    assert str(failed.value).startswith("warehouse 'lake': Catalog Error")
    assert isinstance(failed.value.__cause__, duckdb.CatalogException)
