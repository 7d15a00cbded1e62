"""Open episodes that end for a reason other than a recovery.

A rebaseline, a false alarm answered, a check retired, a segment no longer tracked, a clock
that went back: each resolves the episodes it concerns with a notification saying why.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

import pandas as pd

from monitor.alerts.notification import Notification
from monitor.alerts.state import AlertState, Transition
from monitor.answers.model import AlertRef
from monitor.buckets import bucket_start, last_complete, to_utc
from monitor.config import CheckConfig
from monitor.detection import Verdict
from monitor.incidents import Incidents
from monitor.ledger import Ledger
from monitor.notifying import Notifier
from monitor.publishing import Publisher
from monitor.segments import Ranking
from monitor.store import StateStore

log = logging.getLogger("monitor.engine")


@dataclass(frozen=True)
class Resolutions:
    """Owns ending open episodes for a reason: each is saved resolved with its notification
    queued for the ``channels``, then published (memory and metrics); and the alert states of
    series judged ahead of their time or no longer tracked."""

    ledger: Ledger
    store: StateStore
    notifier: Notifier
    publisher: Publisher
    incidents: Incidents
    channels: list[str]

    def close(
        self,
        check: CheckConfig,
        reason: str,
        fallback: datetime,
        segments: Mapping[str, str] | None = None,
        only: AlertRef | None = None,
    ) -> list[Notification]:
        """Resolve the check's open episodes, saying ``reason``; call with the check's lock
        held. ``fallback``: the bucket named when a series has judged none. ``segments``: only
        theirs, each with its own reason; ``only``: that episode, if still open."""
        name = check.name
        self.incidents.close(name)
        firing = {
            segment: state
            for segment, state in self.ledger.states(name).items()
            if state.firing
            and (segments is None or segment in segments)
            and (only is None or (segment, state.episode) == (only.segment, only.episode))
        }
        notes = []
        for segment, state in firing.items():
            assert state.since is not None
            latest = self.ledger.latest(name, segment)
            closed = AlertState(episode=state.episode, last_bucket=state.last_bucket)
            bucket = state.last_bucket or fallback
            # after a restart the episode may have no verdict in memory yet
            verdict = (
                latest.verdict
                if latest is not None
                else Verdict(pd.Timestamp(bucket), float("nan"), None, None, None, 0.0, False)
            )
            transition = Transition("resolved", state.episode, state.since, bucket)
            why = reason if segments is None else segments[segment]
            note = replace(
                self.notifier.notification(check, segment, verdict, transition), reason=why
            )
            self.store.record(name, segment, closed, [note], self.channels)
            self.ledger.close(name, segment, closed)
            self.publisher.resolved(check, segment)
            notes.append(note)
        return notes

    def rewind(self, check: CheckConfig, now: datetime) -> list[Notification] | None:
        """Judge again what was judged ahead of its time: buckets after the newest complete one
        now were judged while the clock was ahead (empty, so as zeros). Their series' episodes
        resolve saying so and their alert states go back to before the newest complete bucket
        (a freshness check's to none: its next run is judged as a first); the check's models
        are then to be rebuilt from the warehouse. None: nothing was judged ahead."""
        freshness = check.kind == "freshness"
        grain, zone = check.grain, check.timezone
        newest = to_utc(now) if freshness else last_complete(now, grain, zone, check.settle)
        ahead = self.ledger.ahead(check.name, newest)
        if ahead is None:
            return None
        reason = f"judged ahead of its time: the clock was past {newest.isoformat()}, then back"
        notes = self.close(check, "", now, segments={s: reason for s, _ in ahead})
        before = None if freshness else bucket_start(newest - pd.Timedelta(seconds=1), grain, zone)
        states: list[tuple[str, AlertState, list[Notification]]] = [
            (segment, AlertState(episode=episode, last_bucket=before), [])
            for segment, episode in ahead
        ]
        self.store.record_all(check.name, states, self.channels)
        for segment, state, _ in states:
            self.ledger.save(check.name, segment, state)
        log.warning(
            "buckets judged ahead of their time are judged again",
            extra={"fields": {"check": check.name, "newest": newest.isoformat()}},
        )
        return notes

    def untrack(self, check: CheckConfig, ranking: Ranking, now: datetime) -> list[Notification]:
        """Stop tracking the segments a re-rank dropped: their open alerts resolve saying why,
        their memory and metric series go (their alert state stays in the store, so a segment
        that comes back numbers its episodes on, until retention prunes it)."""
        name = check.name
        notes = self.close(check, "", now, segments=ranking.dropped)
        self.ledger.untrack(name, ranking.dropped)
        states = self.ledger.states(name)
        returning = [s for s in ranking.tracked if s not in states]
        if returning:
            # a segment tracked again carries on from its saved state: its episodes' numbers,
            # and so their notifications' keys, are never used twice
            self.ledger.resume(name, returning, self.store.load_states(name))
        for segment, reason in ranking.dropped.items():
            self.publisher.untracked(check, segment, reason)
        return notes
