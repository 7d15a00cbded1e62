"""A check's notification from one of its series' alert transitions."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from monitor.alerts.links import render_link
from monitor.alerts.notification import Notification
from monitor.alerts.state import Transition
from monitor.buckets import to_utc
from monitor.config import CheckConfig, Config
from monitor.detection import Verdict
from monitor.rules import Bounds

log = logging.getLogger("monitor.engine")

Cause = Callable[[CheckConfig, datetime, datetime], str | None]
"""A listener naming the likely cause of an alert opening: (check, since, now) -> text."""


class Notifier:
    """Owns how a transition becomes a :class:`Notification`: the bound it broke, the likely
    cause (the ``cause`` listener, contained: a failing one is logged and the alert goes out
    without a cause), the dashboard and runbook links of the config."""

    def __init__(
        self, config: Config, clock: Callable[[], datetime], cause: Cause | None = None
    ) -> None:
        self._config = config
        self._clock = clock
        self._cause = cause

    def notification(
        self, check: CheckConfig, segment: str, verdict: Verdict, transition: Transition
    ) -> Notification:
        cause, reason = None, ""
        if transition.kind == "opened":
            reason = Bounds(check.min, check.max).reason(verdict.value)
            cause = self._likely_cause(check, to_utc(transition.since).to_pydatetime())
        links = self._config.links
        return Notification(
            kind=transition.kind,
            check=check.name,
            segment=segment,
            episode=transition.episode,
            since=to_utc(transition.since).to_pydatetime(),
            bucket=to_utc(transition.bucket).to_pydatetime(),
            value=verdict.value,
            expected=verdict.expected,
            lower=verdict.lower,
            upper=verdict.upper,
            score=verdict.score,
            severity=check.severity,
            owner=check.owner,
            team=check.team,
            unit="seconds" if check.kind == "freshness" else "",  # a freshness value is an age
            labels=dict(check.labels),
            cause=cause,
            reason=reason,
            table=check.table,
            links={
                name: url
                for name, url in (
                    ("dashboard", render_link(links.dashboard, check.name, segment)),
                    ("runbook", render_link(links.runbook, check.name, segment)),
                )
                if url
            },
        )

    def _likely_cause(self, check: CheckConfig, since: datetime) -> str | None:
        """What the ``cause`` listener names for an alert opening."""
        if self._cause is None:
            return None
        try:
            return self._cause(check, since, self._clock())
        except Exception:
            log.exception("cause listener failed", extra={"fields": {"check": check.name}})
            return None
