"""Gather what a page shows from the running daemon: the engine's latest verdicts and replayed
history, the state store's alert history and deployments. Read-only."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timedelta
from urllib.parse import quote

import yaml

from monitor.alerts.links import render_link
from monitor.alerts.messages import when
from monitor.answers.model import DONE, Feedback
from monitor.buckets import bucket_start, to_utc
from monitor.config import CheckConfig
from monitor.deployments import Deployment
from monitor.engine import Engine, SeriesStatus
from monitor.pages.model import (
    AlertEntry,
    CheckPage,
    CheckRow,
    DeploymentList,
    Filters,
    Marker,
    OpenAlert,
    Overview,
    SeriesChart,
    Span,
    State,
)
from monitor.queries import freshness_query, series_query
from monitor.records.alerts import AlertEvent
from monitor.store import StateStore
from monitor.watcher import DeploymentWatcher

SPARK_BUCKETS = 48
DEPLOYMENTS_LISTED = 200
ALERTS_LISTED = 200
DAY_CHOICES = {"hour": (2, 7, 14, 28), "day": (28, 56, 91)}  # the rest: the whole lookback
AGE_STEPS_PER_DAY = 96  # a freshness chart draws the data age every 15 minutes


class PageData:
    """Reads the running daemon for the pages."""

    def __init__(self, engine: Engine, store: StateStore, watcher: DeploymentWatcher) -> None:
        self.engine = engine
        self.store = store
        self.watcher = watcher

    # --- overview ---------------------------------------------------------------------------

    def overview(self, filters: Filters) -> Overview:
        now = self.engine.clock()
        page = Overview.of(self._rows(now), filters, now)
        return replace(page, rows=tuple(self._with_sparklines(page.rows, now)))

    def _rows(self, now: datetime, only: CheckConfig | None = None) -> list[CheckRow]:
        statuses: dict[str, list[SeriesStatus]] = {}
        for status in self.engine.series(only.name if only else None):
            statuses.setdefault(status.check, []).append(status)
        mutes = self.store.mutes()
        return [
            _row(check, statuses.get(check.name, []), self.engine, mutes.get(check.name), now)
            for check in ([only] if only else self.engine.config.checks)
        ]

    def _with_sparklines(self, rows: tuple[CheckRow, ...], now: datetime) -> list[CheckRow]:
        """The newest buckets of each row's headline series, from the state store's cache (only
        for the rows shown: a page of the overview is one or two queries)."""
        config = self.engine.config
        values: dict[tuple[str, str], list[float]] = {}
        for grain, length in (("hour", timedelta(hours=1)), ("day", timedelta(days=1))):
            wanted = [
                (r.name, r.spark_segment)
                for r in rows
                if r.kind != "freshness" and _grain(config.check(r.name)) == grain
            ]
            if wanted:
                since = to_utc(now - SPARK_BUCKETS * length).to_pydatetime()
                values.update(self.store.series.recent_values(wanted, since))
        return [
            replace(r, spark=tuple(values.get((r.name, r.spark_segment), [])[-SPARK_BUCKETS:]))
            for r in rows
        ]

    # --- one check --------------------------------------------------------------------------

    def check(self, name: str, days: int | None) -> CheckPage | None:
        check = self.engine.config.check(name)
        if check is None:
            return None
        now = self.engine.clock()
        choices = day_choices(check)
        shown = days if days is not None else choices[1 if check.grain == "hour" else 0]
        if not 1 <= shown <= choices[-1]:
            raise ValueError(f"days: expected a number of days from 1 to {choices[-1]}")
        (row,) = self._with_sparklines((self._rows(now, check)[0],), now)
        steps = shown * (AGE_STEPS_PER_DAY if check.kind == "freshness" else _per_day(check))
        history = self.engine.history(name, steps)
        events = self.store.alerts.events(name, ALERTS_LISTED)
        episodes = _episodes(events)
        answers = {
            (a.ref.segment, a.ref.episode): a
            for a in self.store.answers.of_episodes(
                name, [(e.notification.segment, e.notification.episode) for e in events
                       if e.notification.kind == "opened"]
            )
        }  # fmt: skip
        statuses = {s.segment: s for s in self.engine.series(name)}
        charts = [
            SeriesChart(
                segment=segment,
                points=tuple(points),
                status=statuses[segment].state.status if segment in statuses else "ok",
                since=statuses[segment].state.since if segment in statuses else None,
                spans=tuple(episodes.get(segment, [])),
                unit="seconds" if check.kind == "freshness" else "",
            )
            for segment, points in history.items()
        ]
        # the total first, then what fires, then by name
        charts.sort(key=lambda c: (c.segment != "", c.status != "firing", c.segment))
        start = now - timedelta(days=shown)
        markers = [
            Marker(d.received_at, f"deployment {d.id} ({d.environment})", deployment_href(d.id))
            for d in map(Deployment.from_json, self.store.deployments.documents(since=start))
            if d.watched(name) is not None
        ]
        config = self.engine.config
        explained = self.engine.explanation(name)
        links = {
            label: url
            for label, url in (
                ("dashboard", render_link(config.links.dashboard, name, "")),
                ("runbook", render_link(config.links.runbook, name, "")),
            )
            if url
        }
        calendar = (
            ()
            if check.kind == "freshness"
            else tuple(
                Span(s.kind, s.start.to_pydatetime(), s.end.to_pydatetime(), s.name)
                for s in self.engine.calendars.calendar(check).spans(
                    to_utc(start), to_utc(now)
                )
            )
        )
        return CheckPage(
            row=row,
            charts=tuple(charts),
            markers=tuple(markers),
            alerts=tuple(_entry(e, answers) for e in events),
            config_text=config.conceal(_config_text(check)),
            sql=config.conceal(self._sql(check, now)),
            warehouse=config.warehouse_of(check),
            days=shown,
            day_choices=choices,
            now=now,
            explanation=None if explained is None else f"Where: {explained.text(name)}.",
            links=links,
            calendar=calendar,
        )

    def _sql(self, check: CheckConfig, now: datetime) -> str:
        """The SQL of a full read of the check's lookback, with its bound parameters."""
        warehouse = self.engine.warehouses[self.engine.config.warehouse_of(check)]
        since = bucket_start(now - check.effective_lookback, check.grain, check.timezone)
        if check.kind == "freshness":
            query = freshness_query(check, warehouse.dialect, since, now)
        else:
            query = series_query(check, warehouse.dialect, since)
        params = "\n".join(f"-- {name} = {value!r}" for name, value in query.params.items())
        return f"{query.sql}\n\n-- bound parameters ({warehouse.dialect.name}):\n{params}"

    # --- deployments ------------------------------------------------------------------------

    def deployments(self) -> DeploymentList:
        documents = self.store.deployments.documents()[-DEPLOYMENTS_LISTED:]
        listed = [Deployment.from_json(d) for d in reversed(documents)]
        return DeploymentList(tuple(listed), self.engine.clock())

    def deployment(self, deployment_id: str) -> Deployment | None:
        return self.watcher.get(deployment_id)


def deployment_href(deployment_id: str) -> str:
    return "/deployments/" + quote(deployment_id, safe="")


def day_choices(check: CheckConfig) -> tuple[int, ...]:
    """The windows a check page offers, in days; the last is the whole lookback."""
    lookback = max(1, check.effective_lookback // timedelta(days=1))
    return (*(d for d in DAY_CHOICES[check.grain] if d < lookback), lookback)


def _per_day(check: CheckConfig) -> int:
    return 24 if check.grain == "hour" else 1


def _grain(check: CheckConfig | None) -> str:
    return check.grain if check is not None else ""


def _row(
    check: CheckConfig,
    series: list[SeriesStatus],
    engine: Engine,
    mute: tuple[datetime, str] | None,
    now: datetime,
) -> CheckRow:
    last = engine.last_run(check.name)
    firing = sorted(
        (s for s in series if s.state.firing and s.state.since is not None),
        key=lambda s: (s.state.since, s.segment),
    )
    open_alerts = tuple(OpenAlert(s.segment, s.state.since, s.state.episode) for s in firing)  # type: ignore[arg-type]
    until = max(
        (u for u in (mute[0] if mute else None, check.mute_until) if u is not None and u > now),
        default=None,
    )
    state: State
    if last is None:
        state = "waiting"
    elif last.outcome == "error":
        state = "error"
    elif until is not None:
        state = "muted"
    elif open_alerts:
        state = "firing"
    elif last.outcome == "no_data":
        state = "no_data"
    else:
        state = "ok"
    return CheckRow(
        name=check.name,
        kind=check.kind,
        team=check.team,
        severity=check.severity,
        owner=check.owner,
        state=state,
        last_run=last.started if last else None,
        error=last.error if last else None,
        open_alerts=open_alerts,
        muted_until=until,
        mute_reason=mute[1] if mute and until == mute[0] else "",
        spark=(),
        spark_segment=_headline(series),
        series=len(series),
    )


def _headline(series: list[SeriesStatus]) -> str:
    """The series a sparkline stands for: what fires first, else the total, else the largest."""
    firing = [s for s in series if s.state.firing]
    if firing:
        return min(firing, key=lambda s: (s.state.since or s.verdict.bucket, s.segment)).segment
    if not series or any(s.segment == "" for s in series):
        return ""
    size = {s.segment: abs(s.verdict.value) for s in series if math.isfinite(s.verdict.value)}
    return max(series, key=lambda s: (size.get(s.segment, 0.0), s.segment)).segment


def _episodes(events: list[AlertEvent]) -> dict[str, list[Span]]:
    """Each series' alert episodes, from the alert history: opened (at the first anomalous
    bucket) to resolved (at the bucket that resolved it), or still open."""
    opened: dict[tuple[str, int], AlertEvent] = {}
    resolved: dict[tuple[str, int], AlertEvent] = {}
    for event in events:
        note = event.notification
        (opened if note.kind == "opened" else resolved)[(note.segment, note.episode)] = event
    spans: dict[str, list[Span]] = {}
    by_onset = sorted(opened.items(), key=lambda kv: kv[1].notification.since)
    for (segment, episode), event in by_onset:
        end = resolved.get((segment, episode))
        spans.setdefault(segment, []).append(
            Span(
                "episode",
                event.notification.since,
                end.notification.bucket if end else None,
                f"alert episode {episode}" + (" (muted)" if event.muted else ""),
            )
        )
    return spans


def _entry(event: AlertEvent, answers: dict[tuple[str, int], Feedback]) -> AlertEntry:
    """One line of the alert history; an opening says how it was answered from Slack."""
    note = event.notification
    answer = answers.get((note.segment, note.episode)) if note.kind == "opened" else None
    return AlertEntry(
        kind=note.kind,
        segment=note.segment,
        episode=note.episode,
        since=note.since,
        bucket=note.bucket,
        recorded_at=event.recorded_at,
        value=note.value,
        expected=note.expected,
        muted=event.muted,
        cause=note.cause,
        reason=note.reason,
        answer=None if answer is None else (
            f"{DONE[answer.answer]} by {answer.user_name} at {when(answer.answered_at)}"
        ),
    )


def _config_text(check: CheckConfig) -> str:
    """The check as configured (the fields its config and ``defaults`` set), as YAML."""
    fields = check.model_dump(mode="json", exclude_unset=True)
    return yaml.safe_dump(fields, sort_keys=False, allow_unicode=True).strip()
