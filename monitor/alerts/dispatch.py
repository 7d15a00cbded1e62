"""Delivers the notification outbox to its channels, one delivery round at a time.

A notification stays in the outbox until its channel accepts it: an outage delays alerts, it
does not lose them, and a restart resends only what was never accepted. Alerts that open within
``slack.group_wait`` of each other are grouped per channel and team (or table) into one message,
and a channel about to get more than ``slack.max_messages`` messages in one round gets a single
summary instead. Charts follow their alert into its thread.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pandas as pd

from monitor.alerts.alertmanager import AlertmanagerClient, to_alertmanager
from monitor.alerts.charts import render_chart
from monitor.alerts.messages import (
    alert_blocks,
    alert_text,
    deployment_blocks,
    deployment_text,
    group_blocks,
    group_text,
    series_name,
    summary_text,
)
from monitor.alerts.notification import Notification
from monitor.alerts.routing import channel_for, group_key
from monitor.alerts.slack import DeliveryError, SlackChannel
from monitor.config import Config
from monitor.deployments import Deployment
from monitor.errors import StateStoreError
from monitor.exporter import Metrics
from monitor.store import OutboxEntry, StateStore

log = logging.getLogger("monitor.alerts")

GROUPED = ":group"  # suffix of a thread id whose parent lists several series
CHARTS_PER_GROUP = 5


class Dispatcher:
    def __init__(
        self,
        config: Config,
        store: StateStore,
        metrics: Metrics,
        slack: SlackChannel | None,
        alertmanager: AlertmanagerClient | None,
        clock: Callable[[], datetime],
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.slack = slack
        self.alertmanager = alertmanager
        self.clock = clock
        self._lock = threading.Lock()

    def reconfigure(
        self,
        config: Config,
        slack: SlackChannel | None,
        alertmanager: AlertmanagerClient | None,
    ) -> None:
        """Follow a reloaded config; waits for a delivery round in progress, so no entry is
        delivered by the old and the new settings both."""
        with self._lock:
            self.config, self.slack, self.alertmanager = config, slack, alertmanager

    @property
    def channels(self) -> list[str]:
        return [
            name
            for name, sink in (("slack", self.slack), ("alertmanager", self.alertmanager))
            if sink is not None
        ]

    def deliver_pending(self) -> int:
        """One delivery round on every channel; returns how many entries were delivered."""
        with self._lock:
            try:
                delivered = self._deliver_slack() if self.slack is not None else 0
                if self.alertmanager is not None:
                    delivered += self._deliver_alertmanager()
            except StateStoreError as exc:
                log.error("cannot use the outbox", extra={"fields": {"error": str(exc)}})
                return 0
        return delivered

    # --- Slack ------------------------------------------------------------------------------

    def _deliver_slack(self) -> int:
        assert self.slack is not None and self.config.slack is not None
        cutoff = self.clock() - self.config.slack.group_wait
        delivered = 0
        while True:
            pending = self.store.pending("slack", limit=500)
            opened = [
                e
                for e in pending
                if e.kind == "alert" and e.notification.kind == "opened" and e.created_at <= cutoff
            ]
            ready = [e for e in pending if e.kind != "alert" or e.notification.kind != "opened"]
            if not opened and not ready:
                return delivered
            try:
                if opened:
                    delivered += self._post_opened(opened)
                    continue  # their charts are queued now; read the outbox again
                for entry in ready:
                    self._post_other(entry)
                    delivered += 1
            except _Failed:
                return delivered

    def _post_opened(self, entries: list[OutboxEntry]) -> int:
        """Post opened alerts: alone, grouped, or summarised per channel."""
        assert self.slack is not None and self.config.slack is not None
        groups: dict[tuple[str, str], list[OutboxEntry]] = defaultdict(list)
        for entry in entries:
            note = entry.notification
            groups[group_key(note, channel_for(note, self.config))].append(entry)
        by_channel: dict[str, list[list[OutboxEntry]]] = defaultdict(list)
        for (channel, _), members in groups.items():
            by_channel[channel].append(members)
        for channel, channel_groups in by_channel.items():
            if len(channel_groups) > self.config.slack.max_messages:
                listed = [[e.notification for e in g] for g in channel_groups]
                everyone = [e for g in channel_groups for e in g]
                self._send(everyone, channel, summary_text(listed), None, grouped=True)
                continue
            for members in channel_groups:
                notes = [e.notification for e in members]
                if len(notes) == 1:
                    self._send(members, channel, alert_text(notes[0]), alert_blocks(notes[0]))
                else:
                    self._send(
                        members, channel, group_text(notes), group_blocks(notes), grouped=True
                    )
        return len(entries)

    def _send(
        self,
        members: list[OutboxEntry],
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None,
        grouped: bool = False,
    ) -> None:
        """Post one message for ``members``; mark them delivered and queue their charts."""
        assert self.slack is not None
        try:
            thread = self.slack.post(channel, text, blocks) + (GROUPED if grouped else "")
        except DeliveryError as exc:
            self._failed(members, exc)
        for entry in members:
            self.store.mark_delivered(entry.id, thread)
            self.metrics.alerts_sent.labels("slack", "ok").inc()
        charted = [e.notification for e in members if e.notification.history]
        for note in charted[:CHARTS_PER_GROUP]:
            payload = json.dumps({"thread": thread, "notification": note.to_json()})
            self.store.enqueue(f"{note.key}/chart", "chart", payload, ["slack"])
        log.info(
            "slack alert delivered",
            extra={"fields": {"series": [series_name(e.notification) for e in members]}},
        )

    def _post_other(self, entry: OutboxEntry) -> None:
        """Resolutions (into the alert's thread), charts and deployment reports."""
        assert self.slack is not None
        try:
            if entry.kind == "deployment":
                deployment = Deployment.from_json(entry.payload)
                assert self.config.slack is not None
                remote = self.slack.post(
                    self.config.slack.channel,
                    deployment_text(deployment),
                    deployment_blocks(deployment),
                )
            elif entry.kind == "chart":
                data = json.loads(entry.payload)
                note = Notification.from_json(data["notification"])
                png = render_chart(_history(note), title=series_name(note), unit=note.unit)
                self.slack.upload_chart(
                    data["thread"], png, f"{series_name(note)} {note.since:%Y-%m-%d %H:%M}"
                )
                remote = data["thread"]
            else:
                remote = self._post_resolution(entry.notification)
        except DeliveryError as exc:
            self._failed([entry], exc)
        self.store.mark_delivered(entry.id, remote)
        self.metrics.alerts_sent.labels("slack", "ok").inc()

    def _post_resolution(self, note: Notification) -> str:
        assert self.slack is not None
        opened_key = f"{note.check}/{note.segment}/{note.episode}/opened"
        thread = self.store.remote_id(opened_key, "slack")
        opened = self.store.notification(opened_key, "slack")
        channel = channel_for(note, self.config)
        if thread is None or opened is None:
            return self.slack.post(channel, alert_text(note))
        remote = self.slack.post(channel, alert_text(note), thread=thread)
        if not thread.endswith(GROUPED):
            self.slack.mark_resolved(thread, opened, note)
        return remote

    def _failed(self, entries: list[OutboxEntry], exc: DeliveryError) -> None:
        self.metrics.alerts_sent.labels("slack", "error").inc()
        for entry in entries:
            self.store.mark_failed(entry.id, str(exc))
        log.warning(
            "slack delivery failed; kept for retry",
            extra={"fields": {"error": str(exc), "entries": len(entries)}},
        )
        raise _Failed from None

    # --- Alertmanager ------------------------------------------------------------------------

    def _deliver_alertmanager(self) -> int:
        entries = self.store.pending("alertmanager", limit=500)
        if not entries:
            return 0
        alerts = [self._alert(e.notification) for e in entries]
        if self._post_alertmanager(alerts):
            for entry in entries:
                self.store.mark_failed(entry.id, "an Alertmanager did not accept the alerts")
            return 0
        for entry in entries:
            self.store.mark_delivered(entry.id)
        return len(entries)

    def resend_firing(self, firing: list[tuple[str, str, int]]) -> None:
        """Re-post open episodes (check, segment, episode) so Alertmanager does not resolve
        them by timeout; run more often than its ``resolve_timeout``."""
        if self.alertmanager is None:
            return
        with self._lock:
            notes = [
                self.store.notification(f"{check}/{segment}/{episode}/opened", "alertmanager")
                for check, segment, episode in firing
            ]
            alerts = [self._alert(n) for n in notes if n is not None]
            if alerts:
                self._post_alertmanager(alerts)

    def _alert(self, note: Notification) -> dict[str, object]:
        assert self.config.alertmanager is not None
        return to_alertmanager(
            note,
            environment=self.config.alertmanager.environment,
            links=self.config.links,
            ends_at=self.clock() if note.kind == "resolved" else None,
            starts_at=note.since,
            likely_cause=note.cause,
        )

    def _post_alertmanager(self, alerts: list[dict[str, object]]) -> list[str]:
        assert self.alertmanager is not None
        failed = self.alertmanager.post(alerts)
        self.metrics.alerts_sent.labels("alertmanager", "error" if failed else "ok").inc()
        return failed


class _Failed(Exception):
    """Stops a delivery round at the first refusal, so order is kept for the next round."""


def _history(note: Notification) -> pd.DataFrame:
    columns = ["bucket", "value", "expected", "lower", "upper", "anomalous"]
    frame = pd.DataFrame(note.history, columns=columns)
    frame["bucket"] = pd.to_datetime(frame["bucket"], utc=True)
    return frame
