"""What the pages show, as plain data: built by :mod:`monitor.pages.collect`, drawn by
:mod:`monitor.pages.render`. Pure: the overview's filters, sorting and paging live here too."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal, get_args
from urllib.parse import urlencode

from monitor.deployments import Deployment
from monitor.history import Point

State = Literal["firing", "error", "muted", "no_data", "waiting", "ok"]
STATES: tuple[State, ...] = get_args(State)  # also the order "by state" sorts in: worst first
STATE_LABELS: dict[State, str] = {
    "firing": "firing",
    "error": "error",
    "muted": "muted",
    "no_data": "no data",
    "waiting": "not run yet",
    "ok": "ok",
}
Sort = Literal["state", "name", "team", "severity", "last_run"]
SORTS: tuple[Sort, ...] = get_args(Sort)
SEVERITIES = ("critical", "warning", "info")
PAGE_SIZE = 100


@dataclass(frozen=True)
class OpenAlert:
    segment: str
    since: datetime
    episode: int


@dataclass(frozen=True)
class CheckRow:
    """One check on the overview."""

    name: str
    kind: str
    team: str
    severity: str
    owner: str | None
    state: State
    last_run: datetime | None
    error: str | None
    open_alerts: tuple[OpenAlert, ...]
    muted_until: datetime | None
    mute_reason: str
    spark: tuple[float, ...]  # values of the newest buckets of ``spark_segment``, oldest first
    spark_segment: str
    series: int  # how many series (segments) the check has


@dataclass(frozen=True)
class Filters:
    """The overview's query string, validated."""

    team: str = ""
    severity: str = ""
    state: str = ""
    q: str = ""
    sort: Sort = "state"
    page: int = 1

    @classmethod
    def parse(cls, query: Mapping[str, Sequence[str]]) -> Filters:
        """From a parsed query string; ValueError names the parameter that is wrong."""
        known = {"team", "severity", "state", "q", "sort", "page"}
        unknown = sorted(set(query) - known)
        if unknown:
            raise ValueError(f"unknown parameter {unknown[0]!r}; use {', '.join(sorted(known))}")
        values = {k: v[-1].strip() for k, v in query.items() if v}
        for name, allowed in (("severity", SEVERITIES), ("state", STATES), ("sort", SORTS)):
            if values.get(name) and values[name] not in allowed:
                raise ValueError(f"{name}: expected one of {', '.join(allowed)}")
        page = values.get("page") or "1"
        if not page.isdigit() or not 1 <= int(page) <= 100_000:
            raise ValueError("page: expected a page number")
        sort: Sort = next((s for s in SORTS if s == values.get("sort")), "state")
        return cls(
            team=values.get("team", "")[:200],
            severity=values.get("severity", ""),
            state=values.get("state", ""),
            q=values.get("q", "")[:200],
            sort=sort,
            page=int(page),
        )

    def link(self, **changes: str | int) -> str:
        """The overview's URL with these filters, some changed (a new filter starts at page 1)."""
        values: dict[str, str | int] = {
            "team": self.team,
            "severity": self.severity,
            "state": self.state,
            "q": self.q,
            "sort": self.sort,
            "page": 1,
        }
        values.update(changes)
        kept = {k: v for k, v in values.items() if v not in ("", 1) and (k, v) != ("sort", "state")}
        return "/?" + urlencode(kept) if kept else "/"

    def keeps(self, row: CheckRow) -> bool:
        return (
            (not self.team or row.team == self.team)
            and (not self.severity or row.severity == self.severity)
            and (not self.state or row.state == self.state)
            and (not self.q or self.q.lower() in row.name)
        )


def _sort_key(sort: Sort) -> Callable[[CheckRow], Any]:
    rank = {s: i for i, s in enumerate(STATES)}
    severity = {s: i for i, s in enumerate(SEVERITIES)}
    keys: dict[Sort, Callable[[CheckRow], Any]] = {
        "state": lambda r: (rank[r.state], severity.get(r.severity, 9), r.name),
        "name": lambda r: r.name,
        "team": lambda r: (r.team or "\uffff", r.name),
        "severity": lambda r: (severity.get(r.severity, 9), rank[r.state], r.name),
        # most recent first; never run last
        "last_run": lambda r: (r.last_run is None, -(r.last_run.timestamp() if r.last_run else 0)),
    }
    return keys[sort]


@dataclass(frozen=True)
class Overview:
    """``GET /``: the checks the filters keep, one page of them."""

    rows: tuple[CheckRow, ...]
    matching: int  # rows the filters keep, on every page
    counts: dict[State, int]  # every check by state, whatever the filters
    teams: tuple[str, ...]
    filters: Filters
    pages: int
    now: datetime

    @classmethod
    def of(cls, rows: Sequence[CheckRow], filters: Filters, now: datetime) -> Overview:
        kept = sorted((r for r in rows if filters.keeps(r)), key=_sort_key(filters.sort))
        pages = max(1, -(-len(kept) // PAGE_SIZE))
        page = min(filters.page, pages)
        counts: dict[State, int] = dict.fromkeys(STATES, 0)
        for row in rows:
            counts[row.state] += 1
        return cls(
            rows=tuple(kept[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]),
            matching=len(kept),
            counts=counts,
            teams=tuple(sorted({r.team for r in rows if r.team})),
            filters=replace(filters, page=page),
            pages=pages,
            now=now,
        )


@dataclass(frozen=True)
class Span:
    """A stretch of time drawn on a chart: an alert episode, or a holiday, event or exclusion
    window of the check's calendar."""

    kind: Literal["episode", "holiday", "event", "exclusion"]
    start: datetime
    end: datetime | None  # None: still open
    label: str


@dataclass(frozen=True)
class Marker:
    """An instant drawn on every chart of a check: a deployment."""

    at: datetime
    label: str
    href: str


@dataclass(frozen=True)
class SeriesChart:
    segment: str
    points: tuple[Point, ...]
    status: str  # the series' alert state: ok, pending, firing
    since: datetime | None  # the open (or pending) episode's first anomalous bucket
    spans: tuple[Span, ...]
    unit: str = ""  # "seconds" for a freshness check's data age


@dataclass(frozen=True)
class AlertEntry:
    """One line of a check's alert history."""

    kind: str  # opened, resolved
    segment: str
    episode: int
    since: datetime
    bucket: datetime
    recorded_at: datetime
    value: float
    expected: float | None
    muted: bool
    cause: str | None
    reason: str
    answer: str | None = None  # how the alert was answered from Slack, who and when


@dataclass(frozen=True)
class CheckPage:
    """``GET /checks/{name}``."""

    row: CheckRow
    charts: tuple[SeriesChart, ...]
    markers: tuple[Marker, ...]
    alerts: tuple[AlertEntry, ...]
    config_text: str  # the check's config, secrets concealed
    sql: str  # what the check sends to the warehouse, secrets concealed
    warehouse: str
    days: int
    day_choices: tuple[int, ...]
    now: datetime
    # the check's holidays, events and exclusion windows over the window shown
    calendar: tuple[Span, ...] = ()
    explanation: str | None = None  # the drill-down of the check's open incident
    links: dict[str, str] = field(default_factory=dict)  # name -> URL (dashboard, runbook)


@dataclass(frozen=True)
class DeploymentList:
    """``GET /deployments``: newest first."""

    deployments: tuple[Deployment, ...]
    now: datetime


@dataclass(frozen=True)
class DeploymentPage:
    """``GET /deployments/{id}``."""

    deployment: Deployment
    now: datetime
