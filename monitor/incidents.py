"""A check's incident explained: the drill-down over the buckets of its open episodes.

The engine hands every run's verdicts here, and its alerts opening, to be told what explains
the incident (:meth:`Incidents.tell`). While any series of a check with dimensions fires (its
total or a segment), the segments' values and expected values over the incident's buckets
(from the first anomalous bucket of the episodes still open, at most ``MAX_BUCKETS`` of the
newest) go through :func:`monitor.drilldown.explain`. No extra query: the segments are the
series the run already read and judged. Only a check whose aggregate adds up over segments (a
sum or a count) is explained: the segments of an average or a count distinct do not add up to
its total. Pure: memory only, no I/O.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

import pandas as pd

from monitor.alerts.notification import Notification
from monitor.alerts.state import AlertState
from monitor.config import CheckConfig
from monitor.detection import Verdict
from monitor.drilldown import Explanation, cells_from_segments, explain
from monitor.ledger import Judged
from monitor.queries import TOTAL_SEGMENT
from monitor.tuning import detector_spec

MAX_BUCKETS = 6  # the newest buckets of an incident the drill-down adds up
KEPT = 48  # verdicts kept per series
BESIDE = 3  # segments drawn beside the total in its alert's chart
_ADDITIVE = re.compile(r"^\s*(sum|count)\s*\((?!\s*distinct\b)", re.IGNORECASE)


def additive(check: CheckConfig) -> bool:
    """Does the check's value add up over its segments (a row count, a sum, a count)?"""
    if check.kind == "row_count":
        return True
    return (
        check.kind == "metric"
        and check.expression is not None
        and bool(_ADDITIVE.match(check.expression))
        and check.expression.count("(") == 1  # sum(a) / sum(b) is a ratio
    )


def explainable(check: CheckConfig) -> bool:
    """Can a drill-down explain the check's incidents: segments that add up to its total?"""
    return bool(check.dimensions) and additive(check)


def spread(verdict: Verdict, sensitivity: float) -> float:
    """One robust standard deviation of the bucket's value, from the side of its band the
    value lies on (the band's edge is ``sensitivity`` of them away)."""
    if verdict.expected is None or verdict.lower is None or verdict.upper is None:
        return 0.0
    edge = verdict.lower if verdict.value < verdict.expected else verdict.upper
    return abs(edge - verdict.expected) / sensitivity


class Incidents:
    """Recent verdicts per (check, segment), and each check's latest explanation."""

    def __init__(self) -> None:
        self._verdicts: dict[tuple[str, str], deque[Verdict]] = {}
        self._explained: dict[str, Explanation] = {}
        self._lock = threading.Lock()

    def record(self, check: str, judged: Iterable[tuple[str, list[Verdict]]]) -> None:
        with self._lock:
            for segment, verdicts in judged:
                kept = self._verdicts.setdefault((check, segment), deque(maxlen=KEPT))
                newest = kept[-1].bucket if kept else None
                kept.extend(v for v in verdicts if newest is None or v.bucket > newest)

    def explain(
        self,
        check: CheckConfig,
        since: datetime | None,
        sensitivity: float,
    ) -> Explanation | None:
        """The drill-down of the incident that began at ``since`` (None: no episode open, and
        the check's explanation is dropped); None when the check cannot be explained."""
        if since is None or not explainable(check):
            with self._lock:
                self._explained.pop(check.name, None)
            return None
        with self._lock:
            series = {s: list(v) for (c, s), v in self._verdicts.items() if c == check.name}
        found = explain_buckets(series, check.dimensions, pd.Timestamp(since), sensitivity)
        with self._lock:
            if found is None:
                self._explained.pop(check.name, None)
            else:
                self._explained[check.name] = found
        return found

    def tell(
        self,
        check: CheckConfig,
        judged: list[Judged],
        states: Mapping[str, AlertState],
        beside: Callable[[tuple[str, ...]], dict[str, list[list[Any]]]],
    ) -> list[Judged]:
        """A run's verdicts recorded (``states``: the check's alert states before the run);
        while an episode of the check is open, each alert opening now says what explains the
        incident, and the total's chart shows the segments that moved most (``beside``: their
        recent values) under it."""
        if not explainable(check):
            return judged
        self.record(check.name, [(j.segment, j.verdicts) for j in judged])
        states = {**states, **{j.segment: j.state for j in judged}}
        opened = [s.since for s in states.values() if s.firing and s.since is not None]
        found = self.explain(
            check, min(opened) if opened else None, detector_spec(check).sensitivity
        )
        if found is None:
            return judged
        text = found.text(check.name)

        def told(note: Notification) -> Notification:
            if note.kind != "opened":
                return note
            if note.segment == TOTAL_SEGMENT and note.history and found.segments:
                note = replace(note, beside=beside(found.segments))
            return replace(note, explanation=text)

        return [replace(j, notes=[told(n) for n in j.notes]) for j in judged]

    def recent(self, check: str) -> dict[str, list[Verdict]]:
        """The check's kept verdicts per segment (handed to the engine of a reloaded config)."""
        with self._lock:
            return {s: list(v) for (c, s), v in self._verdicts.items() if c == check}

    def adopt(
        self, check: str, recent: Mapping[str, list[Verdict]], explained: Explanation | None
    ) -> None:
        """Carry on a check from another engine (a reloaded config)."""
        self.record(check, recent.items())
        if explained is not None:
            with self._lock:
                self._explained[check] = explained

    def latest(self, check: str) -> Explanation | None:
        with self._lock:
            return self._explained.get(check)

    def close(self, check: str) -> None:
        """The check's incident ended other than by recovering (a rebaseline, a removal)."""
        with self._lock:
            self._explained.pop(check, None)

    def forget(self, check: str) -> None:
        with self._lock:
            for key in [k for k in self._verdicts if k[0] == check]:
                del self._verdicts[key]
            self._explained.pop(check, None)


def explain_buckets(
    series: Mapping[str, list[Verdict]],
    dimensions: list[str],
    since: pd.Timestamp,
    sensitivity: float,
) -> Explanation | None:
    """The drill-down over the buckets from ``since`` (at most ``MAX_BUCKETS`` of the newest)
    that every segment judged; None without such a bucket."""
    segments = {s: v for s, v in series.items() if s != TOTAL_SEGMENT and v}
    if not segments:
        return None
    since = since.tz_convert("UTC") if since.tzinfo else since.tz_localize("UTC")
    judged = [
        {v.bucket for v in verdicts if v.expected is not None and v.bucket >= since}
        for verdicts in segments.values()
    ]
    buckets = sorted(set.intersection(*judged))[-MAX_BUCKETS:]
    if not buckets:
        return None
    chosen = set(buckets)
    totals: dict[str, tuple[float, float, float]] = {}
    for segment, verdicts in segments.items():
        picked = [v for v in verdicts if v.bucket in chosen]
        totals[segment] = (
            sum(v.value for v in picked),
            sum(v.expected or 0.0 for v in picked),
            sum(spread(v, sensitivity) ** 2 for v in picked) ** 0.5,
        )
    total = [v for v in series.get(TOTAL_SEGMENT, []) if v.bucket in chosen]
    total_spread = sum(spread(v, sensitivity) ** 2 for v in total) ** 0.5
    found = explain(cells_from_segments(totals, dimensions), total_spread)
    sign = 1.0 if found.actual >= found.expected else -1.0
    moved = sorted(totals, key=lambda s: -(totals[s][0] - totals[s][1]) * sign)
    return Explanation(
        found.kind,
        found.actual,
        found.expected,
        found.culprits,
        found.ranked,
        named=len(dimensions) > 1,
        buckets=len(buckets),
        since=buckets[0].isoformat(),
        until=buckets[-1].isoformat(),
        segments=tuple(s for s in moved[:BESIDE] if (totals[s][0] - totals[s][1]) * sign > 0),
        held=found.held,
    )
