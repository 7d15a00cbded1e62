"""Deployments as Grafana annotations (``POST /api/annotations``), when Grafana is configured."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

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


class GrafanaAnnotator:
    def __init__(self, config: GrafanaConfig) -> None:
        self.config = config

    def __call__(self, deployment: Deployment) -> None:
        """Post the annotation; a failure is logged, never raised (it must not block a deploy)."""
        request = urllib.request.Request(  # noqa: S310 - the Grafana URL comes from config
            self.config.url.rstrip("/") + "/api/annotations",
            data=json.dumps(annotation(deployment, self.config.dashboard_uid)).encode(),
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
                extra={"fields": {"deployment": deployment.id, "error": str(reason)}},
            )
