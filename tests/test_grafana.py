"""Deployments become Grafana annotations through its HTTP API (a local server records them)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr

from monitor.config import GrafanaConfig
from monitor.deployments import Deployment
from monitor.grafana import GrafanaAnnotator

DEPLOYED = datetime(2026, 11, 26, 13, 20, 5, tzinfo=UTC)
# the fake Grafana's URL, and the (headers, (path, JSON body)) of every request it received
Grafana = tuple[str, list[tuple[dict[str, str], Any]]]


@pytest.fixture
def grafana() -> Iterator[Grafana]:
    received: list[tuple[dict[str, str], Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append((dict(self.headers.items()), (self.path, body)))
            answer = json.dumps({"id": 1, "message": "Annotation added"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def deployment() -> Deployment:
    return Deployment(id="ci-7", environment="production", received_at=DEPLOYED, models=["fct_orders"],
                      checks=[], commit="0123456789abcdef", url="https://ci.example.com/7")


def test_a_deployment_is_annotated_in_epoch_milliseconds_with_tags(grafana: Grafana) -> None:
    url, received = grafana
    GrafanaAnnotator(GrafanaConfig(url=url, token=SecretStr("glsa_canary"), dashboard_uid="kpi"))(deployment())
    [(headers, (path, body))] = received
    assert path == "/api/annotations"
    assert headers["Authorization"] == "Bearer glsa_canary"
    assert body == {
        "time": 1795699205000,
        "tags": ["kpi-monitor", "deployment", "production"],
        "text": 'Deployment ci-7 to production (commit 0123456789ab): fct_orders <a href="https://ci.example.com/7">link</a>',
        "dashboardUID": "kpi",
    }
    assert body["time"] == int(DEPLOYED.timestamp() * 1000)


def test_an_unreachable_grafana_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    GrafanaAnnotator(GrafanaConfig(url="http://127.0.0.1:1", token=SecretStr("glsa_canary"), timeout=1))(deployment())
    assert "grafana annotation failed" in caplog.text
    assert "glsa_canary" not in caplog.text + " ".join(str(getattr(r, "fields", "")) for r in caplog.records)


def test_a_recorded_event_is_a_region_in_its_checks_time_zone(grafana: Grafana) -> None:
    from monitor.calendar.config import EventRequest, RecordedEvent

    url, received = grafana
    sale = EventRequest.model_validate({"name": "Black Friday", "start": "2026-11-27", "end": "2026-11-30",
                                        "checks": ["revenue"]})
    annotator = GrafanaAnnotator(GrafanaConfig(url=url, token=SecretStr("glsa_canary")))
    annotator.event(RecordedEvent("e1", sale, DEPLOYED), "America/New_York")
    window = EventRequest.model_validate({"kind": "exclusion", "reason": "backfill",
                                          "start": "2026-11-02T10:00:00Z", "end": "2026-11-02T12:00:00Z"})
    annotator.event(RecordedEvent("e2", window, DEPLOYED), "UTC")
    [(_, (_, sale_body)), (_, (_, window_body))] = received
    assert sale_body == {
        "time": int(datetime(2026, 11, 27, 5, tzinfo=UTC).timestamp() * 1000),  # New York midnight
        "timeEnd": int(datetime(2026, 12, 1, 5, tzinfo=UTC).timestamp() * 1000),  # end day included
        "tags": ["kpi-monitor", "calendar", "event", "revenue"],
        "text": "Black Friday (revenue)",
    }
    assert window_body["text"] == "Excluded: backfill (every check)"
    assert window_body["timeEnd"] - window_body["time"] == 2 * 3600 * 1000
