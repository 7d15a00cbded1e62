"""The outbox reaches Alertmanager: the demo's incidents arrive at the receivers the example
routing picks, a resolution arrives with its end, and a muted check stays silent. Alertmanager
refuses alerts that start in the future, so these tests run on the live clock."""

from __future__ import annotations

import json
import re
import shutil
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from monitor.alerts.alertmanager import AlertmanagerClient, replica_id
from monitor.alerts.dispatch import Dispatcher, outbox_json
from monitor.alerts.notification import Notification
from monitor.alerts.state import AlertState
from monitor.config import Config, parse_config
from monitor.engine import Engine
from monitor.exporter import Metrics
from monitor.records.outbox import OutboxEntry
from monitor.store import StateStore
from tests.alertmanager_server import Alertmanager, Webhook, binaries, routing_config
from tests.conftest import REPO, Clock, EngineFactory, demo_document, free_port

EXAMPLE = REPO / "config" / "alertmanager.example.yml"


@pytest.fixture(scope="module")
def receivers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Alertmanager, dict[str, Webhook]]]:
    server, _ = binaries()
    hooks = {n: Webhook(n).start() for n in ("data-platform", "revenue-pager", "growth-email")}
    am = Alertmanager(server, tmp_path_factory.mktemp("am"))
    try:
        yield am.start(routing_config(EXAMPLE, hooks)), hooks
    finally:
        am.stop()
        for hook in hooks.values():
            hook.stop()


@pytest.fixture
def live_dir(tmp_path: Path, live_demo_warehouse: Path) -> Path:
    shutil.copy(live_demo_warehouse, tmp_path / "demo.duckdb")
    return tmp_path


def now() -> datetime:
    return datetime.now(UTC)


def setup(
    make_engine: EngineFactory, demo_dir: Path, am_url: str, **check_changes: Any
) -> tuple[Config, Engine, Dispatcher, Metrics]:
    document = demo_document(demo_dir)
    document["alertmanager"] = {"urls": [am_url], "environment": "production"}
    document["links"] = {"dashboard": "https://grafana.example.com/d/kpi?var-check={check}&var-segment={segment}"}
    for check in document["checks"]:
        check.update(check_changes.get(check["name"], {}))
    config = parse_config(document)
    assert config.alertmanager is not None
    store, metrics = StateStore(demo_dir / "state.db"), Metrics()
    dispatcher = Dispatcher(config, store, metrics, None, AlertmanagerClient(config.alertmanager), now)
    engine = make_engine(
        config=config, store=store, metrics=metrics, channels=dispatcher.channels, clock=now
    )
    return config, engine, dispatcher, metrics


def alerts(hook: Webhook, check: str) -> list[dict[str, Any]]:
    return [a for n in hook.notifications(check) for a in n["alerts"]]


def test_incidents_reach_the_receivers_the_routing_picks(
    live_dir: Path, receivers: tuple[Alertmanager, dict[str, Webhook]], make_engine: EngineFactory
) -> None:
    am, hooks = receivers
    config, engine, dispatcher, metrics = setup(make_engine, live_dir, am.url)
    for check in config.checks:
        engine.run(check.name)
    assert dispatcher.deliver_pending() == 4
    pager = hooks["revenue-pager"].wait_for(lambda n: sum(len(x["alerts"]) for x in n) >= 2, "revenue")
    # Germany and revenue's total opened together: one incident, one group, one page
    assert len(pager) == 1 and pager[0]["groupLabels"] == {
        "alertname": "KPIAnomaly", "check": "revenue", "environment": "production"}
    by_segment = {a["labels"].get("segment", ""): a for a in pager[0]["alerts"]}
    assert set(by_segment) == {"DE", ""}
    alert = by_segment["DE"]
    assert alert["status"] == "firing"
    assert alert["labels"] == {"alertname": "KPIAnomaly", "check": "revenue", "segment": "DE", "severity": "critical",
                               "team": "revenue", "environment": "production"}
    assert alert["annotations"]["dashboard"] == "https://grafana.example.com/d/kpi?var-check=revenue&var-segment=DE"
    assert re.match(r"revenue \[DE\] is \d+% below expected \(-\d+\.\d robust SD\)", alert["annotations"]["summary"])
    total = by_segment[""]
    assert re.fullmatch(r"DE -\d+% explains (\d+% of|all of) the drop in revenue( \(\d+%\))?",
                        total["annotations"]["explanation"])
    assert total["annotations"]["explanation"] == alert["annotations"]["explanation"]
    assert "Where: DE -" in total["annotations"]["description"]
    hooks["growth-email"].wait_for(lambda n: len(n) >= 1, "signups")
    hooks["data-platform"].wait_for(lambda n: len(n) >= 1, "events_freshness")
    assert alerts(hooks["revenue-pager"], "signups") == []
    assert metrics.registry.get_sample_value("kpimon_alerts_sent_total", {"channel": "alertmanager", "outcome": "ok"}) == 1

    # a re-send keeps one alert; the resolution (here: an acknowledged new level) ends it
    dispatcher.resend_firing(engine.firing())
    acknowledged = now()
    engine.rebaseline("revenue", acknowledged)
    assert dispatcher.deliver_pending() == 2
    resolved = hooks["revenue-pager"].wait_for(
        lambda n: sum(a["status"] == "resolved" for x in n for a in x["alerts"]) >= 2, "revenue", timeout=15)
    ends = {a["labels"].get("segment", ""): a for n in resolved for a in n["alerts"] if a["status"] == "resolved"}
    assert set(ends) == {"DE", ""} and ends["DE"]["endsAt"] >= acknowledged.isoformat()[:16]
    assert "explanation" not in ends[""]["annotations"]


def test_an_unreachable_alertmanager_keeps_the_alerts_for_later(
    live_dir: Path, make_engine: EngineFactory
) -> None:
    _, engine, dispatcher, metrics = setup(make_engine, live_dir, "http://127.0.0.1:1")
    engine.run("signups")
    assert dispatcher.deliver_pending() == 0
    assert len(engine.store.outbox.pending("alertmanager")) == 1
    assert metrics.registry.get_sample_value("kpimon_alerts_sent_total", {"channel": "alertmanager", "outcome": "error"}) == 1


def test_a_muted_check_still_exports_but_sends_nothing(
    live_dir: Path, make_engine: EngineFactory
) -> None:
    start = now()
    config, engine, _, metrics = setup(
        make_engine, live_dir, "http://127.0.0.1:1",
        signups={"mute_until": (start + timedelta(hours=2)).isoformat()})  # fmt: skip
    engine.mute("revenue", start + timedelta(days=1), "backfill of fct_orders")
    engine.run("signups")
    engine.run("revenue")
    assert engine.store.outbox.pending("alertmanager") == []
    labels = {"check": "signups", "segment": "", "severity": "warning", "team": "growth"}
    assert metrics.registry.get_sample_value("kpimon_anomaly", labels) == 1
    assert engine.store.mutes()["revenue"] == (start + timedelta(days=1), "backfill of fct_orders")
    # once the mute has passed, new episodes notify again
    revenue = config.check("revenue")
    assert revenue is not None
    assert not engine.muted(revenue, start + timedelta(days=2))


def test_a_dead_replica_neither_starves_the_healthy_one_nor_keeps_alerts_forever(
    tmp_path: Path, receivers: tuple[Alertmanager, dict[str, Webhook]]
) -> None:
    am, _ = receivers
    dead = f"http://kpimon:s3cret@127.0.0.1:{free_port()}"
    document = demo_document(tmp_path)
    document["alertmanager"] = {"urls": [am.url, dead], "max_attempts": 3, "timeout": 2}
    config = parse_config(document)
    assert config.alertmanager is not None
    store, clock = StateStore(tmp_path / "state.db"), Clock()
    dispatcher = Dispatcher(config, store, Metrics(), None, AlertmanagerClient(config.alertmanager), clock)
    since = now() - timedelta(hours=1)
    # more alerts than one page of the outbox: the ones after the first page must not wait
    notes = [Notification("opened", "starved", f"s{i:04d}", 1, since, since, 1.0, 10.0, 8.0, 12.0, -5.0, "warning")
             for i in range(600)]
    store.record_all("starved", [(n.segment, AlertState(), [n]) for n in notes], ["alertmanager"])

    assert dispatcher.deliver_pending() == 0, "no alert reached every replica"
    with urllib.request.urlopen(f"{am.url}/api/v2/alerts?filter=check%3D%22starved%22", timeout=10) as response:
        assert len(json.loads(response.read())) == 600, "the healthy replica has every alert"
    waiting = store.outbox.pending("alertmanager", limit=1000)
    assert len(waiting) == 600
    assert {e.delivered_to for e in waiting} == {frozenset({replica_id(am.url)})}

    for _ in range(2):
        clock.advance(60)
        dispatcher.deliver_pending()
    assert store.outbox.pending("alertmanager") == []
    [failed] = {e.last_error for e in store.outbox.entries(["failed"])}
    assert failed is not None and failed.startswith(f"gave up after 3 attempts: {dead.replace('kpimon:s3cret@', '')}: ConnectionRefusedError")


def test_an_alert_alertmanager_refuses_is_given_up_alone_and_the_others_are_delivered(
    tmp_path: Path, receivers: tuple[Alertmanager, dict[str, Webhook]]
) -> None:
    am, _ = receivers
    document = demo_document(tmp_path)
    document["alertmanager"] = {"urls": [am.url]}
    config = parse_config(document)
    assert config.alertmanager is not None
    store = StateStore(tmp_path / "state.db")
    dispatcher = Dispatcher(config, store, Metrics(), None, AlertmanagerClient(config.alertmanager), now)
    since = now() - timedelta(hours=1)
    good = [Notification("opened", "refusals", s, 1, since, since, 1.0, 10.0, 8.0, 12.0, -5.0, "warning") for s in ("a", "b")]
    # resolved "before" it began: Alertmanager refuses an end before the start
    future = now() + timedelta(hours=1)
    bad = Notification("resolved", "refusals", "c", 1, future, future, 10.0, 10.0, 8.0, 12.0, 0.1, "warning")
    store.record_all("refusals", [(n.segment, AlertState(), [n]) for n in (good[0], bad, good[1])], ["alertmanager"])

    assert dispatcher.deliver_pending() == 2
    assert store.outbox.pending("alertmanager") == []
    [failed] = store.outbox.entries(["failed"])
    assert failed.key == bad.key and failed.attempts == 1
    assert failed.last_error is not None and "HTTP 400" in failed.last_error and "start time" in failed.last_error
    with urllib.request.urlopen(f"{am.url}/api/v2/alerts?filter=check%3D%22refusals%22", timeout=10) as response:
        assert sorted(a["labels"]["segment"] for a in json.loads(response.read())) == ["a", "b"]


@pytest.mark.parametrize(
    ("suffix", "kind", "step"),
    [("", "alert", "message"), ("/answer", "answer", "answer"),
     ("/answer_update", "answer_update", "answer_update"), ("/update", "answer_update", "update")],
)
def test_an_answers_slack_steps_are_listed_as_steps_of_their_alert(
    suffix: str, kind: str, step: str
) -> None:
    entry = OutboxEntry(1, "slack", kind, "{}", 0, datetime(2026, 12, 6, tzinfo=UTC),
                        key=f"revenue/DE/a/b/3/opened{suffix}")  # fmt: skip
    listed = outbox_json(entry)
    assert (listed["check"], listed["segment"], listed["episode"], listed["event"]) == (
        "revenue", "DE/a/b", 3, "opened"
    )  # fmt: skip
    assert listed["step"] == step
