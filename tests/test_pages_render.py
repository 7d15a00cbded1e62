"""The pages as pure functions of plain data: escaping, charts, filters, sorting, paging, and
what a check page must never show. No server, no browser."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pandas as pd
import pytest

from monitor.alerts.notification import Notification
from monitor.config import parse_config
from monitor.deployments import Deployment, Deviation, WatchedCheck
from monitor.history import Point
from monitor.pages import render
from monitor.pages.collect import _episodes
from monitor.pages.model import (
    PAGE_SIZE,
    CheckPage,
    CheckRow,
    DeploymentList,
    DeploymentPage,
    Filters,
    Marker,
    OpenAlert,
    Overview,
    SeriesChart,
    Span,
)
from monitor.pages.svg import chart, sparkline
from monitor.records.alerts import AlertEvent

NOW = datetime(2026, 11, 26, 15, 20, tzinfo=UTC)
HOSTILE = ["<script>alert(1)</script>", '"><img src=x onerror=alert(2)>', "' onmouseover='alert(3)"]


def row(name: str = "revenue", **changes: Any) -> CheckRow:  # fields of several types
    base = CheckRow(
        name=name,
        kind="metric",
        team="revenue",
        severity="critical",
        owner="@revenue-oncall",
        state="ok",
        last_run=NOW - timedelta(minutes=3),
        error=None,
        open_alerts=(),
        muted_until=None,
        mute_reason="",
        spark=(1.0, 2.0, 3.0, 2.0),
        spark_segment="",
        series=1,
    )
    return replace(base, **changes)


def points(n: int, *, anomalous_at: tuple[int, ...] = (), band_from: int = 0) -> tuple[Point, ...]:
    start = pd.Timestamp("2026-11-20T00:00Z")
    return tuple(
        Point(
            start + pd.Timedelta(hours=i),
            100.0 + i % 24,
            100.0 if i >= band_from else None,
            80.0 if i >= band_from else None,
            120.0 if i >= band_from else None,
            i in anomalous_at,
        )
        for i in range(n)
    )


def check_page(segments: list[str], **changes: Any) -> CheckPage:  # fields of several types
    charts = tuple(SeriesChart(s, points(48), "ok", None, ()) for s in segments)
    page = CheckPage(
        row=row(),
        charts=charts,
        markers=(),
        alerts=(),
        config_text="name: revenue",
        sql="SELECT 1",
        warehouse="default",
        days=2,
        day_choices=(2, 7, 56),
        now=NOW,
    )
    return replace(page, **changes)


def no_markup_from(values: list[str], html: str) -> None:
    for value in values:
        assert value not in html
    assert "<script" not in html
    assert "<img" not in html
    assert "onerror=" not in html.replace("onerror=alert", "")  # only as escaped text


def test_hostile_segment_values_render_as_text_on_the_check_page() -> None:
    alerts = [OpenAlert(s, NOW, 1) for s in HOSTILE]
    page = check_page(HOSTILE, row=row(state="firing", open_alerts=tuple(alerts)))
    html = render.check(page).decode()
    no_markup_from(HOSTILE, html)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in html


def test_hostile_values_render_as_text_on_the_overview() -> None:
    rows = [
        row(f"c{i}", team=v, owner=v, spark_segment=v, error=v, state="error",
            open_alerts=(OpenAlert(v, NOW, 1),), mute_reason=v)
        for i, v in enumerate(HOSTILE)
    ]  # fmt: skip
    html = render.overview(Overview.of(rows, Filters(team=HOSTILE[1]), NOW)).decode()
    no_markup_from(HOSTILE, html)


def test_hostile_deployment_fields_render_as_text_and_a_script_url_is_no_link() -> None:
    deployment = Deployment(
        id="d1",
        environment="prod",
        received_at=NOW,
        models=[HOSTILE[0]],
        checks=[WatchedCheck("revenue", NOW + timedelta(hours=6))],
        url="javascript:alert(1)",
        deviations=[Deviation("revenue", HOSTILE[1], 1.0, 2.0, -5.0, NOW)],
    )
    html = render.deployment(DeploymentPage(deployment, NOW)).decode()
    no_markup_from(HOSTILE, html)
    assert 'href="javascript' not in html
    listed = render.deployments(DeploymentList((deployment,), NOW)).decode()
    assert 'href="/deployments/d1"' in listed


def test_the_page_links_nothing_outside_the_daemon_but_configured_web_links() -> None:
    page = check_page([""], links={"dashboard": "https://grafana.example.com/d/x",
                                   "runbook": "javascript:alert(1)"})  # fmt: skip
    html = render.check(page).decode()
    assert re.findall(r'(?:src|href)="(?!/|\?|#)([^"]*)"', html) == ["https://grafana.example.com/d/x"]
    assert "<script" not in html and "style=" not in html  # nothing a strict CSP would refuse


def test_a_chart_has_one_vertex_per_bucket_and_the_band_where_there_is_a_baseline() -> None:
    series = SeriesChart("DE", points(72, anomalous_at=(70, 71), band_from=24), "firing", None, ())
    svg = str(chart(series, title="revenue DE"))
    assert 'data-buckets="72"' in svg
    (value,) = re.findall(r'<polyline class="value" points="([^"]*)"', svg)
    assert len(value.split()) == 72
    (band,) = re.findall(r'<polygon class="band" points="([^"]*)"', svg)
    assert len(band.split()) == 2 * 48  # upper edge then lower edge of the 48 judged buckets
    (expected,) = re.findall(r'<polyline class="expected" points="([^"]*)"', svg)
    assert len(expected.split()) == 48
    assert svg.count('<circle class="anomaly"') == 2


def test_a_chart_shades_episodes_and_links_deployments_inside_its_window() -> None:
    start = pd.Timestamp("2026-11-20T00:00Z")
    episode = Span("episode", start + pd.Timedelta(hours=40), None, "alert episode 1")
    series = SeriesChart("", points(48), "firing", None, (episode,))
    inside = Marker(start + pd.Timedelta(hours=10), "deployment d/1 (prod)", "/deployments/d%2F1")
    outside = Marker(start - pd.Timedelta(days=3), "deployment old (prod)", "/deployments/old")
    svg = str(chart(series, title="t", markers=[inside, outside]))
    assert svg.count('<rect class="span episode"') == 1
    assert "still open" in svg
    assert 'href="/deployments/d%2F1"' in svg
    assert "/deployments/old" not in svg


def test_a_series_without_history_says_so_instead_of_an_empty_chart() -> None:
    assert "No history yet" in str(chart(SeriesChart("", (), "ok", None, ()), title="t"))


def test_a_sparkline_needs_two_values_and_is_red_when_firing() -> None:
    assert str(sparkline([1.0], firing=False, label="x")) == ""
    assert 'class="spark firing"' in str(sparkline([1.0, 3.0, 2.0], firing=True, label="x"))


def test_filters_refuse_unknown_values_naming_the_parameter() -> None:
    with pytest.raises(ValueError, match="state: expected one of"):
        Filters.parse({"state": ["broken"]})
    with pytest.raises(ValueError, match="unknown parameter 'color'"):
        Filters.parse({"color": ["red"]})
    with pytest.raises(ValueError, match="page"):
        Filters.parse({"page": ["-1"]})
    assert Filters.parse({"state": ["firing"], "sort": ["name"]}) == Filters(state="firing", sort="name")


def test_filter_links_keep_the_other_filters_and_start_again_at_page_one() -> None:
    filters = Filters(team="revenue", state="firing", page=3)
    assert filters.link(sort="name") == "/?team=revenue&state=firing&sort=name"
    assert Filters().link() == "/"


def test_the_overview_filters_sorts_worst_first_and_pages() -> None:
    rows = [row(f"c{i:04d}", state="ok", team="a" if i % 2 else "b") for i in range(250)]
    rows += [row("zz_broken", state="error"), row("aa_firing", state="firing", severity="warning")]
    page = Overview.of(rows, Filters(), NOW)
    assert [r.name for r in page.rows[:2]] == ["aa_firing", "zz_broken"]
    assert (len(page.rows), page.pages, page.matching) == (PAGE_SIZE, 3, 252)
    assert page.counts["ok"] == 250 and page.counts["firing"] == 1
    last = Overview.of(rows, Filters(team="a", sort="name", page=99), NOW)
    assert last.filters.page == last.pages == 2
    assert all(r.team == "a" for r in last.rows)
    assert [r.name for r in Overview.of(rows, Filters(q="firing"), NOW).rows] == ["aa_firing"]


def test_episodes_run_from_onset_to_resolution_or_stay_open() -> None:
    def event(kind: Literal["opened", "resolved"], segment: str, episode: int, since: datetime,
              bucket: datetime) -> AlertEvent:
        note = Notification(kind, "revenue", segment, episode, since, bucket, 1.0, 2.0, 1.5, 2.5,
                            -5.0, "critical")  # fmt: skip
        return AlertEvent(note, bucket, muted=False)

    t = NOW - timedelta(hours=10)
    spans = _episodes([
        event("resolved", "DE", 1, t, t + timedelta(hours=3)),
        event("opened", "DE", 1, t, t + timedelta(hours=1)),
        event("opened", "DE", 2, t + timedelta(hours=6), t + timedelta(hours=7)),
    ])  # fmt: skip
    assert [(s.start, s.end) for s in spans["DE"]] == [
        (t, t + timedelta(hours=3)),
        (t + timedelta(hours=6), None),
    ]


def test_conceal_shows_environment_values_as_their_reference_and_masks_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TENANT_KEY", "k3y-from-the-environment")
    monkeypatch.setenv("PG_DSN", "postgresql://kpi:hunter2-password@db/warehouse")
    document = {
        "warehouse": {"kind": "postgres", "dsn": "${PG_DSN}"},
        "slack": {"token": "xoxb-literal-token-in-config"},
        "checks": [{"name": "c", "kind": "row_count", "table": "t", "timestamp_column": "ts",
                    "where": "tenant = '${TENANT_KEY}' and note <> 'hunter2-password'"}],
    }  # fmt: skip
    config = parse_config(document)
    shown = config.conceal(
        f"{config.checks[0].where} xoxb-literal-token-in-config postgresql://kpi:hunter2-password@db"
    )
    assert "k3y-from-the-environment" not in shown and "${TENANT_KEY}" in shown
    assert "hunter2-password" not in shown
    assert "xoxb-literal-token-in-config" not in shown
