"""Golden SQL text of each dialect's expressions (pure: no warehouse).

These pin what the adapters send. The Databricks text in particular is never run on Databricks in
the test suite (the local protocol server translates it for DuckDB), so this file is what says
the spelling is Databricks SQL: backticks, ``:name`` parameters, ``from_utc_timestamp`` /
``to_utc_timestamp`` and ``date_trunc('HOUR' | 'DAY', ...)``.
"""

from __future__ import annotations

import decimal
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from monitor.dialects import DatabricksDialect, Dialect, DuckDBDialect, PostgresDialect

# (UTC timestamp of a row, its hour bucket, its day bucket) in America/New_York, shared by the
# warehouse tests that evaluate the bucket expression on real data.
DST_ROWS = [
    # fall back, 2026-11-01 02:00 EDT -> 01:00 EST: the repeated 01:xx hour stays two buckets
    ("2026-11-01 03:30:00", "2026-11-01 03:00:00", "2026-10-31 04:00:00"),
    ("2026-11-01 05:30:00", "2026-11-01 05:00:00", "2026-11-01 04:00:00"),  # 01:30 EDT
    ("2026-11-01 06:30:00", "2026-11-01 06:00:00", "2026-11-01 04:00:00"),  # 01:30 EST
    ("2026-11-02 04:30:00", "2026-11-02 04:00:00", "2026-11-01 04:00:00"),  # 23:30 EST, 25h day
    ("2026-11-02 05:10:00", "2026-11-02 05:00:00", "2026-11-02 05:00:00"),
    # spring forward, 2026-03-08 02:00 EST -> 03:00 EDT: a 23-hour day
    ("2026-03-08 06:30:00", "2026-03-08 06:00:00", "2026-03-08 05:00:00"),  # 01:30 EST
    ("2026-03-08 07:30:00", "2026-03-08 07:00:00", "2026-03-08 05:00:00"),  # 03:30 EDT
    ("2026-03-09 03:30:00", "2026-03-09 03:00:00", "2026-03-08 05:00:00"),  # 23:30 EDT
    ("2026-03-09 04:30:00", "2026-03-09 04:00:00", "2026-03-09 04:00:00"),
]

DATABRICKS = DatabricksDialect()
POSTGRES = PostgresDialect()
DUCKDB = DuckDBDialect()


def test_databricks_identifiers_and_parameters() -> None:
    d = DATABRICKS
    assert d.name == "databricks"
    assert d.quote("analytics.fct_orders") == "`analytics`.`fct_orders`"
    assert d.quote("main.analytics.fct_orders") == "`main`.`analytics`.`fct_orders`"
    assert d.quote("we`ird") == "`we``ird`"
    assert d.param("since") == ":since"
    assert d.text("`country`") == "CAST(`country` AS STRING)"


def test_databricks_time_expressions() -> None:
    d = DATABRICKS
    assert d.local_time("`ts`", ":tz") == "from_utc_timestamp(CAST(`ts` AS TIMESTAMP), :tz)"
    assert d.utc_time("`ts`") == "CAST(`ts` AS TIMESTAMP)"
    assert d.local_to_utc("x", ":tz") == "to_utc_timestamp(x, :tz)"
    assert d.trunc("hour", "x") == "date_trunc('HOUR', x)"
    assert d.trunc("day", "x") == "date_trunc('DAY', x)"
    assert d.trunc("minute", "x") == "date_trunc('MINUTE', x)"


def test_databricks_buckets() -> None:
    d = DATABRICKS
    ts = d.quote("order_ts")
    assert d.bucket(ts, "hour", d.param("tz")) == (
        "(date_trunc('HOUR', from_utc_timestamp(CAST(`order_ts` AS TIMESTAMP), :tz))"
        " - (from_utc_timestamp(CAST(`order_ts` AS TIMESTAMP), :tz)"
        " - CAST(`order_ts` AS TIMESTAMP)))"
    )
    assert d.bucket(ts, "day", d.param("tz")) == (
        "to_utc_timestamp(date_trunc('DAY', from_utc_timestamp(CAST(`order_ts` AS TIMESTAMP),"
        " :tz)), :tz)"
    )


def test_postgres_identifiers_and_parameters() -> None:
    d = POSTGRES
    assert d.name == "postgres"
    assert d.quote("analytics.fct_orders") == '"analytics"."fct_orders"'
    assert d.quote('we"ird') == '"we""ird"'
    assert d.param("since") == "%(since)s"
    assert d.text('"country"') == 'CAST("country" AS text)'


def test_postgres_time_expressions() -> None:
    d = POSTGRES
    assert d.local_time('"ts"', "%(tz)s") == '(CAST("ts" AS timestamptz) AT TIME ZONE %(tz)s)'
    assert d.utc_time('"ts"') == "(CAST(\"ts\" AS timestamptz) AT TIME ZONE 'UTC')"
    assert d.local_to_utc("x", "%(tz)s") == (
        "((CAST(x AS timestamp) AT TIME ZONE %(tz)s) AT TIME ZONE 'UTC')"
    )
    assert d.trunc("hour", "x") == "date_trunc('hour', x)"
    assert d.trunc("day", "x") == "date_trunc('day', x)"


def test_postgres_buckets() -> None:
    d = POSTGRES
    ts = d.quote("order_ts")
    assert d.bucket(ts, "hour", d.param("tz")) == (
        "(date_trunc('hour', (CAST(\"order_ts\" AS timestamptz) AT TIME ZONE %(tz)s))"
        ' - ((CAST("order_ts" AS timestamptz) AT TIME ZONE %(tz)s)'
        " - (CAST(\"order_ts\" AS timestamptz) AT TIME ZONE 'UTC')))"
    )
    assert d.bucket(ts, "day", d.param("tz")) == (
        "((CAST(date_trunc('day', (CAST(\"order_ts\" AS timestamptz) AT TIME ZONE %(tz)s))"
        " AS timestamp) AT TIME ZONE %(tz)s) AT TIME ZONE 'UTC')"
    )


@pytest.mark.parametrize("dialect", [DATABRICKS, POSTGRES, DUCKDB], ids=lambda d: d.name)
def test_time_zone_is_never_inlined(dialect: Dialect) -> None:
    tz = dialect.param("tz")
    for grain in ("hour", "day"):
        sql = dialect.bucket(dialect.quote("ts"), grain, tz)
        assert "New_York" not in sql and tz in sql


# ---------------------------------------------------------------------------------------------
# Shared by the warehouse tests: every check kind's query, run on each warehouse and compared
# with the embedded DuckDB adapter on the same rows.
# ---------------------------------------------------------------------------------------------

def dst_buckets(warehouse: Any, table: str) -> list[tuple[str, str, str]]:
    """(UTC time, hour bucket, day bucket) in America/New_York of each row of ``table``'s one
    ``ts`` column, computed by ``warehouse`` with its dialect's bucket expressions: compare
    with ``sorted(DST_ROWS)``."""
    d = warehouse.dialect
    ts = d.quote("ts")
    df = warehouse.query(
        f"SELECT {d.utc_time(ts)} AS ts, {d.bucket(ts, 'hour', d.param('tz'))} AS hour,"
        f" {d.bucket(ts, 'day', d.param('tz'))} AS day FROM {table} ORDER BY 1",
        {"tz": "America/New_York"},
    )
    return [(str(r.ts), str(r.hour), str(r.day)) for r in df.itertuples()]


ORDERS_DDL = (
    "CREATE SCHEMA IF NOT EXISTS analytics",
    "CREATE TABLE analytics.fct_orders (order_ts TIMESTAMP, loaded_at TIMESTAMP,"
    " amount DECIMAL(10, 2), status VARCHAR(16), country VARCHAR(8))",
)
KIND_NOW = datetime(2026, 11, 3, 12, tzinfo=UTC)
KIND_SINCE = datetime(2026, 10, 30, tzinfo=UTC)


def order_rows() -> list[tuple[datetime, datetime, decimal.Decimal, str, str | None]]:
    """Orders every 20 minutes over the 2026-11-01 DST weekend (naive UTC timestamps)."""
    rows = []
    start = datetime(2026, 10, 30)
    countries = ["US", "DE", "US", "FR", None, "US", "DE"]
    for i in range(4 * 24 * 3):
        ts = start + timedelta(minutes=20 * i)
        rows.append(
            (
                ts,
                ts + timedelta(minutes=3),
                decimal.Decimal(i % 7) + decimal.Decimal("0.25"),
                "completed" if i % 3 else "cancelled",
                countries[i % len(countries)],
            )
        )
    return rows


def kind_checks() -> list[Any]:
    """One check of each kind (metric with dimensions, row_count, freshness, sql)."""
    from monitor.config import parse_config

    base = {"table": "analytics.fct_orders", "timezone": "America/New_York"}
    checks = [
        {
            **base,
            "name": "revenue",
            "kind": "metric",
            "timestamp_column": "order_ts",
            "expression": "sum(amount)",
            "where": "status = 'completed'",
            "dimensions": ["country"],
            "max_segments": 2,
        },
        {
            **base,
            "name": "rows",
            "kind": "row_count",
            "timestamp_column": "loaded_at",
            "grain": "day",
        },
        {**base, "name": "fresh", "kind": "freshness", "timestamp_column": "loaded_at"},
        {
            "name": "daily",
            "kind": "sql",
            "grain": "day",
            "timezone": "UTC",
            "sql": "select date_trunc('day', order_ts) as bucket, count(*) as value\n"
            "from analytics.fct_orders where order_ts >= :since group by 1",
        },
    ]
    config = parse_config({"warehouse": {"kind": "duckdb", "path": "x"}, "checks": checks})
    return list(config.checks)


def run_check_kinds(warehouse: Any) -> dict[str, Any]:
    """Each check kind's queries on ``warehouse``, normalised as the engine reads them."""
    from monitor.queries import freshness_query, newest_row_query, series_query
    from monitor.series import normalise

    out: dict[str, Any] = {}
    for check in kind_checks():
        if check.kind == "freshness":
            q = freshness_query(check, warehouse.dialect, KIND_SINCE)
            loaded = warehouse.query(q.sql, q.params)["loaded"]
            out["fresh"] = [str(v) for v in loaded]
            q = newest_row_query(check, warehouse.dialect)
            out["newest"] = [str(v) for v in warehouse.query(q.sql, q.params)["loaded"]]
            continue
        queries = {check.name: series_query(check, warehouse.dialect, KIND_SINCE)}
        if check.dimensions:  # a warm run's query: the segments ranked before, and the total
            queries[f"{check.name}_warm"] = series_query(check, warehouse.dialect, KIND_SINCE, ["US"])
        for name, q in queries.items():
            series = normalise(warehouse.query(q.sql, q.params), check, KIND_NOW)
            out[name] = {
                seg: [(str(k), round(float(v), 6)) for k, v in s.items()] for seg, s in series.items()
            }
    return out


def reference_results(tmp_path: Any) -> dict[str, Any]:
    """run_check_kinds on the embedded DuckDB adapter with the same rows."""
    import duckdb

    from monitor.config import DuckDBWarehouseConfig
    from monitor.warehouse.duckdb import DuckDBWarehouse

    path = tmp_path / "reference.duckdb"
    with duckdb.connect(str(path)) as con:
        for ddl in ORDERS_DDL:
            con.execute(ddl)
        con.executemany("INSERT INTO analytics.fct_orders VALUES (?, ?, ?, ?, ?)", order_rows())
    wh = DuckDBWarehouse("reference", DuckDBWarehouseConfig(kind="duckdb", path=str(path)))
    return run_check_kinds(wh)


def test_check_kinds_reference_is_meaningful(tmp_path: Any) -> None:
    ref = reference_results(tmp_path)
    assert set(ref) == {"revenue", "revenue_warm", "rows", "fresh", "newest", "daily"}
    assert set(ref["revenue"]) == {"", "US", "DE", "__other__"}  # "" is the total
    assert set(ref["revenue_warm"]) == {"", "US", "__other__"}
    for read in ("revenue", "revenue_warm"):
        segments = [dict(points) for name, points in ref[read].items() if name]
        for bucket, total in ref[read][""]:
            assert total == pytest.approx(sum(s.get(bucket, 0.0) for s in segments))
    assert len(ref["rows"][""]) >= 4 and ref["fresh"] and ref["newest"]
