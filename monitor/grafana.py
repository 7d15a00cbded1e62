"""Deployments, and the calendar events and exclusion windows recorded through the API, as
Grafana annotations (``POST /api/annotations``), when Grafana is configured."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

from monitor.calendar.config import RecordedEvent
from monitor.calendar.days import Calendar
from monitor.config import GrafanaConfig
from monitor.deployments import Deployment

log = logging.getLogger("monitor.grafana")


def annotation(deployment: Deployment, dashboard_uid: str | None) -> dict[str, object]:
    """The annotation body: epoch milliseconds, tags to filter on, a one-line text."""
    text = f"Deployment {deployment.id} to {deployment.environment}"
    if deployment.commit:
        text += f" (commit {deployment.commit[:12]})"
    if deployment.models:
        text += f": {', '.join(deployment.models[:10])}"
    body: dict[str, object] = {
        "time": int(deployment.received_at.timestamp() * 1000),
        "tags": ["kpi-monitor", "deployment", deployment.environment],
        "text": text if not deployment.url else f'{text} <a href="{deployment.url}">link</a>',
    }
    if dashboard_uid:
        body["dashboardUID"] = dashboard_uid
    return body


def event_annotation(
    event: RecordedEvent, timezone: str, dashboard_uid: str | None
) -> dict[str, object]:
    """A region from the event's start to its end (dates are whole days in ``timezone``),
    tagged with its kind and the checks it applies to."""
    q = event.request
    start, end = Calendar(timezone=timezone).bounds(q.start, q.until)
    what = q.name if q.kind == "event" else f"Excluded: {q.reason}"
    scope = f" ({', '.join(q.checks)})" if q.checks else " (every check)"
    body: dict[str, object] = {
        "time": int(start.timestamp() * 1000),
        "timeEnd": int(end.timestamp() * 1000),
        "tags": ["kpi-monitor", "calendar", q.kind, *q.checks],
        "text": f"{what}{scope}",
    }
    if dashboard_uid:
        body["dashboardUID"] = dashboard_uid
    return body


class GrafanaAnnotator:
    def __init__(self, config: GrafanaConfig) -> None:
        self.config = config

    def __call__(self, deployment: Deployment) -> None:
        """Post the annotation; a failure is logged, never raised (it must not block a deploy)."""
        self._post(annotation(deployment, self.config.dashboard_uid), {"deployment": deployment.id})

    def event(self, event: RecordedEvent, timezone: str) -> None:
        """Annotate a recorded event or exclusion; a failure is logged, never raised."""
        body = event_annotation(event, timezone, self.config.dashboard_uid)
        self._post(body, {"event": event.id})

    def _post(self, body: dict[str, object], about: dict[str, str]) -> None:
        request = urllib.request.Request(  # noqa: S310 - the Grafana URL comes from config
            self.config.url.rstrip("/") + "/api/annotations",
            data=json.dumps(body).encode(),
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self.config.token.get_secret_value()}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout) as response:  # noqa: S310
                response.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            log.warning(
                "grafana annotation failed",
                extra={"fields": {**about, "error": str(reason)}},
            )
