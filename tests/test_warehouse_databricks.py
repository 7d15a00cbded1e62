"""DatabricksWarehouse through the real databricks-sql-connector, against the local protocol server.

The server (tests/databricks_server.py) speaks Thrift over HTTP like a SQL warehouse and runs the
statements on DuckDB. What this proves: the adapter drives the real client correctly (sessions,
parameters, both result formats, polling and paging, cancellation, timeouts, retries, errors,
auth). What it does not: that Databricks itself accepts the SQL text (tests/test_dialects.py pins
that text) or behaves exactly like this server under load.
"""

# The fixtures are imported here (pytest finds them in the module); test parameters with the
# same names are what pytest passes in, hence F811 off for this file.
# ruff: noqa: F811

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic import SecretStr

import monitor.warehouse.databricks as adapter
from monitor.config import DatabricksWarehouseConfig
from monitor.errors import QueryFailed, QueryTimeout, WarehouseUnavailable
from monitor.logs import TextFormatter
from monitor.warehouse.databricks import DatabricksWarehouse
from tests import test_dialects as dialect_cases  # the rows and queries every warehouse runs
from tests.conftest import free_port, query_in_thread, write_config
from tests.daemon_process import DaemonProcess, run_kpi_monitor
from tests.databricks_server import DatabricksProtocolServer, databricks_server  # noqa: F401

Server = DatabricksProtocolServer


def _config(srv: Server, **kw: Any) -> DatabricksWarehouseConfig:
    base: dict[str, Any] = {
        "kind": "databricks",
        "server_hostname": "127.0.0.1",
        "http_path": srv.http_path,
        "access_token": SecretStr(srv.token),
        "connection_uri": srv.connection_uri,
        "statement_timeout": 10.0,
        "retries": 2,
    }
    base.update(kw)
    return DatabricksWarehouseConfig(**base)


@pytest.fixture
def wh(databricks_server: Server) -> Any:
    warehouse = DatabricksWarehouse("dbx", _config(databricks_server))
    yield warehouse
    warehouse.close()


def _load_orders(srv: Server) -> None:
    srv.execute(
        "CREATE SCHEMA analytics;"
        "CREATE TABLE analytics.fct_orders (id INTEGER, order_ts TIMESTAMP,"
        " loaded_at TIMESTAMPTZ, amount DECIMAL(10, 2), country VARCHAR);"
        "INSERT INTO analytics.fct_orders VALUES"
        " (1, '2026-11-01 05:30:00', '2026-11-01 05:31:00+00', 10.50, 'US'),"
        " (2, '2026-11-01 06:30:00', '2026-11-01 06:31:00+00', 2.25, NULL),"
        " (3, '2026-10-01 00:00:00', '2026-10-01 00:01:00+00', 1.00, 'DE');"
    )


ORDERS_SQL = (
    "SELECT `id`, `order_ts`, `loaded_at`, `amount`, `country` FROM `analytics`.`fct_orders`"
    " WHERE `order_ts` >= :since AND `id` <> :skip AND `country` IS DISTINCT FROM :nobody"
    " ORDER BY `id`"
)
ORDERS_PARAMS = {"since": datetime(2026, 11, 1, tzinfo=UTC), "skip": 99, "nobody": "XX"}


def _check_orders(df: pd.DataFrame) -> None:
    assert list(df.columns) == ["id", "order_ts", "loaded_at", "amount", "country"]
    assert df["id"].tolist() == [1, 2]
    assert df["order_ts"].tolist() == [
        pd.Timestamp("2026-11-01 05:30"),
        pd.Timestamp("2026-11-01 06:30"),
    ]
    assert df["loaded_at"].tolist() == [
        pd.Timestamp("2026-11-01 05:31"),
        pd.Timestamp("2026-11-01 06:31"),
    ]
    assert df["order_ts"].dt.tz is None and df["loaded_at"].dt.tz is None  # naive UTC
    assert df["amount"].dtype == "float64" and df["amount"].tolist() == [10.5, 2.25]
    assert df["country"].tolist()[0] == "US" and pd.isna(df["country"].tolist()[1])


@pytest.mark.parametrize("result_format", ["arrow", "columns"])
def test_query_with_parameters_and_timestamps(
    wh: DatabricksWarehouse,
    databricks_server: Server,
    result_format: str,
) -> None:
    _load_orders(databricks_server)
    databricks_server.result_format = result_format
    _check_orders(wh.query(ORDERS_SQL, ORDERS_PARAMS))
    assert databricks_server.arrow_requested == [True]  # pyarrow is installed here
    empty = wh.query("SELECT `order_ts` FROM `analytics`.`fct_orders` WHERE false", {})
    assert list(empty.columns) == ["order_ts"] and empty.empty


def test_polling_and_paged_fetches(wh: DatabricksWarehouse, databricks_server: Server) -> None:
    databricks_server.direct_results = False
    databricks_server.max_rows_per_fetch = 2
    df = wh.query("SELECT range AS i FROM range(5)", {})
    assert df["i"].tolist() == [0, 1, 2, 3, 4]
    calls = databricks_server.calls
    assert "GetOperationStatus" in calls and "GetResultSetMetadata" in calls
    assert calls.count("FetchResults") >= 3


@pytest.mark.parametrize("column_type", ["TIMESTAMP", "TIMESTAMPTZ"])
@pytest.mark.parametrize("result_format", ["arrow", "columns"])
def test_bucket_expression_across_dst(
    wh: DatabricksWarehouse,
    databricks_server: Server,
    column_type: str,
    result_format: str,
) -> None:
    databricks_server.result_format = result_format
    databricks_server.execute(f"CREATE TABLE events (ts {column_type})")
    for ts, _, _ in dialect_cases.DST_ROWS:
        databricks_server.execute("INSERT INTO events VALUES (CAST(? AS TIMESTAMP))", [ts])
    assert dialect_cases.dst_buckets(wh, "`events`") == sorted(dialect_cases.DST_ROWS)


def test_one_session_reused_with_timeout_and_utc(
    wh: DatabricksWarehouse,
    databricks_server: Server,
) -> None:
    for _ in range(3):
        wh.query("SELECT 1 AS one", {})
    assert databricks_server.count("OpenSession") == 1
    (session,) = databricks_server.sessions.values()
    assert session.conf["STATEMENT_TIMEOUT"] == "10"
    assert session.conf["TIMEZONE"] == "UTC"
    # a per-call timeout is set on the session once, then kept
    wh.query("SELECT 1 AS one", {}, timeout=7)
    wh.query("SELECT 1 AS one", {}, timeout=7)
    assert databricks_server.statements.count("SET STATEMENT_TIMEOUT = 7") == 1
    assert session.conf["STATEMENT_TIMEOUT"] == "7"
    assert wh._endpoint.session_kwargs(10, 60.0, None)["enable_telemetry"] is False


def test_bad_token_is_refused_without_retrying_in_one_readable_line(databricks_server: Server) -> None:
    wh = DatabricksWarehouse("dbx", _config(databricks_server, access_token=SecretStr("wrong")))
    with pytest.raises(WarehouseUnavailable) as info:
        wh.query("SELECT 1", {})
    # the warehouse named once, the status and call, the server's reason as it said it
    assert str(info.value) == (
        "warehouse 'dbx': credentials refused (HTTP 403 on OpenSession): Invalid access token."
    )
    assert info.value.warehouse == "dbx"
    assert len(databricks_server.requests_headers) == 1
    assert "wrong" not in str(databricks_server.calls)


def test_503_then_recovery(wh: DatabricksWarehouse, databricks_server: Server) -> None:
    wh.query("SELECT 1 AS one", {})
    databricks_server.inject("ExecuteStatement", http_status=503, retry_after=1, times=2)
    started = time.monotonic()
    assert wh.query("SELECT 2 AS two", {})["two"].tolist() == [2]
    assert time.monotonic() - started < 5
    assert databricks_server.count("ExecuteStatement") == 4  # 1 + 2 refused + 1


def _gaps(srv: Server, method: str) -> list[float]:
    times = [t for t, name in srv.call_log if name == method]
    return [b - a for a, b in itertools.pairwise(times)]


def test_retry_after_is_honoured_within_the_statement_timeout(
    wh: DatabricksWarehouse, databricks_server: Server
) -> None:
    """Issue 14, item 24: retried after 0.5 s under Retry-After: 5."""
    wh.query("SELECT 1 AS one", {})
    databricks_server.inject("ExecuteStatement", http_status=503, retry_after=2)
    assert wh.query("SELECT 2 AS two", {})["two"].tolist() == [2]
    assert databricks_server.count("ExecuteStatement") == 3
    assert _gaps(databricks_server, "ExecuteStatement")[-1] >= 2.0


def test_a_retry_after_past_the_statement_timeout_fails_at_once_and_says_so(
    databricks_server: Server,
) -> None:
    """Issue 14, item 24: gave up after 2 s of retries under Retry-After: 30."""
    wh = DatabricksWarehouse("dbx", _config(databricks_server, statement_timeout=5))
    databricks_server.inject("ExecuteStatement", http_status=503, retry_after=30, times=100)
    started = time.monotonic()
    with pytest.raises(WarehouseUnavailable) as info:
        wh.query("SELECT 1 AS one", {})
    assert time.monotonic() - started < 1
    assert str(info.value) == (
        "warehouse 'dbx': busy or starting (HTTP 503 on ExecuteStatement): "
        "TEMPORARILY_UNAVAILABLE; it asked to retry after 30s, past the 5s statement timeout"
    )
    assert databricks_server.count("ExecuteStatement") == 1
    wh.close()


def test_an_http_500_on_fetch_results_is_named_as_such_not_as_busy(
    databricks_server: Server,
) -> None:
    """Issue 14, item 24: reported as "busy or starting (HTTP 429/503)"."""
    wh = DatabricksWarehouse("dbx", _config(databricks_server, retries=1))
    databricks_server.direct_results = False  # results come through FetchResults
    databricks_server.inject("FetchResults", http_status=500, times=100)
    with pytest.raises(WarehouseUnavailable) as info:
        wh.query("SELECT 1 AS one", {})
    assert info.value.detail == "request failed: HTTP 500 on FetchResults"
    assert databricks_server.count("FetchResults") == 2  # first try + 1 retry
    wh.close()


def test_the_connectors_failure_lines_are_quiet_and_ours_name_the_warehouse_once(
    wh: DatabricksWarehouse, databricks_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 14, item 25: two empty "ThriftBackend.attempt_request: Exception:" lines per
    failed request, and "warehouse default: warehouse 'default': ..." in ours."""
    caplog.set_level(logging.INFO)
    wh.query("SELECT 1 AS one", {})
    databricks_server.inject("ExecuteStatement", http_status=503, retry_after=0)
    assert wh.query("SELECT 2 AS two", {})["two"].tolist() == [2]
    bad = DatabricksWarehouse("dbx", _config(databricks_server, access_token=SecretStr("x")))
    with pytest.raises(WarehouseUnavailable):
        bad.query("SELECT 1", {})
    connector = [r for r in caplog.records if r.name.startswith("databricks")]
    assert [r.getMessage() for r in connector if r.levelno >= logging.WARNING] == []
    (retry,) = [r for r in caplog.records if r.name == "monitor.warehouse.databricks"]
    line = TextFormatter().format(retry)
    assert line.count("dbx") == 1, line
    assert retry.fields["error"] == (  # type: ignore[attr-defined]  # set by logging's extra=
        "busy or starting (HTTP 503 on ExecuteStatement): TEMPORARILY_UNAVAILABLE"
    )


def test_503_at_session_open_then_recovery(databricks_server: Server) -> None:
    databricks_server.inject("OpenSession", http_status=503, retry_after=0)
    wh = DatabricksWarehouse("dbx", _config(databricks_server))
    assert wh.query("SELECT 2 AS two", {})["two"].tolist() == [2]
    assert databricks_server.count("OpenSession") == 2


def test_persistent_503_gives_up_after_bounded_retries(databricks_server: Server) -> None:
    wh = DatabricksWarehouse("dbx", _config(databricks_server, retries=2))
    databricks_server.inject("*", http_status=503, retry_after=0, times=1000)
    started = time.monotonic()
    with pytest.raises(WarehouseUnavailable, match="503"):
        wh.query("SELECT 1", {})
    assert time.monotonic() - started < 8
    assert databricks_server.count("OpenSession") == 3  # first try + 2 retries


def test_unreachable_warehouse_is_unavailable(databricks_server: Server) -> None:
    config = _config(databricks_server, retries=1, connection_uri="http://127.0.0.1:9/sql/x")
    wh = DatabricksWarehouse("dbx", config)
    with pytest.raises(WarehouseUnavailable, match="cannot open a session") as info:
        wh.ping()
    assert "urllib3" not in type(info.value).__module__


def test_dropped_connection_is_retried(wh: DatabricksWarehouse, databricks_server: Server) -> None:
    wh.query("SELECT 1 AS one", {})
    databricks_server.inject("ExecuteStatement", drop=True)
    assert wh.query("SELECT 3 AS three", {})["three"].tolist() == [3]


def test_expired_session_is_reopened(wh: DatabricksWarehouse, databricks_server: Server) -> None:
    wh.query("SELECT 1 AS one", {})
    databricks_server.sessions.clear()  # a warehouse restart forgets every session
    assert wh.query("SELECT 4 AS four", {})["four"].tolist() == [4]
    assert databricks_server.count("OpenSession") == 2


def test_sql_error_is_query_failed_with_the_warehouse_message(
    wh: DatabricksWarehouse,
    databricks_server: Server,
) -> None:
    with pytest.raises(QueryFailed, match=r"\[TABLE_OR_VIEW_NOT_FOUND\].*missing_table"):
        wh.query("SELECT * FROM `missing_table`", {})
    databricks_server.fail_statement(
        "boom", error_class="DIVIDE_BY_ZERO", message="Division by zero.", sql_state="22012"
    )
    with pytest.raises(QueryFailed, match=r"\[DIVIDE_BY_ZERO\] Division by zero"):
        wh.query("SELECT 'boom' AS x", {})
    # the session survives SQL errors
    assert wh.query("SELECT 1 AS one", {})["one"].tolist() == [1]
    assert databricks_server.count("OpenSession") == 1


def test_statement_timeout_enforced_by_the_warehouse(
    wh: DatabricksWarehouse,
    databricks_server: Server,
) -> None:
    databricks_server.hang_statement("slow", seconds=30)
    started = time.monotonic()
    with pytest.raises(QueryTimeout, match="QUERY_EXECUTION_TIMEOUT_EXCEEDED"):
        wh.query("SELECT 'slow' AS x", {}, timeout=1)
    assert time.monotonic() - started < 3
    assert wh.query("SELECT 1 AS one", {})["one"].tolist() == [1]


def test_hanging_warehouse_hits_the_client_deadline(
    wh: DatabricksWarehouse,
    databricks_server: Server,
) -> None:
    wh.query("SELECT 1 AS one", {}, timeout=1)
    databricks_server.inject("ExecuteStatement", delay=8)  # the call itself never answers in time
    started = time.monotonic()
    with pytest.raises(QueryTimeout, match="no answer within"):
        wh.query("SELECT 1 AS one", {}, timeout=1)
    assert time.monotonic() - started < 4  # 1 s timeout + 2 s grace


def _wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_close_cancels_a_running_statement_at_once_although_its_session_long_polls(
    databricks_server: Server,
) -> None:
    """Databricks holds GetOperationStatus for seconds; the cancel must not queue behind it
    (issue 14, item 22: close() took 5 s and sent no CancelOperation)."""
    databricks_server.long_poll = 5.0
    wh = DatabricksWarehouse("dbx", _config(databricks_server, statement_timeout=30))
    databricks_server.hang_statement("long", seconds=30)
    thread, outcome = query_in_thread(wh, "SELECT 'long' AS x")
    _wait_until(lambda: databricks_server.count("GetOperationStatus") >= 1)  # id known, polling
    started = time.monotonic()
    wh.close()
    took = time.monotonic() - started
    thread.join(10)
    assert not thread.is_alive()
    assert took < adapter.CLOSE_WAIT_SECONDS + 0.5, f"close() took {took:.1f}s"
    assert len(outcome) == 1 and isinstance(outcome[0], WarehouseUnavailable)
    assert databricks_server.cancelled == ["SELECT 'long' AS x"]
    assert "CancelOperation" in databricks_server.calls
    with pytest.raises(WarehouseUnavailable, match="closed"):
        wh.query("SELECT 1", {})


def test_close_while_execute_statement_still_waits_stops_the_statement_by_closing_its_session(
    databricks_server: Server,
) -> None:
    """Before ExecuteStatement answers there is no statement id to cancel."""
    databricks_server.direct_results_wait = 30.0
    wh = DatabricksWarehouse("dbx", _config(databricks_server, statement_timeout=30))
    databricks_server.hang_statement("long", seconds=30)
    thread, outcome = query_in_thread(wh, "SELECT 'long' AS x")
    _wait_until(lambda: bool(databricks_server.running_operations()))
    started = time.monotonic()
    wh.close()
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - started < adapter.CLOSE_WAIT_SECONDS + 0.5
    assert len(outcome) == 1 and isinstance(outcome[0], WarehouseUnavailable)
    assert databricks_server.cancelled == ["SELECT 'long' AS x"]
    assert "CloseSession" in databricks_server.calls


@pytest.mark.parametrize("stuck_in", ["ExecuteStatement", "OpenSession"])
def test_sessions_stuck_in_a_hung_network_free_their_pool_slots_at_the_deadline(
    databricks_server: Server, stuck_in: str
) -> None:
    """Issue 14, item 23: after a hang, the next cycle failed against a healthy warehouse with
    "all 4 sessions stayed busy" until the stuck requests' 60 s socket timeout."""
    wh = DatabricksWarehouse("dbx", _config(databricks_server, retries=0), max_sessions=2)
    databricks_server.inject(stuck_in, hang=True, times=2)
    stuck = [query_in_thread(wh, f"SELECT {i} AS i", timeout=1) for i in range(2)]
    for thread, outcome in stuck:
        thread.join(10)
        assert not thread.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], QueryTimeout), outcome
    started = time.monotonic()
    assert wh.query("SELECT 3 AS three", {}, timeout=5)["three"].tolist() == [3]
    assert time.monotonic() - started < 2
    # once their requests end, the abandoned sessions are closed, never reused
    databricks_server.release_hangs()
    _wait_until(lambda: len(databricks_server.sessions) == 1)
    assert databricks_server.count("OpenSession") == 3
    wh.close()


def _daemon_config(tmp_path: Path, srv: Server, **warehouse: Any) -> Path:
    """A config with one hourly check on ``kpi.visits`` in the protocol server's warehouse."""
    srv.execute("CREATE SCHEMA kpi")
    srv.execute("CREATE TABLE kpi.visits (ts TIMESTAMP, amount DOUBLE)")
    document = {
        "warehouse": {
            "kind": "databricks",
            "connection_uri": srv.connection_uri,
            "access_token": srv.token,
            **warehouse,
        },
        "state": {"path": str(tmp_path / "state.db")},
        "checks": [
            {
                "name": "visits",
                "kind": "metric",
                "table": "kpi.visits",
                "timestamp_column": "ts",
                "expression": "sum(amount)",
            }
        ],
    }
    return write_config(tmp_path / "kpi.yaml", document)


def test_sigterm_while_a_statement_runs_exits_0_within_10s_and_cancels_it(
    databricks_server: Server, tmp_path: Path
) -> None:
    """Issue 14, item 22: took 12 s and sent no CancelOperation (the README promises both)."""
    srv = databricks_server
    srv.long_poll = 5.0  # as Databricks holds GetOperationStatus
    config = _daemon_config(tmp_path, srv, statement_timeout=60)
    srv.hang_statement("`kpi`.`visits`", seconds=120)
    daemon = DaemonProcess(["run", "-c", str(config)], free_port(), log=tmp_path / "daemon.log")
    try:
        daemon.wait_ready()
        _wait_until(
            lambda: bool(srv.running_operations()) and srv.count("GetOperationStatus") > 0, 30
        )
    finally:
        code, took = daemon.stop(signal.SIGTERM)
    output = daemon.output()
    assert code == 0, output
    assert took < 10, f"took {took:.1f}s to exit"
    assert [sql for sql in srv.cancelled if "`kpi`.`visits`" in sql], srv.calls
    assert "CancelOperation" in srv.calls
    assert "Traceback" not in output


def test_validate_connect_with_a_refused_token_says_so_in_one_line_without_connector_noise(
    databricks_server: Server, tmp_path: Path
) -> None:
    """Issue 14, item 25: "FAILED: warehouse 'default': ...: : Invalid access token.." on
    stdout and the connector's empty "attempt_request: Exception:" lines on stderr."""
    config = _daemon_config(tmp_path, databricks_server, access_token="dapi-wrong")
    result = run_kpi_monitor("validate", "-c", str(config), "--connect", log_format="text")
    assert result.returncode == 2
    # the warehouse's one line, then a line per check it leaves untried
    [line] = [x for x in result.stdout.splitlines() if x.startswith("warehouse ")]
    assert line == (
        "warehouse default (databricks): FAILED: credentials refused (HTTP 403 on OpenSession): "
        "Invalid access token."
    )
    assert result.stderr == ""


def test_concurrent_queries_use_a_small_session_pool(
    databricks_server: Server,
) -> None:
    wh = DatabricksWarehouse("dbx", _config(databricks_server), max_sessions=2)
    results: list[int] = []
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results.append(int(wh.query("SELECT :i AS i", {"i": i})["i"].tolist()[0]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    wh.close()
    assert not errors and sorted(results) == list(range(8))
    assert 1 <= databricks_server.count("OpenSession") <= 2


def test_oauth_machine_to_machine(databricks_server: Server) -> None:
    config = _config(
        databricks_server,
        access_token=None,
        client_id=databricks_server.client_id,
        client_secret=SecretStr(databricks_server.client_secret),
    )
    wh = DatabricksWarehouse("dbx", config)
    assert wh.query("SELECT 1 AS one", {})["one"].tolist() == [1]
    assert len(databricks_server.issued_tokens) == 1
    wh.close()
    bad = _config(
        databricks_server,
        access_token=None,
        client_id=databricks_server.client_id,
        client_secret=SecretStr("wrong"),
    )
    with pytest.raises(WarehouseUnavailable, match="OAuth token request refused"):
        DatabricksWarehouse("dbx", bad).query("SELECT 1", {})


def test_settings_fall_back_to_the_environment(
    databricks_server: Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bare = DatabricksWarehouseConfig(
        kind="databricks", connection_uri=databricks_server.connection_uri
    )
    for var in ("DATABRICKS_HOST", "DATABRICKS_TOKEN", "DATABRICKS_CLIENT_ID"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(WarehouseUnavailable, match="DATABRICKS_TOKEN"):
        DatabricksWarehouse("dbx", DatabricksWarehouseConfig(kind="databricks"))
    monkeypatch.setenv("DATABRICKS_TOKEN", databricks_server.token)
    wh = DatabricksWarehouse("dbx", bare)
    assert wh.query("SELECT 1 AS one", {})["one"].tolist() == [1]
    wh.close()


@pytest.fixture
def tls_server(tmp_path: Path) -> Any:
    """The protocol server over HTTPS with a self-signed certificate: (server, certificate)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out", str(cert),
            "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    srv = DatabricksProtocolServer(tmp_path / "tls.duckdb", tls=(str(cert), str(key)))
    yield srv, cert
    srv.close()


def test_tls_with_a_self_signed_certificate(tls_server: tuple[Server, Path]) -> None:
    srv, cert = tls_server
    assert srv.connection_uri.startswith("https://")
    wh = DatabricksWarehouse("dbx", _config(srv, tls_trusted_ca_file=str(cert)))
    assert wh.query("SELECT 1 AS one", {})["one"].tolist() == [1]
    wh.close()
    untrusted = DatabricksWarehouse("dbx", _config(srv, retries=0))
    with pytest.raises(WarehouseUnavailable):
        untrusted.query("SELECT 1", {})


@pytest.mark.parametrize("form", ["127.0.0.1:{port}", "https://127.0.0.1:{port}/"])
def test_a_port_in_server_hostname_is_used(
    tls_server: tuple[Server, Path], form: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """Issue 14, item 26: host:8443 failed with "Port could not be cast to integer value" and
    tracebacks from the connector's Connection.__del__."""
    srv, cert = tls_server
    config = DatabricksWarehouseConfig(
        kind="databricks",
        server_hostname=form.format(port=srv.port),
        http_path=srv.http_path,
        access_token=SecretStr(srv.token),
        tls_trusted_ca_file=str(cert),
        retries=0,
    )
    wh = DatabricksWarehouse("dbx", config)
    assert wh.query("SELECT 1 AS one", {})["one"].tolist() == [1]
    wh.close()
    assert "Traceback" not in capfd.readouterr().err


def test_column_based_results_without_pyarrow(databricks_server: Server) -> None:
    """With pyarrow absent the connector asks for column-based results; the adapter copes."""
    _load_orders(databricks_server)
    script = textwrap.dedent(
        """
        import json, sys
        sys.modules["pyarrow"] = None  # as if pyarrow were not installed
        from datetime import datetime, UTC
        from pydantic import SecretStr
        from monitor.config import DatabricksWarehouseConfig
        from monitor.warehouse.databricks import DatabricksWarehouse
        uri, token, sql = sys.argv[1:4]
        wh = DatabricksWarehouse("dbx", DatabricksWarehouseConfig(
            kind="databricks", connection_uri=uri, access_token=SecretStr(token)))
        df = wh.query(sql, {"since": datetime(2026, 11, 1, tzinfo=UTC), "skip": 99,
                            "nobody": "XX"})
        wh.close()
        print(json.dumps({
            "columns": list(df.columns),
            "order_ts": [str(v) for v in df["order_ts"]],
            "loaded_at": [str(v) for v in df["loaded_at"]],
            "amount": [float(v) for v in df["amount"]],
            "dtype": str(df["order_ts"].dtype),
        }))
        """
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    out = subprocess.run(
        [sys.executable, "-c", script, databricks_server.connection_uri, databricks_server.token,
         ORDERS_SQL],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["columns"] == ["id", "order_ts", "loaded_at", "amount", "country"]
    assert got["order_ts"] == ["2026-11-01 05:30:00", "2026-11-01 06:30:00"]
    assert got["loaded_at"] == ["2026-11-01 05:31:00", "2026-11-01 06:31:00"]
    assert got["amount"] == [10.5, 2.25]
    assert got["dtype"].startswith("datetime64")
    # the connector told the server it cannot read Arrow (and got columns)
    assert databricks_server.arrow_requested == [False]


@pytest.mark.parametrize("result_format", ["arrow", "columns"])
def test_every_check_kind_matches_duckdb(
    wh: DatabricksWarehouse, databricks_server: Server, tmp_path: Path, result_format: str
) -> None:
    databricks_server.result_format = result_format
    for ddl in dialect_cases.ORDERS_DDL:
        databricks_server.execute(ddl)
    databricks_server.load_rows("analytics.fct_orders", dialect_cases.order_rows())
    assert dialect_cases.run_check_kinds(wh) == dialect_cases.reference_results(tmp_path)
    # information_schema, as the deployment watcher reads it
    columns = wh.columns("analytics.fct_orders")
    assert list(columns) == ["order_ts", "loaded_at", "amount", "status", "country"]
    assert wh.columns("analytics.no_such_table") == {}


def test_read_timeout_does_not_resend_the_statement(
    databricks_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connector re-sends ExecuteStatement after a socket read timeout unless told not to."""
    monkeypatch.setattr(adapter, "SOCKET_TIMEOUT_SECONDS", 1.0)
    wh = DatabricksWarehouse("dbx", _config(databricks_server, retries=0))
    wh.query("SELECT 1 AS one", {})
    databricks_server.inject("ExecuteStatement", delay=2.5)
    with pytest.raises(WarehouseUnavailable):
        wh.query("SELECT 2 AS two", {})
    time.sleep(0.5)  # a re-sent request would have arrived by now
    assert databricks_server.count("ExecuteStatement") == 2  # "SELECT 1", then "SELECT 2" once
    wh.close()
