"""The mark of each bucket, from the calendar and the series seen before it: what the detector
is told about a holiday, an event or an excluded bucket (see ``monitor.detection.Mark``).

- An exclusion window, a bucket before ``learn_from`` and, with ``on_holiday: mute``, a holiday
  or event: neither learned nor judged.
- A holiday or event is never learned, so the level does not sag for days after Christmas. It
  is judged:
  - ``compare`` (the default): against the same holiday or event in an earlier occurrence the
    history holds (the same day of it and local hour), scaled by how the regular forecast of
    its slot moved since (the median of the same weekday and hour over the four weeks before
    each; else the median of the regular buckets of the 28 days before each occurrence), with
    the band widened by ``COMPARE_WIDEN``: Thanksgiving against last Thanksgiving. Without one,
    as ``widen``.
  - an event with an expected ``effect``: against the regular forecast of its slot (the median
    of the same weekday and local hour over the four weeks before) times ``1 + effect``.
  - below daily grain, once ``SAME_DAY_BUCKETS`` earlier buckets of the same holiday or event
    day are known (and no earlier occurrence is): against the regular forecast of its slot
    scaled by how those buckets compared with theirs (their sum over their forecasts' sum),
    with the regular band (the day's own scale is known): the morning of a first Black Friday
    says what its afternoon should be, so a collapse in the afternoon is caught.
  - ``widen``: against the regular forecast with the band widened by the configured factor,
    else one learned from the earlier holidays and events of the history (the 90th percentile
    of their deviations from their slot's regular forecast over the band's half-width, at least
    ``MIN_LEARNED`` of them), else ``DEFAULT_WIDEN``.

Causal: a bucket's mark uses only buckets before it. Pure: no I/O.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from monitor.calendar.days import Calendar, Tag
from monitor.detection import REGULAR, Mark

COMPARE_WIDEN = 1.5  # last year's day, rescaled, is a forecast with its own error
DEFAULT_WIDEN = 8.0  # a holiday with nothing to learn from (shops may close): eight times the band
LEARNED_MARGIN = 1.5  # the learned widening covers the earlier holidays' 90th percentile with room
MAX_WIDEN = 20.0
SAME_DAY_BUCKETS = 6  # earlier buckets of the same holiday day that say how the day goes
MIN_LEARNED = 3  # earlier holiday or event buckets needed to learn the widening
LEVEL_DAYS = 28  # the regular level around an occurrence: the four weeks before it
SLOT_WEEKS = 4  # the regular forecast of a slot: the same weekday and hour, four weeks back
KEEP_DAYS = 800  # a comparison needs last year's occurrence: kept two years and a bit
# regular buckets kept: the spread's four weeks, each with the four weeks of its slot forecast
REGULAR_DAYS = LEVEL_DAYS + 7 * SLOT_WEEKS + 1
_DAY_NS = 86_400 * 10**9
_WEEK_NS = 7 * _DAY_NS

UNJUDGED = Mark(learn=False, judge=False)


@dataclass(frozen=True)
class _Seen:
    """A holiday or event bucket, with what a later occurrence is compared through: the
    regular forecast of its slot and the regular level before its occurrence, as they were."""

    ns: int
    value: float
    tag: Tag
    base: float | None
    level: float | None


class Marker:
    """Marks one series' buckets in order, remembering what it needs of them (by local
    wall-clock time, in nanoseconds).

    >>> marker = Marker(Calendar(country="US"), 86400, sensitivity=4.0)
    >>> marks = marker.marks(history.index, history.to_numpy())      # doctest: +SKIP
    """

    def __init__(self, calendar: Calendar, bucket_seconds: int, sensitivity: float) -> None:
        self.calendar = calendar
        self.bucket_seconds = bucket_seconds
        self.sensitivity = sensitivity
        self._regular_ns: list[int] = []
        self._regular: list[float] = []
        self._occurrences: dict[tuple[str, int, int], list[_Seen]] = {}
        # |deviation| of earlier holidays and events from their slot's forecast, in log1p units
        self._deviations: list[tuple[int, float]] = []
        self._spread: tuple[int, float] | None = None  # (local day, robust sd), per day
        self._pruned = -1  # the local day of data memory was last trimmed on
        # per holiday or event day: the sum of its values so far, of their slot forecasts, how
        # many, and the newest
        self._same_day: dict[tuple[str, object, int], tuple[float, float, int, int]] = {}

    def marks(self, buckets: pd.DatetimeIndex, values: npt.ArrayLike) -> list[Mark]:
        """The marks of these buckets (after every bucket marked before), learning them."""
        index = pd.DatetimeIndex(buckets)
        utc = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
        return self._marks(utc.as_unit("ns").asi8, np.asarray(values, dtype=np.float64).ravel())

    def mark(self, bucket: pd.Timestamp, value: float) -> Mark:
        """The mark of one bucket (after every bucket marked before), learning it."""
        ts = pd.Timestamp(bucket)
        ns = (ts.tz_localize("UTC") if ts.tzinfo is None else ts).as_unit("ns").value
        return self._marks(np.array([ns], dtype=np.int64), np.array([value]))[0]

    def _marks(self, stamps: npt.NDArray[np.int64], values: npt.NDArray[np.float64]) -> list[Mark]:
        # wall-clock times: a week before is the same weekday and local hour across DST
        tagged = self.calendar.tagged(stamps, self.bucket_seconds)
        out: list[Mark] = []
        for (ns, tag), value in zip(tagged, values.tolist(), strict=True):
            out.append(REGULAR if tag is None else self._mark(ns, tag))
            self._remember(ns, value, tag)
        if tagged:
            self._forget(tagged[-1][0])
        return out

    # ------------------------------------------------------------------ one bucket
    def _mark(self, ns: int, tag: Tag) -> Mark:
        if not tag.judged or self.calendar.on_holiday == "mute":
            return UNJUDGED
        effect = self._effect(tag)
        if effect is not None:
            base = self._slot_forecast(ns)
            if base is not None:
                return _expecting(base * (1.0 + effect), COMPARE_WIDEN)
        if self.calendar.on_holiday == "compare":
            earlier = self._compared(ns, tag)
            if earlier is not None:
                return _expecting(earlier, COMPARE_WIDEN)
            so_far = self._same_day.get((tag.name, tag.occurrence, tag.day))
            base = self._slot_forecast(ns)
            if so_far is not None and so_far[2] >= SAME_DAY_BUCKETS and base is not None:
                return _expecting(base * so_far[0] / so_far[1], 1.0)
        return Mark(learn=False, widen=self._widen(ns))

    def _effect(self, tag: Tag) -> float | None:
        if tag.kind != "event":
            return None
        for event in self.calendar.events:
            if event.name == tag.name and event.effect is not None:
                return event.effect
        return None

    def _compared(self, ns: int, tag: Tag) -> float | None:
        """The same day and hour of the latest earlier occurrence, scaled by how the regular
        forecast of its slot moved since (the weekday and hour: Christmas on a Wednesday after
        one on a Monday), else by how the level moved."""
        slot_now = self._slot_forecast(ns)
        level_now = self._level(ns - tag.day * _DAY_NS)
        for seen in reversed(self._occurrences.get((tag.name, tag.day, tag.hour), [])):
            if seen.tag.occurrence == tag.occurrence or not math.isfinite(seen.value):
                continue
            if slot_now is not None and seen.base is not None and seen.base > 0:
                return seen.value * slot_now / seen.base
            if level_now is not None and seen.level is not None and seen.level > 0:
                return seen.value * level_now / seen.level
        return None

    def _level(self, start_ns: int) -> float | None:
        """The median regular value of the ``LEVEL_DAYS`` before ``start_ns``."""
        lo = bisect.bisect_left(self._regular_ns, start_ns - LEVEL_DAYS * _DAY_NS)
        hi = bisect.bisect_left(self._regular_ns, start_ns)
        window = np.asarray(self._regular[lo:hi])
        window = window[np.isfinite(window)]
        # a week of a daily series, a day of an hourly one
        if window.size < max(7, min(24, 7 * 86400 // self.bucket_seconds)):
            return None
        return float(np.median(window))

    def _slot_forecast(self, ns: int) -> float | None:
        """The median of the regular buckets 1 to ``SLOT_WEEKS`` weeks before, at the same
        weekday and local hour."""
        found = [
            v
            for k in range(1, SLOT_WEEKS + 1)
            if (v := self._regular_value(ns - k * _WEEK_NS)) is not None
        ]
        return float(np.median(found)) if len(found) >= 2 else None

    def _regular_value(self, ns: int) -> float | None:
        i = bisect.bisect_left(self._regular_ns, ns)
        if i < len(self._regular_ns) and self._regular_ns[i] == ns:
            value = self._regular[i]
            return value if math.isfinite(value) else None
        return None

    def _widen(self, ns: int) -> float:
        if self.calendar.widen is not None:
            return self.calendar.widen
        if len(self._deviations) < MIN_LEARNED:
            return DEFAULT_WIDEN
        spread = self._regular_spread(ns)
        if spread is None or spread <= 0:
            return DEFAULT_WIDEN
        typical = float(np.quantile([d for _, d in self._deviations], 0.9))
        widen = LEARNED_MARGIN * typical / (self.sensitivity * spread)
        return float(np.clip(widen, 1.0, MAX_WIDEN))

    def _regular_spread(self, ns: int) -> float | None:
        """Robust sd of the regular buckets of the last four weeks around their slot's
        forecast, in log1p units; computed once a day."""
        day = ns // _DAY_NS
        if self._spread is not None and self._spread[0] == day:
            return self._spread[1]
        lo = bisect.bisect_left(self._regular_ns, ns - LEVEL_DAYS * _DAY_NS)
        deviations = [
            d
            for t, v in zip(self._regular_ns[lo:], self._regular[lo:], strict=True)
            if (d := self._deviation(t, v)) is not None
        ]
        spread = 1.4826 * float(np.median(np.abs(deviations))) if len(deviations) >= 7 else None
        self._spread = (day, spread or 0.0)
        return spread

    def _deviation(self, ns: int, value: float) -> float | None:
        base = self._slot_forecast(ns)
        if base is None or base < 0 or not value >= 0:
            return None
        return math.log1p(value) - math.log1p(base)

    # ------------------------------------------------------------------ memory
    def _remember(self, ns: int, value: float, tag: Tag | None) -> None:
        if tag is None:
            self._regular_ns.append(ns)
            self._regular.append(value)
            return
        if not tag.judged:
            return
        base = self._slot_forecast(ns)
        level = self._level(ns - tag.day * _DAY_NS)
        self._occurrences.setdefault((tag.name, tag.day, tag.hour), []).append(
            _Seen(ns, value, tag, base, level)
        )
        if base is None or base < 0 or not value >= 0:
            return
        self._deviations.append((ns, abs(math.log1p(value) - math.log1p(base))))
        if self.bucket_seconds < 86400 and base > 0:
            key = (tag.name, tag.occurrence, tag.day)
            total, expected, count, _ = self._same_day.get(key, (0.0, 0.0, 0, ns))
            self._same_day[key] = (total + value, expected + base, count + 1, ns)

    def _forget(self, newest: int) -> None:
        """Drop what no later mark needs, once a day of data (so a step copies nothing)."""
        day = newest // _DAY_NS
        if day == self._pruned:
            return
        self._pruned = day
        regular = newest - REGULAR_DAYS * _DAY_NS
        cut = bisect.bisect_left(self._regular_ns, regular)
        del self._regular_ns[:cut], self._regular[:cut]
        self._same_day = {k: v for k, v in self._same_day.items() if v[3] >= regular}
        kept = newest - KEEP_DAYS * _DAY_NS
        self._deviations = [(t, d) for t, d in self._deviations if t >= kept]
        for key, seen in list(self._occurrences.items()):
            recent = [s for s in seen if s.ns >= kept]
            if recent:
                self._occurrences[key] = recent
            else:
                del self._occurrences[key]


def _expecting(expected: float, widen: float) -> Mark:
    if not math.isfinite(expected):
        return Mark(learn=False, widen=DEFAULT_WIDEN)
    return Mark(learn=False, widen=widen, expected=expected)

