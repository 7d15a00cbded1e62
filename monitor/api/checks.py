"""The checks and their controls: ``/api/v1/checks`` and, per check, its answer, ``run``,
``rebaseline``, ``mute`` and ``alerts``. An unknown check raises ``UnknownCheck``, which the
``Api`` answers with a 404, whatever the body says."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from monitor.alert_history import alerts_page
from monitor.api.http import HttpError, Response, json_response, no_body, validate
from monitor.buckets import to_utc
from monitor.config import CheckConfig
from monitor.engine import Engine, RunResult, SeriesStatus

REBASELINE_RANGE = (datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC))
CALENDAR_AHEAD = timedelta(days=90)  # a check's upcoming holidays and events, in its answer


class RebaselineRequest(BaseModel):
    """Body of POST /api/v1/checks/{name}/rebaseline; ``since`` defaults to now."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    since: datetime | None = None


class MuteRequest(BaseModel):
    """Body of POST /api/v1/checks/{name}/mute: no notification until ``until``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    until: datetime
    reason: str = Field(min_length=1, max_length=500)


@dataclass(frozen=True)
class Checks:
    """The checks' resource: their state as JSON and the calls that act on one check.
    ``run_now`` asks the scheduler for a run of that check."""

    engine: Engine
    run_now: Callable[[str], None]

    def index(self) -> Response:
        # two reads for all (with replicas, the checks another one runs come from the store)
        runs = self.engine.last_runs()
        series: dict[str, list[SeriesStatus]] = defaultdict(list)
        for status in self.engine.series():
            series[status.check].append(status)
        checks = [
            self._check_json(c.name, runs.get(c.name), series[c.name])
            for c in self.engine.config.checks
        ]
        return json_response(200, {"checks": checks})

    def show(self, name: str) -> Response:
        answer = self._check_json(name, self.engine.last_run(name), self.engine.series(name))
        check = self.engine.check(name)
        # one check's answer only: a list of 2,000 checks would compute every calendar
        return json_response(200, {**answer, "calendar": self._calendar_json(check)})

    def run(self, name: str, body: object) -> Response:
        self.engine.check(name)
        no_body(body)
        self.run_now(name)
        return json_response(202, {"check": name, "status": "scheduled"})

    def rebaseline(self, name: str, body: object) -> Response:
        self.engine.check(name)
        request = validate(RebaselineRequest, body or {})
        since = request.since or self.engine.clock()
        if since.tzinfo is None:
            raise HttpError(400, "since: give a time zone, e.g. 2026-11-26T10:00:00Z")
        if not REBASELINE_RANGE[0] <= since <= REBASELINE_RANGE[1]:
            # the models count buckets in time pandas can hold (years 1677 to 2262)
            raise HttpError(400, "since: must be between the years 1970 and 2200")
        resolved = self.engine.rebaseline(name, since)
        if resolved is None:  # saved; the replica that runs the check follows it shortly
            return json_response(202, {"check": name, "since": since.isoformat(), "resolved": None})
        return json_response(
            200, {"check": name, "since": since.isoformat(), "resolved": len(resolved)}
        )

    def mute(self, name: str, body: object) -> Response:
        self.engine.check(name)
        request = validate(MuteRequest, body)
        if request.until.tzinfo is None:
            raise HttpError(400, "until: give a time zone, e.g. 2026-11-27T06:00:00Z")
        self.engine.mute(name, request.until, request.reason)
        return json_response(
            200, {"check": name, "until": request.until.isoformat(), "reason": request.reason}
        )

    def alerts(self, name: str, query: dict[str, list[str]]) -> Response:
        """A check's alerts, newest first, with their resolution and answer: ``?limit=`` (1 to
        100, default 50) of them after ``?cursor=`` (the ``next`` of the page before)."""
        self.engine.check(name)
        try:
            page = alerts_page(self.engine.store, name, query)
        except ValueError as exc:
            raise HttpError(400, f"bad query: {exc}") from None
        return json_response(200, page)

    def _check_json(
        self, name: str, last: RunResult | None, series: list[SeriesStatus]
    ) -> dict[str, Any]:
        check = self.engine.check(name)
        explained = self.engine.explanation(name)
        return {
            "name": check.name,
            "kind": check.kind,
            "grain": check.grain,
            "schedule": check.schedule,
            "owner": check.owner,
            "severity": check.severity,
            "labels": check.labels,
            "models": check.models,
            "last_run": None
            if last is None
            else {
                "started": last.started.isoformat(),
                "outcome": last.outcome,
                "duration_seconds": round(last.duration, 4),
                "error": last.error,
            },
            "series": [series_json(s) for s in series],
            "explanation": None if explained is None else explained.to_json(check.name),
        }

    def _calendar_json(self, check: CheckConfig) -> dict[str, Any] | None:
        """A check's calendar: its settings and the holidays, events and exclusion windows
        from its lookback to 90 days ahead (None for a freshness check: it has none)."""
        if check.kind == "freshness":
            return None
        calendar = self.engine.calendars.calendar(check)
        now = to_utc(self.engine.clock())
        spans = calendar.spans(now - check.effective_lookback, now + CALENDAR_AHEAD)
        return {
            "country": calendar.country,
            "subdivision": calendar.subdivision,
            "on_holiday": calendar.on_holiday,
            "widen": calendar.widen,
            "learn_from": None if check.learn_from is None else check.learn_from.isoformat(),
            "spans": [span.json() for span in spans],
        }


def series_json(status: SeriesStatus) -> dict[str, Any]:
    v = status.verdict
    return {
        "segment": status.segment,
        "bucket": to_utc(v.bucket).isoformat(),
        "value": _number(v.value),
        "expected": _number(v.expected),
        "lower": _number(v.lower),
        "upper": _number(v.upper),
        "score": _number(v.score),
        "anomalous": v.anomalous,
        "alert": {
            "status": status.state.status,
            "since": status.state.since.isoformat() if status.state.since else None,
            "episode": status.state.episode,
        },
    }


def _number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value
