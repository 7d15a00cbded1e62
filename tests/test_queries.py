"""Check SQL: golden text for DuckDB, and DST-correct buckets on a real DuckDB file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from monitor.config import CheckConfig, DuckDBWarehouseConfig, parse_config
from monitor.dialects import DatabricksDialect, DuckDBDialect
from monitor.queries import columns_query, freshness_query, newest_row_query, series_query
from monitor.series import normalise
from monitor.warehouse import open_warehouses
from monitor.warehouse.duckdb import DuckDBWarehouse
from tests.conftest import EngineFactory, one_check
from tests.fake_warehouse import recorded

SINCE = datetime(2026, 10, 1, tzinfo=UTC)
D = DuckDBDialect()


REVENUE: dict[str, object] = {
    "name": "revenue", "kind": "metric", "table": "analytics.fct_orders",
    "timestamp_column": "order_ts", "expression": "sum(amount)", "timezone": "America/New_York",
}  # fmt: skip


def check(**fields: object) -> CheckConfig:
    return one_check(REVENUE, **fields)


def test_metric_without_dimensions() -> None:
    q = series_query(check(where="status = 'completed'"), D, SINCE)
    assert q.sql == (
        "SELECT (date_trunc('hour', timezone($tz, CAST(\"order_ts\" AS TIMESTAMPTZ))) - "
        '(timezone($tz, CAST("order_ts" AS TIMESTAMPTZ)) - timezone(\'UTC\', CAST("order_ts" AS TIMESTAMPTZ)))) AS bucket, '
        "'' AS segment, sum(amount) AS value\n"
        'FROM "analytics"."fct_orders"\n'
        "WHERE \"order_ts\" >= $since AND (status = 'completed')\n"
        "GROUP BY 1"
    )
    assert q.params == {"since": datetime(2026, 10, 1), "tz": "America/New_York"}


def test_metric_with_dimensions_folds_the_tail_into_other() -> None:
    q = series_query(
        check(dimensions=["country", "channel"], max_segments=3, grain="day"), D, SINCE
    )
    segment = "coalesce(CAST(\"country\" AS VARCHAR), '(null)') || '|' || coalesce(CAST(\"channel\" AS VARCHAR), '(null)')"
    assert q.sql == (
        "WITH top_segments AS (\n"
        f'  SELECT {segment} AS segment FROM "analytics"."fct_orders"\n'
        '  WHERE "order_ts" >= $since\n'
        "  GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 3\n"
        ")\n"
        "SELECT kpimon_bucket AS bucket,\n"
        "  CASE WHEN GROUPING(kpimon_segment) = 1 THEN '' ELSE kpimon_segment END AS segment,\n"
        "  sum(amount) AS value\n"
        "FROM (\n"
        "  SELECT timezone('UTC', timezone($tz, CAST(date_trunc('day', timezone($tz, CAST(\"order_ts\" AS TIMESTAMPTZ))) AS TIMESTAMP))) AS kpimon_bucket,\n"
        f"    CASE WHEN {segment} IN (SELECT segment FROM top_segments) THEN {segment} ELSE '__other__' END AS kpimon_segment,\n"
        "    *\n"
        '  FROM "analytics"."fct_orders"\n'
        '  WHERE "order_ts" >= $since\n'
        ") AS kpimon_rows\n"
        "GROUP BY GROUPING SETS ((kpimon_bucket, kpimon_segment), (kpimon_bucket))"
    )


def test_row_count_freshness_and_sql() -> None:
    assert (
        "count(*) AS value" in series_query(check(kind="row_count", expression=None), D, SINCE).sql
    )
    fresh = freshness_query(
        check(kind="freshness", expression=None, timestamp_column="loaded_at"), D, SINCE
    )
    assert fresh.sql == (
        "SELECT max(timezone('UTC', CAST(\"loaded_at\" AS TIMESTAMPTZ))) AS loaded\n"
        'FROM "analytics"."fct_orders"\nWHERE "loaded_at" >= $since\n'
        "GROUP BY date_trunc('minute', timezone('UTC', CAST(\"loaded_at\" AS TIMESTAMPTZ)))\n"
        "ORDER BY 1 DESC\nLIMIT 5000"
    )
    newest = newest_row_query(check(kind="freshness", expression=None), D)
    assert newest.params == {} and "max(" in newest.sql
    sql = series_query(
        check(
            kind="sql",
            table=None,
            timestamp_column=None,
            expression=None,
            sql="select d as bucket, n as value from t where d >= :since and x = '::since';",
        ),
        D,
        SINCE,
    )
    assert sql.sql == (
        "SELECT * FROM (\nselect d as bucket, n as value from t where d >= $since and x = '::since'"
        "\n) AS kpimon_sql LIMIT 200001"
    )


def test_identifiers_are_quoted_so_names_cannot_inject() -> None:
    assert D.quote('weird"name') == '"weird""name"'
    assert D.quote("analytics.fct_orders") == '"analytics"."fct_orders"'


def orders_warehouse(path: Path, *statements: str) -> DuckDBWarehouse:
    """A DuckDB file with schema ``analytics`` made by ``statements``, opened as the daemon does."""
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA analytics")
        for statement in statements:
            con.execute(statement)
    return DuckDBWarehouse("default", DuckDBWarehouseConfig(kind="duckdb", path=str(path)))


@pytest.fixture
def dst_warehouse(tmp_path: Path) -> DuckDBWarehouse:
    return orders_warehouse(
        tmp_path / "dst.duckdb",
        "CREATE TABLE analytics.fct_orders (order_ts TIMESTAMP, amount DOUBLE, country VARCHAR)",
        # one order every 10 minutes across the autumn DST change in New York
        "INSERT INTO analytics.fct_orders SELECT TIMESTAMP '2026-10-31 00:00:00' + i * INTERVAL 10 MINUTE, 1.0,"
        " CASE WHEN i % 4 = 0 THEN 'DE' WHEN i % 4 = 3 THEN NULL ELSE 'US' END FROM range(6 * 72) t(i)",
    )


def test_hour_buckets_on_a_dst_day_are_real_hours(dst_warehouse: DuckDBWarehouse) -> None:
    c = check(timezone="America/New_York")
    q = series_query(c, dst_warehouse.dialect, SINCE)
    series = normalise(dst_warehouse.query(q.sql, q.params), c, datetime(2026, 11, 3, tzinfo=UTC))[
        ""
    ]
    # 05:00 and 06:00 UTC are both "01:00" in New York that night: two buckets of 6 orders
    assert series[pd.Timestamp("2026-11-01 05:00", tz="UTC")] == 6
    assert series[pd.Timestamp("2026-11-01 06:00", tz="UTC")] == 6
    assert set(series.to_numpy()) == {6.0}


def test_day_buckets_follow_local_midnight(dst_warehouse: DuckDBWarehouse) -> None:
    c = check(grain="day", dimensions=["country"], max_segments=1)
    q = series_query(c, dst_warehouse.dialect, SINCE)
    found = normalise(
        dst_warehouse.query(q.sql, q.params), c, datetime(2026, 11, 3, 12, tzinfo=UTC)
    )
    assert sorted(found) == ["", "US", "__other__"]  # "" is the total
    us = found["US"]
    assert list(us.index) == [
        pd.Timestamp(t, tz="UTC")
        for t in ("2026-10-30 04:00", "2026-10-31 04:00", "2026-11-01 04:00", "2026-11-02 05:00")
    ]
    # 1 November is 25 hours long in New York: 150 orders, half of them US
    assert us[pd.Timestamp("2026-11-01 04:00", tz="UTC")] == 75
    assert found[""][pd.Timestamp("2026-11-01 04:00", tz="UTC")] == 150


def test_the_total_is_the_checks_own_aggregate_over_every_row(
    dst_warehouse: DuckDBWarehouse,
) -> None:
    now = datetime(2026, 11, 3, 12, tzinfo=UTC)
    day = pd.Timestamp("2026-11-01 04:00", tz="UTC")
    for expression, total in (("sum(amount)", 150.0), ("avg(amount)", 1.0)):
        c = check(grain="day", dimensions=["country"], expression=expression, max_segments=1)
        q = series_query(c, dst_warehouse.dialect, SINCE)
        found = normalise(dst_warehouse.query(q.sql, q.params), c, now)
        # an average of the whole is not the sum of the segments' averages
        assert found[""][day] == total


def test_an_empty_dimension_value_is_a_segment_of_its_own_not_the_total(tmp_path: Path) -> None:
    warehouse = orders_warehouse(
        tmp_path / "empty.duckdb",
        "CREATE TABLE analytics.fct_orders AS SELECT TIMESTAMP '2026-11-01 12:00:00' AS order_ts,"
        " 2.0 AS amount, CASE WHEN i < 3 THEN '' ELSE 'US' END AS country FROM range(5) t(i)",
    )
    c = check(grain="day", dimensions=["country"], timezone="UTC")
    q = series_query(c, warehouse.dialect, SINCE)
    found = normalise(warehouse.query(q.sql, q.params), c, datetime(2026, 11, 3, tzinfo=UTC))
    day = pd.Timestamp("2026-11-01", tz="UTC")
    assert {s: v[day] for s, v in found.items()} == {"": 10.0, "(empty)": 6.0, "US": 4.0}


# --- Databricks: the exact text each check kind sends (never run on Databricks here) ----------

DBX = DatabricksDialect()
UNTIL = datetime(2026, 11, 26, 15, tzinfo=UTC)
DBX_HOUR = (
    "(date_trunc('HOUR', from_utc_timestamp(CAST(`order_ts` AS TIMESTAMP), :tz)) - "
    "(from_utc_timestamp(CAST(`order_ts` AS TIMESTAMP), :tz) - CAST(`order_ts` AS TIMESTAMP)))"
)
DBX_SEGMENT = "coalesce(nullif(coalesce(CAST(`country` AS STRING), '(null)'), ''), '(empty)')"
DBX_WHERE = "`order_ts` >= :since AND `order_ts` < :until AND (status = 'completed')"


def dbx(**fields: object) -> CheckConfig:
    base = {"name": "revenue", "kind": "metric", "table": "main.analytics.fct_orders",
            "timestamp_column": "order_ts", "expression": "sum(amount)", "timezone": "America/New_York",
            "where": "status = 'completed'", "dimensions": ["country"], "max_segments": 5}
    return parse_config({"warehouse": {"kind": "databricks"}, "checks": [{**base, **fields}]}).checks[0]


def test_databricks_metric_full_and_incremental() -> None:
    full = series_query(dbx(), DBX, SINCE, None, UNTIL)
    assert full.sql == (
        "WITH top_segments AS (\n"
        f"  SELECT {DBX_SEGMENT} AS segment FROM `main`.`analytics`.`fct_orders`\n"
        f"  WHERE {DBX_WHERE}\n"
        "  GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 5\n"
        ")\n"
        "SELECT kpimon_bucket AS bucket,\n"
        "  CASE WHEN GROUPING(kpimon_segment) = 1 THEN '' ELSE kpimon_segment END AS segment,\n"
        "  sum(amount) AS value\n"
        "FROM (\n"
        f"  SELECT {DBX_HOUR} AS kpimon_bucket,\n"
        f"    CASE WHEN {DBX_SEGMENT} IN (SELECT segment FROM top_segments) THEN {DBX_SEGMENT} ELSE '__other__' END AS kpimon_segment,\n"
        "    *\n"
        "  FROM `main`.`analytics`.`fct_orders`\n"
        f"  WHERE {DBX_WHERE}\n"
        ") AS kpimon_rows\n"
        "GROUP BY GROUPING SETS ((kpimon_bucket, kpimon_segment), (kpimon_bucket))"
    )
    assert full.params == {"since": datetime(2026, 10, 1), "until": datetime(2026, 11, 26, 15), "tz": "America/New_York"}
    warm = series_query(dbx(grain="day"), DBX, SINCE, ["US", "DE"], UNTIL)
    assert warm.sql == (
        "SELECT kpimon_bucket AS bucket,\n"
        "  CASE WHEN GROUPING(kpimon_segment) = 1 THEN '' ELSE kpimon_segment END AS segment,\n"
        "  sum(amount) AS value\n"
        "FROM (\n"
        "  SELECT to_utc_timestamp(date_trunc('DAY', from_utc_timestamp(CAST(`order_ts` AS TIMESTAMP), :tz)), :tz) AS kpimon_bucket,\n"
        f"    CASE WHEN {DBX_SEGMENT} IN (:s0, :s1) THEN {DBX_SEGMENT} ELSE '__other__' END AS kpimon_segment,\n"
        "    *\n"
        "  FROM `main`.`analytics`.`fct_orders`\n"
        f"  WHERE {DBX_WHERE}\n"
        ") AS kpimon_rows\n"
        "GROUP BY GROUPING SETS ((kpimon_bucket, kpimon_segment), (kpimon_bucket))"
    )
    assert warm.params["s0"] == "US" and warm.params["s1"] == "DE"
    # a re-rank: segments with rows within the segment retention first
    seen = series_query(dbx(), DBX, SINCE, None, UNTIL, seen=datetime(2026, 11, 19, 15, tzinfo=UTC))
    assert "  GROUP BY 1 ORDER BY CASE WHEN max(`order_ts`) >= :seen THEN 0 ELSE 1 END, count(*) DESC, 1 LIMIT 5\n" in seen.sql
    assert seen.params["seen"] == datetime(2026, 11, 19, 15)


def test_databricks_row_count_batch_freshness_sql_and_columns() -> None:
    rows = series_query(dbx(kind="row_count", expression=None, dimensions=[], where=None), DBX, SINCE, None, UNTIL)
    assert rows.sql == (
        f"SELECT {DBX_HOUR} AS bucket, '' AS segment, count(*) AS value\n"
        "FROM `main`.`analytics`.`fct_orders`\n"
        "WHERE `order_ts` >= :since AND `order_ts` < :until\n"
        "GROUP BY 1"
    )
    batch = [dbx(dimensions=[]), dbx(name="basket", expression="avg(amount)", dimensions=[])]
    assert "sum(amount) AS value_0,\n  avg(amount) AS value_1\n" in series_query(batch[0], DBX, SINCE, None, UNTIL, batch).sql
    fresh = freshness_query(dbx(kind="freshness", expression=None, dimensions=[], where=None,
                                timestamp_column="_loaded_at"), DBX, SINCE, UNTIL)
    assert fresh.sql == (
        "SELECT max(CAST(`_loaded_at` AS TIMESTAMP)) AS loaded\n"
        "FROM `main`.`analytics`.`fct_orders`\n"
        "WHERE `_loaded_at` >= :since AND `_loaded_at` < :until\n"
        "GROUP BY date_trunc('MINUTE', CAST(`_loaded_at` AS TIMESTAMP))\n"
        "ORDER BY 1 DESC\nLIMIT 5000"
    )
    newest = newest_row_query(dbx(kind="freshness", expression=None, dimensions=[], where=None), DBX, UNTIL)
    assert newest.sql == "SELECT max(CAST(`order_ts` AS TIMESTAMP)) AS loaded\nFROM `main`.`analytics`.`fct_orders`\nWHERE `order_ts` < :until"
    custom = series_query(dbx(kind="sql", table=None, timestamp_column=None, expression=None, dimensions=[], where=None,
                              sql="select date_trunc('DAY', ts) as bucket, count(*) as value from t where ts >= :since group by 1;"), DBX, SINCE)
    assert custom.sql == "SELECT * FROM (\nselect date_trunc('DAY', ts) as bucket, count(*) as value from t where ts >= :since group by 1\n) AS kpimon_sql LIMIT 200001"
    columns = columns_query("main.analytics.fct_orders", DBX)
    assert columns.sql == (
        "SELECT column_name, data_type\nFROM system.information_schema.columns\n"
        "WHERE lower(table_catalog) = :p0 AND lower(table_schema) = :p1 AND lower(table_name) = :p2\n"
        "ORDER BY ordinal_position"
    )


def test_an_sql_check_past_max_rows_is_that_checks_error_and_the_warehouse_stops_at_the_cap(
    tmp_path: Path, make_engine: EngineFactory
) -> None:
    """Issue 14, item 18: an unaggregated sql check read 5 million rows into 1 GB."""
    path = tmp_path / "raw.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(
            "CREATE TABLE events AS SELECT TIMESTAMP '2026-11-25 00:00:00' + i * INTERVAL 1 SECOND"
            " AS ts FROM range(5000) t(i)"
        )
    config = parse_config(
        {
            "warehouse": {"kind": "duckdb", "path": str(path)},
            "checks": [
                {"name": "raw", "kind": "sql", "max_rows": 1000, "lookback": "2d",
                 "sql": "select ts as bucket, 1 as value from events where ts >= :since"},
                {"name": "hourly", "kind": "sql", "max_rows": 2, "lookback": "2d",
                 "sql": "select date_trunc('hour', ts) as bucket, count(*) as value from events"
                        " where ts >= :since group by 1"},
            ],
        }
    )  # fmt: skip
    warehouse, counting = recorded(open_warehouses(config)["default"])
    engine = make_engine(config=config, warehouses={"default": warehouse},
                         now=datetime(2026, 11, 26, 12, tzinfo=UTC))  # fmt: skip
    result = engine.run("raw")
    assert result.outcome == "error"
    assert result.error == (
        "check raw: the query returned more than 1,000 rows (max_rows); aggregate it to one row"
        " per bucket and segment, or raise max_rows"
    )
    assert counting.rows == [1001]  # not 5,000: the warehouse stopped one row past the cap
    up = engine.metrics.registry.get_sample_value("kpimon_warehouse_up", {"warehouse": "default"})
    assert up == 1
    # two hourly rows fit a cap of 2
    assert engine.run("hourly").outcome != "error"

