"""Faults: while its parts fail, the monitor stays up, keeps the other checks going, declares
no anomaly from missing data, loses no notification and sends none twice, tells the truth on
/readyz and in its health metrics, and recovers by itself.

Real components throughout: DuckDB files, the Databricks protocol server, PostgreSQL, the local
Slack Web API server, SQLite state files held by a second connection, and the daemon as a
subprocess where the process lifecycle (signals, exit codes, restarts) is what is tested. The
logic is driven through the Engine with an injected clock wherever that suffices.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from monitor.alerts.alertmanager import AlertmanagerClient
from monitor.alerts.dispatch import Dispatcher
from monitor.alerts.slack import SlackChannel
from monitor.config import Config, DatabricksWarehouseConfig, parse_config
from monitor.daemon import Daemon
from monitor.demo import INCIDENTS
from monitor.engine import Engine
from monitor.exporter import Metrics
from monitor.store import StateStore
from monitor.warehouse.databricks import DatabricksWarehouse
from tests.alertmanager_server import Alertmanager
from tests.alertmanager_server import binaries as alertmanager_binaries
from tests.conftest import (
    DEMO_NOW,
    Clock,
    EngineFactory,
    demo_document,
    free_port,
    slack_daemon_config,
    write_config,
)
from tests.daemon_process import KPI_MONITOR, DaemonProcess
from tests.databricks_server import DatabricksProtocolServer, databricks_server  # noqa: F401
from tests.postgres_server import postgres_dsn, postgres_server  # noqa: F401
from tests.slack_server import SlackServer

# pytest passes the imported fixtures in as parameters of the same name
# ruff: noqa: F811

NOW = datetime(2026, 11, 26, 15, 20, tzinfo=UTC)  # a Thursday afternoon, as in the demo tests


# --- a small hourly warehouse -----------------------------------------------------------------


def hourly_rows(now: datetime = NOW, weeks: int = 3) -> list[tuple[datetime, float]]:
    """One row per hour (naive UTC) with a daily cycle and a little deterministic noise."""
    start = (now - timedelta(weeks=weeks)).replace(minute=0, second=0, microsecond=0)
    rows = []
    ts = start
    i = 0
    while ts < now.replace(minute=0):
        level = 100 + 30 * math.sin(2 * math.pi * ts.hour / 24) + (i * 7919 % 11) - 5
        rows.append((ts.replace(tzinfo=None), round(level, 2)))
        ts += timedelta(hours=1)
        i += 1
    return rows


def build_visits(path: Path, now: datetime = NOW) -> Path:
    """A DuckDB file with ``kpi.visits(ts, amount)``: a healthy hourly series up to ``now``."""
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA kpi")
        con.execute("CREATE TABLE kpi.visits (ts TIMESTAMP, amount DOUBLE)")
        con.executemany("INSERT INTO kpi.visits VALUES (?, ?)", hourly_rows(now))
    return path


def visits_check(name: str = "visits", **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "metric",
        "table": "kpi.visits",
        "timestamp_column": "ts",
        "expression": "sum(amount)",
        "lookback": "3w",
        **fields,
    }


def sql_check(name: str, sql: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "kind": "sql", "sql": sql, "lookback": "3w", **fields}


def duckdb_config(directory: Path, checks: list[dict[str, Any]], **extra: Any) -> Config:
    document = {
        "warehouse": {"kind": "duckdb", "path": str(directory / "wh.duckdb")},
        "state": {"path": str(directory / "state.db")},
        "checks": checks,
        **extra,
    }
    return parse_config(document, "faults.yaml")


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def series_samples(metrics: Metrics, name: str, check: str) -> list[float]:
    """Every sample of a per-series metric for one check (empty while no series was judged)."""
    return [
        s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == name and s.labels.get("check") == check
    ]


# --- talking to a daemon over HTTP -----------------------------------------------------------


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``/metrics`` as {(sample name, labels): value}, parsed with Prometheus' own parser."""
    status, body = http_get(port, "/metrics")
    assert status == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def sample_of(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    wanted = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and wanted <= ls]
    return found[0] if len(found) == 1 else (None if not found else sum(found))


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# === warehouse faults ==========================================================================


def test_warehouse_missing_at_start_is_an_error_until_it_appears_then_the_daemon_recovers_alone(
    tmp_path: Path, live_demo_warehouse: Path
) -> None:
    document = demo_document(tmp_path)  # points at tmp_path/demo.duckdb, which does not exist
    document["defaults"]["schedule"] = "1s"
    document["checks"] = [c for c in document["checks"] if c["name"] in ("signups", "orders_rows")]
    daemon = Daemon(parse_config(document), host="127.0.0.1", port=0)
    daemon.start()
    try:
        port = daemon.port
        wait_until(
            lambda: sample_of(
                scrape(port), "kpimon_check_runs_total", check="signups", outcome="error"
            ),
            20,
            "a failed run of signups",
        )
        samples = scrape(port)
        assert sample_of(samples, "kpimon_warehouse_up", warehouse="default") == 0
        assert sample_of(samples, "kpimon_check_runs_total", check="signups", outcome="ok") == 0
        assert (
            sample_of(samples, "kpimon_check_runs_total", check="signups", outcome="anomaly") == 0
        )
        # nothing is judged from a warehouse that is not there: no verdict, no anomaly
        assert not [k for k in samples if k[0] == "kpimon_anomaly"]
        # the process serves, and readiness is about the scheduler and the state store
        assert http_get(port, "/healthz")[0] == 200
        status, body = http_get(port, "/readyz")
        assert (status, json.loads(body)) == (200, {"status": "ready"})
        status, body = http_get(port, "/api/v1/checks/signups")
        last = json.loads(body)["last_run"]
        assert last["outcome"] == "error" and "does not exist" in last["error"]

        shutil.copy(live_demo_warehouse, tmp_path / "demo.duckdb")

        def recovered() -> dict[Any, float] | None:
            s = scrape(port)
            anomaly = sample_of(s, "kpimon_check_runs_total", check="signups", outcome="anomaly")
            ok = sample_of(s, "kpimon_check_runs_total", check="orders_rows", outcome="ok")
            return s if anomaly and ok else None

        samples = wait_until(recovered, 30, "runs after the warehouse appeared")
        assert sample_of(samples, "kpimon_warehouse_up", warehouse="default") == 1
        assert sample_of(samples, "kpimon_anomaly", check="signups", segment="") == 1, (
            "the demo's signups incident fires once the data is there"
        )
        assert sample_of(samples, "kpimon_anomaly", check="orders_rows", segment="") == 0
        assert http_get(port, "/readyz")[0] == 200
    finally:
        daemon.stop()


@pytest.fixture
def visits_on_databricks(
    databricks_server: DatabricksProtocolServer,
) -> Iterator[DatabricksProtocolServer]:
    databricks_server.execute("CREATE SCHEMA kpi")
    databricks_server.execute("CREATE TABLE kpi.visits (ts TIMESTAMP, amount DOUBLE)")
    databricks_server.load_rows("kpi.visits", hourly_rows())
    yield databricks_server


def databricks_engine(
    srv: DatabricksProtocolServer, make_engine: EngineFactory, statement_timeout: float = 10.0
) -> tuple[Engine, Metrics, DatabricksWarehouse]:
    config = parse_config(
        {
            "warehouse": {"kind": "duckdb", "path": "unused"},  # replaced below
            "state": {"path": "unused.db"},  # the engine's store is in memory
            "checks": [visits_check()],
        }
    )
    warehouse = DatabricksWarehouse(
        "default",
        DatabricksWarehouseConfig(
            kind="databricks",
            server_hostname="127.0.0.1",
            http_path=srv.http_path,
            access_token=SecretStr(srv.token),
            connection_uri=srv.connection_uri,
            statement_timeout=statement_timeout,
            retries=0,
        ),
    )
    engine = make_engine(config=config, warehouses={"default": warehouse}, now=NOW)
    return engine, engine.metrics, warehouse


def test_warehouse_lost_mid_run_is_an_error_not_an_anomaly_and_the_next_run_recovers(
    visits_on_databricks: DatabricksProtocolServer, make_engine: EngineFactory
) -> None:
    srv = visits_on_databricks
    engine, metrics, warehouse = databricks_engine(srv, make_engine)
    try:
        assert engine.run("visits").outcome == "ok"
        assert value(metrics, "kpimon_warehouse_up", warehouse="default") == 1
        srv.inject("*", times=1000, drop=True)  # every connection is cut without an answer
        started = time.monotonic()
        result = engine.run("visits")
        assert time.monotonic() - started < 30
        assert result.outcome == "error" and result.error
        assert value(metrics, "kpimon_warehouse_up", warehouse="default") == 0
        assert value(metrics, "kpimon_check_runs_total", check="visits", outcome="error") == 1
        assert series_samples(metrics, "kpimon_anomaly", "visits") == [0]
        assert not engine.alert_state("visits", "").firing
        assert engine.store.outbox.pending_count() == 0
        srv.clear_faults()
        assert engine.run("visits").outcome == "ok"
        assert value(metrics, "kpimon_warehouse_up", warehouse="default") == 1
    finally:
        warehouse.close()


def test_a_statement_hanging_past_the_timeout_is_cancelled_and_counted_as_warehouse_down(
    visits_on_databricks: DatabricksProtocolServer, make_engine: EngineFactory
) -> None:
    srv = visits_on_databricks
    engine, metrics, warehouse = databricks_engine(srv, make_engine, statement_timeout=1.0)
    try:
        srv.hang_statement(seconds=60)
        started = time.monotonic()
        result = engine.run("visits")
        took = time.monotonic() - started
        assert result.outcome == "error" and "cancel" in (result.error or "")
        assert took < 10, f"the run took {took:.1f}s for a 1s statement timeout"
        assert value(metrics, "kpimon_warehouse_up", warehouse="default") == 0
        assert series_samples(metrics, "kpimon_anomaly", "visits") == []
        wait_until(lambda: not srv.running_operations(), 10, "the hung statement to be cancelled")
        assert engine.run("visits").outcome == "ok"
        assert value(metrics, "kpimon_warehouse_up", warehouse="default") == 1
    finally:
        warehouse.close()


def test_a_postgres_query_past_its_statement_timeout_is_an_error_and_the_warehouse_down(
    postgres_dsn: str, tmp_path: Path, make_engine: EngineFactory
) -> None:
    config = parse_config(
        {
            "warehouse": {"kind": "postgres", "dsn": postgres_dsn, "statement_timeout": 0.5},
            "state": {"path": str(tmp_path / "state.db")},
            "checks": [
                sql_check(
                    "sleepy",
                    "select now() - interval '2 hours' as bucket, 1.0 as value"
                    " from pg_sleep(5) where now() >= :since",
                )
            ],
        }
    )
    engine = make_engine(config=config, store=tmp_path / "state.db", now=NOW)
    metrics = engine.metrics
    started = time.monotonic()
    result = engine.run("sleepy")
    assert time.monotonic() - started < 4
    assert result.outcome == "error"
    assert value(metrics, "kpimon_warehouse_up", warehouse="default") == 0
    assert series_samples(metrics, "kpimon_anomaly", "sleepy") == []


def test_one_checks_bad_sql_fails_that_check_only(
    demo_dir: Path, make_engine: EngineFactory
) -> None:
    document = demo_document(demo_dir)
    document["checks"].insert(
        0,
        sql_check(
            "broken",
            "select bucket, value from analytics.no_such_table where bucket >= :since",
        ),
    )
    config = parse_config(document)
    engine = make_engine(config=config, store=demo_dir / "state.db", now=DEMO_NOW)
    metrics = engine.metrics
    outcomes = {c.name: engine.run(c.name) for c in config.checks}
    assert outcomes["broken"].outcome == "error"
    assert "no_such_table" in (outcomes["broken"].error or "")
    firing = {
        (s.check, s.segment) for c in config.checks for s in engine.series(c.name) if s.state.firing
    }
    assert firing == INCIDENTS
    assert {n for n, r in outcomes.items() if r.outcome == "error"} == {"broken"}
    assert value(metrics, "kpimon_check_runs_total", check="broken", outcome="error") == 1
    assert value(metrics, "kpimon_warehouse_up", warehouse="default") == 1
    assert value(metrics, "kpimon_check_last_success_timestamp_seconds", check="broken") in (
        None,
        0,
    )


def visits_engine(kind: str, request: pytest.FixtureRequest, tmp_path: Path,
                  checks: list[dict[str, Any]]) -> tuple[Engine, Metrics]:  # fmt: skip
    """An engine on ``kpi.visits`` (hourly_rows) in a DuckDB file, a PostgreSQL database or
    the Databricks protocol server."""
    state = {"path": str(tmp_path / "state.db")}
    if kind == "databricks":
        srv = request.getfixturevalue("visits_on_databricks")
        warehouse: dict[str, Any] = {
            "kind": "databricks", "server_hostname": "127.0.0.1", "http_path": srv.http_path,
            "access_token": srv.token, "connection_uri": srv.connection_uri, "retries": 0,
        }  # fmt: skip
    elif kind == "postgres":
        dsn = request.getfixturevalue("postgres_dsn")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA kpi")
            conn.execute("CREATE TABLE kpi.visits (ts timestamp, amount double precision)")
            with conn.cursor() as cursor:
                cursor.executemany("INSERT INTO kpi.visits VALUES (%s, %s)", hourly_rows())
        warehouse = {"kind": "postgres", "dsn": dsn}
    else:
        build_visits(tmp_path / "wh.duckdb")
        warehouse = {"kind": "duckdb", "path": str(tmp_path / "wh.duckdb")}
    config = parse_config({"warehouse": warehouse, "state": state, "checks": checks})
    make_engine: EngineFactory = request.getfixturevalue("make_engine")
    engine = make_engine(config=config, store=tmp_path / "state.db", now=NOW)
    return engine, engine.metrics


@pytest.mark.parametrize("kind", ["duckdb", "postgres", "databricks"])
@pytest.mark.parametrize("first", ["broken", "visits"])
def test_one_checks_bad_sql_fails_that_check_only_when_its_query_is_shared(
    kind: str, first: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    checks = [
        visits_check(),
        visits_check("broken", expression="sum(amount_typo)"),
        visits_check("peak", expression="max(amount)"),
    ]
    engine, metrics = visits_engine(kind, request, tmp_path, checks)
    order = [first] + [c["name"] for c in checks if c["name"] != first]
    for _ in range(2):  # a cold and a warm run each
        results = {name: engine.run(name) for name in order}
        assert results["broken"].outcome == "error"
        assert "amount_typo" in (results["broken"].error or "")
        assert results["visits"].outcome == "ok", results["visits"].error
        assert results["peak"].outcome == "ok", results["peak"].error
        assert value(metrics, "kpimon_warehouse_up", warehouse="default") == 1
    assert series_samples(metrics, "kpimon_value", "visits") != []
    assert series_samples(metrics, "kpimon_value", "peak") != []
    assert series_samples(metrics, "kpimon_value", "broken") == []
    assert value(metrics, "kpimon_check_runs_total", check="visits", outcome="error") == 0


# --- malformed results -------------------------------------------------------------------------

GOOD = "select date_trunc('hour', ts) as bucket, amount as value from kpi.visits where ts >= :since"
MALFORMED = {
    "a string value": (
        "select date_trunc('hour', ts) as bucket, 'lots' as value"
        " from kpi.visits where ts >= :since",
        "is not a number",
    ),
    "no value column": (
        "select date_trunc('hour', ts) as bucket, amount as amount"
        " from kpi.visits where ts >= :since",
        "no value column",
    ),
    "no bucket column": (
        "select ts as hour, amount as value from kpi.visits where ts >= :since",
        "no bucket column",
    ),
    "a bucket that is not a time": (
        "select 'yesterday-ish' as bucket, amount as value from kpi.visits where ts >= :since",
        "not a timestamp",
    ),
    "duplicate buckets": (
        f"{GOOD} union all {GOOD}",
        "several rows for bucket",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_result_is_an_error_of_that_check_never_an_anomaly(
    case: str, tmp_path: Path, make_engine: EngineFactory
) -> None:
    build_visits(tmp_path / "wh.duckdb")
    sql, message = MALFORMED[case]
    config = duckdb_config(tmp_path, [visits_check("healthy"), sql_check("odd", sql)])
    engine = make_engine(config=config, store=tmp_path / "state.db", now=NOW)
    metrics = engine.metrics
    assert engine.run("healthy").outcome == "ok"
    result = engine.run("odd")
    assert result.outcome == "error"
    assert message in (result.error or ""), result.error
    assert value(metrics, "kpimon_check_runs_total", check="odd", outcome="error") == 1
    assert value(metrics, "kpimon_check_runs_total", check="odd", outcome="anomaly") == 0
    assert series_samples(metrics, "kpimon_anomaly", "odd") == []
    assert engine.series("odd") == [] and engine.store.outbox.pending_count() == 0
    # a malformed answer is still an answer: the warehouse is up
    assert value(metrics, "kpimon_warehouse_up", warehouse="default") == 1


def test_a_malformed_answer_does_not_report_the_warehouse_down(
    tmp_path: Path, make_engine: EngineFactory
) -> None:
    """The first query of a fresh daemon answers with a malformed result: the warehouse
    answered, so ``kpimon_warehouse_up`` must not read 0 (an alert rule on it would page)."""
    build_visits(tmp_path / "wh.duckdb")
    sql, _ = MALFORMED["duplicate buckets"]
    config = duckdb_config(tmp_path, [sql_check("odd", sql)])
    engine = make_engine(config=config, store=tmp_path / "state.db", now=NOW)
    metrics = engine.metrics
    assert engine.run("odd").outcome == "error"
    assert value(metrics, "kpimon_warehouse_up", warehouse="default") == 1


NULLS_FROM = (NOW - timedelta(hours=8)).replace(tzinfo=None, minute=0)
RECENT_NULLS = (
    "select date_trunc('hour', ts) as bucket,"
    f" case when ts >= timestamp '{NULLS_FROM:%Y-%m-%d %H:%M:%S}' then null else amount end"
    " as value from kpi.visits where ts >= :since"
)


def test_null_values_are_missing_data_never_an_anomaly(
    tmp_path: Path, make_engine: EngineFactory
) -> None:
    build_visits(tmp_path / "wh.duckdb")
    all_null = (
        "select date_trunc('hour', ts) as bucket, null as value from kpi.visits where ts >= :since"
    )
    config = duckdb_config(
        tmp_path, [sql_check("recent_nulls", RECENT_NULLS), sql_check("all_nulls", all_null)]
    )
    engine = make_engine(config=config, store=tmp_path / "state.db", now=NOW)
    metrics = engine.metrics
    assert engine.run("recent_nulls").outcome == "ok"
    assert engine.run("all_nulls").outcome == "no_data"
    for name in ("recent_nulls", "all_nulls"):
        assert 1 not in series_samples(metrics, "kpimon_anomaly", name), name
    assert engine.store.outbox.pending_count() == 0


def test_null_values_are_not_taken_for_zeros_where_missing_buckets_are_filled(
    tmp_path: Path,
    make_engine: EngineFactory,
) -> None:
    """``fill_missing: zero`` says what a bucket *without rows* is; rows whose value is NULL
    are missing data, and the issue's rule is that no anomaly is declared from missing data."""
    build_visits(tmp_path / "wh.duckdb")
    config = duckdb_config(tmp_path, [sql_check("nulls", RECENT_NULLS, fill_missing="zero")])
    engine = make_engine(config=config, store=tmp_path / "state.db", now=NOW)
    metrics = engine.metrics
    result = engine.run("nulls")
    assert result.outcome != "anomaly", "NULL values were filled with 0 and alerted on"
    assert 1 not in series_samples(metrics, "kpimon_anomaly", "nulls")
    assert engine.store.outbox.pending_count() == 0


# === load: many checks at once ==================================================================


def test_many_checks_running_at_once_never_fail_with_an_internal_error(
    tmp_path: Path, make_engine: EngineFactory
) -> None:
    """The scheduler runs up to ``max_workers`` checks at once on one Engine: concurrent runs
    of different checks must not trip over each other's models (fast thread switching makes
    any unguarded shared state show up within a couple of passes)."""
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as con:
        con.execute("CREATE SCHEMA kpi")
        con.execute(
            "CREATE TABLE kpi.shop AS SELECT ts, 's' || g AS seg, 100 + g + hour(ts) AS amount"
            " FROM range(TIMESTAMP '2026-11-12', TIMESTAMP '2026-11-26 15:00', INTERVAL 1 HOUR)"
            " r(ts), range(12) s(g)"
        )
    checks: list[dict[str, Any]] = [
        {
            "name": f"shop_{i}",
            "kind": "metric",
            "table": "kpi.shop",
            "timestamp_column": "ts",
            "expression": f"sum(amount) + {i}",
            "dimensions": ["seg"],
            "lookback": "2w",
        }
        for i in range(40)
    ]
    config = duckdb_config(tmp_path, checks)
    engine = make_engine(config=config, store=tmp_path / "state.db", now=NOW)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(config.scheduler.max_workers) as pool:
            results = [
                r for _ in range(2) for r in pool.map(engine.run, [c["name"] for c in checks])
            ]
    finally:
        sys.setswitchinterval(switch)
    errors = sorted({r.error for r in results if r.outcome == "error"}, key=str)
    assert errors == [], errors
    assert sum(len(engine.series(c["name"])) for c in checks) == 40 * (12 + 1)  # and the totals


# === Slack faults ==============================================================================


def slack_engine(
    make_engine: EngineFactory, demo_dir: Path, api_url: str, token: str, clock: Clock
) -> tuple[Engine, Metrics, Dispatcher]:
    config = parse_config(
        demo_document(
            demo_dir,
            token=token,
            api_url=api_url,
            channel="#data-alerts",
            timeout=2,
            group_wait="0s",
        )
    )
    assert config.slack is not None
    engine, dispatcher = run_demo(
        make_engine, config, demo_dir, SlackChannel(config.slack), None,
        clock=lambda: DEMO_NOW, delivery=clock,
    )  # fmt: skip
    return engine, engine.metrics, dispatcher


def run_demo(
    make_engine: EngineFactory,
    config: Config,
    demo_dir: Path,
    slack: SlackChannel | None,
    alertmanager: AlertmanagerClient | None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    delivery: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> tuple[Engine, Dispatcher]:
    """Every check run once (judged at ``clock``), its notifications queued for the given sinks
    (delivered at ``delivery``)."""
    store = StateStore(demo_dir / "state.db")
    metrics = Metrics()
    dispatcher = Dispatcher(config, store, metrics, slack, alertmanager, delivery)
    engine = make_engine(
        config=config, store=store, metrics=metrics, channels=dispatcher.channels, clock=clock
    )
    for check in config.checks:
        engine.run(check.name)
    return engine, dispatcher


def incident_of(text: str) -> tuple[str, str]:
    """(check, segment) from an alert's fallback text, e.g. 'CRITICAL: revenue [DE] is ...'."""
    head = text.split(" is ")[0].split(": ", 1)[1]
    check, _, segment = head.partition(" [")
    return check, segment.rstrip("]")


def incidents_in(text: str) -> list[tuple[str, str]]:
    """Every (check, segment) a message announces: one alert, or the bullets of a message for
    series that opened together (revenue's total and Germany)."""
    lines = text.splitlines()
    if len(lines) == 1:
        return [incident_of(text)]
    return [incident_of(line.removeprefix("• ")) for line in lines if line.startswith("• ")]


# revenue's total and Germany open together: one message for the two
MESSAGES = len(INCIDENTS) - 1


@pytest.mark.parametrize(
    ("fault", "tries"),
    # slack-sdk tries a rate-limited post three times, a 503 once (Slack may have taken it), and
    # a connection that never opens three times
    [("429", 3), ("503", 1), ("unreachable", 0)],
)
def test_slack_outage_keeps_notifications_in_the_outbox_and_delivers_each_once_when_back(
    fault: str, tries: int, demo_dir: Path, slack: SlackServer, make_engine: EngineFactory
) -> None:
    port = free_port() if fault == "unreachable" else slack.port  # nothing listens there yet
    if fault != "unreachable":
        slack.fail_next(10_000, int(fault), retry_after=0 if fault == "429" else None)
    clock = Clock()
    engine, metrics, dispatcher = slack_engine(
        make_engine, demo_dir, f"http://127.0.0.1:{port}/api/", slack.token, clock
    )
    store = engine.store

    assert dispatcher.deliver_pending() == 0
    assert store.outbox.pending_count() == len(INCIDENTS), "every alert is kept for a retry"
    # the first message failed: revenue's, for its total and Germany
    assert value(metrics, "kpimon_alerts_sent_total", channel="slack", outcome="error") == 2
    assert not value(metrics, "kpimon_alerts_sent_total", channel="slack", outcome="ok")
    assert len(slack.messages()) == tries, "the round stops at the first failure"

    back = SlackServer(port=port).start() if fault == "unreachable" else slack  # Slack is back
    try:
        slack.clear_failures()
        clock.advance(10)  # past the failed alert's backoff
        assert dispatcher.deliver_pending() == len(INCIDENTS)
        assert dispatcher.deliver_pending() == 0
        engine.run("revenue")  # a later run does not queue the same episode again
        assert dispatcher.deliver_pending() == 0
        assert store.outbox.pending_count() == 0
        assert sorted(i for m in back.posted() for i in incidents_in(m.text)) == sorted(INCIDENTS)
    finally:
        if back is not slack:
            back.stop()
    assert value(metrics, "kpimon_alerts_sent_total", channel="slack", outcome="ok") == len(
        INCIDENTS
    )


def test_alertmanager_down_keeps_alerts_queued_and_posts_them_once_it_is_back(
    tmp_path: Path, live_demo_warehouse: Path, tmp_path_factory: pytest.TempPathFactory,
    make_engine: EngineFactory,
) -> None:
    binary, _ = alertmanager_binaries()
    shutil.copy(live_demo_warehouse, tmp_path / "demo.duckdb")
    demo_dir = tmp_path  # the live demo: Alertmanager refuses alerts that start in its future
    config = parse_config(
        {
            **demo_document(demo_dir),
            "alertmanager": {"urls": [f"http://127.0.0.1:{free_port()}"], "timeout": 2},
        }
    )
    assert config.alertmanager is not None
    client = AlertmanagerClient(config.alertmanager)
    clock = Clock()
    engine, dispatcher = run_demo(make_engine, config, demo_dir, None, client, delivery=clock)
    store, metrics = engine.store, engine.metrics
    assert dispatcher.deliver_pending() == 0  # nobody listens
    assert len(store.outbox.pending("alertmanager")) == len(INCIDENTS)
    assert value(metrics, "kpimon_alerts_sent_total", channel="alertmanager", outcome="error") == 1

    manager = Alertmanager(binary, tmp_path_factory.mktemp("alertmanager"))
    manager.start({"route": {"receiver": "null"}, "receivers": [{"name": "null"}]})
    try:
        client.urls = [manager.url]  # Alertmanager is back
        clock.advance(10)  # past the backoff
        assert dispatcher.deliver_pending() == len(INCIDENTS)
        assert dispatcher.deliver_pending() == 0
        assert store.outbox.pending("alertmanager") == []
        with urllib.request.urlopen(f"{manager.url}/api/v2/alerts", timeout=5) as response:
            alerts = json.loads(response.read())
    finally:
        manager.stop()
    assert sorted((a["labels"]["check"], a["labels"].get("segment", "")) for a in alerts) == sorted(
        INCIDENTS
    )


# === state store faults ==========================================================================


def test_a_locked_state_store_fails_the_run_and_the_alert_still_opens_once_it_is_released(
    demo_dir: Path,
    make_engine: EngineFactory,
) -> None:
    config = parse_config(demo_document(demo_dir))
    store = StateStore(demo_dir / "state.db")
    engine = make_engine(config=config, store=store, now=DEMO_NOW)
    metrics = engine.metrics
    locker = sqlite3.connect(demo_dir / "state.db", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    try:
        locked = engine.run("signups")
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert locked.outcome == "error" and "locked" in (locked.error or "")
    assert value(metrics, "kpimon_check_runs_total", check="signups", outcome="error") == 1
    assert 1 not in series_samples(metrics, "kpimon_anomaly", "signups")
    assert store.outbox.pending_count() == 0
    # the lock is gone: the next run judges what the failed run could not save
    again = engine.run("signups")
    assert again.outcome == "anomaly", (again.outcome, again.error)
    assert engine.alert_state("signups", "").firing
    assert [e.notification.check for e in store.outbox.pending("slack")] == ["signups"]
    assert series_samples(metrics, "kpimon_anomaly", "signups") == [1]


def test_readyz_says_503_while_the_state_database_is_gone_and_recovers_by_itself(
    tmp_path: Path, live_demo_warehouse: Path, postgres_dsn: str, postgres_server: Any
) -> None:
    shutil.copy(live_demo_warehouse, tmp_path / "demo.duckdb")
    database = postgres_dsn.rsplit("/", 1)[1]
    password = "canary-state-password"  # the test server trusts loopback; it must not be shown
    document = demo_document(tmp_path)
    document["state"] = {"url": postgres_dsn.replace("postgres@", f"postgres:{password}@", 1)}
    document["checks"] = [c for c in document["checks"] if c["name"] == "signups"]
    daemon = Daemon(parse_config(document), host="127.0.0.1", port=0)
    daemon.start()
    admin = psycopg.connect(postgres_server.dsn(), autocommit=True)
    try:
        port = daemon.port
        assert http_get(port, "/readyz")[0] == 200
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )
        _, body = wait_until(
            lambda: (r := http_get(port, "/readyz"))[0] == 503 and r, 15, "/readyz to say 503"
        )
        answer = json.loads(body)
        assert answer["status"] == "not ready"
        assert any("state database" in p for p in answer["problems"]), answer
        assert password not in body.decode()
        assert http_get(port, "/healthz")[0] == 200, "the process itself is fine"
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        wait_until(lambda: http_get(port, "/readyz")[0] == 200, 15, "/readyz to recover")
    finally:
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        admin.close()
        daemon.stop()


# Another process holding the SQLite write lock of a state file until its stdin closes.
LOCK_HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
db.execute("ROLLBACK")
"""


def test_readyz_says_503_while_another_process_holds_the_state_stores_write_lock(
    tmp_path: Path, live_demo_warehouse: Path
) -> None:
    shutil.copy(live_demo_warehouse, tmp_path / "demo.duckdb")
    document = demo_document(tmp_path)
    document["checks"] = [c for c in document["checks"] if c["name"] == "signups"]
    daemon = Daemon(parse_config(document), host="127.0.0.1", port=0)
    daemon.start()
    holder: subprocess.Popen[str] | None = None
    try:
        port = daemon.port
        wait_until(lambda: http_get(port, "/readyz")[0] == 200, 15, "/readyz to say ready")
        holder = subprocess.Popen(
            [sys.executable, "-c", LOCK_HOLDER, document["state"]["path"]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with contextlib.closing(sqlite3.connect(document["state"]["path"])) as reader:
            # reads still work (WAL): a read alone would call the store healthy
            assert reader.execute("SELECT count(*) FROM meta").fetchone() == (1,)
        started = time.monotonic()
        status, body = http_get(port, "/readyz")
        assert time.monotonic() - started < 4, "/readyz answers within a probe's timeout"
        answer = json.loads(body)
        assert status == 503 and answer["status"] == "not ready", answer
        assert any("state store" in p and "cannot be written" in p for p in answer["problems"]), (
            answer
        )
        assert http_get(port, "/healthz")[0] == 200, "the process itself is fine"
        assert holder.stdin is not None
        holder.stdin.close()  # the other process lets go of the lock
        assert holder.wait(timeout=10) == 0
        status, body = wait_until(
            lambda: (r := http_get(port, "/readyz"))[0] == 200 and r, 15, "/readyz to recover"
        )
        assert json.loads(body) == {"status": "ready"}
    finally:
        if holder is not None:
            if holder.poll() is None:
                holder.kill()
                holder.wait(timeout=10)
            if holder.stdout is not None:
                holder.stdout.close()
        daemon.stop()


def test_a_corrupt_state_file_stops_the_start_with_a_clear_error_and_exit_2(
    tmp_path: Path, live_demo_warehouse: Path
) -> None:
    shutil.copy(live_demo_warehouse, tmp_path / "demo.duckdb")
    (tmp_path / "kpimon-state.db").write_bytes(b"this is not a SQLite database\n" * 200)
    config = write_config(tmp_path / "kpi.yaml", demo_document(tmp_path))
    done = subprocess.run(
        [KPI_MONITOR, "run", "-c", str(config), "--port", str(free_port()), "--host", "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "KPIMON_LOG_FORMAT": "json"},
    )
    assert done.returncode == 2, done.stderr
    assert str(tmp_path / "kpimon-state.db") in done.stderr
    assert "not a database" in done.stderr and "move it aside" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


# === process lifecycle ============================================================================

SLOW_SQL = (
    "select now()::timestamp - interval 2 hour as bucket, sum(a.range * b.range)::double as value"
    " from range(300000) a, range(300000) b where now()::timestamp >= :since"
)


def test_sigterm_during_a_check_exits_0_within_10s_with_the_state_saved(
    tmp_path: Path, live_demo_warehouse: Path
) -> None:
    shutil.copy(live_demo_warehouse, tmp_path / "demo.duckdb")
    document = demo_document(tmp_path)
    document["checks"] = [c for c in document["checks"] if c["name"] in ("signups", "orders_rows")]
    document["checks"].append(sql_check("slow", SLOW_SQL, lookback="1d"))
    config = write_config(tmp_path / "kpi.yaml", document)
    daemon = DaemonProcess(["run", "-c", str(config)], free_port(), log=tmp_path / "daemon.log")
    try:
        daemon.wait_ready()
        wait_until(
            lambda: (
                {c["name"] for c in daemon.checks() if c["last_run"]} == {"signups", "orders_rows"}
            ),
            30,
            "the quick checks to finish while the slow one runs",
        )
        time.sleep(0.5)
        assert {c["name"] for c in daemon.checks() if c["last_run"] is None} == {"slow"}
    finally:
        code, took = daemon.stop(signal.SIGTERM)
    output = daemon.output()
    assert code == 0, output
    assert took < 10, f"took {took:.1f}s to exit"
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert lines[-1]["msg"] == "stopped"
    assert "Traceback" not in output
    states = StateStore(tmp_path / "kpimon-state.db").load_states()
    assert states[("signups", "")].firing
    assert states[("orders_rows", "")].status == "ok"


def successful_posts(slack: SlackServer, skip: int) -> list[tuple[str, str]]:
    return [i for m in slack.messages()[skip:] for i in incidents_in(m["text"])]


def test_sigkill_and_restart_deliver_every_alert_exactly_once_and_restore_firing_alerts(
    tmp_path: Path, live_demo_warehouse: Path, slack: SlackServer
) -> None:
    config = slack_daemon_config(tmp_path, live_demo_warehouse, slack, group_wait="0s")
    env = {"SLACK_BOT_TOKEN": slack.token}
    port = free_port()

    # 1. Slack answers 500 to everything: the alerts wait in the outbox; then the process dies
    slack.fail_next(10_000, 500)
    first = DaemonProcess(["run", "-c", str(config)], port, env, log=tmp_path / "first.log")
    try:
        first.wait_ready()
        first.wait_all_ran()
        wait_until(lambda: "kept for retry" in first.output(), 30, "a failed Slack delivery", 0.2)
        assert first.get("/readyz")[0] == 200
    finally:
        first.stop(signal.SIGKILL)
    with slack._lock:
        slack.failures.clear()
    attempts = len(slack.messages())
    assert attempts >= 1

    # 2. Slack is back: the restarted daemon delivers each alert once
    second = DaemonProcess(["run", "-c", str(config)], port, env, log=tmp_path / "second.log")
    try:
        second.wait_ready()
        slack.wait_for(attempts + MESSAGES, timeout=60)
        second.wait_all_ran()
        time.sleep(1.0)
    finally:
        second.stop(signal.SIGKILL)
    assert sorted(successful_posts(slack, attempts)) == sorted(INCIDENTS)
    delivered = len(slack.messages())

    # 3. killed again after delivering: the third daemon restores the alerts and sends nothing
    third = DaemonProcess(["run", "-c", str(config)], port, env, log=tmp_path / "third.log")
    try:
        third.wait_ready()
        assert third.wait_firing() == INCIDENTS
        samples = scrape(port)
        for check, segment in INCIDENTS:
            assert sample_of(samples, "kpimon_anomaly", check=check, segment=segment) == 1
        time.sleep(1.0)  # the outbox is flushed after each run; give a late send a chance
    finally:
        assert third.stop()[0] == 0
    assert len(slack.messages()) == delivered
    assert "Traceback" not in first.output() + second.output() + third.output()


def test_a_daemon_killed_while_slack_answers_posts_each_alert_once_after_restart(
    tmp_path: Path, live_demo_warehouse: Path, slack: SlackServer
) -> None:
    config = slack_daemon_config(tmp_path, live_demo_warehouse, slack, group_wait="0s", timeout=60)
    env = {"SLACK_BOT_TOKEN": slack.token}
    port = free_port()

    def alerts() -> list[Any]:
        return [m for m in slack.posted() if m.thread_ts is None]  # not the charts in threads

    # 1. Slack takes the first alert but answers slowly; the daemon dies before the answer
    slack.delay_next(30.0)
    first = DaemonProcess(["run", "-c", str(config)], port, env, log=tmp_path / "first.log")
    try:
        first.wait_ready()
        slack.wait_for(1, timeout=60)
    finally:
        first.stop(signal.SIGKILL)
    assert len(alerts()) == 1

    # 2. the restarted daemon finds that alert in the channel and posts only the others
    second = DaemonProcess(["run", "-c", str(config)], port, env, log=tmp_path / "second.log")
    try:
        second.wait_ready()
        second.wait_all_ran()
        wait_until(lambda: len(alerts()) >= MESSAGES, 60, "every alert in Slack", 0.2)
        time.sleep(1.0)  # the outbox is flushed after each run; give a second post a chance
    finally:
        assert second.stop()[0] == 0
    assert sorted(i for m in alerts() for i in incidents_in(m.text)) == sorted(INCIDENTS)
    assert len(slack.messages()) == MESSAGES, "no alert posted twice"
    assert "slack already had a message whose answer was lost" in second.output()
