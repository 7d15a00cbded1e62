"""The HTTP API over real sockets, against a daemon running in this process."""

from __future__ import annotations

import gzip
import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.config import parse_config
from monitor.daemon import Daemon
from monitor.server import _accepts_gzip
from tests.conftest import demo_document
from tests.slack_server import SlackServer

TOKEN = "s3cret-api-token"


@pytest.fixture
def daemon(
    tmp_path: Path, live_demo_warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Daemon]:
    monkeypatch.setenv("KPIMON_API_TOKEN", TOKEN)
    shutil.copy(live_demo_warehouse, tmp_path / "demo.duckdb")
    running = Daemon(parse_config(demo_document(tmp_path)), host="127.0.0.1", port=0)
    running.start()
    yield running
    running.stop()


def call(
    daemon: Daemon,
    method: str,
    path: str,
    body: bytes | None = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Message, bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{daemon.port}{path}", data=body, method=method
    )
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def wait_for_run(daemon: Daemon, check: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, _, body = call(daemon, "GET", f"/api/v1/checks/{check}")
        found: dict[str, Any] = json.loads(body)
        if found["last_run"] is not None:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{check} did not run")


def test_health_and_readiness(daemon: Daemon) -> None:
    assert call(daemon, "GET", "/healthz")[0] == 200
    status, _, body = call(daemon, "GET", "/readyz")
    assert (status, json.loads(body)) == (200, {"status": "ready"})


def test_metrics_show_the_demo_incidents(daemon: Daemon) -> None:
    wait_for_run(daemon, "signups")
    status, headers, body = call(daemon, "GET", "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert 'kpimon_anomaly{check="signups",segment="",severity="warning",team="growth"} 1.0' in text
    assert 'kpimon_build_info{version="0.1.0"} 1.0' in text


def test_metrics_are_gzipped_for_a_scraper_that_accepts_it(daemon: Daemon) -> None:
    wait_for_run(daemon, "revenue")
    _, plain_headers, plain = call(daemon, "GET", "/metrics")
    status, headers, body = call(daemon, "GET", "/metrics", headers={"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert headers["Vary"] == "Accept-Encoding" and int(headers["Content-Length"]) == len(body)
    assert "Content-Encoding" not in plain_headers
    text = gzip.decompress(body).decode()
    names = [f.name for f in text_string_to_metric_families(text)]
    assert names == [f.name for f in text_string_to_metric_families(plain.decode())]
    assert "kpimon_anomaly" in names and "kpimon_check_duration_seconds" in names
    assert len(body) < len(plain) / 4


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        ("gzip", True),
        ("deflate, GZIP;q=0.5", True),
        ("gzip;q=0", False),
        ("gzip; q=0.0", False),
        ("identity", False),
        ("", False),
        ("gzip;q=x", False),
    ],
)
def test_accept_encoding_is_read_with_its_quality(header: str, accepted: bool) -> None:
    assert _accepts_gzip(header) is accepted


def test_checks_api_lists_verdicts_and_alert_state(daemon: Daemon) -> None:
    found = wait_for_run(daemon, "revenue")
    assert found["kind"] == "metric" and found["owner"] == "@revenue-oncall"
    assert found["last_run"]["outcome"] == "anomaly"
    de = next(s for s in found["series"] if s["segment"] == "DE")
    assert de["alert"]["status"] == "firing" and de["anomalous"] is True
    assert de["value"] < de["lower"] < de["expected"] < de["upper"]
    status, _, body = call(daemon, "GET", "/api/v1/checks")
    assert status == 200
    assert [c["name"] for c in json.loads(body)["checks"]][:2] == ["revenue", "average_order_value"]


def test_run_now_needs_the_token(daemon: Daemon) -> None:
    wait_for_run(daemon, "orders_rows")
    status, headers, body = call(daemon, "POST", "/api/v1/checks/orders_rows/run")
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
    assert json.loads(body) == {"error": "missing or wrong bearer token"}
    assert call(daemon, "POST", "/api/v1/checks/orders_rows/run", token="wrong")[0] == 401
    before = daemon.metrics.registry.get_sample_value(
        "kpimon_check_runs_total", {"check": "orders_rows", "outcome": "ok"}
    )
    status, _, body = call(daemon, "POST", "/api/v1/checks/orders_rows/run", token=TOKEN)
    assert (status, json.loads(body)) == (202, {"check": "orders_rows", "status": "scheduled"})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        after = daemon.metrics.registry.get_sample_value(
            "kpimon_check_runs_total", {"check": "orders_rows", "outcome": "ok"}
        )
        if after and before is not None and after > before:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("run now did not run the check")


def test_errors_are_json_with_the_right_status(daemon: Daemon) -> None:
    status, _, body = call(daemon, "POST", "/api/v1/checks/nope/run", token=TOKEN)
    assert (status, json.loads(body)) == (404, {"error": "no check named 'nope'"})
    status, headers, body = call(daemon, "DELETE", "/api/v1/checks/revenue/run", token=TOKEN)
    assert status == 405 and headers["Allow"] == "POST"
    assert call(daemon, "GET", "/api/v2/anything")[0] == 404
    status, _, body = call(
        daemon,
        "POST",
        "/api/v1/checks/revenue/run",
        body=b"{not json",
        token=TOKEN,
        headers={"Content-Type": "application/json"},
    )
    assert status == 400 and "not valid JSON" in json.loads(body)["error"]
    status, _, _ = call(
        daemon, "POST", "/api/v1/checks/revenue/run", body=b"x" * 70_000, token=TOKEN
    )
    assert status == 413


def test_mute_and_rebaseline_take_effect(daemon: Daemon) -> None:
    wait_for_run(daemon, "revenue")
    # revenue's total fires with Germany: the answer says where it moved, ranked by impact
    revenue = json.loads(call(daemon, "GET", "/api/v1/checks/revenue")[2])
    total = next(s for s in revenue["series"] if s["segment"] == "")
    assert total["alert"]["status"] == "firing"
    explanation = revenue["explanation"]
    assert explanation["kind"] == "one"
    assert explanation["text"].startswith("DE -") and "drop in revenue" in explanation["text"]
    assert [c["where"] for c in explanation["culprits"]] == [{"country": "DE"}]
    assert explanation["contributions"][0]["where"] == {"country": "DE"}
    assert explanation["contributions"][0]["share"] > 0.8 and explanation["change"] < 0
    assert {"actual", "expected", "change", "spread", "share"} <= set(explanation["contributions"][0])
    assert json.loads(call(daemon, "GET", "/api/v1/checks/signups")[2])["explanation"] is None
    body = json.dumps(
        {"until": "2099-01-01T00:00:00Z", "reason": "backfill of fct_orders"}
    ).encode()
    status, _, answer = call(daemon, "POST", "/api/v1/checks/revenue/mute", body=body, token=TOKEN)
    assert (status, json.loads(answer)) == (
        200,
        {
            "check": "revenue",
            "until": "2099-01-01T00:00:00+00:00",
            "reason": "backfill of fct_orders",
        },
    )
    assert daemon.store.mutes()["revenue"][1] == "backfill of fct_orders"
    naive = json.dumps({"until": "2099-01-01T00:00:00", "reason": "x"}).encode()
    assert call(daemon, "POST", "/api/v1/checks/revenue/mute", body=naive, token=TOKEN)[0] == 400
    status, _, answer = call(
        daemon, "POST", "/api/v1/checks/revenue/rebaseline", body=b"{}", token=TOKEN
    )
    assert status == 200 and json.loads(answer)["resolved"] == 2  # DE and the total were firing
    revenue = json.loads(call(daemon, "GET", "/api/v1/checks/revenue")[2])
    de = next(s for s in revenue["series"] if s["segment"] == "DE")
    assert de["alert"]["status"] == "ok" and revenue["explanation"] is None


def test_messages_slack_refuses_for_good_are_listed_with_the_reason(
    tmp_path: Path, live_demo_warehouse: Path, slack: SlackServer
) -> None:
    shutil.copy(live_demo_warehouse, tmp_path / "demo.duckdb")
    slack.archive("#data-alerts")
    document = demo_document(tmp_path, token=slack.token, api_url=slack.url, channel="#data-alerts", group_wait="0s")
    document["checks"][0]["channel"] = "#revenue"  # revenue's alert goes elsewhere, and through
    running = Daemon(parse_config(document), host="127.0.0.1", port=0)
    running.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listed = json.loads(call(running, "GET", "/api/v1/notifications")[2])["notifications"]
            if len([n for n in listed if n["status"] == "failed"]) == 2:
                break
            time.sleep(0.2)
        ready = call(running, "GET", "/readyz")[0]
        refused = running.metrics.registry.get_sample_value(
            "kpimon_alerts_sent_total", {"channel": "slack", "outcome": "error"}
        )
    finally:
        running.stop()
    failed = sorted((n for n in listed if n["status"] == "failed"), key=lambda n: n["check"])
    assert [(n["check"], n["segment"], n["event"], n["step"], n["attempts"], n["last_error"]) for n in failed] == [
        ("events_freshness", "", "opened", "message", 1, "Slack chat_postMessage: is_archived"),
        ("signups", "", "opened", "message", 1, "Slack chat_postMessage: is_archived"),
    ]
    assert all(n["channel"] == "slack" and n["in_doubt"] is False for n in failed)
    assert refused == 2
    # Germany and revenue's total opened together: one message, the explanation first, the
    # total then the segment
    first = slack.posted("#revenue")[0].text.splitlines()
    assert first[0] == "2 series of team revenue moved unexpectedly:"
    assert first[1].startswith("Where: DE -") and "drop in revenue" in first[1]
    assert [line.split(" is ")[0] for line in first[2:]] == ["• CRITICAL: revenue", "• CRITICAL: revenue [DE]"]
    assert ready == 200, "Slack refusing a channel is not the daemon's readiness"
