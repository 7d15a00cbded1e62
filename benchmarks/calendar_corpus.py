"""A seeded generator of retail-like KPIs that follow the calendar, for the calendar benchmark
(``benchmarks/calendar.py``), part of the KPI suite's corpora.

Two markets, each in its own time zone with its own public holidays (from the ``holidays``
package, as the daemon reads them): ``US`` (America/New_York) and ``DE`` (Europe/Berlin, Bavaria).
Two grains: daily revenue over two and a half years (2023-07-03 to 2025-12-31) and hourly orders
over eighteen weeks (2025-09-01 to 2026-01-05: Labor Day, Thanksgiving, Black Friday, Cyber
Monday, Christmas and New Year).

What shapes them, besides the weekly (and, hourly, daily) profile, growth and noise:
- every public holiday moves the day by a factor drawn once per holiday and market (the same
  every year, as for a real shop), far down where shops close (Christmas in Germany);
- Black Friday (x1.8 to x2.2), Cyber Monday (x1.4 to x1.7) and the week before Christmas (x1.2
  to x1.4), given to the monitor as events;
- month-end: the last day of the month x1.15 to x1.3 (payday), not in the calendar: the
  detector's own seasonality is to learn it (detection-side);
- a campaign given as an event with its expected effect (+40%), five days in the spring (daily)
  or one week in November (hourly);
- incidents: two on holidays or events (the day collapses to 25-40% of what that day should be:
  revenue collapsing on Black Friday), two dips (to 40-60%, one to three days at daily grain, three
  to eight hours at hourly) and one spike (x2.5) on regular days.

Labels: the incident windows, and for every bucket whether it is a holiday, an event, a
month-end day, or in the week after a holiday or event. Nothing is stored: the same seed gives
the same series.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from monitor.calendar.days import Calendar, Event

Grain = Literal["hour", "day"]
Market = Literal["US", "DE"]
BoolArray = npt.NDArray[np.bool_]

MARKETS: dict[Market, tuple[str, str | None]] = {
    "US": ("America/New_York", None),
    "DE": ("Europe/Berlin", "BY"),
}
SPAN: dict[Grain, tuple[str, str]] = {
    "day": ("2023-07-03", "2026-01-01"),
    "hour": ("2025-09-01", "2026-01-06"),
}
EVAL_FROM: dict[Grain, int] = {"day": 8 * 7, "hour": 4 * 7}  # days learned before any count
CAMPAIGN_EFFECT = 0.4


@dataclass(frozen=True)
class CalendarSeries:
    """One labelled series and the calendar the monitor is given for it."""

    market: Market
    grain: Grain
    seed: int
    frame: pd.DataFrame  # timestamp (tz-aware UTC), value
    calendar: Calendar
    windows: list[tuple[pd.Timestamp, pd.Timestamp]]
    on_calendar: list[bool]  # per window: the incident falls on a holiday or event
    holiday: BoolArray  # per bucket
    event: BoolArray
    month_end: BoolArray
    after: BoolArray  # in the seven days after a holiday or event (and neither itself)
    eval_start: pd.Timestamp

    @property
    def bucket_seconds(self) -> int:
        return 3600 if self.grain == "hour" else 86400


@dataclass
class _Days:
    """Per local day of the span: the multiplicative effect and the labels."""

    days: list[date]
    effect: npt.NDArray[np.float64]
    holiday: BoolArray
    event: BoolArray
    month_end: BoolArray
    events: list[Event] = field(default_factory=list)


def _retail_events(days: list[date], rng: np.random.Generator, calendar: Calendar) -> _Days:
    n = len(days)
    effect = np.ones(n)
    holiday = np.zeros(n, dtype=bool)
    event = np.zeros(n, dtype=bool)
    month_end = np.array([(d + timedelta(days=1)).month != d.month for d in days])
    position = {d: i for i, d in enumerate(days)}
    closed = calendar.country == "DE"
    factors: dict[str, float] = {}
    for day, name in calendar.holidays_in(days[0], days[-1]):
        if name not in factors:
            factors[name] = float(rng.uniform(0.2, 0.45) if closed else rng.uniform(0.4, 0.9))
        effect[position[day]] *= factors[name]
        holiday[position[day]] = True
    events: list[Event] = []
    black = rng.uniform(1.8, 2.2)
    cyber = rng.uniform(1.4, 1.7)
    christmas = rng.uniform(1.2, 1.4)
    for year in sorted({d.year for d in days}):
        thanksgiving = _fourth_thursday(year)
        moments = [
            ("Black Friday", thanksgiving + timedelta(days=1), 1, black),
            ("Cyber Monday", thanksgiving + timedelta(days=4), 1, cyber),
            ("Christmas week", date(year, 12, 18), 6, christmas),
        ]
        for name, start, length, factor in moments:
            covered = [position[start + timedelta(k)] for k in range(length)
                       if start + timedelta(k) in position]  # fmt: skip
            if not covered:
                continue
            effect[covered] *= factor
            event[covered] = True
            events.append(Event(name, start, start + timedelta(days=length - 1)))
    effect[month_end & ~holiday & ~event] *= rng.uniform(1.15, 1.3)
    return _Days(days, effect, holiday, event, month_end, events)


def _fourth_thursday(year: int) -> date:
    first = date(year, 11, 1)
    return first + timedelta(days=(3 - first.weekday()) % 7 + 21)


def _campaign(found: _Days, grain: Grain, rng: np.random.Generator) -> None:
    """A campaign given as an event with its expected effect, on regular days only."""
    candidates = [
        i for i, d in enumerate(found.days)
        if (d.month in (3, 4, 5) if grain == "day" else d.month == 11 and d.day < 20)
        and not found.holiday[i : i + 7].any() and not found.event[i : i + 7].any()
    ]  # fmt: skip
    if not candidates:
        return
    first = int(rng.choice(candidates[:-7]))
    length = 5 if grain == "day" else 7
    found.effect[first : first + length] *= 1 + CAMPAIGN_EFFECT
    found.event[first : first + length] = True
    start = found.days[first]
    found.events.append(
        Event("Spring campaign" if grain == "day" else "November campaign", start,
              start + timedelta(days=length - 1), effect=CAMPAIGN_EFFECT)
    )  # fmt: skip


def make_series(market: Market, grain: Grain, seed: int) -> CalendarSeries:
    """The labelled series of ``market`` at ``grain`` for ``seed``."""
    rng = np.random.default_rng([seed, 0 if market == "US" else 1, 0 if grain == "day" else 1])
    tz, subdivision = MARKETS[market]
    first, end = SPAN[grain]
    local_days = pd.date_range(first, end, freq="D", inclusive="left")
    days = [d.date() for d in local_days]
    base_calendar = Calendar(timezone=tz, country=market, subdivision=subdivision)
    found = _retail_events(days, rng, base_calendar)
    _campaign(found, grain, rng)
    if grain == "day":
        index = local_days.tz_localize(tz).tz_convert("UTC")
        day_of = np.arange(len(days))
        shape = np.array([1.0, 0.97, 0.98, 1.0, 1.12, 1.2, 0.85])[local_days.day_of_week]
        level = rng.uniform(20_000, 80_000)
        sigma = rng.uniform(0.04, 0.07)
        per_bucket = len(days)
    else:
        index = pd.date_range(
            pd.Timestamp(first, tz=tz), pd.Timestamp(end, tz=tz), freq="h", inclusive="left"
        ).tz_convert("UTC")
        local = index.tz_convert(tz)
        position = {d: i for i, d in enumerate(days)}
        day_of = np.array([position[d] for d in local.date])
        hour = np.asarray(local.hour)
        peak = rng.uniform(18, 21)
        daily = 0.1 + np.exp(-0.5 * ((hour - peak) / 3.5) ** 2)
        daily += 0.4 * np.exp(-0.5 * ((hour - 12.5) / 1.5) ** 2)  # lunch
        shape = daily * np.array([1.0, 0.97, 0.98, 1.0, 1.1, 1.15, 0.9])[local.day_of_week]
        level = rng.uniform(80, 300)
        sigma = rng.uniform(0.06, 0.1)
        per_bucket = len(index)
    trend = np.exp(rng.uniform(0.0, 0.3) * np.arange(per_bucket) / per_bucket)
    mean = level * shape * trend * found.effect[day_of]
    values = mean * np.exp(rng.normal(0.0, sigma, per_bucket))
    values, windows, on_calendar = _incidents(values, day_of, found, grain, rng)
    values = rng.poisson(values).astype(float) if grain == "hour" else np.round(values, 2)
    holiday = found.holiday[day_of]
    event = found.event[day_of]
    marked_days = found.holiday | found.event
    after_days = np.zeros(len(days), dtype=bool)
    for i in np.flatnonzero(marked_days):
        after_days[i + 1 : i + 8] = True
    after_days &= ~marked_days
    return CalendarSeries(
        market=market,
        grain=grain,
        seed=seed,
        frame=pd.DataFrame({"timestamp": index, "value": values}),
        calendar=Calendar(
            timezone=tz, country=market, subdivision=subdivision, events=tuple(found.events)
        ),
        windows=[(index[a], index[b]) for a, b in windows],
        on_calendar=on_calendar,
        holiday=holiday,
        event=event,
        month_end=found.month_end[day_of],
        after=after_days[day_of],
        eval_start=index[int(np.searchsorted(day_of, EVAL_FROM[grain]))],
    )


def _incidents(
    values: npt.NDArray[np.float64],
    day_of: npt.NDArray[np.int64],
    found: _Days,
    grain: Grain,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.float64], list[tuple[int, int]], list[bool]]:
    """Two incidents on holidays or events (the last year's, so a comparison can exist), two
    dips and a spike on regular days; windows as bucket positions, first and last."""
    out = values.copy()
    windows: list[tuple[int, int]] = []
    on_calendar: list[bool] = []
    first_day = EVAL_FROM[grain] + 7
    marked = np.flatnonzero(found.holiday | found.event)
    marked = marked[marked >= max(first_day, len(found.days) - 200)]
    hourly = grain == "hour"
    for day in rng.choice(marked, size=min(2, marked.size), replace=False):
        buckets = np.flatnonzero(day_of == day)
        if hourly:  # the afternoon and evening of the day collapse
            buckets = buckets[12:22]
        out[buckets] *= rng.uniform(0.25, 0.4)
        windows.append((int(buckets[0]), int(buckets[-1])))
        on_calendar.append(True)
    # regular incidents keep three days from any holiday or event, so a label says one thing
    near = np.convolve((found.holiday | found.event).astype(float), np.ones(7), "same") > 0
    regular = np.flatnonzero(~(near | found.month_end))
    regular = regular[(regular >= first_day) & (regular < len(found.days) - 10)]
    for k, factor in enumerate((rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6), 2.5)):
        day = int(rng.choice(regular[k * len(regular) // 3 : (k + 1) * len(regular) // 3]))
        buckets = np.flatnonzero(day_of == day)
        if hourly:
            start = int(rng.integers(10, 14))
            buckets = buckets[start : start + int(rng.integers(3, 9))]
        else:
            buckets = np.flatnonzero((day_of >= day) & (day_of < day + int(rng.integers(1, 4))))
        out[buckets] *= factor
        windows.append((int(buckets[0]), int(buckets[-1])))
        on_calendar.append(False)
    return out, windows, on_calendar


def corpus(
    seeds: range | list[int], markets: tuple[Market, ...] = ("US", "DE"),
    grains: tuple[Grain, ...] = ("day", "hour"),
) -> Iterator[CalendarSeries]:  # fmt: skip
    """Every (market, grain, seed) series, in a stable order."""
    for market in markets:
        for grain in grains:
            for seed in seeds:
                yield make_series(market, grain, seed)
