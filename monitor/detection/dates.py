"""Effects of the date beyond the week, for daily series (numba kernels): the day of the month,
the days before its end (month-end payroll, closing), its n-th business day (the first working
day's batch), and the same date in earlier years (Christmas, a yearly sale).

Each is an additive correction in the model's scale, read from the residuals the series left
before (the chosen forecaster's residual without any correction):

* a position in the month: the median of the residuals at that position in the previous six
  months, with at least three of them known. Which position applies (or none) is decided per
  series by a blind test on its own history: before a bucket is learned, each position's
  correction that could be read for it is scored against its residual, and the one whose
  corrections, summed over all the buckets it was scored on (at least four weeks' worth), lower
  the absolute error by at least ``MIN_GAIN`` applies; the largest gain wins. On a series
  without such a pattern every position only adds noise, and none applies.
* the date of the year, on top: with two years known, the residuals on the same date one and
  two years before (less the position in the month's correction), when both lie the same way
  beyond two robust spreads of the residuals: the smaller, less those two spreads. A yearly
  pattern is one that repeated; a single year's deviation (an incident last Christmas) never
  moves this year's expectation, and on ordinary days it is zero.
"""

from __future__ import annotations

from monitor.detection.jit import FloatArray, kernel
from monitor.detection.rings import NAN, get, median

NONE, DAY_OF_MONTH, MONTH_END, BUSINESS_DAY = range(4)
KINDS = 4
NAMES = ("none", "day of month", "month end", "business day")
MONTHS = 6
"""Months a position in the month looks back."""
MIN_MONTHS = 3
MIN_SCORED = 28
"""Buckets an effect must have been scored on before it may apply."""
MIN_GAIN = 0.03
"""Share of the absolute error an effect must remove to apply."""
YEAR_SPREADS = 2.0
"""Robust spreads both earlier years must lie beyond, and which are taken off."""
SPREAD_DAYS = 56
# rows of the blind test's table: summed gain, summed absolute residual, buckets scored
GAIN, ERROR, SCORED = 0, 1, 2


@kernel
def civil(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day number counted from 1970-01-01 (Hinnant's algorithm)."""
    z = days + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (1 if m <= 2 else 0), m, d


@kernel
def day_number(year: int, month: int, day: int) -> int:
    """The day number of a date (the inverse of :func:`civil`)."""
    y = year - (1 if month <= 2 else 0)
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    mp = month - 3 if month > 2 else month + 9
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@kernel
def month_length(year: int, month: int) -> int:
    following = day_number(year + (1 if month == 12 else 0), 1 if month == 12 else month + 1, 1)
    return following - day_number(year, month, 1)


@kernel
def weekday(days: int) -> int:
    """0 Monday .. 6 Sunday (1970-01-01 was a Thursday)."""
    return (days + 3) % 7


@kernel
def business_day_of_month(days: int) -> int:
    """Which working day (Monday to Friday) of its month a day is, from 1; 0 on a weekend."""
    if weekday(days) >= 5:
        return 0
    year, month, _ = civil(days)
    start = day_number(year, month, 1)
    n = 0
    for d in range(start, days + 1):
        if weekday(d) < 5:
            n += 1
    return n


@kernel
def nth_business_day(year: int, month: int, n: int) -> int:
    """The day number of the ``n``-th working day of a month (-1 when it has fewer)."""
    d = day_number(year, month, 1)
    end = d + month_length(year, month)
    seen = 0
    while d < end:
        if weekday(d) < 5:
            seen += 1
            if seen == n:
                return d
        d += 1
    return -1


@kernel
def same_position(kind: int, days: int, back: int) -> int:
    """The day ``back`` months before ``days`` at the same position (-1 where that month has
    none: the 31st of a 30-day month)."""
    year, month, day = civil(days)
    month -= back
    while month <= 0:
        month += 12
        year -= 1
    length = month_length(year, month)
    if kind == DAY_OF_MONTH:
        return day_number(year, month, day) if day <= length else -1
    if kind == MONTH_END:
        y0, m0, _ = civil(days)
        to_end = month_length(y0, m0) - day
        return day_number(year, month, length - to_end) if to_end < length else -1
    n = business_day_of_month(days)
    return nth_business_day(year, month, n) if n > 0 else -1


@kernel
def effect(
    ring: FloatArray, kind: int, days: int, first: int, newest: int, work: FloatArray
) -> float:
    """The correction of position ``kind`` in the month for day ``days``, from the residuals
    in ``ring`` (NaN when it cannot be read yet)."""
    n = 0
    for back in range(1, MONTHS + 1):
        d = same_position(kind, days, back)
        if d < 0:
            continue
        v = get(ring, d, first, newest)
        if v == v:
            work[n] = v
            n += 1
    if n < MIN_MONTHS:
        return NAN
    return median(work, n)


@kernel
def yearly(
    ring: FloatArray, kind: int, days: int, first: int, newest: int, work: FloatArray
) -> float:
    """The correction for the date of the year of day ``days`` (0.0 where the two earlier
    years do not agree on one; NaN before two years are known), net of position ``kind``."""
    year, month, day = civil(days)
    if month == 2 and day == 29:
        return NAN
    one = _net(ring, kind, day_number(year - 1, month, day), first, newest, work)
    two = _net(ring, kind, day_number(year - 2, month, day), first, newest, work)
    if one != one or two != two:
        return NAN
    if (one > 0) != (two > 0):
        return 0.0
    n = 0
    for d in range(newest - SPREAD_DAYS + 1, newest + 1):
        v = get(ring, d, first, newest)
        if v == v:
            work[n] = abs(v)
            n += 1
    if n < MIN_SCORED:
        return NAN
    cut = YEAR_SPREADS * 1.4826 * median(work, n)
    smaller = min(abs(one), abs(two))
    if smaller <= cut:
        return 0.0
    return smaller - cut if one > 0 else cut - smaller


@kernel
def _net(
    ring: FloatArray, kind: int, days: int, first: int, newest: int, work: FloatArray
) -> float:
    """The residual of day ``days`` less its position in the month's correction."""
    v = get(ring, days, first, newest)
    if v != v or kind == NONE:
        return v
    e = effect(ring, kind, days, first, newest, work)
    return v - e if e == e else v


@kernel
def score(table: FloatArray, effects: FloatArray, residual: float) -> int:
    """Score each readable effect against a bucket's residual (before it is learned); returns
    the effect that applies from now on (``NONE`` when none has earned it)."""
    for k in range(1, KINDS):
        e = effects[k]
        if e == e:
            table[GAIN, k] += abs(residual) - abs(residual - e)
            table[ERROR, k] += abs(residual)
            table[SCORED, k] += 1.0
    best, chosen = MIN_GAIN, NONE
    for k in range(1, KINDS):
        if table[SCORED, k] >= MIN_SCORED and table[ERROR, k] > 0.0:
            gain = table[GAIN, k] / table[ERROR, k]
            if gain >= best:
                best, chosen = gain, k
    return chosen
