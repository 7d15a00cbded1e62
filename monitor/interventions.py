"""What people do to a check between its runs: restart its baseline, answer an alert as a
false alarm, mute it, retire it. Each takes the check's lock, so it lands between two runs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from monitor.alerts.notification import Notification
from monitor.answers.model import AlertRef
from monitor.config import CheckConfig
from monitor.exporter import Metrics
from monitor.model_cache import ModelCache
from monitor.replicas import Replicas
from monitor.resolutions import Resolutions
from monitor.tuning import Tuning

log = logging.getLogger("monitor.engine")


@dataclass(frozen=True)
class Interventions:
    """Owns the effect of a rebaseline, a false alarm answered, a mute and a retirement on a
    check: recorded (``tuning``), applied to its models, its open episodes resolved saying why
    (``resolutions``), and logged. A check another replica runs is only recorded: that replica
    applies it."""

    locks: dict[str, threading.Lock]
    clock: Callable[[], datetime]
    metrics: Metrics
    tuning: Tuning
    models: ModelCache
    resolutions: Resolutions
    replicas: Replicas

    def rebaseline(self, check: CheckConfig, since: datetime) -> list[Notification] | None:
        """Accept the check's level from ``since`` on (an intended change).

        Its models stop measuring against the old level, and an alert that is firing ends with
        a resolution saying why, so the new normal is not alerted on for days. A check another
        replica runs is only saved: that replica follows it within a lease renewal (``refresh``)
        and None is returned."""
        name = check.name
        if not self.replicas.holds(name):
            self.tuning.rebaseline(name, since, saved_only=True)
            return None
        with self.locks[name]:
            self.tuning.rebaseline(name, since)
            for model in self.models.models(name).values():
                model.acknowledge(pd.Timestamp(since))
            notes = self.resolutions.close(
                check, f"baseline restarted from {since.isoformat()} (an intended change)", since
            )
        log.info(
            "baseline restarted", extra={"fields": {"check": name, "since": since.isoformat()}}
        )
        return notes

    def false_alarm(self, check: CheckConfig, ref: AlertRef, reason: str) -> list[Notification]:
        """An alert answered as a false alarm: its episode, if still open, resolves saying
        ``reason``, and the series' models are rebuilt at its new sensitivity (worked out from
        the recorded answers) before its next bucket is judged."""
        with self.locks[ref.check]:
            notes = self.resolutions.close(check, reason, self.clock(), only=ref)
            self.tuning.answered(ref, resolved=bool(notes))
        log.info(
            "alert answered as a false alarm",
            extra={"fields": {"check": ref.check, "segment": ref.segment,
                              "episode": ref.episode}},
        )  # fmt: skip
        return notes

    def mute(self, name: str, until: datetime, reason: str) -> None:
        """Send no notification for the check until ``until`` (a planned backfill); its metrics
        and alert state go on, so what fires during the mute is visible in Prometheus."""
        self.tuning.mute(name, until, reason)
        log.info(
            "check muted",
            extra={"fields": {"check": name, "until": until.isoformat(), "reason": reason}},
        )

    def refresh(self, checks: Callable[[str], CheckConfig | None]) -> list[str]:
        """Mutes and rebaselines set through another replica: followed for the checks held
        here (a rebaseline's firing alert resolves); the configured checks rebaselined."""
        changed = self.tuning.refresh(self.replicas.holds)
        for name, since in changed.items():
            check = checks(name)
            if check is not None:
                self.rebaseline(check, since)
        return list(changed)

    def retire(self, check: CheckConfig, reason: str) -> list[Notification]:
        """A check removed from the config, or redefined so that its series are other ones:
        its open alerts resolve, saying ``reason``, and its metrics go (a series that is gone
        must not keep an alert rule firing)."""
        name = check.name
        if not self.replicas.holds(name):  # the replica holding it resolves them
            self.metrics.forget_check(name)
            return []
        with self.locks[name]:
            notes = self.resolutions.close(check, reason, self.clock())
            self.metrics.forget_check(name)
        log.info(
            "check retired",
            extra={"fields": {"check": name, "reason": reason, "resolved": len(notes)}},
        )
        return notes
