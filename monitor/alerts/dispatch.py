"""Delivers the notification outbox to its channels, one delivery at a time.

A notification stays in the outbox until its channel accepts it: a Slack outage delays alerts,
it does not lose them, and a restart resends only what was never accepted.
"""

from __future__ import annotations

import logging
import threading

from monitor.alerts.notification import Notification
from monitor.alerts.slack import DeliveryError, SlackChannel
from monitor.config import Config
from monitor.deployments import Deployment
from monitor.errors import StateStoreError
from monitor.exporter import Metrics
from monitor.store import StateStore

log = logging.getLogger("monitor.alerts")


class Dispatcher:
    def __init__(
        self, config: Config, store: StateStore, metrics: Metrics, slack: SlackChannel | None
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.slack = slack
        self._lock = threading.Lock()

    @property
    def channels(self) -> list[str]:
        return ["slack"] if self.slack is not None else []

    def deliver_pending(self) -> int:
        """Try every pending notification once; stop at a channel's first failure."""
        if self.slack is None:
            return 0
        delivered = 0
        with self._lock:
            try:
                entries = self.store.pending("slack")
            except StateStoreError as exc:
                log.error("cannot read the outbox", extra={"fields": {"error": str(exc)}})
                return 0
            for entry in entries:
                fields = {"message": entry.kind, "id": entry.id}
                try:
                    if entry.kind == "deployment":
                        remote = self.slack.post_deployment(Deployment.from_json(entry.payload))
                    else:
                        note = entry.notification
                        fields.update(check=note.check, segment=note.segment, kind=note.kind)
                        remote = self._send_slack(note)
                except DeliveryError as exc:
                    self.metrics.alerts_sent.labels("slack", "error").inc()
                    self.store.mark_failed(entry.id, str(exc))
                    log.warning(
                        "slack delivery failed; kept for retry",
                        extra={
                            "fields": {**fields, "error": str(exc), "attempts": entry.attempts + 1}
                        },
                    )
                    break
                self.store.mark_delivered(entry.id, remote)
                self.metrics.alerts_sent.labels("slack", "ok").inc()
                delivered += 1
                log.info("slack notification delivered", extra={"fields": fields})
        return delivered

    def _send_slack(self, note: Notification) -> str:
        assert self.slack is not None
        check = self.config.check(note.check)
        channel = check.channel if check is not None else None
        if note.kind == "opened":
            return self.slack.post_alert(note, channel)
        opened_key = f"{note.check}/{note.segment}/{note.episode}/opened"
        thread = self.store.remote_id(opened_key, "slack")
        opened = self.store.notification(opened_key, "slack")
        return self.slack.post_resolution(opened, note, thread, channel)
