"""Alertmanager v2 sink, for on-call routing by ``team`` and ``severity``.

``to_alertmanager`` turns a notification into one alert of ``POST /api/v2/alerts`` [pure];
``AlertmanagerClient`` posts alerts to every configured replica [I/O].

Alertmanager forgets a firing alert that is not re-sent within its ``resolve_timeout`` (default
5m), so the caller re-posts open episodes every ``resend_interval`` (default 1m) with the same
labels and ``startsAt``, and posts the resolution once with ``endsAt``. Replicas gossip
notification state but not alerts, so each one is posted to directly, never through a load
balancer.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from monitor.alerts.links import render_link
from monitor.alerts.messages import alert_text, deviation, series_name
from monitor.alerts.notification import Notification
from monitor.config import AlertmanagerConfig, LinksConfig

log = logging.getLogger("monitor.alerts")

ALERTNAME = "KPIAnomaly"
_API_PATH = "/api/v2/alerts"


def to_alertmanager(
    note: Notification,
    *,
    environment: str,
    links: LinksConfig,
    ends_at: datetime | None,
    starts_at: datetime,
    likely_cause: str | None = None,
) -> dict[str, Any]:
    """One postable alert for ``note``.

    Pass ``ends_at=None`` while the episode is open (also on every re-send) and the time it
    resolved for a ``resolved`` notification, which must have one. ``starts_at`` stays the same
    for the whole episode (the first anomalous bucket, ``note.since``) so Alertmanager keeps
    seeing one alert. Labels that would be empty (no segment, no team) are left out, as
    Prometheus does; a matcher ``team=""`` still matches them.
    """
    if note.kind == "resolved" and ends_at is None:
        raise ValueError("a resolved notification needs ends_at, or the alert would fire again")
    labels = {
        "alertname": ALERTNAME,
        "check": note.check,
        "segment": note.segment,
        "severity": note.severity,
        "team": note.team,
        "environment": environment,
    }
    dashboard = render_link(links.dashboard, note.check, note.segment)
    runbook = render_link(links.runbook, note.check, note.segment)
    if note.kind == "resolved":
        summary = f"{series_name(note)} is back within its band"
    else:
        summary = f"{series_name(note)} is {deviation(note)}"
    annotations = {
        "summary": summary,
        "description": alert_text(note),
        "dashboard": dashboard or "",
        "runbook": runbook or "",
        "owner": note.owner or "",
        "likely_cause": likely_cause or "",
        "explanation": note.explanation if note.kind == "opened" else "",
    }
    alert: dict[str, Any] = {
        "labels": {k: v for k, v in labels.items() if v},
        "annotations": {k: v for k, v in annotations.items() if v},
        "startsAt": _rfc3339(starts_at),
    }
    if ends_at is not None:
        alert["endsAt"] = _rfc3339(ends_at)
    if dashboard:
        alert["generatorURL"] = dashboard
    return alert


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("alert times must be timezone-aware")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class AlertmanagerClient:
    """Posts alerts to ``/api/v2/alerts`` of every configured Alertmanager.

    A replica that fails is reported, never raised, so one replica down does not keep the others
    from paging. URLs may carry basic-auth credentials (``https://user:pass@am:9093``); they are
    sent as a header and never appear in a log line.
    """

    name = "alertmanager"

    def __init__(self, config: AlertmanagerConfig) -> None:
        self.urls = list(config.urls)
        self.timeout = config.timeout
        self._opener = urllib.request.build_opener()

    def post(
        self, alerts: list[dict[str, Any]], urls: Sequence[str] | None = None
    ) -> dict[str, Refusal]:
        """Post ``alerts`` to every URL (or only ``urls``, e.g. the ones that failed last time);
        return the URLs, as configured, that did not accept them, with why."""
        targets = list(self.urls if urls is None else urls)
        if not alerts or not targets:
            return {}
        body = json.dumps(alerts).encode()
        if len(targets) == 1:
            errors = [self._post_one(targets[0], body, len(alerts))]
        else:
            # in parallel: a replica that times out must not delay the page on the others
            with ThreadPoolExecutor(max_workers=min(len(targets), 8)) as pool:
                errors = list(pool.map(lambda u: self._post_one(u, body, len(alerts)), targets))
        return {url: error for url, error in zip(targets, errors, strict=True) if error}

    def _post_one(self, url: str, body: bytes, count: int) -> Refusal | None:
        """None when the replica at ``url`` accepted ``body``, else why not (without secrets)."""
        safe = redact(url)
        status = None
        try:
            endpoint, auth = _endpoint(url)
            headers = {"Content-Type": "application/json", "User-Agent": "kpi-monitor"}
            if auth:
                headers["Authorization"] = auth
            request = urllib.request.Request(  # noqa: S310 - _endpoint lets only http(s) through
                endpoint, data=body, headers=headers, method="POST"
            )
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read()
            return None
        except urllib.error.HTTPError as exc:
            # Alertmanager explains a refusal in the body ("start time must be before end time")
            with exc:
                detail = exc.read(300).decode("utf-8", "replace").strip()
            status = exc.code
            error = f"HTTP {exc.code}: {detail}" if detail else f"HTTP {exc.code}"
        except urllib.error.URLError as exc:
            reason = exc.reason
            error = (
                f"{type(reason).__name__}: {getattr(reason, 'strerror', None) or reason}"
                if isinstance(reason, OSError)
                else str(reason)
            )
        except (OSError, http.client.HTTPException) as exc:
            error = f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"
        except ValueError:
            error = "invalid URL"
        log.warning(
            "alertmanager did not accept alerts",
            extra={"fields": {"alertmanager": safe, "alerts": count, "error": error}},
        )
        return Refusal(f"{safe}: {error}", status)


@dataclass(frozen=True)
class Refusal:
    """Why a replica did not accept a post: ``reason`` names the replica (without secrets);
    ``status`` is its HTTP answer, if it gave one."""

    reason: str
    status: int | None = None

    @property
    def invalid(self) -> bool:
        """The replica read the alerts and refused (some of) them: posting the same again cannot
        help. Alertmanager keeps the valid alerts of a post and answers 400 for the others."""
        return self.status is not None and 400 <= self.status < 500 and self.status != 429


def replica_id(url: str) -> str:
    """A short stable name for a replica's URL, for the outbox (the URL may hold a password)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def _endpoint(url: str) -> tuple[str, str | None]:
    """The alerts endpoint under ``url``, and a basic-auth header from its credentials."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL")
    auth = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        auth = "Basic " + base64.b64encode(pair.encode()).decode()
    netloc = parts.netloc.rsplit("@", 1)[-1]
    path = parts.path.rstrip("/")
    if not path.endswith(_API_PATH):
        path += _API_PATH
    return urlunsplit((parts.scheme, netloc, path, parts.query, "")), auth


def redact(url: str) -> str:
    """``url`` without credentials or query, for logs."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return "<invalid URL>"
