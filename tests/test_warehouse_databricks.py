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

import json
import os
import shutil
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

from monitor.config import DatabricksWarehouseConfig
from monitor.errors import QueryFailed, QueryTimeout, WarehouseUnavailable
from monitor.warehouse.databricks import DatabricksWarehouse
from tests.databricks_server import DatabricksProtocolServer, databricks_server  # noqa: F401
from tests.test_dialects import (
    DST_ROWS,
    ORDERS_DDL,
    order_rows,
    reference_results,
    run_check_kinds,
)

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
    for ts, _, _ in DST_ROWS:
        databricks_server.execute("INSERT INTO events VALUES (CAST(? AS TIMESTAMP))", [ts])
    d = wh.dialect
    ts = d.quote("ts")
    df = wh.query(
        f"SELECT {d.utc_time(ts)} AS ts, {d.bucket(ts, 'hour', d.param('tz'))} AS hour,"
        f" {d.bucket(ts, 'day', d.param('tz'))} AS day FROM `events` ORDER BY 1",
        {"tz": "America/New_York"},
    )
    got = [(str(r.ts), str(r.hour), str(r.day)) for r in df.itertuples()]
    assert got == sorted(DST_ROWS)


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
    assert wh._connect_kwargs(10)["enable_telemetry"] is False


def test_bad_token_is_refused_without_retrying(databricks_server: Server) -> None:
    wh = DatabricksWarehouse("dbx", _config(databricks_server, access_token=SecretStr("wrong")))
    with pytest.raises(WarehouseUnavailable, match=r"refused the credentials \(HTTP 403\)"):
        wh.query("SELECT 1", {})
    assert len(databricks_server.requests_headers) == 1
    assert "wrong" not in str(databricks_server.calls)


def test_503_then_recovery(wh: DatabricksWarehouse, databricks_server: Server) -> None:
    wh.query("SELECT 1 AS one", {})
    databricks_server.inject("ExecuteStatement", http_status=503, retry_after=1, times=2)
    started = time.monotonic()
    assert wh.query("SELECT 2 AS two", {})["two"].tolist() == [2]
    assert time.monotonic() - started < 5
    assert databricks_server.count("ExecuteStatement") == 4  # 1 + 2 refused + 1


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


def test_close_cancels_running_statements(databricks_server: Server) -> None:
    wh = DatabricksWarehouse("dbx", _config(databricks_server, statement_timeout=30))
    databricks_server.hang_statement("long", seconds=30)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            wh.query("SELECT 'long' AS x", {})
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 5
    while not databricks_server.running_operations():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    started = time.monotonic()
    wh.close()
    t.join(10)
    assert not t.is_alive() and time.monotonic() - started < 5
    assert len(outcome) == 1 and isinstance(outcome[0], WarehouseUnavailable)
    assert databricks_server.cancelled == ["SELECT 'long' AS x"]
    assert "CancelOperation" in databricks_server.calls
    with pytest.raises(WarehouseUnavailable, match="closed"):
        wh.query("SELECT 1", {})


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


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_with_a_self_signed_certificate(tmp_path: Path) -> None:
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
    try:
        assert srv.connection_uri.startswith("https://")
        wh = DatabricksWarehouse("dbx", _config(srv, tls_trusted_ca_file=str(cert)))
        assert wh.query("SELECT 1 AS one", {})["one"].tolist() == [1]
        wh.close()
        untrusted = DatabricksWarehouse("dbx", _config(srv, retries=0))
        with pytest.raises(WarehouseUnavailable):
            untrusted.query("SELECT 1", {})
    finally:
        srv.close()


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
    for ddl in ORDERS_DDL:
        databricks_server.execute(ddl)
    databricks_server.load_rows("analytics.fct_orders", order_rows())
    assert run_check_kinds(wh) == reference_results(tmp_path)
    # information_schema, as the deployment watcher reads it
    columns = wh.columns("analytics.fct_orders")
    assert list(columns) == ["order_ts", "loaded_at", "amount", "status", "country"]
    assert wh.columns("analytics.no_such_table") == {}


def test_read_timeout_does_not_resend_the_statement(
    databricks_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connector re-sends ExecuteStatement after a socket read timeout unless told not to."""
    import monitor.warehouse.databricks as adapter

    monkeypatch.setattr(adapter, "SOCKET_TIMEOUT_SECONDS", 1.0)
    wh = DatabricksWarehouse("dbx", _config(databricks_server, retries=0))
    wh.query("SELECT 1 AS one", {})
    databricks_server.inject("ExecuteStatement", delay=2.5)
    with pytest.raises(WarehouseUnavailable):
        wh.query("SELECT 2 AS two", {})
    time.sleep(0.5)  # a re-sent request would have arrived by now
    assert databricks_server.count("ExecuteStatement") == 2  # "SELECT 1", then "SELECT 2" once
    wh.close()
