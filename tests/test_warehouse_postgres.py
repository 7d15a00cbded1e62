"""PostgresWarehouse against a real PostgreSQL server started on loopback (tests/postgres_server)."""

# The fixtures are imported here (pytest finds them in the module); test parameters with the
# same names are what pytest passes in, hence F811 off for this file.
# ruff: noqa: F811

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
from pydantic import SecretStr

import monitor.warehouse.postgres as adapter
from monitor.config import PostgresWarehouseConfig
from monitor.errors import QueryFailed, QueryTimeout, WarehouseUnavailable
from monitor.warehouse.postgres import PostgresWarehouse
from tests import test_dialects as dialect_cases  # the rows and queries every warehouse runs
from tests.conftest import query_in_thread
from tests.postgres_server import (  # noqa: F401  (fixtures)
    PostgresServer,
    postgres_dsn,
    postgres_server,
)
from tests.tcp_proxy import TcpProxy


def _wh(dsn: str, **kw: Any) -> PostgresWarehouse:
    config = PostgresWarehouseConfig(kind="postgres", dsn=SecretStr(dsn), **kw)
    return PostgresWarehouse("pg", config)


def _setup(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in statements:
            conn.execute(s)


@pytest.fixture
def wh(postgres_dsn: str) -> Any:
    warehouse = _wh(postgres_dsn, statement_timeout=10.0, pool_size=2)
    yield warehouse
    warehouse.close()


def test_query_with_parameters_and_timestamps(wh: PostgresWarehouse, postgres_dsn: str) -> None:
    _setup(
        postgres_dsn,
        "SET TIME ZONE 'America/New_York'",
        "CREATE TABLE orders (id int, ts timestamp, tstz timestamptz, amount numeric(10,2),"
        " country text)",
        "INSERT INTO orders VALUES"
        " (1, '2026-11-01 05:30', '2026-11-01 05:30+00', 10.50, 'US'),"
        " (2, '2026-11-01 06:30', '2026-11-01 06:30+00', 2.25, NULL),"
        " (3, '2026-10-01 00:00', '2026-10-01 00:00+00', 1.00, 'DE')",
    )
    df = wh.query(
        "SELECT id, ts, tstz, amount, country FROM orders"
        " WHERE ts >= %(since)s AND id <> %(skip)s ORDER BY id",
        {"since": datetime(2026, 11, 1, tzinfo=UTC), "skip": 99},
    )
    assert list(df.columns) == ["id", "ts", "tstz", "amount", "country"]
    assert df["id"].tolist() == [1, 2]
    # both timestamp kinds come back as naive UTC, whatever the server's default time zone
    assert df["ts"].tolist() == [pd.Timestamp("2026-11-01 05:30"), pd.Timestamp("2026-11-01 06:30")]
    assert df["tstz"].tolist() == df["ts"].tolist()
    assert df["tstz"].dt.tz is None
    assert df["amount"].dtype == "float64"
    assert df["amount"].tolist() == [10.5, 2.25]
    assert df["country"].tolist()[0] == "US" and pd.isna(df["country"].tolist()[1])
    empty = wh.query("SELECT ts FROM orders WHERE false", {})
    assert list(empty.columns) == ["ts"] and empty.empty


@pytest.mark.parametrize("column_type", ["timestamp", "timestamptz"])
def test_bucket_expression_across_dst(
    wh: PostgresWarehouse,
    postgres_dsn: str,
    column_type: str,
) -> None:
    _setup(postgres_dsn, f"CREATE TABLE events (ts {column_type})")
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        for ts, _, _ in dialect_cases.DST_ROWS:
            conn.execute("INSERT INTO events VALUES (%s)", (ts,))
    assert dialect_cases.dst_buckets(wh, "events") == sorted(dialect_cases.DST_ROWS)


def test_half_hour_offset_zone(wh: PostgresWarehouse) -> None:
    d = wh.dialect
    ts = "CAST('2026-06-01 05:10:00' AS timestamp)"
    df = wh.query(f"SELECT {d.bucket(ts, 'hour', d.param('tz'))} AS b", {"tz": "Asia/Kolkata"})
    assert df["b"].tolist() == [pd.Timestamp("2026-06-01 04:30")]  # 10:00 IST


def test_sql_error_is_query_failed_with_the_server_message(wh: PostgresWarehouse) -> None:
    with pytest.raises(QueryFailed, match='relation "missing_table" does not exist'):
        wh.query("SELECT * FROM missing_table", {})
    # the connection went back to the pool in a usable state
    assert wh.query("SELECT 1 AS one", {})["one"].tolist() == [1]


def test_literal_percent_signs_need_no_escaping(wh: PostgresWarehouse) -> None:
    df = wh.query(
        "SELECT 'a%b' LIKE 'a%%' AS doubled, 'a%b' LIKE 'a%' AS single, 7 % 4 AS modulo,"
        " %(p)s AS p, '%s' AS text",
        {"p": "x"},
    )
    assert df.iloc[0].tolist() == [True, True, 3, "x", "%s"]
    assert wh.query("SELECT 'a%b' LIKE 'a%' AS single", {})["single"].tolist() == [True]


def test_transactions_are_read_only(wh: PostgresWarehouse) -> None:
    with pytest.raises(QueryFailed, match="read-only transaction"):
        wh.query("CREATE TABLE t (x int)", {})


def test_statement_timeout(wh: PostgresWarehouse) -> None:
    started = time.monotonic()
    with pytest.raises(QueryTimeout, match="statement timeout"):
        wh.query("SELECT pg_sleep(10)", {}, timeout=0.3)
    assert time.monotonic() - started < 3
    assert wh.query("SELECT 2 AS two", {})["two"].tolist() == [2]


def test_close_cancels_running_statements(postgres_dsn: str) -> None:
    wh = _wh(postgres_dsn, statement_timeout=30.0)
    t, outcome = query_in_thread(wh, "SELECT pg_sleep(20)")
    _wait_for(lambda: _active_sleeps(postgres_dsn) == 1)
    started = time.monotonic()
    wh.close()
    t.join(10)
    assert not t.is_alive() and time.monotonic() - started < 5
    assert len(outcome) == 1 and isinstance(outcome[0], WarehouseUnavailable)
    _wait_for(lambda: _active_sleeps(postgres_dsn) == 0)
    with pytest.raises(WarehouseUnavailable, match="closed"):
        wh.query("SELECT 1", {})


def test_a_connection_hung_in_the_network_is_cut_at_its_deadline_and_frees_its_pool_slot(
    postgres_server: PostgresServer, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A network hang on one query must not keep its pool slot: the next query gets a fresh
    connection at once (issue 14, item 23)."""
    monkeypatch.setattr(adapter, "_CLIENT_GRACE", 1.0)
    proxy = TcpProxy(postgres_server.host, postgres_server.port)
    proxied = postgres_dsn.replace(f":{postgres_server.port}/", f":{proxy.port}/")
    wh = _wh(proxied, statement_timeout=1.0, pool_size=1)
    try:
        assert wh.query("SELECT 1 AS one", {})["one"].tolist() == [1]  # pooled, via the proxy
        assert proxy.freeze() == 1
        started = time.monotonic()
        hung, outcome = query_in_thread(wh, "SELECT 2 AS two")
        hung.join(15)
        took = time.monotonic() - started
        assert not hung.is_alive(), "the query still waits on the hung connection"
        assert len(outcome) == 1 and isinstance(outcome[0], QueryTimeout), outcome
        assert "no answer within the 1s statement timeout" in str(outcome[0])
        assert took < 1 + 1 + adapter._CANCEL_TIMEOUT + 1.5
        started = time.monotonic()
        assert wh.query("SELECT 3 AS three", {})["three"].tolist() == [3]
        assert time.monotonic() - started < 1
    finally:
        wh.close()
        proxy.close()


def test_unreachable_server_is_unavailable() -> None:
    wh = _wh("postgresql://postgres@127.0.0.1:9/postgres?connect_timeout=2")
    with pytest.raises(WarehouseUnavailable, match="cannot connect"):
        wh.ping()


def test_dropped_pooled_connection_is_replaced(wh: PostgresWarehouse, postgres_dsn: str) -> None:
    pid = wh.query("SELECT pg_backend_pid() AS pid", {})["pid"].tolist()[0]
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    _wait_for(lambda: not _backend_alive(postgres_dsn, pid))
    new_pid = wh.query("SELECT pg_backend_pid() AS pid", {})["pid"].tolist()[0]
    assert new_pid != pid


def test_concurrent_queries_share_a_bounded_pool(wh: PostgresWarehouse, postgres_dsn: str) -> None:
    results: list[int] = []
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            df = wh.query("SELECT %(i)s::int AS i, pg_sleep(0.2)", {"i": i})
            results.append(int(df["i"].tolist()[0]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    peak = 0
    while any(t.is_alive() for t in threads):
        peak = max(peak, _connections(postgres_dsn))
        time.sleep(0.02)
    assert not errors and sorted(results) == list(range(6))
    assert peak <= 2  # pool_size


def _wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def _scalar(dsn: str, sql: str, params: Any = None) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(sql, params).fetchone()
        return row[0] if row else None


def _active_sleeps(dsn: str) -> int:
    return int(
        _scalar(
            dsn,
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
            " AND query LIKE 'SELECT pg_sleep%%' AND pid <> pg_backend_pid()",
        )
    )


def _connections(dsn: str) -> int:
    return int(
        _scalar(
            dsn,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'kpi-monitor'",
        )
    )


def _backend_alive(dsn: str, pid: int) -> bool:
    return bool(_scalar(dsn, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)))


def test_every_check_kind_matches_duckdb(
    wh: PostgresWarehouse, postgres_dsn: str, tmp_path: Path
) -> None:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        for ddl in dialect_cases.ORDERS_DDL:
            conn.execute(ddl)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO analytics.fct_orders VALUES (%s, %s, %s, %s, %s)", dialect_cases.order_rows()
            )
    assert dialect_cases.run_check_kinds(wh) == dialect_cases.reference_results(tmp_path)
    # information_schema, as the deployment watcher reads it
    columns = wh.columns("analytics.fct_orders")
    assert list(columns) == ["order_ts", "loaded_at", "amount", "status", "country"]
    assert wh.columns("analytics.no_such_table") == {}


def test_the_postgres_example_connects_with_each_dsn_form_and_probes_each_check(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """config/postgres.example.yaml as shipped, against a real server: the URL and the
    key=value DSN both connect; `validate --connect` then runs every check's query as a query
    returning no rows, so a role without SELECT on the table fails there, named, per check."""
    from urllib.parse import urlsplit

    from monitor.cli import main
    from tests.conftest import REPO

    _setup(
        postgres_dsn,
        "CREATE SCHEMA analytics",
        "CREATE TABLE analytics.orders (order_ts timestamptz, loaded_at timestamptz,"
        " amount numeric, status text, country text)",
        "DROP ROLE IF EXISTS kpi_reader",
        "CREATE ROLE kpi_reader LOGIN",
    )
    url = urlsplit(postgres_dsn)
    keyvalue = f"host={url.hostname} port={url.port} dbname={url.path[1:]} user={url.username}"
    example = str(REPO / "config" / "postgres.example.yaml")
    for dsn in (postgres_dsn, keyvalue):
        monkeypatch.setenv("KPIMON_PG_DSN", dsn)
        assert main(["validate", "-c", example, "--connect"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[-4:] == ["warehouse default (postgres): ok", "check revenue: ok",
                            "check orders_loaded: ok", "check orders_freshness: ok"]
    monkeypatch.setenv("KPIMON_PG_DSN", keyvalue.replace(f"user={url.username}", "user=kpi_reader"))
    assert main(["validate", "-c", example, "--connect"]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out[-4] == "warehouse default (postgres): ok"  # it connects, but may not read
    assert all(line.startswith("check ") and "permission denied" in line for line in out[-3:]), out
    _setup(postgres_dsn, "GRANT USAGE ON SCHEMA analytics TO kpi_reader",
           "GRANT SELECT ON analytics.orders TO kpi_reader")
    assert main(["validate", "-c", example, "--connect"]) == 0
