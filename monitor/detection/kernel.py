"""One loop over buckets that forecasts, judges and learns each in turn (numba).

``Detector.warm`` and ``Detector.step`` both run it, so a model that learned a history in one
call is the model that stepped through it bucket by bucket. A bucket is judged only when asked
(``judge``): judging needs the calibration, which is refreshed once a day, lazily.
"""

from __future__ import annotations

import math

import numpy as np

from monitor.detection import dates, intermittent
from monitor.detection.episodes import BOTH, DOWN, POINT, UP, holds, judged_span, remember
from monitor.detection.forecasters import (
    LEVEL_LONG,
    LEVEL_SHORT,
    PERIOD_LEVEL,
    SEASONAL,
    SMOOTHING,
    fast_learn,
    finalize_shape,
    level,
    period_level,
    season,
    shape_sub,
    smoothing_forecast,
    smoothing_learn,
)
from monitor.detection.geometry import (
    G_CYCLES,
    G_DATED,
    G_DAY,
    G_LEVEL,
    G_LEVEL_SHORT,
    G_MIN_HISTORY,
    G_POOL,
    G_QUIET_SPAN,
    G_REFRESH,
    G_SCALE_EVERY,
    G_SPREAD,
    G_WEEK,
    SCALE_MIN_SAMPLES,
)
from monitor.detection.jit import BoolArray, FloatArray, IntArray, Record, inlined, kernel
from monitor.detection.rings import NAN, clear, get, put
from monitor.detection.scales import choose, forward, inverse
from monitor.detection.scoring import calibrate, ensure_scales, spread_at
from monitor.detection.state import NO_INDEX
from monitor.detection.windows import insert, middle, shift

# the columns of the kernel's output, one row per bucket
(OUT_EXPECTED, OUT_LOWER, OUT_UPPER, OUT_SCORE, OUT_ANOMALOUS, OUT_SUSTAINED, OUT_SPAN,
 OUT_HOLDING, OUT_JUDGED) = range(9)  # fmt: skip
OUT_COLUMNS = 9
# the rows of the short rings
RING_Y, RING_DAY_SHAPES, RING_REGIME, RING_RESID, RING_SUM, RING_COUNT = 0, 1, 2, 4, 7, 8
RINGS = 9
# the judging settings, in this order
(J_SENSITIVITY, J_QUIET_FACTOR, J_DIRECTION, J_MIN_RELATIVE, J_MIN_ABSOLUTE) = range(5)  # fmt: skip

__all__ = ["BOTH", "DOWN", "OUT_COLUMNS", "UP", "run"]


@kernel
def run(
    state: FloatArray,
    geo: IntArray,
    judging: FloatArray,
    rings: FloatArray,
    shapes_long: FloatArray,
    x_ring: FloatArray,
    windows: FloatArray,
    counts: IntArray,
    hw_day: FloatArray,
    hw_week: FloatArray,
    slot_sigma: FloatArray,
    spans: IntArray,
    scales: FloatArray,
    dated_ring: FloatArray,
    dated_table: FloatArray,
    indices: IntArray,
    values: FloatArray,
    stamps: IntArray,
    judge: BoolArray,
    learn: BoolArray,
    widen: FloatArray,
    expected_at: FloatArray,
    out: FloatArray,
) -> int:
    """Forecast, judge (where ``judge``) and learn (where ``learn``) each bucket of ``indices``
    (local, increasing) with ``values`` (finite) and ``stamps`` (UTC ns); ``widen`` and
    ``expected_at`` (NaN: the forecast) are the calendar's marks (monitor.detection.marks): a
    bucket that is not learned leaves a gap behind it. ``dated_ring`` and ``dated_table``:
    the uncorrected residuals and the blind test of the date's effects (daily grain, see
    monitor.detection.dates). ``rings`` rows: see ``RING_*``;
    ``windows``: the level's sorted windows per seasonal regime, then each period's level
    window. Returns how many buckets it took: fewer when the scale must change
    (``state.rebuild``)."""
    s = state[0]
    week, day = geo[G_WEEK], geo[G_DAY]
    periods = (week if week > 0 else day, day if (week > 0 and day > 0) else 0)
    subs = (shape_sub(periods[0], day), shape_sub(periods[1], day))
    cycles, pool, refresh = geo[G_CYCLES], geo[G_POOL], geo[G_REFRESH]
    window = geo[G_SPREAD]
    y_ring = rings[RING_Y]
    resid = rings[RING_RESID : RING_RESID + 3]
    size = max(3 * window + 8, 4096)  # a calibration groups each residual in three slots
    work = np.empty(size)
    work2 = np.empty(size)
    table = np.empty((6, window + 1))
    effects = np.full(dates.KINDS, NAN)
    for j in range(indices.shape[0]):
        index, v = indices[j], values[j]
        if s.newest != NO_INDEX and index > s.newest + 1:
            _gap(s, rings, shapes_long, x_ring, dated_ring, windows, counts, index)
        first = s.first if s.first != NO_INDEX else index
        newest = before = s.newest
        y = forward(v, s.lam, s.shift)
        # ---- forecasts, from what was learned before this bucket
        s0, own0 = NAN, 0
        s1, own1 = NAN, 0
        if periods[1] > 0:  # kept up for when the weekly profile is short or has a gap
            s1, own1 = season(rings[RING_DAY_SHAPES], index, periods[1], cycles, pool, first,
                              newest, work, NAN)  # fmt: skip
        if periods[0] > 0:
            s0, own0 = season(shapes_long, index, periods[0], cycles, pool, first, newest, work,
                              s1 if own1 >= 3 and not intermittent.applies(s) else NAN)  # fmt: skip
        regime, base = 2, 0.0
        if own0 >= 2:
            regime, base = 0, s0
        elif own1 >= 2:
            regime, base = 1, s1
        source = rings[RING_REGIME + regime] if regime < 2 else y_ring
        _slide_level(s, source, windows, counts, regime, index, geo[G_LEVEL], geo[G_LEVEL_SHORT],
                     first, newest)  # fmt: skip
        lvl = level(windows, counts, geo[G_LEVEL_SHORT])
        dated = 0.0  # the date's effects: the position in the month the blind test chose,
        if geo[G_DATED]:  # and the date of the year once two years agree on it
            for k in range(1, dates.KINDS):
                effects[k] = dates.effect(dated_ring, k, index, first, newest, work)
            if s.dated_kind != dates.NONE and effects[s.dated_kind] == effects[s.dated_kind]:
                dated = effects[s.dated_kind]
            year = dates.yearly(dated_ring, s.dated_kind, index, first, newest, work)
            if year == year:
                dated += year
        forecasts = (
            base + lvl + dated,
            smoothing_forecast(s, hw_day, hw_week, index, day, week) + dated,
            base + s.fast_level + dated,
        )
        # ---- judge
        judged = False
        if judge[j] and s.learned >= geo[G_MIN_HISTORY]:
            at = index - index % refresh
            if s.calibrated_at != at:
                calibrate(s, at, resid, first, newest, window, day, slot_sigma, work, work2)
                intermittent.calibrate(s, x_ring, y_ring, at - window, at, first, newest, work)
            judged = s.sigma == s.sigma
        forecast = forecasts[s.chosen]  # the calibration chose the forecaster
        if expected_at[j] == expected_at[j]:
            told = max(expected_at[j], 0.0) if s.nonnegative else expected_at[j]
            forecast = forward(told, s.lam, s.shift)
        judged = judged and forecast == forecast
        if judged:
            if intermittent.applies(s):
                _judge_intermittent(s, geo, judging, x_ring, forecast, spans, first, newest,
                                    index, v, y, stamps[j], widen[j], out[j])  # fmt: skip
            else:
                _judge(s, geo, judging, resid, forecast, slot_sigma, spans, scales, first,
                       newest, index, v, y, stamps[j], widen[j], out[j], work, work2)  # fmt: skip
        else:
            out[j, :] = 0.0
            out[j, OUT_EXPECTED] = out[j, OUT_LOWER] = out[j, OUT_UPPER] = NAN
        if not learn[j]:
            continue
        # ---- learn
        # the running sums at the newest bucket learned (they carry through a gap)
        previous_sum = get(rings[RING_SUM], before, first, newest)
        previous_count = get(rings[RING_COUNT], before, first, newest)
        put(x_ring, index, v)
        put(y_ring, index, y)
        put(rings[RING_SUM], index, y + (previous_sum if previous_sum == previous_sum else 0.0))
        put(rings[RING_COUNT], index, 1.0 + (previous_count if previous_count == previous_count
                                             else 0.0))  # fmt: skip
        for k in range(3):
            put(resid[k], index, y - forecasts[k])
        if geo[G_DATED]:
            uncorrected = y - (forecasts[s.chosen] - dated)
            if uncorrected == uncorrected:
                s.dated_kind = dates.score(dated_table, effects, uncorrected)
            put(dated_ring, index, uncorrected)
        put(rings[RING_REGIME], index, y - s0)
        put(rings[RING_REGIME + 1], index, y - s1)
        if s.first == NO_INDEX:
            s.first = index
        s.newest = index
        s.learned += 1
        first, newest = s.first, index
        smoothing_learn(s, hw_day, hw_week, index, y, forecasts[SMOOTHING], day, week)
        fast_learn(s, y - base - dated)
        for k in range(2):
            if periods[k] > 0:
                # the shapes whose period window this bucket completes: its own and, after a
                # gap, those of the missing buckets whose centre had been learned
                shapes = shapes_long if k == 0 else rings[RING_DAY_SHAPES]
                reach = periods[k] - periods[k] // 2 - 1
                since = before + 1 if before != NO_INDEX else index
                for end in range(since, min(index - 1, before + reach) + 1):
                    _shape(s, rings, shapes, windows, counts, k, periods[k], subs[k], end, first,
                           newest, work)  # fmt: skip
                _shape(s, rings, shapes, windows, counts, k, periods[k], subs[k], index, first,
                       newest, work)  # fmt: skip
        if s.integer and s.counts == 0 and v != np.round(v):
            s.integer = 0
        if v < 0:
            s.nonnegative = 0
            s.scale_locked = 1
            if s.lam != 1.0:  # the powers need non-negative values
                s.rebuild = 1.0
                return j + 1
        # ---- the scale, chosen again now and then (once enough residuals are known)
        scale_due = not s.scale_locked and index >= s.next_scale
        if scale_due and s.learned >= max(geo[G_MIN_HISTORY], SCALE_MIN_SAMPLES):
            chosen = choose(x_ring, y_ring, resid[SEASONAL], first, newest, window, s.lam,
                            s.shift, s.integer, day, table, work)  # fmt: skip
            # looked at again after as long as the history it saw (between one and four
            # weeks): often while the history is short, rarely once the choice has settled
            every = geo[G_SCALE_EVERY]
            wait = min(max(s.learned, every), 4 * every) if chosen >= 0 else refresh
            s.next_scale = index + wait
            if chosen >= 0 and chosen != s.lam:
                s.rebuild = chosen
                return j + 1
    return int(indices.shape[0])


@kernel
def _gap(
    s: Record,
    rings: FloatArray,
    shapes_long: FloatArray,
    x_ring: FloatArray,
    dated_ring: FloatArray,
    windows: FloatArray,
    counts: IntArray,
    index: int,
) -> None:
    """Buckets between the newest and ``index`` are missing: their slots hold nothing, but the
    running sums carry on through them."""
    last_sum = get(rings[RING_SUM], s.newest, s.first, s.newest)
    last_count = get(rings[RING_COUNT], s.newest, s.first, s.newest)
    for r in range(rings.shape[0]):
        clear(rings[r], s.newest + 1, index)
    clear(shapes_long, s.newest + 1, index)
    clear(x_ring, s.newest + 1, index)
    clear(dated_ring, s.newest + 1, index)
    for k in range(max(s.newest + 1, index - rings.shape[1]), index):
        put(rings[RING_SUM], k, last_sum)
        put(rings[RING_COUNT], k, last_count)
    # the level windows are reloaded from the rings; a period's window forgets the buckets the
    # gap pushed out of the rings
    s.regime = -1
    s.level_lo = s.short_lo = NO_INDEX
    if index - s.newest >= rings.shape[1] // 2:
        counts[PERIOD_LEVEL] = counts[PERIOD_LEVEL + 1] = 0
        s.period_lo0 = s.period_lo1 = s.period_hi0 = s.period_hi1 = index


@inlined
def _slide_level(
    s: Record,
    source: FloatArray,
    windows: FloatArray,
    counts: IntArray,
    regime: int,
    index: int,
    long: int,
    short: int,
    first: int,
    newest: int,
) -> None:
    """Make the level's sorted windows hold the regime's residuals of the ``long`` and ``short``
    buckets before ``index`` (from the rebaseline on): reload them when the regime changed (or
    after a gap), else swap what left them for what came."""
    lo = max(index - long, s.level_from)
    short_lo = max(index - short, s.level_from)
    if regime != s.regime:
        counts[LEVEL_LONG] = counts[LEVEL_SHORT] = 0
        for k in range(lo, index):
            v = get(source, k, first, newest)
            if v == v:
                insert(windows, counts, LEVEL_LONG, v)
                if k >= short_lo:
                    insert(windows, counts, LEVEL_SHORT, v)
        s.regime = regime
    else:
        come = max(s.level_hi, lo)
        shift(windows, counts, LEVEL_LONG, source, max(s.level_lo, first), lo, come, index,
              first, newest)  # fmt: skip
        shift(windows, counts, LEVEL_SHORT, source, max(s.short_lo, first), short_lo,
              max(s.level_hi, short_lo), index, first, newest)  # fmt: skip
    s.level_lo, s.short_lo, s.level_hi = lo, short_lo, index


@inlined
def _shape(
    s: Record,
    rings: FloatArray,
    shapes: FloatArray,
    windows: FloatArray,
    counts: IntArray,
    k: int,
    period: int,
    sub: int,
    end: int,
    first: int,
    newest: int,
    work: FloatArray,
) -> None:
    """The shape sample whose period window ends at ``end``."""
    y_ring = rings[RING_Y]
    if sub == 1:
        value = _slide_period(s, y_ring, windows, counts, k, period, end, first, newest)
    else:
        centre = end - (period - period // 2 - 1)
        value = period_level(rings[RING_SUM], rings[RING_COUNT], centre, period, sub, first,
                             newest, work)  # fmt: skip
    finalize_shape(y_ring, shapes, end, period, value, first, newest)


@inlined
def _slide_period(
    s: Record,
    y_ring: FloatArray,
    windows: FloatArray,
    counts: IntArray,
    k: int,
    period: int,
    index: int,
    first: int,
    newest: int,
) -> float:
    """Move period ``k``'s window of values to end at ``index`` (learned); its median (NaN with
    under half the period known)."""
    w = PERIOD_LEVEL + k
    lo = index - period + 1
    start = s.period_lo0 if k == 0 else s.period_lo1
    come = s.period_hi0 if k == 0 else s.period_hi1
    shift(windows, counts, w, y_ring, max(start, first), lo, max(come, lo, first), index + 1,
          first, newest)  # fmt: skip
    if k == 0:
        s.period_lo0, s.period_hi0 = lo, index + 1
    else:
        s.period_lo1, s.period_hi1 = lo, index + 1
    if 2 * counts[w] < period:
        return NAN
    return middle(windows, counts, w)


@kernel
def _judge_intermittent(
    s: Record,
    geo: IntArray,
    judging: FloatArray,
    x_ring: FloatArray,
    forecast: float,
    spans: IntArray,
    first: int,
    newest: int,
    index: int,
    v: float,
    y: float,
    stamp: int,
    widen: float,
    row: FloatArray,
) -> None:
    """A mostly-zero series: a non-zero value against the sizes of the others, and the run of
    non-zero (or zero) buckets against the share of zeros (see monitor.detection.intermittent)."""
    quiet = s.run == 0 and index < s.quiet_until
    limit_z = judging[J_SENSITIVITY] * (judging[J_QUIET_FACTOR] if quiet else 1.0) * widen
    direction = int(judging[J_DIRECTION])
    expected = max(inverse(forecast, s.lam, s.shift), 0.0) if s.nonnegative else inverse(
        forecast, s.lam, s.shift)  # fmt: skip
    floor = max(judging[J_MIN_RELATIVE] * abs(expected), judging[J_MIN_ABSOLUTE])
    upper = max(inverse(s.size_centre + limit_z * s.size_sigma, s.lam, s.shift), expected + floor)
    lower = min(0.0, expected - floor) if not s.nonnegative else 0.0
    score = (y - s.size_centre) / s.size_sigma if v != 0.0 else 0.0
    size = v > upper and direction != DOWN
    span = intermittent.occurrence(x_ring, index, v, s.zero_share, spans,
                                   0.5 * math.erfc(limit_z / math.sqrt(2.0)), first, newest)
    storm = span > 0 and (direction == BOTH or (direction == UP) == (v != 0.0))
    anomalous = size or storm
    sustained = 0.0
    if storm and not size:
        sustained = limit_z if v != 0.0 else -limit_z  # as unlikely as the band's edge, at least
    remember(s, index, stamp, anomalous, max(span, 1) if anomalous else 0, score, limit_z,
             geo[G_QUIET_SPAN])  # fmt: skip
    row[OUT_EXPECTED] = expected
    row[OUT_LOWER] = lower
    row[OUT_UPPER] = upper
    row[OUT_SCORE] = score
    row[OUT_ANOMALOUS] = 1.0 if anomalous else 0.0
    row[OUT_SUSTAINED] = sustained
    row[OUT_SPAN] = max(span, 1) if anomalous else 0
    row[OUT_HOLDING] = 0.0
    row[OUT_JUDGED] = 1.0


@kernel
def _judge(
    s: Record,
    geo: IntArray,
    judging: FloatArray,
    resid: FloatArray,
    forecast: float,
    slot_sigma: FloatArray,
    spans: IntArray,
    scales: FloatArray,
    first: int,
    newest: int,
    index: int,
    v: float,
    y: float,
    stamp: int,
    widen: float,
    row: FloatArray,
    work: FloatArray,
    work2: FloatArray,
) -> None:
    sigma = spread_at(s, slot_sigma, index, geo[G_DAY], forecast) * widen
    quiet = s.run == 0 and index < s.quiet_until
    limit_z = judging[J_SENSITIVITY] * (judging[J_QUIET_FACTOR] if quiet else 1.0)
    direction = int(judging[J_DIRECTION])
    expected = inverse(forecast, s.lam, s.shift)
    lower = inverse(forecast - limit_z * sigma, s.lam, s.shift)
    upper = inverse(forecast + limit_z * sigma, s.lam, s.shift)
    floor = max(judging[J_MIN_RELATIVE] * abs(expected), judging[J_MIN_ABSOLUTE])
    lower = min(lower, expected - floor)
    upper = max(upper, expected + floor)
    if s.nonnegative:
        lower = max(lower, 0.0)  # the band stays in the series' domain
    r = y - forecast
    score = r / sigma
    outside = (v > upper and direction != DOWN) or (v < lower and direction != UP)
    chosen = resid[s.chosen]
    span, sustained = 0, 0.0
    if outside or abs(score) >= POINT:
        ensure_scales(s, index - index % geo[G_REFRESH], resid, first, newest, geo[G_SPREAD],
                      spans, scales, work, work2)  # fmt: skip
        span, sustained = judged_span(chosen, first, newest, index, r, sigma, limit_z, spans,
                                      scales, forecast, expected, floor, s.lam, s.shift,
                                      direction, outside)  # fmt: skip
    anomalous = outside or sustained != 0.0
    holding = False
    if stamp > s.counted_ns:  # not a bucket counted before a restart
        holding = not anomalous and holds(s, r, sigma, limit_z)
    remember(s, index, stamp, anomalous, span, score, limit_z, geo[G_QUIET_SPAN])
    row[OUT_EXPECTED] = expected
    row[OUT_LOWER] = lower
    row[OUT_UPPER] = upper
    row[OUT_SCORE] = score
    row[OUT_ANOMALOUS] = 1.0 if anomalous else 0.0
    row[OUT_SUSTAINED] = sustained
    row[OUT_SPAN] = span
    row[OUT_HOLDING] = 1.0 if holding else 0.0
    row[OUT_JUDGED] = 1.0
