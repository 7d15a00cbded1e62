"""Alertmanager sink: the alert an on-call tool receives, routed by a real Alertmanager.

The routing tree under test is the shipped example (config/alertmanager.example.yml) with its
receivers swapped for webhooks run by the test, so what is asserted here is what that example
does in production: which receiver gets which alert, with which labels and annotations, and the
resolution.
"""

from __future__ import annotations

import base64
import logging
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from monitor.alerts.alertmanager import AlertmanagerClient, to_alertmanager
from monitor.alerts.links import render_link
from monitor.alerts.notification import Notification
from monitor.config import AlertmanagerConfig, LinksConfig
from tests.alertmanager_server import Alertmanager, Webhook, binaries, routing_config
from tests.conftest import REPO, free_port
from tests.notifications import SINCE, revenue_alert

EXAMPLE = REPO / "config" / "alertmanager.example.yml"
LINKS = LinksConfig(
    dashboard="https://grafana.example.com/d/kpi?var-check={check}&var-segment={segment}",
    runbook="https://wiki.example.com/runbooks/{check}",
)
# Alertmanager refuses alerts that start in the future: live alerts started three hours ago.
LIVE_SINCE = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)


def note(kind: str = "opened", **change: Any) -> Notification:
    bucket = SINCE + timedelta(hours=3 if kind == "resolved" else 1)
    return revenue_alert(kind, **{"bucket": bucket, **change})


# -- the alert as posted (pure) --------------------------------------------------------------


def test_an_alert_carries_the_routing_labels_and_what_to_look_at() -> None:
    alert = to_alertmanager(
        note(), environment="production", links=LINKS, ends_at=None, starts_at=SINCE
    )
    assert alert == {
        "labels": {
            "alertname": "KPIAnomaly",
            "check": "revenue",
            "segment": "DE",
            "severity": "critical",
            "team": "revenue",
            "environment": "production",
        },
        "annotations": {
            "summary": "revenue [DE] is 92% below expected (-7.3 robust SD)",
            "description": (
                "CRITICAL: revenue [DE] is 92% below expected (-7.3 robust SD): 120 vs 1,500 "
                "expected (band 900 to 2,400), since 2026-11-26 11:00 UTC. Owner @revenue-oncall."
            ),
            "dashboard": "https://grafana.example.com/d/kpi?var-check=revenue&var-segment=DE",
            "runbook": "https://wiki.example.com/runbooks/revenue",
            "owner": "@revenue-oncall",
        },
        "startsAt": "2026-11-26T11:00:00Z",
        "generatorURL": "https://grafana.example.com/d/kpi?var-check=revenue&var-segment=DE",
    }


def test_a_resolution_has_an_end_and_says_it_is_back() -> None:
    ended = datetime(2026, 11, 26, 14, 5, tzinfo=UTC)
    alert = to_alertmanager(
        note("resolved", value=1450.0, score=-0.2),
        environment="production",
        links=LINKS,
        ends_at=ended,
        starts_at=SINCE,
    )
    assert alert["endsAt"] == "2026-11-26T14:05:00Z"
    assert alert["startsAt"] == "2026-11-26T11:00:00Z"
    assert alert["annotations"]["summary"] == "revenue [DE] is back within its band"
    assert alert["annotations"]["description"].startswith("Resolved: revenue [DE] is back")
    with pytest.raises(ValueError, match="ends_at"):
        to_alertmanager(
            note("resolved"), environment="production", links=LINKS, ends_at=None, starts_at=SINCE
        )


def test_empty_labels_links_and_cause_are_left_out() -> None:
    alert = to_alertmanager(
        note(check="orders_rows", segment="", team="", owner=None, severity="warning"),
        environment="staging",
        links=LinksConfig(),
        ends_at=None,
        starts_at=SINCE,
        likely_cause="",
    )
    assert alert["labels"] == {
        "alertname": "KPIAnomaly",
        "check": "orders_rows",
        "severity": "warning",
        "environment": "staging",
    }
    assert set(alert["annotations"]) == {"summary", "description"}
    assert "generatorURL" not in alert and "endsAt" not in alert
    with_cause = to_alertmanager(
        note(),
        environment="production",
        links=LINKS,
        ends_at=None,
        starts_at=SINCE,
        likely_cause="deployment 42 (fct_orders) at 10:55 UTC",
    )
    assert with_cause["annotations"]["likely_cause"] == "deployment 42 (fct_orders) at 10:55 UTC"


def test_links_encode_the_segment_and_keep_other_braces() -> None:
    assert render_link(LINKS.dashboard, "revenue", "EU/DE & AT") == (
        "https://grafana.example.com/d/kpi?var-check=revenue&var-segment=EU%2FDE%20%26%20AT"
    )
    assert render_link('https://g/explore?left={"q":"{check}"}', "rows", "") == (
        'https://g/explore?left={"q":"rows"}'
    )
    assert render_link(None, "revenue", "DE") is None
    assert render_link("", "revenue", "DE") is None


# -- amtool on the shipped example -----------------------------------------------------------


def test_the_example_config_is_valid_for_amtool() -> None:
    _, amtool = binaries()
    result = subprocess.run(
        [amtool, "check-config", str(EXAMPLE)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_example_reaches_slack_email_and_a_pager() -> None:
    document = yaml.safe_load(EXAMPLE.read_text())
    kinds = {r["name"]: sorted(k for k in r if k.endswith("_configs")) for r in document["receivers"]}
    assert kinds == {
        "data-platform": ["slack_configs"],
        "revenue-pager": ["pagerduty_configs"],
        "growth-email": ["email_configs"],
    }
    # secrets come from mounted files, never from the file itself
    assert document["global"]["smtp_auth_password_file"].startswith("/etc/alertmanager/secrets/")
    assert "smtp_auth_password" not in document["global"]


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        ({"team": "revenue", "severity": "critical"}, "revenue-pager"),
        ({"team": "revenue", "severity": "warning"}, "data-platform"),
        ({"team": "growth", "severity": "critical"}, "growth-email"),
        ({"severity": "critical"}, "data-platform"),
        ({"team": "revenue", "severity": "critical", "environment": "staging"}, "data-platform"),
    ],
)
def test_the_example_routes_pages_only_revenue_critical(
    labels: dict[str, str], receiver: str
) -> None:
    _, amtool = binaries()
    full = {"alertname": "KPIAnomaly", "environment": "production", **labels}
    result = subprocess.run(
        [amtool, "config", "routes", "test", f"--config.file={EXAMPLE}"]
        + [f"{k}={v}" for k, v in full.items()],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == receiver


# -- a real Alertmanager ---------------------------------------------------------------------


@dataclass
class Routing:
    alertmanager: Alertmanager
    hooks: dict[str, Webhook]


@pytest.fixture(scope="module")
def routing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Routing]:
    server, _ = binaries()
    hooks = {
        name: Webhook(name).start() for name in ("data-platform", "revenue-pager", "growth-email")
    }
    am = Alertmanager(server, tmp_path_factory.mktemp("alertmanager"))
    try:
        am.start(routing_config(EXAMPLE, hooks))
        yield Routing(am, hooks)
    finally:
        am.stop()
        for hook in hooks.values():
            hook.stop()


def client(*urls: str) -> AlertmanagerClient:
    return AlertmanagerClient(AlertmanagerConfig(urls=list(urls), timeout=2))


def firing(check: str, environment: str = "production", **change: Any) -> dict[str, Any]:
    return to_alertmanager(
        note(check=check, since=LIVE_SINCE, **change),
        environment=environment,
        links=LINKS,
        ends_at=None,
        starts_at=LIVE_SINCE,
    )


def rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def received_alerts(notifications: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [alert for n in notifications for alert in n["alerts"]]


def test_each_team_and_severity_reaches_its_receiver(routing: Routing) -> None:
    pager, growth, platform = (
        routing.hooks["revenue-pager"],
        routing.hooks["growth-email"],
        routing.hooks["data-platform"],
    )
    alerts = [
        firing("route_revenue"),
        firing("route_signups", team="growth", severity="warning", segment="", score=6.0),
        firing("route_rows", team="", severity="warning", segment=""),
    ]
    assert client(routing.alertmanager.url).post(alerts) == {}

    [paged] = pager.wait_for(bool, "route_revenue")
    assert paged["status"] == "firing"
    [alert] = paged["alerts"]
    assert alert["labels"] == {
        "alertname": "KPIAnomaly",
        "check": "route_revenue",
        "segment": "DE",
        "severity": "critical",
        "team": "revenue",
        "environment": "production",
    }
    assert alert["annotations"]["summary"] == "route_revenue [DE] is 92% below expected (-7.3 robust SD)"
    assert alert["annotations"]["runbook"] == "https://wiki.example.com/runbooks/route_revenue"
    assert alert["annotations"]["dashboard"] == alert["generatorURL"]
    assert alert["startsAt"] == rfc3339(LIVE_SINCE)

    [growth_note] = growth.wait_for(bool, "route_signups")
    assert received_alerts([growth_note])[0]["labels"]["team"] == "growth"
    assert received_alerts([growth_note])[0]["annotations"]["summary"] == (
        "route_signups is 92% above expected (+6.0 robust SD)"
    )
    [platform_note] = platform.wait_for(bool, "route_rows")
    assert "team" not in received_alerts([platform_note])[0]["labels"]

    # and nobody else heard about them
    assert pager.notifications("route_signups") == pager.notifications("route_rows") == []
    assert growth.notifications("route_revenue") == growth.notifications("route_rows") == []
    assert platform.notifications("route_revenue") == platform.notifications("route_signups") == []


def test_staging_never_pages(routing: Routing) -> None:
    assert client(routing.alertmanager.url).post([firing("staging_revenue", environment="staging")]) == {}
    [delivered] = routing.hooks["data-platform"].wait_for(bool, "staging_revenue")
    assert received_alerts([delivered])[0]["labels"]["environment"] == "staging"
    assert routing.hooks["revenue-pager"].notifications("staging_revenue") == []


def test_segments_of_one_check_arrive_as_one_notification(routing: Routing) -> None:
    alerts = [firing("grouped_revenue", segment=s) for s in ("DE", "FR", "IT")]
    assert client(routing.alertmanager.url).post(alerts) == {}
    [grouped] = routing.hooks["revenue-pager"].wait_for(bool, "grouped_revenue")
    assert sorted(a["labels"]["segment"] for a in grouped["alerts"]) == ["DE", "FR", "IT"]


def test_resending_keeps_one_alert_and_the_resolution_reaches_the_same_receiver(
    routing: Routing,
) -> None:
    pager = routing.hooks["revenue-pager"]
    sink = client(routing.alertmanager.url)
    assert sink.post([firing("resolve_revenue")]) == {}
    pager.wait_for(bool, "resolve_revenue")

    # the daemon re-sends a firing alert every resend_interval; Alertmanager must not page again
    assert sink.post([firing("resolve_revenue")]) == {}
    time.sleep(2.5)  # more than two group intervals
    assert len(pager.notifications("resolve_revenue")) == 1

    ended = datetime.now(UTC).replace(microsecond=0)
    resolved = to_alertmanager(
        note("resolved", check="resolve_revenue", since=LIVE_SINCE, value=1450.0, score=-0.2),
        environment="production",
        links=LINKS,
        ends_at=ended,
        starts_at=LIVE_SINCE,
    )
    assert sink.post([resolved]) == {}
    notes = pager.wait_for(lambda found: any(n["status"] == "resolved" for n in found), "resolve_revenue")
    resolution = next(n for n in notes if n["status"] == "resolved")
    [alert] = resolution["alerts"]
    assert alert["status"] == "resolved"
    assert alert["endsAt"] == rfc3339(ended)
    assert alert["startsAt"] == rfc3339(LIVE_SINCE)
    assert alert["labels"]["segment"] == "DE"
    assert alert["annotations"]["summary"] == "resolve_revenue [DE] is back within its band"
    assert routing.hooks["data-platform"].notifications("resolve_revenue") == []


def test_every_replica_is_posted_to_and_a_dead_one_is_reported_without_secrets(
    routing: Routing, caplog: pytest.LogCaptureFixture
) -> None:
    live = routing.alertmanager.url.replace("http://", "http://kpimon:live-s3cret@")
    dead = f"http://kpimon:dead-s3cret@127.0.0.1:{free_port()}"
    sink = client(live, dead)
    with caplog.at_level(logging.WARNING, logger="monitor.alerts"):
        failed = sink.post([firing("replica_revenue")])
    assert list(failed) == [dead]  # as configured, so the caller can retry just that one
    assert failed[dead].reason.startswith(f"http://127.0.0.1:{dead.rsplit(':', 1)[1]}: ConnectionRefusedError")
    assert failed[dead].status is None and not failed[dead].invalid  # worth trying again
    routing.hooks["revenue-pager"].wait_for(bool, "replica_revenue")

    [record] = caplog.records
    fields = record.fields  # type: ignore[attr-defined]  # set by logging's extra=
    assert fields["alertmanager"] == dead.replace("kpimon:dead-s3cret@", "")
    assert fields["error"].startswith("ConnectionRefusedError")
    logged = caplog.text + str(fields) + str(failed.values())
    assert "s3cret" not in logged

    assert sink.post([firing("replica_revenue")], urls=list(failed)).keys() == failed.keys()


def test_an_alert_alertmanager_refuses_is_reported_with_its_reason(
    routing: Routing, caplog: pytest.LogCaptureFixture
) -> None:
    broken = firing("refused_revenue")
    broken["endsAt"] = rfc3339(LIVE_SINCE - timedelta(hours=1))  # before startsAt
    with caplog.at_level(logging.WARNING, logger="monitor.alerts"):
        refused = client(routing.alertmanager.url).post([broken])
    assert list(refused) == [routing.alertmanager.url]
    assert refused[routing.alertmanager.url].status == 400 and refused[routing.alertmanager.url].invalid
    [record] = caplog.records
    assert record.fields["error"].startswith("HTTP 400")  # type: ignore[attr-defined]  # set by extra=
    assert "start time" in record.fields["error"]  # type: ignore[attr-defined]  # set by extra=


def test_credentials_in_the_url_become_basic_auth_and_a_path_prefix_is_kept() -> None:
    # an Alertmanager behind a reverse proxy with basic auth and a route prefix
    proxy = Webhook("proxy").start()
    try:
        base = proxy.url.removesuffix("/hook").replace("http://", "http://kpimon:p%40ss@")
        assert client(f"{base}/alertmanager/").post([firing("auth_revenue")]) == {}
        [(path, headers)] = proxy.requests
        assert path == "/alertmanager/api/v2/alerts"
        assert headers["Authorization"] == "Basic " + base64.b64encode(b"kpimon:p@ss").decode()
        assert headers["Content-Type"] == "application/json"
        [posted] = proxy.received
        assert posted[0]["labels"]["check"] == "auth_revenue"
    finally:
        proxy.stop()


def test_nothing_to_send_sends_nothing() -> None:
    # a closed port: a request would fail, so an empty answer proves none was made
    assert client(f"http://127.0.0.1:{free_port()}").post([]) == {}
