"""The calendar in the daemon: configured and recorded events and exclusions change what the
engine fires, the demo's campaign does not page, the API records, lists, shows and deletes
events (token required, persisted), and the store keeps them across a restart."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import holidays
import pandas as pd
import pytest

from monitor import demo
from monitor.calendar.config import EventRequest
from monitor.config import Config, parse_config
from monitor.daemon import Daemon
from monitor.engine import Engine
from monitor.errors import ConfigError
from tests.conftest import DEMO_NOW, EngineFactory, demo_document
from tests.test_grafana import grafana  # noqa: F401 - the fixture
from tests.test_server import call, wait_for_run

TOKEN = "calendar-api-token"


def signups_alert_starts(engine: Engine) -> list[datetime]:
    return [
        e.notification.since
        for e in engine.store.alerts.events("signups")
        if e.notification.kind == "opened"
    ]


def campaign_demo(
    directory: Path, monkeypatch: pytest.MonkeyPatch, *, declared: bool = True
) -> tuple[Config, demo.DemoTimes]:
    """The demo at DEMO_NOW with its referral campaign, declared as `kpi-monitor demo` does."""
    times = demo.build(directory / "demo.duckdb", now=DEMO_NOW, campaign=True)
    if declared:
        start, end = times.campaign
        monkeypatch.setenv("KPIMON_DEMO_CAMPAIGN_START", start.isoformat())
        monkeypatch.setenv("KPIMON_DEMO_CAMPAIGN_END", end.isoformat())
    return parse_config(demo_document(directory), "demo.yaml"), times


@pytest.mark.parametrize("declared", [True, False])
def test_the_demo_campaign_is_a_configured_event_and_does_not_alert(
    declared: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_engine: EngineFactory
) -> None:
    config, times = campaign_demo(tmp_path, monkeypatch, declared=declared)
    start = times.campaign[0]
    # the daemon runs the check every hour from before the campaign (an episode that ended
    # before a first start is history, not an alert)
    clock = [start.to_pydatetime() - timedelta(minutes=40)]
    engine = make_engine(config=config, clock=lambda: clock[0])
    while clock[0] < DEMO_NOW:
        engine.run("signups")
        clock[0] = min(clock[0] + timedelta(hours=1), DEMO_NOW)
    assert engine.run("signups").outcome == "anomaly"  # the spike after it still fires
    spike = times.signup_spike[0].to_pydatetime()
    starts = signups_alert_starts(engine)
    if declared:
        assert starts == [spike]
    else:  # undeclared, the campaign is an incident: an alert starts while it runs
        end = times.campaign[1].to_pydatetime()
        [campaign] = [s for s in starts if s < spike]
        assert start.to_pydatetime() <= campaign < end, starts


def test_an_exclusion_recorded_while_running_rebuilds_the_models_and_silences_the_window(
    make_engine: EngineFactory,
) -> None:
    clock = [DEMO_NOW - timedelta(hours=4)]
    engine = make_engine(clock=lambda: clock[0])
    assert engine.run("signups").outcome == "ok"  # before the spike
    window = EventRequest.model_validate({
        "kind": "exclusion", "reason": "signup bot, handled", "checks": ["signups"],
        "start": (DEMO_NOW - timedelta(hours=4)).isoformat(),
        "end": (DEMO_NOW + timedelta(hours=2)).isoformat(),
    })  # fmt: skip
    engine.record_event(window)
    clock[0] = DEMO_NOW
    assert engine.run("signups").outcome == "ok"
    assert signups_alert_starts(engine) == []
    latest = engine.series("signups")[0].verdict
    assert latest.expected is None  # excluded: not judged


def test_a_check_without_the_event_in_its_scope_still_fires(
    make_engine: EngineFactory,
) -> None:
    engine = make_engine()
    engine.record_event(EventRequest.model_validate({
        "kind": "exclusion", "reason": "revenue backfill", "checks": ["revenue"],
        "start": (DEMO_NOW - timedelta(hours=6)).isoformat(), "end": DEMO_NOW.isoformat(),
    }))  # fmt: skip
    assert engine.run("signups").outcome == "anomaly"
    assert engine.run("revenue").outcome == "ok"


@contextlib.contextmanager
def running(document: dict[str, Any]) -> Iterator[Daemon]:
    """The daemon on ``document`` (a demo config), serving on a free port until the end."""
    started = Daemon(parse_config(document), host="127.0.0.1", port=0)
    started.start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def live_demo(tmp_path: Path, live_demo_warehouse: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory with the live demo warehouse; the API token set."""
    monkeypatch.setenv("KPIMON_API_TOKEN", TOKEN)
    shutil.copy(live_demo_warehouse, tmp_path / "demo.duckdb")
    return tmp_path


@pytest.fixture
def daemon(live_demo: Path) -> Iterator[Daemon]:
    """The demo daemon, its revenue check with the Bavarian holidays."""
    document = demo_document(live_demo)
    document["checks"][0]["calendar"] = {"country": "DE", "subdivision": "BY"}
    with running(document) as started:
        yield started


def post(daemon: Daemon, body: dict[str, Any], token: str | None = TOKEN) -> tuple[int, Any]:
    status, _, answer = call(daemon, "POST", "/api/v1/events", json.dumps(body).encode(), token,
                             {"Content-Type": "application/json"})  # fmt: skip
    return status, json.loads(answer)


SALE = {"name": "Winter sale", "start": "2026-12-27", "end": "2026-12-30", "effect": 0.3,
        "checks": ["revenue", "orders_rows"]}  # fmt: skip


def test_events_are_recorded_listed_shown_and_deleted_through_the_api(daemon: Daemon) -> None:
    status, event = post(daemon, SALE)
    assert status == 201
    assert {k: event[k] for k in ("name", "start", "end", "effect", "checks", "kind")} == {
        **SALE, "kind": "event"
    }
    status, _, body = call(daemon, "GET", "/api/v1/events")
    assert status == 200 and [e["id"] for e in json.loads(body)["events"]] == [event["id"]]
    _, _, body = call(daemon, "GET", "/api/v1/checks/revenue")
    calendar = json.loads(body)["calendar"]
    assert (calendar["country"], calendar["subdivision"], calendar["on_holiday"]) == (
        "DE", "BY", "compare"
    )
    assert ("event", "Winter sale") in [(s["kind"], s["name"]) for s in calendar["spans"]]
    # every Bavarian holiday from the lookback to 90 days ahead, as local days in New York
    now = pd.Timestamp.now(tz="UTC")
    found = holidays.country_holidays(
        "DE", subdiv="BY", years=range(now.year - 1, now.year + 2), language="en_US"
    )
    starts = {day: pd.Timestamp(day, tz="America/New_York") for day in found}
    wanted = sorted(
        (start.tz_convert("UTC").isoformat(), found[day])
        for day, start in starts.items()
        # the day overlaps the lookback (8 weeks) to 90 days ahead
        if start + pd.Timedelta(days=1) > now - pd.Timedelta(weeks=8)
        and start < now + pd.Timedelta(days=90)
    )
    shown = [(s["start"], s["name"]) for s in calendar["spans"] if s["kind"] == "holiday"]
    assert shown == wanted and wanted
    _, _, body = call(daemon, "GET", "/api/v1/checks/signups")
    assert [s["name"] for s in json.loads(body)["calendar"]["spans"]] == []  # not its event
    status, _, body = call(daemon, "DELETE", f"/api/v1/events/{event['id']}", token=TOKEN)
    assert status == 200 and json.loads(body)["deleted"]["id"] == event["id"]
    assert json.loads(call(daemon, "GET", "/api/v1/events")[2])["events"] == []


def test_writing_events_needs_the_token_and_bad_events_are_refused_with_the_field(
    daemon: Daemon,
) -> None:
    assert post(daemon, SALE, token=None)[0] == 401
    assert post(daemon, SALE, token="wrong")[0] == 401
    assert call(daemon, "DELETE", "/api/v1/events/abc")[0] == 401
    refused: dict[str, tuple[dict[str, Any], str]] = {
        "end before start": ({**SALE, "end": "2026-12-01"}, "end (2026-12-01) is before start"),
        "mixed": ({**SALE, "end": "2026-12-30T10:00:00Z"}, "both as dates or both as instants"),
        "no zone": ({**SALE, "start": "2026-12-27T10:00:00", "end": "2026-12-28T10:00:00Z"},
                    "start"),
        "unknown check": ({**SALE, "checks": ["nope"]}, "no check named 'nope'"),
        "no reason": ({"kind": "exclusion", "start": "2026-12-01", "end": "2026-12-02"},
                      "an exclusion needs a reason"),
        "effect": ({**SALE, "effect": -1.5}, "effect"),
        "unknown field": ({**SALE, "colour": "red"}, "colour"),
    }  # fmt: skip
    for why, (body, message) in refused.items():
        status, answer = post(daemon, body)
        assert status == 400, why
        assert message in answer["error"], (why, answer)
    assert call(daemon, "DELETE", "/api/v1/events/nope", token=TOKEN)[0] == 404
    assert json.loads(call(daemon, "GET", "/api/v1/events")[2])["events"] == []


def test_recorded_events_survive_a_restart(live_demo: Path) -> None:
    window = {"kind": "exclusion", "reason": "backfill", "start": "2026-11-01T00:00:00Z",
              "end": "2026-11-02T00:00:00Z"}  # fmt: skip
    with running(demo_document(live_demo)) as first:
        status, recorded = post(first, window)
        assert status == 201
    with running(demo_document(live_demo)) as second:
        listed = json.loads(call(second, "GET", "/api/v1/events")[2])["events"]
    assert [(e["id"], e["reason"], e["checks"]) for e in listed] == [
        (recorded["id"], "backfill", [])
    ]


def test_the_calendar_is_refused_at_load_with_its_field(tmp_path: Path) -> None:
    document = demo_document(tmp_path)
    document["defaults"]["calendar"] = {"country": "XX"}
    with pytest.raises(ConfigError) as refused:
        parse_config(document, "kpi.yaml")
    assert "defaults.calendar: unknown country 'XX'" in refused.value.render()
    document = demo_document(tmp_path)
    document["checks"][0]["exclude"] = [{"from": "2026-11-02", "to": "2026-11-01", "reason": "x"}]
    document["checks"][1]["calendar"] = {"subdivision": "BY"}
    document["checks"][2]["calendar"] = {"country": "DE", "subdivision": "ZZ"}
    document["checks"][3]["on_holiday"] = "ignore"
    with pytest.raises(ConfigError) as refused:
        parse_config(document, "kpi.yaml")
    text = refused.value.render()
    assert "checks[0].exclude[0]" in text and "to (2026-11-01) is before from" in text
    assert "checks[1].calendar" in text and "a subdivision needs its country" in text
    assert "checks[2].calendar" in text and "DE has no subdivision 'ZZ'" in text
    assert "checks[3].on_holiday" in text


def test_a_calendar_in_defaults_applies_where_a_check_has_none(tmp_path: Path) -> None:
    document = demo_document(tmp_path)
    document["defaults"]["calendar"] = {"country": "US"}
    document["defaults"]["on_holiday"] = "widen"
    config = parse_config(document)
    revenue, signups = config.check("revenue"), config.check("signups")
    assert revenue is not None and signups is not None
    assert revenue.calendar is not None and revenue.calendar.country == "US"
    assert revenue.on_holiday == "widen"
    assert signups.calendar is not None and signups.calendar.country is None  # its own


def test_a_recorded_event_becomes_a_grafana_annotation(
    live_demo: Path, grafana: tuple[str, list[tuple[dict[str, str], Any]]]  # noqa: F811
) -> None:
    url, received = grafana
    document = demo_document(live_demo)
    document["grafana"] = {"url": url, "token": "glsa_canary", "dashboard_uid": "kpi-monitor"}
    with running(document) as started:
        assert post(started, SALE)[0] == 201
    [(_, (path, body))] = received
    assert path == "/api/annotations"
    assert body["tags"] == ["kpi-monitor", "calendar", "event", "revenue", "orders_rows"]
    # the demo's checks are in New York: the sale starts at its midnight
    assert body["time"] == int(pd.Timestamp("2026-12-27", tz="America/New_York").timestamp() * 1000)


def test_the_check_page_shades_the_calendar_and_escapes_its_names(daemon: Daemon) -> None:
    now = pd.Timestamp.now(tz="UTC")
    hostile = {"name": "<script>alert(1)</script> sale", "checks": ["revenue"],
               "start": (now - pd.Timedelta(days=2)).isoformat(),
               "end": (now - pd.Timedelta(days=1)).isoformat()}  # fmt: skip
    assert post(daemon, hostile)[0] == 201
    wait_for_run(daemon, "revenue")
    status, _, body = call(daemon, "GET", "/checks/revenue")
    page = body.decode()
    assert status == 200
    assert page.count('<rect class="span event"') >= 1
    assert "&lt;script&gt;alert(1)&lt;/script&gt; sale" in page
    assert "<script>" not in page
    assert '<span class="key event">event</span>' in page


def test_the_alert_chart_carries_the_calendar_of_its_buckets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_engine: EngineFactory
) -> None:
    config, times = campaign_demo(tmp_path, monkeypatch)
    start, end = times.campaign
    engine = make_engine(config=config, chart_buckets=72)
    engine.run("signups")
    [opened] = [e.notification for e in engine.store.outbox.pending("slack", due=DEMO_NOW + timedelta(hours=1))
                if e.kind == "alert" and e.notification.check == "signups"]  # fmt: skip
    assert len(opened.history) == 72
    assert opened.calendar == [["event", "Referral campaign", start.isoformat(), end.isoformat()]]


def test_a_restart_with_a_calendar_sends_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_engine: EngineFactory
) -> None:
    config, times = campaign_demo(tmp_path, monkeypatch)
    first = make_engine(config=config, store=tmp_path / "state.db")
    assert first.run("signups").outcome == "anomaly"
    queued = len(first.store.outbox.entries(["pending"]))
    later = DEMO_NOW + timedelta(minutes=20)
    # the models from the cache
    restarted = make_engine(config=config, store=tmp_path / "state.db", now=later)
    assert restarted.run("signups").outcome == "anomaly"
    assert len(restarted.store.outbox.entries(["pending"])) == queued  # nothing queued again
    assert signups_alert_starts(restarted) == [times.signup_spike[0].to_pydatetime()]
