"""Open episodes that end for a reason other than a recovery.

A rebaseline, a false alarm answered, a check retired, a segment no longer tracked, a clock
that went back: each resolves the episodes it concerns with a notification saying why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

import pandas as pd

from monitor.alerts.notification import Notification
from monitor.alerts.state import AlertState, Transition
from monitor.answers.model import AlertRef
from monitor.config import CheckConfig
from monitor.detection import Verdict
from monitor.incidents import Incidents
from monitor.ledger import Ledger
from monitor.notifying import Notifier
from monitor.publishing import Publisher
from monitor.store import StateStore


class Resolutions:
    """Owns ending open episodes for a reason: each is saved resolved with its notification
    queued for the ``channels``, then published (memory and metrics)."""

    def __init__(
        self,
        ledger: Ledger,
        store: StateStore,
        notifier: Notifier,
        publisher: Publisher,
        incidents: Incidents,
        channels: list[str],
    ) -> None:
        self._ledger = ledger
        self._store = store
        self._notifier = notifier
        self._publisher = publisher
        self._incidents = incidents
        self._channels = channels

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
        self._incidents.close(name)
        firing = {
            segment: state
            for segment, state in self._ledger.states(name).items()
            if state.firing
            and (segments is None or segment in segments)
            and (only is None or (segment, state.episode) == (only.segment, only.episode))
        }
        notes = []
        for segment, state in firing.items():
            assert state.since is not None
            latest = self._ledger.latest(name, segment)
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
                self._notifier.notification(check, segment, verdict, transition), reason=why
            )
            self._store.record(name, segment, closed, [note], self._channels)
            self._ledger.close(name, segment, closed)
            self._publisher.resolved(check, segment)
            notes.append(note)
        return notes
