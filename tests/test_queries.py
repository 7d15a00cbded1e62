"""Check SQL: golden text for DuckDB, and DST-correct buckets on a real DuckDB file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from monitor.config import DuckDBWarehouseConfig, parse_config
from monitor.dialects import DuckDBDialect
from monitor.queries import freshness_query, newest_row_query, series_query
from monitor.series import normalise
from monitor.warehouse.duckdb import DuckDBWarehouse

SINCE = datetime(2026, 10, 1, tzinfo=UTC)
D = DuckDBDialect()


def check(**fields: object):  # type: ignore[no-untyped-def]
    base = {
        "name": "revenue",
        "kind": "metric",
        "table": "analytics.fct_orders",
        "timestamp_column": "order_ts",
        "expression": "sum(amount)",
        "timezone": "America/New_York",
    }
    config = parse_config(
        {"warehouse": {"kind": "duckdb", "path": "x"}, "checks": [{**base, **fields}]}
    )
    return config.checks[0]


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
        "SELECT timezone('UTC', timezone($tz, CAST(date_trunc('day', timezone($tz, CAST(\"order_ts\" AS TIMESTAMPTZ))) AS TIMESTAMP))) AS bucket,\n"
        f"  CASE WHEN {segment} IN (SELECT segment FROM top_segments) THEN {segment} ELSE '__other__' END AS segment,\n"
        "  sum(amount) AS value\n"
        'FROM "analytics"."fct_orders"\n'
        'WHERE "order_ts" >= $since\n'
        "GROUP BY 1, 2"
    )


def test_row_count_freshness_and_sql() -> None:
    assert (
        "count(*) AS value" in series_query(check(kind="row_count", expression=None), D, SINCE).sql
    )
    fresh = freshness_query(
        check(kind="freshness", expression=None, timestamp_column="loaded_at"), D, SINCE
    )
    assert fresh.sql == (
        "SELECT DISTINCT date_trunc('minute', timezone('UTC', CAST(\"loaded_at\" AS TIMESTAMPTZ))) AS loaded\n"
        'FROM "analytics"."fct_orders"\nWHERE "loaded_at" >= $since\nORDER BY 1 DESC\nLIMIT 5000'
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
    assert sql.sql == "select d as bucket, n as value from t where d >= $since and x = '::since'"


def test_identifiers_are_quoted_so_names_cannot_inject() -> None:
    assert D.quote('weird"name') == '"weird""name"'
    assert D.quote("analytics.fct_orders") == '"analytics"."fct_orders"'


@pytest.fixture
def dst_warehouse(tmp_path: Path) -> DuckDBWarehouse:
    path = tmp_path / "dst.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA analytics")
        con.execute(
            "CREATE TABLE analytics.fct_orders (order_ts TIMESTAMP, amount DOUBLE, country VARCHAR)"
        )
        # one order every 10 minutes across the autumn DST change in New York
        con.execute(
            "INSERT INTO analytics.fct_orders SELECT TIMESTAMP '2026-10-31 00:00:00' + i * INTERVAL 10 MINUTE, 1.0,"
            " CASE WHEN i % 4 = 0 THEN 'DE' WHEN i % 4 = 3 THEN NULL ELSE 'US' END FROM range(6 * 72) t(i)"
        )
    return DuckDBWarehouse("default", DuckDBWarehouseConfig(kind="duckdb", path=str(path)))


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
    assert sorted(found) == ["US", "__other__"]
    us = found["US"]
    assert list(us.index) == [
        pd.Timestamp(t, tz="UTC")
        for t in ("2026-10-30 04:00", "2026-10-31 04:00", "2026-11-01 04:00", "2026-11-02 05:00")
    ]
    # 1 November is 25 hours long in New York: 150 orders, half of them US
    assert us[pd.Timestamp("2026-11-01 04:00", tz="UTC")] == 75
