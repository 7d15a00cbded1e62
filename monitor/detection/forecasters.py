"""Three forecasters of the next bucket, each in the series' model space (numba kernels).

* **seasonal** (the default): a seasonal profile plus a robust level.
  - The profile ``S_t`` is the median, over the last ``cycles`` cycles, of the *shape* of the
    same slot: hour-of-week for hourly data (hour-of-day while fewer than two weeks are known),
    day-of-week for daily data. A shape sample is a value minus a robust level of the period
    around it (the median of its seven daily means for a week; of its hourly means, or of the
    values, for a day), so the profile holds the pattern only and a level shift never flips it
    weeks later. A period applies only with two earlier cycles of its slot. Below a quarter-hour
    grain a slot pools the slots ten minutes either side, unless its own samples all lie clear of
    the pooled median by more than their own range (a job at a fixed minute stays a pattern).
  - The level ``L_t`` is the median of the out-of-sample residuals ``y_j - S_j`` over the last
    three days (daily data: ten buckets), so growth does not alert and a day-long incident or
    holiday does not move it; once 90% of the last day and a half lie on one side of it, the
    level has shifted and the median of that shorter window takes over.
* **smoothing**: additive double-seasonal Holt-Winters (Taylor 2003: a level, a time-of-day and a
  day-of-week term) updated with errors clipped at three robust spreads (Gelper, Fried and Croux
  2010), so an anomaly moves it by a bounded amount.
* **fast**: the seasonal profile plus a level that follows half of each (clipped) error: a short
  memory for series that wander.

All three forecast every bucket, so each has out-of-sample residuals from which
:mod:`monitor.detection.scoring` picks the one the series is judged against.
"""

from __future__ import annotations

import math

from monitor.detection.jit import FloatArray, IntArray, Record, inlined, kernel
from monitor.detection.rings import NAN, get, median, put
from monitor.detection.windows import above, below, middle

SEASONAL, SMOOTHING, FAST = 0, 1, 2
# rows of the sorted windows: the level's (long and short) of the seasonal regime in force, then
# the level windows of the two periods' shapes
LEVEL_LONG, LEVEL_SHORT, PERIOD_LEVEL = 0, 1, 2
FORECASTERS = ("seasonal", "smoothing", "fast")

_LEVEL_SWITCH = 0.9
_HW_LEVEL, _HW_DAY, _HW_WEEK = 0.05, 0.15, 0.15
_FAST_LEVEL = 0.5
_CLIP = 3.0 * 1.25  # three robust spreads, from a mean absolute error
_SPREAD_RATE = 0.05


@kernel
def shape_sub(period: int, day: int) -> int:
    """Sub-window of a period's robust level: days of a week, hours of a day, else buckets."""
    if day and period > day and period % day == 0:
        return day
    if period % 24 == 0 and period >= 48:
        return period // 24
    return 1


@inlined
def season(
    shapes: FloatArray,
    index: int,
    period: int,
    cycles: int,
    pool: int,
    first: int,
    newest: int,
    work: FloatArray,
    tiebreak: float,
) -> tuple[float, int]:
    """The seasonal median at ``index`` (NaN without a sample) and how many of the slot's own
    samples it rests on. With two samples, ``tiebreak`` (the shorter period's shape, when
    known) picks the one nearer to it: the mean of two is no defence against one anomalous
    cycle. (It only referees: a shorter period's shape is measured from another level, so it is
    never a sample itself.)"""
    own = 0
    lo, hi = math.inf, -math.inf
    for k in range(1, cycles + 1):
        v = get(shapes, index - k * period, first, newest)
        if v == v:
            work[own] = v
            own += 1
            lo, hi = min(lo, v), max(hi, v)
    if own == 0:
        return NAN, 0
    if own == 2 and tiebreak == tiebreak:
        own_median = work[0] if abs(work[0] - tiebreak) <= abs(work[1] - tiebreak) else work[1]
    else:
        own_median = median(work, own)
    if pool == 0:
        return own_median, own
    m = own
    for d in range(-pool, pool + 1):
        if d != 0:
            for k in range(1, cycles + 1):
                v = get(shapes, index + d - k * period, first, newest)
                if v == v:
                    work[m] = v
                    m += 1
    pooled = median(work, m)
    if lo - pooled > hi - lo or pooled - hi > hi - lo:  # the slot's own pattern
        return own_median, own
    return pooled, own


@inlined
def _prefix(
    sums: FloatArray, counts: FloatArray, index: int, first: int, newest: int
) -> tuple[float, float]:
    """The running sum and count of the values up to ``index`` (zero before the first)."""
    if index < first:
        return 0.0, 0.0
    return get(sums, index, first, newest), get(counts, index, first, newest)


@inlined
def period_level(
    sums: FloatArray,
    counts: FloatArray,
    centre: int,
    period: int,
    sub: int,
    first: int,
    newest: int,
    work: FloatArray,
) -> float:
    """Robust level of the period around ``centre``: the median of the means of its ``period //
    sub`` sub-windows (one with under half its values is missing; so is a level with under half
    its sub-windows), from running sums of the values."""
    start = centre - period // 2
    parts = period // sub
    m = 0
    lo_sum, lo_count = _prefix(sums, counts, start - 1, first, newest)
    for part in range(parts):
        # a sub-window's end is where the next one starts: one running sum per boundary
        hi_sum, hi_count = _prefix(sums, counts, start + (part + 1) * sub - 1, first, newest)
        count = hi_count - lo_count
        if 2 * count >= sub:
            work[m] = (hi_sum - lo_sum) / count
            m += 1
        lo_sum, lo_count = hi_sum, hi_count
    if 2 * m < parts:
        return NAN
    return median(work, m)


@inlined
def level(windows: FloatArray, counts: IntArray, short: int) -> float:
    """The median of the residuals in the level window (``windows`` row 0); the shorter
    window's (row 1) once 90% of it lies on one side of that: the level has shifted."""
    value = middle(windows, counts, LEVEL_LONG)
    n = counts[LEVEL_SHORT]
    if short == 0 or value != value or 2 * n < short:
        return value
    if (above(windows, counts, LEVEL_SHORT, value) >= _LEVEL_SWITCH * n
            or below(windows, counts, LEVEL_SHORT, value) >= _LEVEL_SWITCH * n):  # fmt: skip
        return middle(windows, counts, LEVEL_SHORT)
    return value


@inlined
def smoothing_forecast(
    state: Record, hw_day: FloatArray, hw_week: FloatArray, index: int, day: int, week: int
) -> float:
    f = state.hw_level
    if day > 0:
        f += hw_day[index % day]
    if week > 0:
        f += hw_week[index % week]
    return float(f)


@inlined
def smoothing_learn(
    state: Record,
    hw_day: FloatArray,
    hw_week: FloatArray,
    index: int,
    y: float,
    forecast: float,
    day: int,
    week: int,
) -> None:
    if state.hw_level != state.hw_level:
        state.hw_level = y
        return
    error = y - forecast
    spread = state.hw_spread if state.hw_spread == state.hw_spread else abs(error) + 1e-12
    limit = _CLIP * spread
    clipped = min(max(error, -limit), limit)
    state.hw_level += _HW_LEVEL * clipped
    if day > 0:
        hw_day[index % day] += _HW_DAY * (1 - _HW_LEVEL) * clipped
    if week > 0:
        hw_week[index % week] += _HW_WEEK * (1 - _HW_LEVEL) * clipped
    state.hw_spread = (1 - _SPREAD_RATE) * spread + _SPREAD_RATE * min(abs(error), limit)


@inlined
def fast_learn(state: Record, deseasoned: float) -> None:
    if state.fast_level != state.fast_level:
        state.fast_level = deseasoned
        return
    error = deseasoned - state.fast_level
    spread = state.fast_spread if state.fast_spread == state.fast_spread else abs(error) + 1e-12
    limit = _CLIP * spread
    state.fast_level += _FAST_LEVEL * min(max(error, -limit), limit)
    state.fast_spread = (1 - _SPREAD_RATE) * spread + _SPREAD_RATE * min(abs(error), limit)


@inlined
def finalize_shape(
    y: FloatArray,
    shapes: FloatArray,
    index: int,
    period: int,
    level_value: float,
    first: int,
    newest: int,
) -> None:
    """The shape sample whose period window became complete with ``index``: the centre half a
    period back, minus its period's robust level."""
    centre = index - (period - period // 2 - 1)
    v = get(y, centre, first, newest)
    if v == v:
        put(shapes, centre, v - level_value)
