"""Security: the API refuses what it must and applies nothing half-way; what callers send never
becomes SQL text; ``sql`` checks cannot write; secrets never leave the process.

The API is exercised over real sockets against a daemon running in this process, with its
warehouse and state database wrapped so every SQL text they receive is recorded. The secret
tests run the daemon as a subprocess with JSON logs, make it fail in ways that log errors, and
look for planted canary values everywhere a user can see something.
"""

# pytest passes the imported fixtures in as parameters of the same name
# ruff: noqa: F811

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import psycopg
import pytest

from monitor.config import parse_config
from monitor.daemon import Daemon
from monitor.statedb import Executor, SQLiteDatabase
from monitor.store import StateStore
from monitor.warehouse import open_warehouses
from monitor.warehouse.base import Warehouse
from tests.conftest import EngineFactory, demo_document, free_port, write_config
from tests.daemon_process import KPI_MONITOR, DaemonProcess
from tests.databricks_server import DatabricksProtocolServer, databricks_server  # noqa: F401
from tests.fake_warehouse import HandlerWarehouse
from tests.postgres_server import postgres_dsn, postgres_server  # noqa: F401
from tests.slack_server import SlackServer, signed_request
from tests.test_faults import NOW, build_visits, duckdb_config, sql_check

TOKEN = "api-token-0123456789abcdef"
EVIL = "x'); DROP TABLE deployments; --"


# --- recording every SQL text the daemon sends -------------------------------------------------


@dataclass
class SqlLog:
    texts: list[str] = field(default_factory=list)

    def mentions(self, fragment: str) -> list[str]:
        return [t for t in self.texts if fragment.lower() in t.lower()]


class _RecordingExecutor:
    def __init__(self, inner: Executor, log: SqlLog) -> None:
        self.inner = inner
        self.log = log

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> object:
        self.log.texts.append(sql)
        return self.inner.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> object:
        self.log.texts.append(sql)
        return self.inner.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:  # anything else the store uses, unrecorded
        return getattr(self.inner, name)


class RecordingSQLite(SQLiteDatabase):
    def __init__(self, path: str | Path, log: SqlLog) -> None:
        super().__init__(path)
        self.log = log

    def read(self, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        self.log.texts.append(sql)
        return super().read(sql, params)

    @contextmanager
    def transaction(self) -> Iterator[Executor]:
        with super().transaction() as db:
            yield _RecordingExecutor(db, self.log)


@dataclass
class Running:
    daemon: Daemon
    warehouse_sql: SqlLog
    state_sql: SqlLog
    state_path: Path

    def call(
        self,
        method: str,
        path: str,
        body: bytes | dict[str, Any] | list[Any] | None = None,
        token: str | None = TOKEN,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Message, Any]:
        data = json.dumps(body).encode() if isinstance(body, dict | list) else body
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.daemon.port}{path}", data=data, method=method
        )
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, headers_, raw = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, headers_, raw = error.code, error.headers, error.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode()
        return status, headers_, parsed

    def sample(self, name: str, **labels: str) -> float | None:
        return self.daemon.metrics.registry.get_sample_value(name, labels)


def start_daemon(
    tmp_path: Path, document: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> Running:
    warehouse_sql, state_sql = SqlLog(), SqlLog()
    state_path = Path(document["state"]["path"])

    def recording_store(cls: type[StateStore], config: Any) -> StateStore:
        return cls(RecordingSQLite(config.path, state_sql))

    def recording(inner: Warehouse) -> Warehouse:
        def handler(sql: str, params: Mapping[str, object]) -> pd.DataFrame:
            warehouse_sql.texts.append(sql)  # also a query that fails: it was sent
            return inner.query(sql, params)

        return HandlerWarehouse(handler, name=inner.name, dialect=inner.dialect,
                                on_close=inner.close)  # fmt: skip

    def recording_warehouses(config: Any) -> dict[str, Warehouse]:
        return {name: recording(w) for name, w in open_warehouses(config).items()}

    monkeypatch.setattr(StateStore, "open", classmethod(recording_store))
    monkeypatch.setattr("monitor.daemon.open_warehouses", recording_warehouses)
    daemon = Daemon(parse_config(document), host="127.0.0.1", port=0)
    daemon.start()
    return Running(daemon, warehouse_sql, state_sql, state_path)


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory, live_demo_warehouse: Path
) -> Iterator[Running]:
    """One daemon for the API tests; each test checks that what it sent changed nothing."""
    tmp_path = tmp_path_factory.mktemp("security")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("KPIMON_API_TOKEN", TOKEN)
        shutil.copy(live_demo_warehouse, tmp_path / "demo.duckdb")
        run = start_daemon(tmp_path, demo_document(tmp_path), monkeypatch)
        try:
            yield run
        finally:
            run.daemon.stop()


def snapshot(run: Running) -> tuple[object, ...]:
    """What a write call can change: recorded deployments, baseline restarts, mutes, counters."""
    with sqlite3.connect(run.state_path) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        deployments = sorted(con.execute("SELECT id, status, document FROM deployments"))
        rebaselines = sorted(con.execute("SELECT * FROM rebaselines"))
        mutes = sorted(con.execute("SELECT * FROM mutes")) if "mutes" in tables else []
    counted = run.sample("kpimon_deployments_total", environment="production")
    return deployments, rebaselines, mutes, counted


def deployment(**fields: Any) -> dict[str, Any]:
    return {"id": "deploy-1", "environment": "production", "models": ["fct_orders"], **fields}


WRITE_CALLS = [
    ("POST", "/api/v1/checks/orders_rows/run", None),
    ("POST", "/api/v1/checks/orders_rows/rebaseline", {}),
    ("POST", "/api/v1/deployments", deployment()),
    ("POST", "/api/v1/checks/orders_rows/mute", {"until": "2030-01-01T00:00:00Z", "reason": "x"}),
]


# === authentication ==============================================================================


AUTHORIZATIONS = [
    None,
    "Bearer wrong-token",
    f"Bearer {TOKEN}x",
    f"Bearer {TOKEN[:-1]}",
    f"Basic {TOKEN}",
    TOKEN,
    "Bearer ",
    f"Bearer {TOKEN.upper()}",
]


def test_write_calls_without_the_right_bearer_token_get_401_and_change_nothing(
    running: Running,
) -> None:
    before = snapshot(running)
    for method, path, body in WRITE_CALLS:
        for authorization in AUTHORIZATIONS:
            headers = {"Authorization": authorization} if authorization is not None else {}
            status, answer_headers, answer = running.call(
                method, path, body, token=None, headers=headers
            )
            assert status == 401, (path, authorization)
            assert answer == {"error": "missing or wrong bearer token"}
            assert answer_headers["WWW-Authenticate"] == "Bearer"
    assert snapshot(running) == before
    assert running.call("GET", "/api/v1/deployments/deploy-1")[0] == 404


def test_without_a_configured_token_every_write_call_is_refused(
    tmp_path: Path, live_demo_warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KPIMON_API_TOKEN", raising=False)
    monkeypatch.delenv("KPIMON_API_TOKEN_FILE", raising=False)
    shutil.copy(live_demo_warehouse, tmp_path / "demo.duckdb")
    run = start_daemon(tmp_path, demo_document(tmp_path), monkeypatch)
    try:
        for method, path, body in WRITE_CALLS:
            for token in (None, "", "anything"):
                status, _, answer = run.call(method, path, body, token=token)
                assert status == 401, (path, token)
                assert "no API token" in answer["error"]
        assert run.call("GET", "/api/v1/deployments/deploy-1")[0] == 404
    finally:
        run.daemon.stop()


@pytest.mark.parametrize("source", ["variable", "file"])
def test_a_blank_api_token_is_no_token_write_calls_are_refused_and_a_warning_says_why(
    source: str,
    tmp_path: Path,
    live_demo_warehouse: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # a Secret made from an empty file plus a newline
    monkeypatch.delenv("KPIMON_API_TOKEN", raising=False)
    monkeypatch.delenv("KPIMON_API_TOKEN_FILE", raising=False)
    if source == "variable":
        monkeypatch.setenv("KPIMON_API_TOKEN", " \n")
    else:
        (tmp_path / "token").write_text("\n")
        monkeypatch.setenv("KPIMON_API_TOKEN_FILE", str(tmp_path / "token"))
    shutil.copy(live_demo_warehouse, tmp_path / "demo.duckdb")
    run = start_daemon(tmp_path, demo_document(tmp_path), monkeypatch)
    try:
        before = snapshot(run)
        for method, path, body in WRITE_CALLS:
            for authorization in ("Bearer", "Bearer ", "Bearer \t", "Basic ", None):
                headers = {"Authorization": authorization} if authorization is not None else {}
                status, _, answer = run.call(method, path, body, token=None, headers=headers)
                assert status == 401, (path, authorization)
                assert "no API token" in answer["error"]
        assert snapshot(run) == before
        assert run.call("GET", "/api/v1/deployments/deploy-1")[0] == 404
    finally:
        run.daemon.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    named = "KPIMON_API_TOKEN is blank" if source == "variable" else "KPIMON_API_TOKEN_FILE"
    assert any(named in w and "write calls are refused" in w for w in warnings), warnings


# === bad requests ================================================================================


def test_oversized_bodies_get_413_before_anything_is_applied(running: Running) -> None:
    before = snapshot(running)
    big = b'{"since": "' + b"9" * 70_000 + b'"}'
    assert running.call("POST", "/api/v1/checks/revenue/run", big)[0] == 413
    assert running.call("POST", "/api/v1/checks/revenue/rebaseline", big)[0] == 413
    huge = json.dumps(deployment(models=["m" * 500] * 17_000)).encode()  # > 8 MiB
    try:
        status, _, _ = running.call("POST", "/api/v1/deployments", huge)
    except (ConnectionError, urllib.error.URLError):
        pass  # waitress refuses a body past its own 8 MiB limit by closing the connection
    else:
        assert status == 413
    assert running.call("GET", "/api/v1/deployments/deploy-1")[0] == 404
    assert snapshot(running) == before


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/api/v1/checks/revenue/run", b"{not json", "not valid JSON"),
        ("/api/v1/checks/revenue/run", b'{"force": true}', "takes no body"),
        ("/api/v1/checks/revenue/run", b"\xff\xfe\x00", "not valid JSON"),
        ("/api/v1/checks/revenue/rebaseline", b"[1, 2]", "must be a JSON object"),
        ("/api/v1/checks/revenue/rebaseline", b'{"since": "last tuesday"}', "since"),
        ("/api/v1/checks/revenue/rebaseline", b'{"since": "2026-11-20T10:00:00"}', "time zone"),
        ("/api/v1/checks/revenue/rebaseline", b'{"since": "0001-01-01T00:00:00+14:00"}', "1970"),
        ("/api/v1/checks/revenue/rebaseline", b'{"since": "9999-12-31T23:00:00-05:00"}', "2200"),
        ("/api/v1/checks/revenue/rebaseline", b'{"when": "2026-11-20T10:00:00Z"}', "when"),
        ("/api/v1/checks/revenue/rebaseline", b'"2026-11-20T10:00:00Z"', "JSON object"),
        ("/api/v1/checks/revenue/mute", b'{"until": "2030-01-01T00:00:00"}', "reason"),
        (
            "/api/v1/checks/revenue/mute",
            b'{"until": "2030-01-01T00:00:00", "reason": "upgrade"}',
            "time zone",
        ),
        (
            "/api/v1/checks/revenue/mute",
            b'{"until": "2030-01-01T00:00:00Z", "reason": ""}',
            "reason",
        ),
        ("/api/v1/checks/revenue/run", b"[" * 60_000, "nested too deeply"),
        ("/api/v1/checks/revenue/mute", b'{"until": ' * 6_000, "nested too deeply"),
        ("/api/v1/deployments", b"[" * 600_000 + b"]" * 600_000, "nested too deeply"),
        ("/api/v1/deployments", b"", "JSON object"),
        ("/api/v1/deployments", b"null", "JSON object"),
        ("/api/v1/deployments", b'{"id": "d1"}', "environment"),
        ("/api/v1/deployments", json.dumps(deployment(id=EVIL)).encode(), "id"),
        ("/api/v1/deployments", json.dumps(deployment(models="fct_orders")).encode(), "models"),
        ("/api/v1/deployments", json.dumps(deployment(url="javascript:alert(1)")).encode(), "url"),
        ("/api/v1/deployments", json.dumps(deployment(admin=True)).encode(), "admin"),
        (
            "/api/v1/deployments",
            json.dumps(deployment(expect_change=["no_such_check"])).encode(),
            "no_such_check",
        ),
    ],
)
def test_malformed_bodies_get_400_with_a_message_and_nothing_is_recorded(
    running: Running, path: str, body: bytes, message: str
) -> None:
    before = snapshot(running)
    status, headers, answer = running.call("POST", path, body)
    assert status == 400, answer
    assert headers["Content-Type"] == "application/json"
    assert set(answer) == {"error"} and message in answer["error"]
    assert running.call("GET", "/api/v1/deployments/deploy-1")[0] == 404
    assert running.call("GET", "/api/v1/deployments/d1")[0] == 404
    assert snapshot(running) == before


def test_unknown_checks_and_deployments_get_404(running: Running) -> None:
    before = snapshot(running)
    for path in (
        "/api/v1/checks/nope/run",
        "/api/v1/checks/nope/rebaseline",
        "/api/v1/checks/nope/mute",
    ):
        body = None if path.endswith("/run") else {"until": "2030-01-01T00:00:00Z", "reason": "x"}
        status, _, answer = running.call("POST", path, body)
        assert (status, answer) == (404, {"error": "no check named 'nope'"})
    assert running.call("GET", "/api/v1/checks/nope")[0] == 404
    status, _, answer = running.call("GET", "/api/v1/deployments/never-recorded")
    assert (status, answer) == (404, {"error": "no deployment with id 'never-recorded'"})
    assert snapshot(running) == before


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/api/v1/checks/revenue/run", "POST"),
        ("PUT", "/api/v1/checks/revenue/rebaseline", "POST"),
        ("GET", "/api/v1/deployments", "POST"),
        ("DELETE", "/api/v1/deployments/deploy-1", "GET"),
        ("POST", "/metrics", "GET"),
        ("DELETE", "/api/v1/checks/revenue", "GET"),
    ],
)
def test_wrong_methods_get_405_with_allow(
    running: Running, method: str, path: str, allowed: str
) -> None:
    status, headers, answer = running.call(method, path)
    assert status == 405 and headers["Allow"] == allowed
    assert allowed in answer["error"]


def test_a_deployment_is_recorded_once_and_a_second_one_with_its_id_changes_nothing(
    running: Running,
) -> None:
    counted = running.sample("kpimon_deployments_total", environment="production") or 0
    body = deployment(id="deploy-dup", commit="abc123")
    status, _, first = running.call("POST", "/api/v1/deployments", body)
    assert status == 201 and first["id"] == "deploy-dup"
    before = snapshot(running)
    status, _, answer = running.call(
        "POST",
        "/api/v1/deployments",
        deployment(id="deploy-dup", commit="evil999", models=["signups"]),
    )
    assert status == 409 and "already recorded" in answer["error"]
    status, _, stored = running.call("GET", "/api/v1/deployments/deploy-dup")
    assert status == 200
    assert (stored["commit"], stored["models"]) == ("abc123", ["fct_orders"])
    assert running.sample("kpimon_deployments_total", environment="production") == counted + 1
    assert snapshot(running)[:3] == before[:3]


# === nothing a caller sends reaches SQL text ===================================================


def test_deployment_fields_and_path_values_are_bound_never_spliced_into_sql(
    running: Running,
) -> None:
    body = deployment(
        id="deploy-sql-1",
        models=[EVIL, "fct_orders"],
        commit="a1b2c3",
        url="https://ci.example/run/1?q=';DROP%20TABLE%20outbox;--",
    )
    status, _, answer = running.call("POST", "/api/v1/deployments", body)
    assert status == 201, answer
    status, _, stored = running.call("GET", "/api/v1/deployments/deploy-sql-1")
    assert status == 200 and stored["models"] == [EVIL, "fct_orders"]
    evil_id = urllib.parse.quote("1' OR '1'='1'; DROP TABLE deployments; --", safe="")
    status, _, answer = running.call("GET", f"/api/v1/deployments/{evil_id}")
    assert status == 404 and "DROP TABLE deployments" in answer["error"]
    status, _, answer = running.call(
        "POST", "/api/v1/checks/revenue/rebaseline", {"since": "2026-11-20T10:00:00Z"}
    )
    assert status == 200
    time.sleep(0.5)  # let the deployment's runs query the warehouse
    for log in (running.warehouse_sql, running.state_sql):
        assert log.texts, "the recorder saw the SQL"
        assert not log.mentions("drop table")
        assert not log.mentions("deploy-sql-1") and not log.mentions("a1b2c3")
        assert not log.mentions("2026-11-20")
    with sqlite3.connect(running.state_path) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"deployments", "outbox", "series_state"} <= tables


def test_segment_values_with_sql_in_them_are_data_not_sql(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``where``-less metric check split by a dimension whose values are SQL fragments:
    each becomes a segment, verbatim, in the API and the metric labels; none runs."""
    evil_values = ["'; drop table kpi.sales; --", 'x" OR 1=1 --', "ok"]
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as con:
        con.execute("CREATE SCHEMA kpi")
        con.execute("CREATE TABLE kpi.sales (ts TIMESTAMP, shop VARCHAR, amount DOUBLE)")
        con.execute(
            "INSERT INTO kpi.sales SELECT ts, shop, 10 + (hour(ts) % 5) FROM"
            " range(timestamp '2026-11-01', timestamp '2026-11-26 15:00', interval 1 hour) t(ts),"
            " unnest(?) s(shop)",
            [evil_values],
        )
    monkeypatch.setenv("KPIMON_API_TOKEN", TOKEN)
    document = {
        "warehouse": {"kind": "duckdb", "path": str(tmp_path / "wh.duckdb")},
        "state": {"path": str(tmp_path / "state.db")},
        "checks": [
            {
                "name": "sales",
                "kind": "metric",
                "table": "kpi.sales",
                "timestamp_column": "ts",
                "expression": "sum(amount)",
                "dimensions": ["shop"],
                "lookback": "3w",
            }
        ],
    }
    run = start_daemon(tmp_path, document, monkeypatch)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            _, _, found = run.call("GET", "/api/v1/checks/sales")
            if found["last_run"]:
                break
            time.sleep(0.1)
        assert found["last_run"]["outcome"] in ("ok", "anomaly"), found["last_run"]
        assert sorted(s["segment"] for s in found["series"]) == sorted(["", *evil_values])  # and the total
        for segment in evil_values:
            assert (
                run.sample(
                    "kpimon_value", check="sales", segment=segment, severity="warning", team=""
                )
                is not None
            )
        assert run.call("POST", "/api/v1/checks/sales/run")[0] == 202
        time.sleep(0.5)
        assert not run.warehouse_sql.mentions("drop table")
        assert not run.warehouse_sql.mentions("OR 1=1")
        assert not run.state_sql.mentions("drop table")
    finally:
        run.daemon.stop()
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(DISTINCT shop) FROM kpi.sales").fetchone() == (3,)


# === sql checks cannot write =====================================================================


@pytest.mark.parametrize(
    "sql",
    [
        "insert into kpi.visits select now()::timestamp, 1e9 where now() >= :since"
        " returning ts as bucket, amount as value",
        "select ts as bucket, amount as value from kpi.visits where ts >= :since;"
        " delete from kpi.visits",
        "select * from (select 1) where :since is not null; drop table kpi.visits",
        "with x as (select :since as s) select ts as bucket, amount as value from kpi.visits;"
        " update kpi.visits set amount = 0",
    ],
)
def test_duckdb_sql_checks_run_read_only(
    sql: str, tmp_path: Path, make_engine: EngineFactory
) -> None:
    build_visits(tmp_path / "wh.duckdb")
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        before = con.execute("SELECT count(*), sum(amount) FROM kpi.visits").fetchone()
    config = duckdb_config(tmp_path, [sql_check("writer", sql)])
    engine = make_engine(config=config, store=tmp_path / "state.db", now=NOW)
    result = engine.run("writer")
    assert result.outcome == "error"
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*), sum(amount) FROM kpi.visits").fetchone() == before


@pytest.mark.parametrize(
    "sql",
    [
        "insert into visits select now(), 1e9 where now() >= :since"
        " returning ts as bucket, amount as value",
        "with gone as (delete from visits where ts >= :since returning ts, amount)"
        " select ts as bucket, amount as value from gone",
        "select ts as bucket, amount as value from visits where ts >= :since;"
        " commit; set transaction read write; truncate visits",
        "select ts as bucket, amount as value from visits where ts >= :since for update",
    ],
)
def test_postgres_sql_checks_run_in_read_only_transactions(
    sql: str, postgres_dsn: str, tmp_path: Path, make_engine: EngineFactory
) -> None:
    with psycopg.connect(postgres_dsn, autocommit=True) as con:
        con.execute("CREATE TABLE visits (ts timestamp, amount double precision)")
        con.execute(
            "INSERT INTO visits SELECT ts, 100 FROM generate_series("
            "timestamp '2026-11-10', timestamp '2026-11-26 14:00', interval '1 hour') ts"
        )
        before = con.execute("SELECT count(*), sum(amount) FROM visits").fetchone()
    config = parse_config(
        {
            "warehouse": {"kind": "postgres", "dsn": postgres_dsn},
            "state": {"path": str(tmp_path / "state.db")},
            "checks": [sql_check("writer", sql)],
        }
    )
    engine = make_engine(config=config, store=tmp_path / "state.db", now=NOW)
    result = engine.run("writer")
    assert result.outcome == "error", result
    with psycopg.connect(postgres_dsn, autocommit=True) as con:
        assert con.execute("SELECT count(*), sum(amount) FROM visits").fetchone() == before


# === secrets ======================================================================================

CANARIES = {
    "SLACK_BOT_TOKEN": "xoxb-canary-slack-5f1e2d3c4b",
    "KPIMON_API_TOKEN": "canary-api-token-9a8b7c6d5e",
    "DATABRICKS_TOKEN": "dapi-canary-databricks-1a2b3c",
    "PG_PASSWORD": "canary-pg-password-77e6d5",
    "SLACK_APP_TOKEN": "xapp-1-canary-app-token-3c2b1a",
    "SLACK_SIGNING_SECRET": "canary-signing-secret-0f9e8d",
}


def assert_no_canary(where: str, text: str) -> None:
    for name, canary in CANARIES.items():
        assert canary not in text, f"{name} leaked into {where}"


def test_canary_secrets_appear_in_no_log_line_api_answer_metric_or_slack_message(
    tmp_path: Path,
    live_demo_warehouse: Path,
    slack: SlackServer,
    databricks_server: DatabricksProtocolServer,
) -> None:
    shutil.copy(live_demo_warehouse, tmp_path / "demo.duckdb")
    document = demo_document(
        tmp_path,
        token="${SLACK_BOT_TOKEN}",  # not the token the Slack server knows: invalid_auth
        api_url=slack.url,
        channel="#data-alerts",
        group_wait="0s",
        app_token="${SLACK_APP_TOKEN}",  # refused too: Socket Mode retries and logs it
        signing_secret="${SLACK_SIGNING_SECRET}",
    )
    document["warehouses"] = {
        "default": document.pop("warehouse"),
        "lake": {  # a Databricks warehouse that refuses the token
            "kind": "databricks",
            "server_hostname": "127.0.0.1",
            "http_path": databricks_server.http_path,
            "access_token": "${DATABRICKS_TOKEN}",
            "connection_uri": databricks_server.connection_uri,
            "statement_timeout": 5,
            "retries": 0,
        },
        "pg": {  # a PostgreSQL warehouse nobody listens for
            "kind": "postgres",
            "dsn": f"postgresql://kpimon:${{PG_PASSWORD}}@127.0.0.1:{free_port()}/analytics",
            "statement_timeout": 5,
        },
    }
    for check in document["checks"]:
        check["warehouse"] = "default"
    document["checks"] += [
        sql_check(
            "lake_visits",
            "select ts as bucket, amount as value from kpi.visits where ts >= :since",
            warehouse="lake",
        ),
        sql_check(
            "pg_visits",
            "select ts as bucket, amount as value from visits where ts >= :since",
            warehouse="pg",
        ),
    ]
    config = write_config(tmp_path / "kpi.yaml", document)
    env = {name: value for name, value in CANARIES.items()}
    port = free_port()
    daemon = DaemonProcess(["run", "-c", str(config)], port, env, log=tmp_path / "daemon.log")
    answers: list[str] = []
    try:
        daemon.wait_ready()
        daemon.wait_all_ran()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "invalid_auth" not in daemon.output():
            time.sleep(0.2)
        for path in (
            "/api/v1/checks",
            "/readyz",
            "/healthz",
            "/metrics",
            "/api/v1/checks/pg_visits",
        ):
            answers.append(daemon.get(path)[1].decode())
        for token in ("wrong", CANARIES["KPIMON_API_TOKEN"]):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/v1/checks/lake_visits/run",
                method="POST",
                headers={"Authorization": f"Bearer {token}"},
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    answers.append(response.read().decode() + str(dict(response.headers)))
            except urllib.error.HTTPError as error:
                answers.append(error.read().decode() + str(dict(error.headers)))
        # a click signed with another secret, and one signed with the canary itself
        for secret in ("another", CANARIES["SLACK_SIGNING_SECRET"]):
            status, body, _ = signed_request(
                f"http://127.0.0.1:{port}/slack/interactivity", {"type": "block_actions"},
                secret=secret,
            )  # fmt: skip
            answers.append(f"{status} {body}")
        time.sleep(1.0)
    finally:
        code, _ = daemon.stop()
    output = daemon.output()
    assert code == 0
    errors = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert any("invalid_auth" in json.dumps(e) for e in errors), "Slack refused the token"
    failed = {e.get("check") for e in errors if e["msg"] == "check run failed"}
    assert {"lake_visits", "pg_visits"} <= failed, "both warehouses failed and logged it"
    assert_no_canary("the daemon's log", output)
    for answer in answers:
        assert_no_canary("an API answer", answer)
    for call in slack.calls:
        assert_no_canary("a Slack payload", json.dumps(call.args))
    assert slack.calls, "the daemon tried Slack"


def test_a_state_url_password_is_not_printed_when_the_state_database_is_unreachable(
    tmp_path: Path, live_demo_warehouse: Path
) -> None:
    shutil.copy(live_demo_warehouse, tmp_path / "demo.duckdb")
    document = demo_document(tmp_path)
    document["state"] = {
        "url": f"postgresql://kpimon:${{PG_PASSWORD}}@127.0.0.1:{free_port()}/state"
    }
    document["warehouses"] = {
        "default": document.pop("warehouse"),
        "pg": {
            "kind": "postgres",
            "dsn": f"postgresql://kpimon:${{PG_PASSWORD}}@127.0.0.1:{free_port()}/analytics",
        },
    }
    config = write_config(tmp_path / "kpi.yaml", document)
    env = {"PATH": "/usr/bin:/bin", "KPIMON_LOG_FORMAT": "json", **CANARIES}
    for args in (
        ["run", "-c", str(config), "--port", str(free_port()), "--host", "127.0.0.1"],
        ["validate", "--connect", "-c", str(config)],
        ["check", "-c", str(config), "--check", "revenue"],
    ):
        done = subprocess.run(
            [KPI_MONITOR, *args], capture_output=True, text=True, timeout=60, env=env
        )
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert_no_canary(f"the output of kpi-monitor {args[0]}", done.stdout + done.stderr)
        assert "Traceback" not in done.stderr
