"""What people told the monitor about a check, beyond its config, and the models that follow it.

A mute silences a check's notifications; a rebaseline accepts a new level; recorded calendar
events mark buckets; answers to alerts raise a series' threshold (false alarms) and hush a
deviation while it lasts. All are kept in the state store; this holds them for the runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from monitor.alerts.state import AlertState
from monitor.answers.hush import hushed
from monitor.answers.model import WINDOW as ANSWER_WINDOW
from monitor.answers.model import AlertRef, series_factors
from monitor.buckets import to_utc
from monitor.calendar.book import CalendarBook
from monitor.calendar.config import EventRequest, RecordedEvent
from monitor.config import CheckConfig, Config
from monitor.detection import Detector, DetectorSpec, Verdict
from monitor.relearn import relearned
from monitor.store import StateStore

log = logging.getLogger("monitor.engine")

DEFAULT_SENSITIVITY = DetectorSpec(bucket_seconds=3600).sensitivity
FACTORS_REFRESH = timedelta(hours=1)  # answers ageing out of their window lower a threshold


def detector_spec(check: CheckConfig, factor: float = 1.0) -> DetectorSpec:
    """How a check's series are judged; ``factor`` raises a series' threshold (false alarms
    answered on it, see ``monitor.answers.model.sensitivity_factor``)."""
    return DetectorSpec(
        bucket_seconds=check.bucket_seconds,
        sensitivity=(check.sensitivity or DEFAULT_SENSITIVITY) * factor,
        direction=check.direction,
        min_relative_change=check.min_relative_change,
        timezone=check.timezone,
        quiet_factor=check.quiet_factor,
    )


class Tuning:
    """Owns every check's mute, rebaseline, calendar (``calendars``, with the checks whose
    models predate a change of it) and the answers to its alerts (each series' sensitivity
    factor, and the series hushed while an answered deviation lasts); builds the models that
    follow them. Thread-safe.

    ``calendars``: the book of recorded events, shared with the engine of a reloaded config.
    """

    def __init__(
        self,
        config: Config,
        store: StateStore,
        clock: Callable[[], datetime],
        calendars: CalendarBook | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._clock = clock
        self.calendars = calendars or CalendarBook(store, clock)
        self._lock = threading.Lock()
        self._mutes = store.mutes()
        self._rebaselines = store.rebaselines()
        self._recalendared: set[str] = set()  # checks whose models predate a calendar change
        # per check: each series' sensitivity factor from the answers to its alerts, and when
        # it was worked out (answers age out of their window: see ``follow_answers``)
        started = clock()
        self._factors = series_factors(store.answers.since(started - ANSWER_WINDOW), started)
        self._factors_at = {c.name: started for c in config.checks}
        # series whose alert was answered as a false alarm, while their deviation lasts
        self._hushed = store.answers.holding()

    # --- models -----------------------------------------------------------------------------

    def fitted(self, check: CheckConfig, buckets: pd.DatetimeIndex, values: np.ndarray) -> Detector:
        """A new model that has learned this history, re-based at the check's rebaseline."""
        return relearned(
            detector_spec(check),
            buckets,
            values,
            rebaselined=self.rebaselined(check.name),
            calendar=self.calendars.calendar(check),
        )[0]

    def warmed(
        self,
        check: CheckConfig,
        segment: str,
        buckets: pd.DatetimeIndex,
        values: np.ndarray,
        state: AlertState,
        *,
        replay: bool,
    ) -> tuple[Detector, list[Verdict]]:
        """``fitted`` at the series' sensitivity (answers to its alerts may have raised it),
        carrying on from its alert ``state`` (the quiet period in progress); with ``replay``
        (a first start), judging the history."""
        with self._lock:
            factor = self._factors.get(check.name, {}).get(segment, 1.0)
        return relearned(
            detector_spec(check, factor),
            buckets,
            values,
            rebaselined=self.rebaselined(check.name),
            state=state,
            judge=replay,
            calendar=self.calendars.calendar(check),
        )

    # --- mutes and rebaselines --------------------------------------------------------------

    def mute(self, name: str, until: datetime, reason: str) -> None:
        """Persist a mute of the check until ``until``."""
        self._store.save_mute(name, until, reason)
        with self._lock:
            self._mutes[name] = (until, reason)

    def muted(self, check: CheckConfig, now: datetime) -> bool:
        """Whether the check sends no notification now (its own mute or its config's)."""
        with self._lock:
            until = self._mutes.get(check.name, (None, ""))[0]
        return any(u is not None and u > now for u in (until, check.mute_until))

    def rebaselined(self, name: str) -> datetime | None:
        with self._lock:
            return self._rebaselines.get(name)

    def rebaseline(self, name: str, since: datetime, *, saved_only: bool = False) -> None:
        """Persist a rebaseline of the check from ``since``; ``saved_only``: for the replica
        running the check to follow (see ``refresh``), not followed here."""
        self._store.save_rebaseline(name, since)
        if not saved_only:
            with self._lock:
                self._rebaselines[name] = since

    def refresh(self, held: Callable[[str], bool]) -> dict[str, datetime]:
        """Follow the mutes and rebaselines set through another replica; the rebaselines of the
        ``held`` checks that changed, for the engine to apply (the others are taken as read)."""
        mutes, rebaselines = self._store.mutes(), self._store.rebaselines()
        with self._lock:
            self._mutes = mutes
            changed = {
                name: since for name, since in rebaselines.items()
                if self._rebaselines.get(name) != since and held(name)
            }  # fmt: skip
            self._rebaselines.update({n: s for n, s in rebaselines.items() if n not in changed})
        return changed

    def take_over(self, name: str) -> None:
        """The check's mute and rebaseline as another replica saved them."""
        mutes, rebaselines = self._store.mutes(), self._store.rebaselines()
        with self._lock:
            self._mutes.pop(name, None)
            if name in mutes:
                self._mutes[name] = mutes[name]
            self._rebaselines.pop(name, None)
            if name in rebaselines:
                self._rebaselines[name] = rebaselines[name]

    # --- the calendar -----------------------------------------------------------------------

    def record_event(self, request: EventRequest) -> RecordedEvent:
        """Record a calendar event or exclusion window (persisted).

        :raises monitor.errors.UnknownCheck: for a check name not configured."""
        event = self.calendars.record(request, self._config)
        self._recalendar(event)
        return event

    def delete_event(self, event_id: str) -> RecordedEvent | None:
        """Remove a recorded event or exclusion (None: no such id)."""
        event = self.calendars.delete(event_id)
        if event is not None:
            self._recalendar(event)
        return event

    def _recalendar(self, event: RecordedEvent) -> None:
        with self._lock:
            self._recalendared.update(
                c.name
                for c in self._config.checks
                if c.kind != "freshness" and event.applies_to(c.name)
            )

    def recalendared(self, name: str) -> bool:
        """Whether the check's models predate a calendar change (once: it is then taken as
        rebuilt)."""
        with self._lock:
            found = name in self._recalendared
            self._recalendared.discard(name)
        return found

    def chart_calendar(self, check: CheckConfig, rows: list[list[Any]]) -> list[list[str]]:
        """The holidays, events and exclusions over an alert chart's buckets."""
        if not rows or check.kind == "freshness":
            return []
        first, last = to_utc(pd.Timestamp(rows[0][0])), to_utc(pd.Timestamp(rows[-1][0]))
        spans = self.calendars.calendar(check).spans(first, last + pd.Timedelta(seconds=1))
        return [[s.kind, s.name, s.start.isoformat(), s.end.isoformat()] for s in spans]

    # --- answers to alerts ------------------------------------------------------------------

    def follow_answers(self, check: CheckConfig, now: datetime) -> bool:
        """Work out the check's sensitivity factors again when an answer came in or an hour
        passed; whether one changed (its models are then to be rebuilt at the new one)."""
        with self._lock:
            at = self._factors_at.get(check.name)
        if at is not None and now - at < FACTORS_REFRESH:
            return False
        answers = self._store.answers.since(now - ANSWER_WINDOW, check.name)
        factors = series_factors(answers, now).get(check.name, {})
        with self._lock:
            changed = factors != self._factors.get(check.name, {})
            self._factors[check.name] = factors
            self._factors_at[check.name] = now
        if changed:
            log.info(
                "sensitivity follows the answers to the check's alerts",
                extra={"fields": {"check": check.name, "factors": factors}},
            )
        return changed

    def answered(self, ref: AlertRef, resolved: bool) -> None:
        """An alert answered as a false alarm: its check's factors are worked out again before
        its next run, and its series is hushed while the deviation lasts if the episode was
        still open (``resolved`` now)."""
        with self._lock:
            self._factors_at.pop(ref.check, None)
            if resolved:
                self._hushed[(ref.check, ref.segment)] = ref.episode

    def hush(self, name: str, segment: str, verdicts: list[Verdict]) -> list[Verdict]:
        """A series answered as a false alarm: its deviation counts as normal until it is
        back in its band (``monitor.answers.hush``)."""
        with self._lock:
            if (name, segment) not in self._hushed:
                return verdicts
        out, lasting = [], True
        for verdict in verdicts:
            if lasting:
                verdict, lasting = hushed(verdict)
            out.append(verdict)
        if not lasting:
            self._store.answers.release(name, segment)
            with self._lock:
                self._hushed.pop((name, segment), None)
        return out
