"""The kpi-monitor command: tables, exit codes, precise errors without tracebacks."""

from __future__ import annotations

import shutil
import socket
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from monitor.cli import main
from monitor.config import parse_config
from monitor.warehouse import open_warehouse
from tests.conftest import demo_document, free_port, write_config
from tests.daemon_process import KPI_MONITOR, DaemonProcess, run_kpi_monitor
from tests.duckdb_writes import write
from tests.slack_server import SlackServer


@pytest.fixture
def live_config(tmp_path: Path, live_demo_warehouse: Path) -> Path:
    shutil.copy(live_demo_warehouse, tmp_path / "demo.duckdb")
    return write_config(tmp_path / "kpi.yaml", demo_document(tmp_path))


def test_check_prints_a_table_and_exits_1_on_an_anomaly(
    live_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "-c", str(live_config)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "CHECK",
        "SEGMENT",
        "BUCKET",
        "LOCAL",
        "VALUE",
        "EXPECTED",
        "BAND",
        "SCORE",
        "STATUS",
    ]
    seg, bucket, status = (out[0].index(h) for h in ("SEGMENT", "BUCKET", "STATUS"))
    table = out[1 : out.index("")]
    rows = {
        (line[:seg].strip(), line[seg:bucket].strip()): line[status:].strip() for line in table
    }
    assert rows[("revenue", "DE")] == "ANOMALY"
    assert rows[("revenue", "(total)")] == "ANOMALY"
    assert rows[("revenue", "US")] == "ok"
    assert rows[("events_freshness", "")] == "ANOMALY"
    # below the table, where the total's drop came from
    where = out[out.index("Where did it move?") + 1 :]
    assert len(where) == 1 and where[0].startswith("revenue: DE -")
    assert "of the drop in revenue" in where[0] and "explains" in where[0]


def test_check_exits_0_when_all_is_normal(live_config: Path) -> None:
    assert (
        main(
            [
                "check",
                "-c",
                str(live_config),
                "--check",
                "orders_rows",
                "--check",
                "orders_freshness",
            ]
        )
        == 0
    )


def test_check_exits_2_on_an_error_or_unknown_check(
    tmp_path: Path, live_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "-c", str(live_config), "--check", "nope"]) == 2
    assert capsys.readouterr().err.splitlines()[1] == (
        "  no check named 'nope'; the checks are: revenue, average_order_value, orders_rows, "
        "orders_freshness, events_freshness, signups, daily_customers"
    )
    assert main(["check", "-c", str(live_config), "--check", "revenu"]) == 2
    assert "no check named 'revenu' (did you mean 'revenue'?); the checks are: " in capsys.readouterr().err
    document = yaml.safe_load(live_config.read_text())
    document["warehouse"]["path"] = str(tmp_path / "gone.duckdb")
    broken = write_config(tmp_path / "gone.yaml", document)
    assert main(["check", "-c", str(broken), "--check", "signups"]) == 2
    assert "ERROR: warehouse 'default': DuckDB file" in capsys.readouterr().out


def test_a_dbt_artifact_nested_too_deeply_is_a_clear_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deep = tmp_path / "manifest.json"
    deep.write_text("[" * 60_000)
    code = main(
        ["deployment", "record", "--url", f"http://127.0.0.1:{free_port()}", "--id", "d1",
         "--environment", "staging", "--dbt-manifest", str(deep)]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert f"{deep} is not a dbt artifact: JSON nested too deeply" in err
    assert "Traceback" not in err


def test_validate_and_connect(
    tmp_path: Path, live_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "-c", str(live_config), "--connect"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [f"{live_config}: valid, 7 checks", f"  revenue (metric): {live_config}, checks[0]"]
    assert lines[8:] == [
        "warehouse default (duckdb): ok",
        *(f"check {name}: ok" for name in ("revenue", "average_order_value", "orders_rows",
                                           "orders_freshness", "events_freshness", "signups",
                                           "daily_customers")),
    ]
    document = yaml.safe_load(live_config.read_text())
    document["warehouse"]["path"] = str(tmp_path / "gone.duckdb")
    assert (
        main(["validate", "-c", str(write_config(tmp_path / "gone.yaml", document)), "--connect"])
        == 2
    )
    out = capsys.readouterr().out
    assert "warehouse default (duckdb): FAILED: DuckDB file" in out
    assert "check signups: not tried: its warehouse is unreachable" in out


def writable(path: Path) -> bool:
    """Whether a loader could open the DuckDB file for writing now: DuckDB refuses it in this
    process while a warehouse adapter still holds the file open."""
    try:
        duckdb.connect(str(path)).close()
    except duckdb.Error:
        return False
    return True


def holding_document(live_config: Path) -> dict[str, Any]:
    """The demo config, its DuckDB warehouse keeping the file open for ten minutes after a
    query (unless it is closed)."""
    document: dict[str, Any] = yaml.safe_load(live_config.read_text())
    document["warehouse"]["keep_open"] = 600
    return document


def test_a_warehouse_closes_as_its_with_block_ends(tmp_path: Path, live_config: Path) -> None:
    config = parse_config(holding_document(live_config))
    with open_warehouse("default", config.all_warehouses()["default"]) as warehouse:
        warehouse.ping()
        assert not writable(tmp_path / "demo.duckdb"), "kept open between queries"
    assert writable(tmp_path / "demo.duckdb")


def test_check_closes_the_warehouses_it_opened(tmp_path: Path, live_config: Path) -> None:
    config = write_config(tmp_path / "held.yaml", holding_document(live_config))
    assert main(["check", "-c", str(config), "--check", "orders_rows"]) == 0
    assert writable(tmp_path / "demo.duckdb")


def test_validate_connect_closes_every_warehouse_also_when_a_ping_fails(
    tmp_path: Path, live_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = holding_document(live_config)
    document["warehouses"] = {
        "default": document.pop("warehouse"),
        "pg": {  # nobody listens there
            "kind": "postgres",
            "dsn": f"postgresql://kpimon@127.0.0.1:{free_port()}/analytics",
            "statement_timeout": 5,
        },
    }
    for check in document["checks"]:
        check["warehouse"] = "default"
    config = write_config(tmp_path / "two.yaml", document)
    assert main(["validate", "-c", str(config), "--connect"]) == 2
    out = capsys.readouterr().out
    assert "warehouse default (duckdb): ok" in out
    assert "warehouse pg (postgres): FAILED: cannot connect to PostgreSQL" in out
    assert writable(tmp_path / "demo.duckdb")


def test_validate_connect_runs_each_checks_query_without_reading_data(
    tmp_path: Path, live_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A table, a column or an expression that does not exist fails validation, one line per
    check, instead of the first run at night; the probe returns no rows."""
    document = yaml.safe_load(live_config.read_text())
    document["checks"][0]["table"] = "analytics.fct_order"  # a typo
    document["checks"][1]["expression"] = "avg(amount_eur)"  # a column that is not there
    document["checks"][2]["where"] = "status = 'completed"  # broken SQL
    config = write_config(tmp_path / "typos.yaml", document)
    assert main(["validate", "-c", str(config), "--connect"]) == 2
    lines = capsys.readouterr().out.splitlines()
    failed = {line.split(":")[0]: line for line in lines if ": FAILED: " in line}
    assert sorted(failed) == ["check average_order_value", "check orders_rows", "check revenue"]
    assert "fct_order" in failed["check revenue"] and "does not exist" in failed["check revenue"]
    assert "amount_eur" in failed["check average_order_value"]
    assert "check orders_freshness: ok" in lines and "check daily_customers: ok" in lines


def test_check_show_sql_prints_each_checks_query_and_runs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = demo_document(tmp_path)
    document["warehouse"]["path"] = str(tmp_path / "absent.duckdb")  # nothing is connected to
    config = write_config(tmp_path / "kpi.yaml", document)
    assert main(["check", "-c", str(config), "--show-sql", "--check", "revenue", "--check", "events_freshness"]) == 0
    out = capsys.readouterr().out
    revenue, freshness = out.split("\n\n")
    assert revenue.startswith("-- revenue (metric) on warehouse default (duckdb); parameters:\n--   since = '")
    assert "' (UTC)\n--   tz = 'America/New_York'\n--   until = '" in revenue
    assert 'FROM "analytics"."fct_orders"' in revenue and "(status = 'completed')" in revenue
    assert revenue.rstrip().endswith("GROUP BY GROUPING SETS ((kpimon_bucket, kpimon_segment), (kpimon_bucket));")
    assert freshness.startswith("-- events_freshness (freshness) on warehouse default (duckdb)")
    assert 'FROM "raw"."events"' in freshness
    assert not (tmp_path / "absent.duckdb").exists()


def test_help_lists_every_command_without_markup() -> None:
    result = subprocess.run([KPI_MONITOR, "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "``" not in result.stdout
    commands = result.stdout.split("positional arguments:")[1].split("options:")[0]
    for command in ("run", "demo", "check", "validate", "backtest", "deployment"):
        assert f"\n    {command}" in commands
    assert "KPI anomaly monitor" in result.stdout


def test_config_from_the_environment(live_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPIMON_CONFIG", str(live_config))
    assert main(["validate"]) == 0
    monkeypatch.delenv("KPIMON_CONFIG")
    assert main(["validate"]) == 2


def test_a_broken_config_stops_the_daemon_with_the_field_and_exit_2(
    tmp_path: Path, live_config: Path
) -> None:
    document = yaml.safe_load(live_config.read_text())
    document["checks"][3]["grain"] = "fortnight"
    config = write_config(tmp_path / "bad.yaml", document)
    result = subprocess.run(
        [KPI_MONITOR, "run", "-c", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"invalid configuration {config}:",
        "  checks[3].grain: Input should be 'hour' or 'day' (got 'fortnight')",
    ]
    assert "Traceback" not in result.stderr + result.stdout


def test_run_on_a_port_in_use_says_so_in_one_line_and_exits_2(live_config: Path) -> None:
    """Issue 14, item 25: the daemon died with a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_kpi_monitor(
            "run", "-c", str(live_config), "--host", "127.0.0.1", "--port", str(port)
        )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"kpi-monitor: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(use another --port or server.port)"
    ]


def test_a_pipeline_gate_fails_a_breaking_deployment_and_passes_a_benign_one(
    tmp_path: Path, live_demo_warehouse: Path, slack: SlackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CI gate end to end: `deployment record`, then `deployment verify --wait`, against a
    daemon subprocess. The last hour's bucket is made to complete a few seconds after the
    deployment (its settle time), as it would if the deployment had run just before it closed."""
    shutil.copy(live_demo_warehouse, tmp_path / "demo.duckdb")
    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    document = demo_document(tmp_path, token="${SLACK_BOT_TOKEN}", api_url=slack.url, group_wait="0s")
    document["defaults"].update(post_deploy_interval="2s", post_deploy_window="10m",
                                settle=f"{int((now - hour).total_seconds()) + 30}s")
    document["checks"][0].update(alert_after=1)
    config = write_config(tmp_path / "kpi.yaml", document)
    port, token = free_port(), "gate-token"
    env = {"SLACK_BOT_TOKEN": slack.token, "KPIMON_API_TOKEN": token}
    daemon = DaemonProcess(["run", "-c", str(config)], port, env, log=tmp_path / "daemon.log")
    url = f"http://127.0.0.1:{port}"
    try:
        daemon.wait_ready()
        daemon.wait_all_ran()
        monkeypatch.setenv("KPIMON_API_TOKEN", "wrong")
        assert main(["deployment", "record", "--url", url, "--id", "x", "--environment", "prod"]) == 2
        monkeypatch.setenv("KPIMON_API_TOKEN", token)
        # the deployment's join fan-out repeats every US order eight times in the hour not judged
        # yet (a mere doubling scores from 2 to 7 robust SD on the demo data, by hour of the day)
        write(tmp_path / "demo.duckdb",
              "INSERT INTO analytics.fct_orders SELECT o.* FROM analytics.fct_orders o, range(7)"
              " WHERE country = 'US' AND order_ts >= ? AND order_ts < ?",
              [(hour - timedelta(hours=1)).replace(tzinfo=None), hour.replace(tzinfo=None)])
        assert main(["deployment", "record", "--url", url, "--id", "ci-1001", "--environment", "prod",
                     "--model", "fct_orders", "--commit", "5f1e2d3c4b5a", "--link", "https://ci.example.com/1001"]) == 0
        assert main(["deployment", "verify", "--url", url, "--id", "ci-1001", "--timeout", "1s", "--wait", "--poll", "1s"]) == 3
        assert main(["deployment", "verify", "--url", url, "--id", "ci-1001", "--wait", "--timeout", "2m", "--poll", "1s"]) == 1
        alert = slack.wait_for_text("revenue [US]")
        assert "Likely cause: deployment ci-1001 to prod, commit 5f1e2d3c4b5a" in alert["text"]
        report = slack.wait_for_text("Deployment ci-1001")
        assert report["text"].startswith("Deployment ci-1001")
        assert "FAILED: revenue [US] deviated after the deployment" in report["text"]
        # a deployment touching nothing watched passes at once; an unknown one is an error
        assert main(["deployment", "record", "--url", url, "--id", "ci-1002", "--environment", "prod",
                     "--model", "dim_marketing"]) == 0
        assert main(["deployment", "verify", "--url", url, "--id", "ci-1002", "--wait"]) == 0
        assert main(["deployment", "verify", "--url", url, "--id", "nope"]) == 2
    finally:
        assert daemon.stop()[0] == 0
