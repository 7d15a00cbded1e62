"""The daemon itself: ``/healthz``, ``/readyz``, ``/metrics``, the notifications not delivered
(``/api/v1/notifications``) and ``/-/reload``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST

from monitor.alerts.dispatch import outbox_json
from monitor.api.http import HttpError, Response, json_response, no_body
from monitor.engine import Engine
from monitor.errors import ConfigError
from monitor.exporter import Metrics
from monitor.reload import ReloadBusy, ReloadPlan

NOTIFICATIONS_LISTED = 500


@dataclass(frozen=True)
class Operations:
    """What an operator asks of the daemon. ``ready`` returns what keeps the daemon from being
    ready; ``reload`` (None: this server cannot) re-reads the config as SIGHUP does."""

    engine: Engine
    metrics: Metrics
    ready: Callable[[], list[str]]
    reload: Callable[[], ReloadPlan] | None

    def get_metrics(self) -> Response:
        return Response(200, self.metrics.exposition(), CONTENT_TYPE_LATEST)

    def get_health(self) -> Response:
        return json_response(200, {"status": "ok"})

    def get_ready(self) -> Response:
        problems = self.ready()
        if problems:
            return json_response(503, {"status": "not ready", "problems": problems})
        return json_response(200, {"status": "ready"})

    def list_notifications(self) -> Response:
        """Messages not delivered yet and those given up, newest first."""
        outbox = self.engine.store.outbox
        entries = outbox.entries(["pending", "failed"], limit=NOTIFICATIONS_LISTED)
        return json_response(200, {"notifications": [outbox_json(e) for e in entries]})

    def post_reload(self, body: object) -> Response:
        """Re-read the config file and the dbt manifest (as SIGHUP does)."""
        no_body(body)
        if self.reload is None:
            raise HttpError(404, "this server cannot reload a config")
        try:
            plan = self.reload()
        except ConfigError as exc:
            raise HttpError(422, exc.render()) from None
        except ReloadBusy as exc:
            raise HttpError(
                503, f"not reloaded: {exc}; try again", [("Retry-After", "10")]
            ) from None
        return json_response(200, {"status": "reloaded", **plan.summary()})
