"""Delivers the notification outbox to its channels, one delivery round at a time.

A notification stays in the outbox until its channel accepts it, refuses it for good, or the
bounded attempts of ``retry.py`` are spent: an outage delays alerts, it does not lose them, and a
restart resends only what was never accepted. One message's refusal never holds up another.
Slack's side (grouping, charts, threads, exactly-once) is ``slack_outbox.py``; Alertmanager's is
here: every replica is posted what it has not accepted yet, so a dead replica costs the healthy
ones nothing, and an alert is done once every replica took it.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from monitor.alerts.alertmanager import (
    AlertmanagerClient,
    Refusal,
    replica_id,
    to_alertmanager,
)
from monitor.alerts.notification import Notification, event_key
from monitor.alerts.retry import next_attempt
from monitor.alerts.slack import SlackChannel
from monitor.alerts.slack_outbox import PAGE, SlackOutbox
from monitor.config import Config
from monitor.errors import StateStoreError
from monitor.exporter import Metrics
from monitor.records.outbox import OutboxEntry
from monitor.store import StateStore

log = logging.getLogger("monitor.alerts")


@dataclass(eq=False)  # a service with a lock: compared by identity, never by its fields
class Dispatcher:
    """``may_send``: asked right before each post; False (a replica whose outbox lease ran out,
    see monitor/leases.py) ends the round without posting."""

    config: Config
    store: StateStore
    metrics: Metrics
    slack: SlackChannel | None
    alertmanager: AlertmanagerClient | None
    clock: Callable[[], datetime]
    may_send: Callable[[], bool] = lambda: True
    _slack: SlackOutbox | None = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._slack = self._slack_outbox()

    def _slack_outbox(self) -> SlackOutbox | None:
        # its steps are built from the config: routing, grouping, answers, the default channel
        if self.slack is None:
            return None
        return SlackOutbox(
            self.config, self.store, self.metrics, self.slack, self.clock, self.may_send
        )

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
            self._slack = self._slack_outbox()

    @property
    def channels(self) -> list[str]:
        return [
            name
            for name, sink in (("slack", self.slack), ("alertmanager", self.alertmanager))
            if sink is not None
        ]

    def deliver_pending(self) -> int:
        """One delivery round on every channel; returns how many entries were delivered."""
        rounds: list[tuple[str, Callable[[], int]]] = []
        if self._slack is not None:
            rounds.append(("slack", self._slack.deliver))
        if self.alertmanager is not None:
            rounds.append(("alertmanager", self._deliver_alertmanager))
        delivered = 0
        with self._lock:
            for name, deliver in rounds:
                try:
                    delivered += deliver()
                except StateStoreError as exc:
                    log.error(
                        "cannot use the outbox",
                        extra={"fields": {"channel": name, "error": str(exc)}},
                    )
        return delivered

    # --- Alertmanager ------------------------------------------------------------------------

    def _deliver_alertmanager(self) -> int:
        now = self.clock()
        delivered, after = 0, 0
        while page := self.store.outbox.pending("alertmanager", PAGE, due=now, after=after):
            after = page[-1].id
            delivered += self._alertmanager_page(page, now)
        return delivered

    def _alertmanager_page(self, entries: list[OutboxEntry], now: datetime) -> int:
        assert self.alertmanager is not None
        replicas = {replica_id(url): url for url in self.alertmanager.urls}
        # entries grouped by the replicas that have not accepted them yet: one post per group
        waiting: dict[frozenset[str], list[tuple[OutboxEntry, dict[str, object]]]] = (
            defaultdict(list)
        )
        for entry in entries:
            try:
                alert = self._alert(entry.notification)
            except Exception as exc:  # odd data in one alert must not stall the rest
                log.error("cannot deliver an alert", exc_info=exc)
                error = f"internal error: {type(exc).__name__}: {exc}"
                self.store.outbox.mark_failed([entry.id], error)
                continue
            waiting[frozenset(replicas) - entry.delivered_to].append((entry, alert))
        delivered = 0
        for targets, group in waiting.items():
            if not self.may_send():
                break
            refusals = self._post_group(group, [replicas[r] for r in sorted(targets)])
            for entry, _ in group:
                refused = refusals[entry.id]
                took = frozenset(r for r in targets if replicas[r] not in refused)
                delivered += self._record_alertmanager(entry, refused, took, now)
        return delivered

    def _post_group(
        self, group: list[tuple[OutboxEntry, dict[str, object]]], urls: list[str]
    ) -> dict[int, dict[str, Refusal]]:
        """Post ``group`` to ``urls``; per entry, the replicas that did not accept it."""
        # no URL: every replica took it already (one was removed from the config)
        refused = self._post_alertmanager([alert for _, alert in group], urls) if urls else {}
        per_entry = {entry.id: dict(refused) for entry, _ in group}
        for url, refusal in refused.items():
            if refusal.invalid and len(group) > 1:
                # it kept the valid alerts and refused others: post each alone to find those
                for entry, alert in group:
                    alone = self._post_alertmanager([alert], [url]).get(url)
                    if alone is None:
                        del per_entry[entry.id][url]
                    else:
                        per_entry[entry.id][url] = alone
        return per_entry

    def _record_alertmanager(
        self, entry: OutboxEntry, refused: dict[str, Refusal], took: frozenset[str], now: datetime
    ) -> int:
        """Record what the replicas did with ``entry``; 1 when every one has it."""
        assert self.config.alertmanager is not None
        accepted = entry.delivered_to | took
        if not refused:
            self.store.outbox.mark_delivered([entry.id])
            return 1
        reason = "; ".join(r.reason for r in refused.values())
        attempts = entry.attempts + 1
        when = next_attempt(attempts, now, self.config.alertmanager.max_attempts)
        if any(r.invalid for r in refused.values()):
            self.store.outbox.mark_failed([entry.id], reason, accepted)
        elif when is None:
            self.store.outbox.mark_failed(
                [entry.id], f"gave up after {attempts} attempts: {reason}", accepted
            )
        else:
            self.store.outbox.mark_retry(
                [entry.id], reason, when, in_doubt=False, delivered_to=accepted
            )
        return 0

    def resend_firing(self, firing: list[tuple[str, str, int]]) -> None:
        """Re-post open episodes (check, segment, episode) so Alertmanager does not resolve
        them by timeout; run more often than its ``resolve_timeout``."""
        if self.alertmanager is None:
            return
        with self._lock:
            keys = [event_key(check, segment, n, "opened") for check, segment, n in firing]
            notes = [self.store.outbox.notification(key, "alertmanager") for key in keys]
            alerts = [self._alert(n) for n in notes if n is not None]
            if alerts:
                self._post_alertmanager(alerts, self.alertmanager.urls)

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

    def _post_alertmanager(
        self, alerts: list[dict[str, object]], urls: list[str]
    ) -> dict[str, Refusal]:
        assert self.alertmanager is not None
        errors = self.alertmanager.post(alerts, urls)
        self.metrics.alerts_sent.labels("alertmanager", "error" if errors else "ok").inc()
        return errors


def outbox_json(entry: OutboxEntry) -> dict[str, object]:
    """An outbox entry as ``GET /api/v1/notifications`` shows it: what it is about (from its
    key: ``check/segment/episode/event``, then ``/chart``, ``/update``, ``/answer`` or
    ``/answer_update`` for a later step of a Slack delivery; ``deployment/id/verdict``) and how
    its delivery went."""
    about: dict[str, object]
    parts = entry.key.split("/")
    if entry.kind == "deployment":
        about = {"deployment": "/".join(parts[1:-1]), "verdict": parts[-1]}
    else:
        later = ("chart", "update", "answer", "answer_update")
        step = parts.pop() if parts[-1] in later else "message"
        # check names have no "/" and episodes are numbers: the segment is what lies between
        about = {
            "check": parts[0],
            "segment": "/".join(parts[1:-2]),
            "episode": int(parts[-2]),
            "event": parts[-1],
            "step": step,
        }
    return {
        "id": entry.id,
        "channel": entry.channel,
        "kind": entry.kind,
        **about,
        "status": entry.status,
        "attempts": entry.attempts,
        "last_error": entry.last_error,
        "queued_at": entry.created_at.isoformat(),
        "next_attempt_at": _iso(entry.next_attempt_at),
        "delivered_at": _iso(entry.delivered_at),
        # Slack may show it although it is not recorded as sent (its answer was lost)
        "in_doubt": entry.in_doubt is not None and entry.status != "sent",
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
