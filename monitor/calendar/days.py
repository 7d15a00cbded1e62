"""Which bucket is which: public holidays (local days of the check's business time zone), events
and exclusion windows, and the days before ``learn_from``. Pure: plain data in, plain data out.

A holiday is a local day: Christmas in ``America/New_York`` runs from 05:00 UTC on the 25th to
05:00 UTC on the 26th, and an hourly bucket belongs to it when the bucket starts inside it. An
event or exclusion given as dates covers whole local days (its ``end`` day included); given as
instants it covers ``[start, end)``, and a bucket belongs to it when they overlap.
"""

from __future__ import annotations

import functools
import zoneinfo
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal

import holidays
import numpy as np
import numpy.typing as npt
import pandas as pd

Kind = Literal["holiday", "event", "exclusion"]
OnHoliday = Literal["compare", "widen", "mute"]
Moment = date | datetime

BEFORE_LEARN_FROM = "before learn_from"
_NS = 10**9


@dataclass(frozen=True)
class Event:
    """A known day or period that is not an ordinary one: a sale, a campaign, a migration."""

    name: str
    start: Moment
    """A local date (the whole day, in the check's time zone) or a tz-aware instant."""
    end: Moment
    """A local date (included) or a tz-aware instant (excluded)."""
    effect: float | None = None
    """The expected relative change, e.g. ``0.3`` for +30%; ``None``: unknown."""
    id: str | None = None
    """Set for events recorded through the API."""


@dataclass(frozen=True)
class Exclusion:
    """A window neither learned nor alerted: a backfill, an outage already handled."""

    start: Moment
    end: Moment
    reason: str
    id: str | None = None


@dataclass(frozen=True)
class Tag:
    """What the calendar says about one bucket."""

    kind: Kind
    name: str
    occurrence: date
    """The local day this occurrence of the holiday or event began."""
    day: int
    """Local days since ``occurrence`` (0 on its first day)."""
    hour: int
    """The bucket's local hour (0 at daily grain): with ``name`` and ``day``, what is compared
    with an earlier occurrence."""

    @property
    def judged(self) -> bool:
        return self.kind != "exclusion"


@dataclass(frozen=True)
class Span:
    """A holiday, event or exclusion as it is shown: on charts, in the API, as annotations."""

    kind: Kind
    name: str
    start: pd.Timestamp
    """UTC."""
    end: pd.Timestamp
    """UTC, excluded."""
    effect: float | None = None
    id: str | None = None

    def json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "name": self.name,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "effect": self.effect,
            "id": self.id,
        }


@functools.lru_cache(maxsize=256)
def _holidays(country: str, subdivision: str | None, year: int) -> tuple[tuple[date, str], ...]:
    found = holidays.country_holidays(country, subdiv=subdivision, years=year, language="en_US")
    # several holidays on one day are named together ("Christmas Day; Sunday")
    return tuple(sorted((day, "; ".join(found.get_list(day))) for day in found))


@functools.lru_cache(maxsize=256)
def _holidays_by_day(country: str, subdivision: str | None, year: int) -> dict[date, str]:
    return dict(_holidays(country, subdivision, year))


def check_region(country: str, subdivision: str | None) -> None:
    """:raises ValueError: naming the country or subdivision the holidays package lacks."""
    supported = holidays.list_supported_countries()
    if country not in supported:
        raise ValueError(f"unknown country {country!r}; use an ISO 3166 code such as US or DE")
    if subdivision is not None and subdivision not in supported[country]:
        known = ", ".join(supported[country][:40])
        raise ValueError(f"{country} has no subdivision {subdivision!r}; it has {known}")


@dataclass(frozen=True)
class Calendar:
    """A check's calendar. Empty (no holidays, events, exclusions, ``learn_from``): every bucket
    is a regular one."""

    timezone: str = "UTC"
    country: str | None = None
    subdivision: str | None = None
    events: tuple[Event, ...] = ()
    exclusions: tuple[Exclusion, ...] = ()
    learn_from: Moment | None = None
    on_holiday: OnHoliday = "compare"
    widen: float | None = None
    """The band's widening on a holiday or event that cannot be compared; None: learned from
    the earlier ones in the history (see :mod:`monitor.calendar.marks`)."""

    @property
    def empty(self) -> bool:
        return (
            self.country is None
            and not self.events
            and not self.exclusions
            and self.learn_from is None
        )

    def holidays_in(self, first: date, last: date) -> list[tuple[date, str]]:
        """The public holidays from ``first`` to ``last`` (local days), in order."""
        if self.country is None:
            return []
        return [
            (day, name)
            for year in range(first.year, last.year + 1)
            for day, name in _holidays(self.country, self.subdivision, year)
            if first <= day <= last
        ]

    def bounds(self, start: Moment, end: Moment) -> tuple[pd.Timestamp, pd.Timestamp]:
        """``[start, end)`` in UTC: dates are whole local days, the end day included."""
        return self._instant(start, end=False), self._instant(end, end=True)

    def _instant(self, moment: Moment, *, end: bool) -> pd.Timestamp:
        if isinstance(moment, datetime):
            return pd.Timestamp(moment).tz_convert("UTC")
        day = moment + timedelta(days=1) if end else moment
        return pd.Timestamp(day).tz_localize(self.timezone, nonexistent="shift_forward",
                                             ambiguous=False).tz_convert("UTC")  # fmt: skip

    def tags(self, buckets: pd.DatetimeIndex, bucket_seconds: int) -> list[Tag | None]:
        """One tag per bucket (None: a regular bucket). An exclusion or a bucket before
        ``learn_from`` wins over an event, an event over a holiday."""
        return [tag for _, tag in self.tagged(_utc(buckets).as_unit("ns").asi8, bucket_seconds)]

    def tagged(
        self, stamps: npt.NDArray[np.int64], bucket_seconds: int
    ) -> list[tuple[int, Tag | None]]:
        """Per bucket start (UTC nanoseconds): its local wall-clock time (nanoseconds, as if
        UTC) and its tag. A loop over plain numbers: a daemon's step marks one bucket."""
        zone = zoneinfo.ZoneInfo(self.timezone)
        step = bucket_seconds * _NS
        daily = bucket_seconds >= 86400
        windows = self._windows
        learn_from = self._learn_from_ns
        out: list[tuple[int, Tag | None]] = []
        for ns in stamps.tolist():
            local = datetime.fromtimestamp(ns // _NS, zone)
            offset = local.utcoffset()
            wall = ns + (int(offset.total_seconds()) * _NS if offset is not None else 0)
            if self.empty:
                out.append((wall, None))
                continue
            day, hour = local.date(), 0 if daily else local.hour
            tag: Tag | None = None
            name = self._holiday_on(day)
            if name is not None:
                tag = Tag("holiday", name, day, 0, hour)
            for lo, hi, kind, label, first in windows:  # in order: exclusions last, they win
                if ns < hi and ns + step > lo:
                    tag = Tag(kind, label, first, max((day - first).days, 0), hour)
            if learn_from is not None and ns < learn_from:
                tag = Tag("exclusion", BEFORE_LEARN_FROM, day, 0, hour)
            out.append((wall, tag))
        return out

    def _holiday_on(self, day: date) -> str | None:
        if self.country is None:
            return None
        return _holidays_by_day(self.country, self.subdivision, day.year).get(day)

    @functools.cached_property
    def _windows(self) -> tuple[tuple[int, int, Kind, str, date], ...]:
        """Events then exclusions: ``[lo, hi)`` in UTC nanoseconds, kind, name, first local day."""
        found: list[tuple[int, int, Kind, str, date]] = []
        named: list[tuple[Kind, str, Moment, Moment]] = [
            *(("event", e.name, e.start, e.end) for e in self.events),
            *(("exclusion", x.reason, x.start, x.end) for x in self.exclusions),
        ]
        for kind, name, start, end in named:
            lo, hi = self.bounds(start, end)
            found.append((lo.value, hi.value, kind, name, lo.tz_convert(self.timezone).date()))
        return tuple(found)

    @functools.cached_property
    def _learn_from_ns(self) -> int | None:
        if self.learn_from is None:
            return None
        return int(self._instant(self.learn_from, end=False).value)

    def spans(self, start: pd.Timestamp, end: pd.Timestamp) -> list[Span]:
        """Every holiday, event and exclusion overlapping ``[start, end)``, in order of start."""
        lo, hi = _utc_one(start), _utc_one(end)
        found: list[Span] = []
        local_first = lo.tz_convert(self.timezone).date()
        local_last = hi.tz_convert(self.timezone).date()
        for day, name in self.holidays_in(local_first, local_last):
            found.append(Span("holiday", name, *self.bounds(day, day)))
        found.extend(
            Span("event", e.name, *self.bounds(e.start, e.end), effect=e.effect, id=e.id)
            for e in self.events
        )
        found.extend(
            Span("exclusion", x.reason, *self.bounds(x.start, x.end), id=x.id)
            for x in self.exclusions
        )
        if self.learn_from is not None:
            first = self._instant(self.learn_from, end=False)
            found.append(Span("exclusion", BEFORE_LEARN_FROM, min(lo, first), first))
        kept = [s for s in found if s.start < hi and s.end > lo]
        return sorted(kept, key=lambda s: (s.start, s.kind, s.name))


def _utc(buckets: pd.DatetimeIndex) -> pd.DatetimeIndex:
    index = pd.DatetimeIndex(buckets)
    return index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")


def _utc_one(moment: object) -> pd.Timestamp:
    ts = pd.Timestamp(moment)  # type: ignore[arg-type]
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
