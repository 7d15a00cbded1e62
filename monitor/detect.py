"""Detection engine: a causal, robust, seasonal baseline per series and a verdict per bucket.

Pure (numpy/pandas only, no I/O). The model works in ``y = log1p(value)`` for non-negative series
(multiplicative noise and growth become additive; a Poisson floor covers small counts) and on the
values themselves otherwise:

* **season** ``S_t``: the median, over the last ``season_cycles`` cycles, of the *shape* of the
  same slot: hour-of-week for hourly data (falling back to hour-of-day while fewer than two weeks
  are known), day-of-week for daily data. A shape sample is a value minus a robust level of the
  period around it (the median of its seven daily means; of the values themselves for a day), so
  the seasonal medians hold the pattern only and a level shift never flips them weeks later. A
  period applies only with two earlier cycles of its slot: no seasonal term without two full
  cycles. Slots follow the business ``timezone`` (buckets are indexed on local wall-clock time,
  DST-safe). Below a quarter-hour grain a slot's median pools the samples of the slots within ten
  minutes either side (five times the samples for 5-minute data, whose few noisy samples per slot
  would make the expected value jump from bucket to bucket), unless every sample of the slot's
  own lies clear of that pooled median, farther than their own range: a job at a fixed minute of
  the day stays part of the profile.
* **level** ``L_t``: the median of the out-of-sample residuals ``y_j - S_j`` over the last three
  days (daily data: ten buckets), so growth and trend do not alert and a day-long incident or
  holiday does not move it; once 90% of the last day and a half lie on one side of it, the level
  has shifted and the median of that shorter window takes over.
* **spread** ``sigma_t``: of the out-of-sample residuals ``e_j = y_j - S_j - L_j`` over the last
  two weeks, the larger of ``1.4826 * MAD`` and the 95% quantile of ``|e|`` scaled to a normal
  sigma (equal for normal noise; the only sane value for intermittent series whose MAD is 0),
  refined per time of day (night and day differ) and floored by Poisson noise for counts.
* **band**: ``S_t + L_t +- sensitivity * sigma_t`` mapped back to values, widened to at least
  ``min_relative_change * |expected|`` (and ``min_absolute_change``) each side. A bucket outside
  it, in a direction the spec counts, is anomalous.
* **sustained deviations**: a bucket inside the band is anomalous too when the mean residual of
  the last few buckets (2 to 24 hours; 2 to 7 days), this one deviating by at least one sigma the
  same way, is beyond ``sensitivity`` in the empirical spread of such window sums: a -40% shift on
  a noisy hourly count is 2-3 sigma per bucket but unmistakable over four hours. An anomalous
  bucket's ``span`` is the longest such window beyond the band ending at it (its own residual
  capped at the band edge, the buckets before it averaging 80% of it), so a deviation that is
  clear over its first two hours counts as two anomalous buckets for the alert state machine
  even when its first bucket stayed inside the band; so does one bucket four times beyond it.
* **quiet period**: for a day after a deviation that lasted long enough to alert (two buckets
  below daily grain), a new deviation (one after a bucket that was not anomalous) is judged
  against a band ``quiet_factor`` times wider; the incident's own run keeps the normal band.
  The aftermath of an incident (recovery, overshoot, flicker) is not a new incident. Daily and
  coarser grains have no quiet period (the next bucket is already a day later).

Robust statistics everywhere: past anomalies neither drag the baseline nor widen future bands.
``step`` scores a bucket with what was learned before it, then learns it; ``warm`` learns a block
of history vectorised and leaves the state stepping through it would (to float rounding), except
the quiet period, which follows judged buckets and ``warm`` judges none (``resume`` restores it).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import bottleneck as bn
import numpy as np
import numpy.typing as npt
import pandas as pd

Direction = Literal["both", "up", "down"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_DAY = 86_400
_WEEK = 7 * _DAY
_MAD_TO_SIGMA = 1.4826
_DIRECTIONS = ("both", "up", "down")
# per time-of-day spread: neighbouring slots pooled, and the weight (in samples) of the global
# spread it is shrunk towards
_SLOT_NEIGHBOURS = 1
_SLOT_PRIOR = 20.0
# level: median residual over this many days of sub-daily buckets (a day-long incident or holiday
# does not move it) or this many daily buckets
_LEVEL_DAYS = 3
_LEVEL_DAILY = 10
# ... unless at least this fraction of the last _LEVEL_SHORT_DAYS days of residuals lie on one side
# of it: the level has shifted, and the short window's median follows it
_LEVEL_SHORT_DAYS = 1.5
_LEVEL_SWITCH = 0.9
# sustained deviations: the sum of the residuals of the last w buckets (w in these spans, this
# bucket included) against sensitivity in units of the spread of such sums in the history
_SUSTAINED_SUBDAILY = (2, 3, 4, 6, 12, 24)
_SUSTAINED_DAILY = (2, 3, 5, 7)
_SUSTAINED_POINT = 1.0  # this bucket must itself deviate by this many sigma, the same way
# a deviation this many times beyond the band is as clear as two anomalous buckets in a row
_EXTREME = 4.0
# a window spans the buckets before an anomalous one only if they average this fraction of the
# band the same way: a chance wobble before an outlier is not the start of an incident
_SPAN_EARLIER = 0.8
# the spread's tail guard: this quantile of |residual| over the normal quantile it would have
_TAIL_QUANTILE = 0.95
_TAIL_Z = 1.959964
# a seasonal slot's median pools the shape samples of the slots within this many seconds either
# side of it (5-minute data: +-2 slots, 1-minute data: +-10; none from a quarter-hour grain on):
# the profile is resolved to about 20 minutes and a slot's median rests on 5x more samples, so the
# noise of a few samples per 5-minute slot does not make the expected value jump from one bucket
# to the next. A slot whose own samples all lie clear of the pooled median (farther than their own
# range) keeps its own median: a job at a fixed minute of the day is a pattern, not noise.
_SEASON_POOL_SECONDS = 600
# quiet period (DetectorSpec.quiet_factor): its length, and the run of anomalous buckets that
# starts it (the daemon's default alert_after for hourly checks)
_QUIET_SECONDS = _DAY
_QUIET_RUN = 2


_NO_SCALES: tuple[int, tuple[FloatArray, IntArray, float], dict[int, float | None]] = (
    -(2**62),
    (np.zeros(1), np.zeros(1, dtype=np.int64), math.nan),
    {},
)


@dataclass(frozen=True)
class DetectorSpec:
    """How one series is judged. Only ``bucket_seconds`` is required."""

    bucket_seconds: int
    """Bucket size: 3600 for hourly, 86400 for daily; any positive value works."""
    sensitivity: float = 4.0
    """Band half-width in robust standard units: higher means fewer alerts."""
    direction: Direction = "both"
    """Which deviations count as anomalous."""
    min_relative_change: float = 0.05
    """Band floor: ``|value - expected|`` must also exceed this fraction of ``|expected|``."""
    counts: bool | None = None
    """``None``: decide from the data (non-negative values: log1p space, and a Poisson floor on the
    spread while every value is an integer). ``True`` forces both, ``False`` neither."""
    timezone: str = "UTC"
    """Business time zone: seasonal slots follow its wall clock (DST-safe)."""
    min_absolute_change: float = 0.0
    """Band floor in value units: ``|value - expected|`` must also exceed this."""
    season_cycles: int = 8
    """How many past cycles of the same slot the seasonal median looks at."""
    min_history: int | None = None
    """Buckets to learn before judging; ``None``: one day of sub-daily buckets, else 14."""
    quiet_factor: float = 2.0
    """Quiet period: for a day after a deviation that lasted long enough to alert (two buckets),
    a new deviation must leave a band this many times wider (the aftermath of an incident is not
    a new incident); 1 disables it, and it has no effect at daily grain. It follows stepped
    verdicts: ``warm`` learns history without judging it, so it starts none; ``resume`` carries
    one over from an earlier detector of the series."""

    def __post_init__(self) -> None:
        if self.bucket_seconds <= 0:
            raise ValueError(f"bucket_seconds must be positive, got {self.bucket_seconds}")
        if not self.sensitivity > 0:
            raise ValueError(f"sensitivity must be positive, got {self.sensitivity}")
        if self.direction not in _DIRECTIONS:
            raise ValueError(f"direction must be one of {_DIRECTIONS}, got {self.direction!r}")
        if not self.min_relative_change >= 0 or not self.min_absolute_change >= 0:
            raise ValueError("min_relative_change and min_absolute_change must be >= 0")
        if self.season_cycles < 2:
            raise ValueError(f"season_cycles must be at least 2, got {self.season_cycles}")
        if not self.quiet_factor >= 1:
            raise ValueError(f"quiet_factor must be at least 1, got {self.quiet_factor}")
        if self.min_history is not None and self.min_history < 2:
            raise ValueError(f"min_history must be at least 2, got {self.min_history}")
        try:
            pd.Timestamp(0, tz="UTC").tz_convert(self.timezone)
        except Exception as exc:  # pandas raises several types for unknown zones
            raise ValueError(f"unknown timezone {self.timezone!r}") from exc


@dataclass(frozen=True)
class Verdict:
    """The judgement of one complete bucket."""

    bucket: pd.Timestamp
    """Start of the scored bucket, tz-aware UTC."""
    value: float
    expected: float | None
    """``None`` while there is not enough history to judge."""
    lower: float | None
    upper: float | None
    score: float
    """Signed deviation in robust standard units (negative: below expected); 0.0 without a
    baseline."""
    anomalous: bool
    """Outside ``[lower, upper]`` in a direction the spec counts (the band includes the floors),
    or part of a sustained deviation (see ``sustained``)."""
    sustained: float = 0.0
    """Signed deviation of the mean of the last few buckets (this one included) in robust
    standard units of that mean, when it alone makes the bucket anomalous: a shift that is
    moderate in every bucket but beyond ``sensitivity`` taken together; else 0.0."""
    span: int = 0
    """How many anomalous buckets in a row this one is worth: the longest window of the
    sustained test ending here that is beyond the band (see ``_sustained``), 1 for a lone
    outlier, at least 2 for one four times beyond the band; 0 when not anomalous. The alert
    state machine counts an anomalous run as at least this long, so a deviation that is clear
    over its first two hours opens an episode at the second even when its first bucket alone
    stayed inside the band, and a collapse to zero opens one at once."""

    @property
    def deviation_pct(self) -> float | None:
        """``(value - expected) / |expected| * 100``; ``None`` without a baseline or at 0."""
        if self.expected is None or self.expected == 0 or not math.isfinite(self.value):
            return None
        return (self.value - self.expected) / abs(self.expected) * 100.0


@dataclass(frozen=True)
class _Geometry:
    """Periods and windows in buckets, derived once from the spec."""

    week: int  # 0 when the grain has no weekly slot
    day: int  # 0 when the grain has no time-of-day slot (daily grain and coarser)
    cycles: int
    pool: int  # seasonal slots pooled either side of a slot (0: none)
    level_window: int
    level_short: int  # 0: no switch to a shorter window after a level shift
    spread_window: int
    spread_refresh: int
    slot_spread_cycles: int
    slot_spread_period: int  # 0: no per-slot spread
    min_history: int
    keep: int  # positions the buffer keeps behind the newest bucket


@functools.lru_cache(maxsize=256)  # detectors of one spec share it (both are frozen)
def _geometry(spec: DetectorSpec) -> _Geometry:
    b = spec.bucket_seconds
    per_day = _DAY // b if (b <= _DAY and _DAY % b == 0) else 0
    week = 7 * per_day if per_day else (_WEEK // b if (b <= _WEEK and _WEEK % b == 0) else 0)
    if week < 2:
        week = 0
    day = per_day if per_day >= 2 else 0
    if day:
        level_window = _LEVEL_DAYS * day
        slot_period, slot_cycles = day, 14
    else:
        level_window = _LEVEL_DAILY if b >= _DAY else 24
        slot_period, slot_cycles = (week, 8) if week else (0, 0)
    spread_window = max(2 * week, 56) if week else max(level_window * 8, 56)
    min_history = spec.min_history
    if min_history is None:
        min_history = day if day else 14
    pool = _SEASON_POOL_SECONDS // b if day else 0
    keep = max(
        spec.season_cycles * max(week, day, 1) + pool,
        spread_window,
        level_window,
        slot_period * slot_cycles,
    )
    return _Geometry(
        week=week,
        day=day,
        cycles=spec.season_cycles,
        pool=pool,
        level_window=level_window,
        level_short=int(day * _LEVEL_SHORT_DAYS) if day else 0,
        spread_window=spread_window,
        spread_refresh=max(day // 24, 1),
        slot_spread_cycles=slot_cycles,
        slot_spread_period=slot_period,
        min_history=min_history,
        keep=keep + 1,
    )


def _scale_refresh(geo: _Geometry) -> int:
    """How often (in buckets) the sustained test's window scales are refreshed: daily."""
    return geo.day or 7


def _row_count(mask: BoolArray) -> IntArray:
    """True entries per row of a 2-D mask: a matrix-vector product, several times faster than
    ``np.count_nonzero(axis=1)`` on the short rows used here (exact: sums of 0/1 floats)."""
    ones = np.ones(mask.shape[1])
    out: IntArray = (mask @ ones).astype(np.int64)
    return out


def _row_median(matrix: FloatArray) -> FloatArray:
    """Median of each row ignoring NaN (NaN for an all-NaN row): ``0.5 * (lo + hi)`` of the
    middle order statistics, exactly as ``_sorted_median`` computes it."""
    return _row_median_count(matrix)[0]


def _row_median_count(matrix: FloatArray) -> tuple[FloatArray, IntArray]:
    """``_row_median`` and the number of non-NaN values per row, which the sort yields cheaply."""
    n, k = matrix.shape
    if n == 0 or k == 0:
        return np.full(n, np.nan), np.zeros(n, dtype=np.int64)
    if k > 4096 and not np.isnan(matrix).any():  # partition only pays off on wide rows
        part = np.partition(matrix, [(k - 1) // 2, k // 2], axis=1)
        out: FloatArray = 0.5 * (part[:, (k - 1) // 2] + part[:, k // 2])
        return out, np.full(n, k, dtype=np.int64)
    ordered = np.sort(matrix, axis=1)  # NaN sort last
    out = 0.5 * (ordered[:, (k - 1) // 2] + ordered[:, k // 2])
    # a full row ends with a number; only the rows with a NaN (usually few) need their count
    # and their own middle positions
    gap = np.isnan(ordered[:, -1])
    if not gap.any():
        return out, np.full(n, k, dtype=np.int64)
    if gap.all():
        return _gap_median_count(ordered)
    out[gap], have = _gap_median_count(ordered[gap])
    count = np.full(n, k, dtype=np.int64)
    count[gap] = have
    return out, count


def _gap_median_count(ordered: FloatArray) -> tuple[FloatArray, IntArray]:
    """``_row_median_count`` of rows already sorted (NaN last) that each end with a NaN: the
    count is where the first NaN is, the middle positions are read from a flat copy (cheaper
    than 2-D fancy indexing)."""
    k = ordered.shape[1]
    have: IntArray = np.isnan(ordered).argmax(axis=1)
    start = np.arange(0, ordered.size, k)
    flat = ordered.ravel()
    # an all-NaN row reads NaN at its start for hi, so its median is NaN whatever lo reads
    out: FloatArray = 0.5 * (flat[start + (have - 1) // 2] + flat[start + have // 2])
    return out, have


def _regime_rows(regime: IntArray, count: int) -> list[tuple[int, slice | BoolArray]]:
    """The regimes (``0 .. count - 1``) present and their rows: a mask each, or ``slice(None)``
    when one regime holds every row (the usual case: nothing to gather or scatter)."""
    sizes: list[int] = np.bincount(regime, minlength=count).tolist()
    if regime.size and regime.size in sizes:
        return [(sizes.index(regime.size), slice(None))]
    return [(i, regime == i) for i, size in enumerate(sizes) if size]


def _strided_rows(padded: FloatArray, positions: IntArray, width: int, step: int) -> FloatArray:
    """``padded[p : p + width : step]`` per position as a matrix: a read-only view when the
    positions are consecutive (the usual block of history; the median's sort copies anyway),
    else a gathered copy. ``padded`` must be contiguous (the callers build it)."""
    size = padded.strides[0]
    # the ndarray constructor checks the bounds like as_strided, at a tenth of its overhead
    view: FloatArray = np.ndarray(
        (padded.size - width + 1, -(-width // step)),
        dtype=np.float64,
        buffer=padded,
        strides=(size, step * size),
    )
    view.flags.writeable = False
    if positions.size and int(positions[-1]) - int(positions[0]) == positions.size - 1:
        rows: FloatArray = view[int(positions[0]) : int(positions[-1]) + 1]
        return rows
    out: FloatArray = view[positions]
    return out


def _lookback(values: FloatArray, positions: IntArray, period: int, cycles: int) -> FloatArray:
    """``values[p - k * period]`` for k = 1..cycles as a (len(positions), cycles) matrix."""
    span = period * cycles
    top = int(positions[-1]) if positions.size else 0
    padded = np.concatenate((np.full(span, np.nan), values[:top]))
    return _strided_rows(padded, positions, span, period)


def _trailing(
    values: FloatArray, positions: IntArray, width: int, start: int
) -> tuple[FloatArray, FloatArray, bool]:
    """The windows ``values[p - width .. p - 1]`` (NaN before index ``start`` or 0) of the
    increasing ``positions`` as a matrix; each window's median ignoring NaN (NaN for a window
    without a number), exactly as ``_row_median`` gives it; and whether no window holds a NaN.
    bottleneck's moving median keeps two heaps as the window slides, at a tenth of the cost of
    sorting every window."""
    top = int(positions[-1])
    padded = np.concatenate((np.full(width, np.nan), values[:top]))
    if start > 0:
        padded[width : width + min(start, top)] = np.nan
    first = int(positions[0])
    span = padded[first : top + width]
    medians: FloatArray = bn.move_median(span, width, min_count=1)[positions - first + width - 1]
    gapless = not np.isnan(span).any()
    return _strided_rows(padded, positions, width, 1), medians, gapless


def _period_level(values: FloatArray, centers: IntArray, period: int, sub: int) -> FloatArray:
    """Robust level of one period around each center: the median of the means of the
    ``period // sub`` consecutive sub-windows of ``values[c - period // 2 : c - period // 2 +
    period]`` (a sub-window with under half its values is missing; so is a center with under
    half its sub-windows). Smooth from one center to the next, and a day-long outage is one
    sub-window of seven."""
    half = period // 2
    parts = period // sub
    lo = int(centers[0]) - half
    hi = int(centers[-1]) - half + period
    seg = np.full(hi - lo, np.nan)
    src_lo, src_hi = max(lo, 0), min(hi, values.size)
    if src_hi > src_lo:
        seg[src_lo - lo : src_hi - lo] = values[src_lo:src_hi]
    # where each center's last sub-window starts in seg; bottleneck's moving median (NaN
    # ignored, NaN below min_count numbers) ends its window there
    ends = centers - half - lo + (parts - 1) * sub
    need = -(-parts // 2)
    if sub == 1:  # the median of the values themselves
        level: FloatArray = bn.move_median(seg, parts, min_count=need)[ends]
        return level
    finite = ~np.isnan(seg)
    csum = np.zeros(seg.size + 1)
    np.cumsum(np.where(finite, seg, 0.0), out=csum[1:])
    ccount = np.zeros(seg.size + 1, dtype=np.int64)
    np.cumsum(finite, out=ccount[1:])
    count = ccount[sub:] - ccount[:-sub]  # per sub-window start
    total = csum[sub:] - csum[:-sub]
    # the sub-window means in rows of `sub`: a center's means, `sub` apart, are `parts`
    # consecutive rows of one column, so a moving median down the columns gives every level
    rows = -(-count.size // sub)
    grid = np.full(rows * sub, np.nan)
    np.divide(total, np.maximum(count, 1), out=grid[: count.size], where=2 * count >= sub)
    medians = bn.move_median(grid.reshape(rows, sub), parts, min_count=need, axis=0)
    level = medians.ravel()[ends]
    return level


def _period_level_one(values: FloatArray, center: int, period: int, sub: int) -> float:
    """``_period_level`` for one center (the same numbers up to float rounding), faster."""
    half = period // 2
    parts = period // sub
    lo = center - half
    seg = values[max(lo, 0) : lo + period]
    if lo < 0:
        seg = np.concatenate((np.full(-lo, np.nan), seg))
    if sub == 1:
        finite = seg[~np.isnan(seg)]
        if 2 * finite.size < parts:
            return math.nan
        return _sorted_median(sorted(finite.tolist()))
    matrix = seg.reshape(parts, sub)
    gaps = np.isnan(matrix)
    if gaps.any():
        ok = ~gaps
        count = ok.sum(axis=1)
        sums = np.where(ok, matrix, 0.0).sum(axis=1)
        means = [t / c for t, c in zip(sums.tolist(), count.tolist(), strict=True) if 2 * c >= sub]
    else:  # every sub-window full (the usual case): the same sums without the masking
        means = [t / sub for t in matrix.sum(axis=1).tolist()]
    if 2 * len(means) < parts:
        return math.nan
    return _sorted_median(sorted(means))


def _shape_sub(period: int, day: int) -> int:
    """Sub-window of a period's robust level: days of a week, hours of a day, else buckets."""
    if day and period > day and period % day == 0:
        return day
    if period % 24 == 0 and period >= 48:
        return period // 24
    return 1


def _sorted_median(vals: list[float]) -> float:
    """Median of an already sorted list, computed exactly like ``_row_median``."""
    n = len(vals)
    if n == 0:
        return math.nan
    return 0.5 * (vals[(n - 1) // 2] + vals[n // 2])


def _median(finite: FloatArray) -> float:
    """Median of a non-empty NaN-free vector (as np.median, with less overhead). Partitions it
    in place: callers pass a copy of their own."""
    n = finite.size
    lo, hi = (n - 1) // 2, n // 2
    finite.partition([lo, hi] if hi != lo else lo)
    return 0.5 * (float(finite[lo]) + float(finite[hi]))


def _robust_sigma(values: FloatArray) -> float:
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return math.nan
    return _mad_sigma(finite)


def _mad_sigma(finite: FloatArray) -> float:
    """``1.4826 * MAD`` of a non-empty NaN-free vector of the caller's own (reordered)."""
    med = _median(finite)
    return _MAD_TO_SIGMA * _median(np.abs(finite - med))


def _spread(values: FloatArray) -> float:
    """Robust spread that also sees heavy tails: the larger of 1.4826 x MAD and the
    ``_TAIL_QUANTILE`` quantile of |deviation| scaled to a normal sigma. Equal for normal noise;
    larger for intermittent or bursty series (where the MAD is 0); moved by anomalies only once
    they fill more than 1 - _TAIL_QUANTILE of the window."""
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return math.nan
    med = _median(finite)
    dev = np.abs(finite - med)
    if finite.size < 20:
        return _MAD_TO_SIGMA * _median(dev)
    # the MAD's middle order statistics and the tail quantile's in one partition
    n = dev.size
    lo, hi, k = (n - 1) // 2, n // 2, int(_TAIL_QUANTILE * (n - 1))
    dev.partition(sorted({lo, hi, k}))
    mad = _MAD_TO_SIGMA * (0.5 * (float(dev[lo]) + float(dev[hi])))
    tail = float(dev[k]) / _TAIL_Z
    return max(mad, tail)


class Detector:
    """Stateful per-series model.

    Causal: ``step(t)`` scores t using only buckets before t, then learns t.
    """

    def __init__(self, spec: DetectorSpec) -> None:
        self.spec = spec
        self._geo = _geometry(spec)
        self._utc = spec.timezone.upper() == "UTC"
        capacity = self._geo.keep + max(64, self._geo.keep // 8)
        self._periods = [period for period in (self._geo.week, self._geo.day) if period]
        # every buffer a row of one block: a single allocation
        n_periods = len(self._periods)
        buffers = np.full((3 + 2 * n_periods, capacity), np.nan)
        self._raw, self._y, self._e = buffers[0], buffers[1], buffers[2]
        # seasonal residuals y - S per period (week, day), each with at least one earlier cycle
        self._res: list[FloatArray] = list(buffers[3 : 3 + n_periods])
        # seasonal shape samples per period: y minus a robust level of the period centred on it
        # (the median of its 7 daily means for a week; of its hourly means for a day), final once
        # the bucket half a period later is learned, always before a look-back reads it: the
        # seasonal medians hold the shape only, and a level shift moves the level, not the season
        self._shape: list[FloatArray] = list(buffers[3 + n_periods :])
        self._shape_sub = [_shape_sub(period, self._geo.day) for period in self._periods]
        self._n = 0  # positions used
        self._base = 0  # local bucket index of position 0
        # the newest bucket seen, in UTC nanoseconds: compared as an int (boxing a Timestamp
        # out of an index costs more than the comparison)
        self._last_ns: int | None = None
        self._learned = 0
        self._log: bool | None = None if spec.counts is None else spec.counts
        self._integer = spec.counts is not False
        self._level_from = 0  # absolute local index where the level window may start
        self._sigma_cache: tuple[int, float] = (-(2**62), math.nan)
        # the last _predict's (position, seasons, regime, level), which _learn_one may reuse
        self._predicted: tuple[int, list[float], int, float] | None = None
        self._scale_cache: tuple[
            int, tuple[FloatArray, IntArray, float], dict[int, float | None]
        ] = _NO_SCALES
        # quiet period (stepped verdicts only: warm() judges nothing): the current run of
        # anomalous verdicts and the local index before which a new deviation needs the wider band
        self._run = 0
        self._quiet_span = _QUIET_SECONDS // spec.bucket_seconds
        self._quiet_until = -(2**62)
        self._quiet_start: pd.Timestamp | None = None
        self._counted_ns = -(2**62)  # verdicts up to this bucket are in the resumed run

    # ----------------------------------------------------------------- public API
    @property
    def history_size(self) -> int:
        """Number of buckets learned so far (gaps and skipped values excluded)."""
        return self._learned

    @property
    def log_space(self) -> bool:
        """Whether the model works on log1p of the values."""
        return bool(self._log)

    def warm(self, buckets: pd.DatetimeIndex, values: npt.ArrayLike) -> None:
        """Learn a block of history (sorted, tz-aware UTC, complete buckets) without verdicts.

        Vectorised, and only what later buckets can read is computed; the verdicts that follow are
        those stepping through the same buckets would give (to float rounding). NaN values are
        gaps. The block must start after everything already learned.
        """
        vals = np.asarray(values, dtype=np.float64).ravel()
        if len(buckets) != vals.size:
            raise ValueError(f"{len(buckets)} buckets but {vals.size} values")
        if vals.size == 0:
            return
        utc = _as_utc_index(buckets)
        stamps = utc.asi8
        # strictly increasing, no NaT (the smallest int64: it could only come first); on the
        # integers, several times cheaper than the index's monotonicity and uniqueness checks
        if stamps[0] == _NAT or not (stamps[1:] > stamps[:-1]).all():
            raise ValueError("warm() needs strictly increasing buckets")
        nanos = _UNIT_NANOS[str(utc.unit)]
        if self._last_ns is not None and int(stamps[0]) * nanos <= self._last_ns:
            raise ValueError("warm() buckets must come after everything already learned")
        self._last_ns = int(stamps[-1]) * nanos
        # (the filters below copy only when they drop something, which is rare)
        index = self._local_index(utc)
        finite = np.isfinite(vals)
        if not finite.all():
            index, vals = index[finite], vals[finite]
        # a repeated local hour (DST fall-back) is not learned twice, as in step()
        prev = np.concatenate(([self._last_index()], index[:-1]))
        keep = index > prev
        if not keep.any():
            return
        if not keep.all():
            index, vals = index[keep], vals[keep]
        self._update_mode(vals)
        # chunks no longer than the look-back the buffer keeps, so every position sees its past
        lo = 0
        while lo < index.size:
            capacity = self._raw.size
            chunk = capacity - 1 if self._n == 0 else capacity - self._geo.keep - 1
            hi = int(np.searchsorted(index, index[lo] + chunk, side="left"))
            self._learn_block(index[lo:hi], vals[lo:hi])
            lo = hi

    def _learn_block(self, index: IntArray, vals: FloatArray) -> None:
        self._ensure(int(index[0]), int(index[-1]))
        positions = (index - self._base).astype(np.int64)
        previous_last = self._n - 1
        self._raw[positions] = vals
        self._y[positions] = self._transform(vals)
        self._n = int(positions[-1]) + 1
        self._learned += int(positions.size)
        self._fill_residuals(positions, previous_last, lazy=True)

    def step(self, bucket: pd.Timestamp, value: float) -> Verdict:
        """Score one new complete bucket (strictly after everything learned), then learn it.

        Gaps (missing buckets) are allowed. A NaN value is reported with no baseline and not
        learned.
        """
        ts = _as_utc(bucket)
        if self._last_ns is not None and ts.value <= self._last_ns:
            last = pd.Timestamp(self._last_ns, tz="UTC")
            raise ValueError(f"step({ts}) is not after the last learned bucket {last}")
        self._last_ns = ts.value
        v = float(value)
        index = self._scalar_index(ts)
        if not math.isfinite(v):
            return Verdict(ts, v, None, None, None, 0.0, False)
        if self._n > 0 and index <= self._base + self._n - 1:
            # DST fall-back: the local hour repeats; judge it like the previous one, learn nothing
            return self._judge(ts, v, self._predict(self._n - 1))
        self._update_mode(v)
        self._ensure(index, index)
        position = index - self._base
        quiet = self._run == 0 and index < self._quiet_until
        verdict = self._judge(ts, v, self._predict(position), position, quiet)
        self._learn_one(position, v)
        self._remember(index, verdict)
        return verdict

    @property
    def quiet_start(self) -> pd.Timestamp | None:
        """The bucket whose verdict started the latest quiet period (None before any). With the
        alert state's anomalous run, it is what :meth:`resume` needs after a restart."""
        return self._quiet_start

    def resume(self, run: int, quiet_start: pd.Timestamp | None, judged: pd.Timestamp) -> None:
        """Carry on from an earlier detector of this series (the daemon restarted): ``run`` is
        the anomalous run the alert state counted up to the bucket ``judged`` (the detector
        counts it the same way; verdicts up to that bucket, stepped again, do not count twice)
        and ``quiet_start`` that detector's :attr:`quiet_start`. ``warm`` judges nothing, so
        without this a restart would forget a quiet period in progress and judge the aftermath
        of an incident as a new one."""
        self._run = max(run, 0)
        self._counted_ns = _as_utc(judged).value
        self._quiet_start = None if quiet_start is None else _as_utc(quiet_start)
        if self._quiet_start is not None:
            self._quiet_until = self._scalar_index(self._quiet_start) + self._quiet_span

    def acknowledge(self, since: pd.Timestamp | None = None) -> None:
        """Accept the current level as normal (an intended change, e.g. after a deployment).

        From now on the level is estimated only from buckets at or after ``since`` (default: the
        newest learned bucket), so a persistent, acknowledged shift stops alerting at once.
        """
        if since is None:
            self._level_from = self._base + self._n - 1 if self._n else 0
        else:
            self._level_from = int(self._local_index(pd.DatetimeIndex([_as_utc(since)]))[0])
        self._sigma_cache = (-(2**62), math.nan)
        self._scale_cache = _NO_SCALES
        if self._n:
            # re-derive the residuals after the acknowledged point with the new level rule
            first = max(self._level_from - self._base, 0)
            positions = np.arange(first, self._n, dtype=np.int64)
            positions = positions[~np.isnan(self._y[positions])]
            if positions.size:
                self._fill_residuals(positions, self._n - 1)

    # ----------------------------------------------------------------- internals
    def _remember(self, index: int, verdict: Verdict) -> None:
        """Track the run of anomalous verdicts as the alert state machine counts it; a run long
        enough to alert starts the quiet period."""
        if verdict.expected is None or verdict.bucket.value <= self._counted_ns:
            return  # no baseline (neither normal nor anomalous), or counted before a restart
        if not verdict.anomalous:
            self._run = 0
            return
        before = self._run
        self._run = max(before + 1, verdict.span)
        if before < _QUIET_RUN <= self._run:
            self._quiet_until = index + self._quiet_span
            self._quiet_start = verdict.bucket

    def _last_index(self) -> int:
        return self._base + self._n - 1 if self._n else -(2**62)

    def _local_index(self, utc: pd.DatetimeIndex) -> IntArray:
        local = utc if self._utc else utc.tz_convert(self.spec.timezone).tz_localize(None)
        per = _UNIT_PER_SECOND[str(local.unit)]
        b = self.spec.bucket_seconds
        # (seconds + b // 2) // b of the floored whole seconds (as ``as_unit("s")`` floors): floor
        # divisions compose, so one on the raw stamps does it
        return np.asarray((local.asi8 + b // 2 * per) // (b * per), dtype=np.int64)

    def _scalar_index(self, ts: pd.Timestamp) -> int:
        seconds = ts.value // 1_000_000_000
        if not self._utc:
            offset = ts.tz_convert(self.spec.timezone).utcoffset()
            seconds += int(offset.total_seconds()) if offset is not None else 0
        b = self.spec.bucket_seconds
        return int((seconds + b // 2) // b)

    def _update_mode(self, value: float | FloatArray) -> None:
        """``value``: one finite value (step) or a non-empty block of them (warm)."""
        # a step's float is checked with plain float arithmetic, no array round trip
        negative = value < 0 if isinstance(value, float) else bool(value.min() < 0)
        if self.spec.counts is None:
            if self._log is None:
                self._log = not negative
            elif self._log and negative:
                self._log = False
                self._retransform()
            if self._integer and isinstance(value, float):
                self._integer = value.is_integer()
            elif self._integer and not isinstance(value, float):
                self._integer = bool((value == np.rint(value)).all())  # np.round's own
        elif self.spec.counts and negative:
            raise ValueError("counts=True but a negative value arrived")

    def _retransform(self) -> None:
        n = self._n
        self._sigma_cache = (-(2**62), math.nan)
        self._scale_cache = _NO_SCALES
        self._y[:n] = self._transform(self._raw[:n])
        for arr in (*self._res, *self._shape):
            arr[:n] = np.nan
        self._e[:n] = np.nan
        positions = np.nonzero(~np.isnan(self._y[:n]))[0].astype(np.int64)
        if positions.size:
            self._fill_residuals(positions, -1)

    def _transform(self, vals: FloatArray) -> FloatArray:
        if self._log:
            return np.log1p(vals)
        return vals.astype(np.float64, copy=True)

    def _inverse(self, y: float) -> float:
        return math.expm1(min(y, 700.0)) if self._log else y

    def _ensure(self, first: int, last: int) -> None:
        """Make room for local bucket indices ``first..last`` (a span shorter than ``keep``),
        keeping the ``keep`` positions before ``first`` that the look-backs need."""
        if self._n == 0:
            self._base = first
            return
        capacity = self._raw.size
        if last - self._base < capacity:
            return
        new_base = first - self._geo.keep
        shift = new_base - self._base
        for arr in (self._raw, self._y, self._e, *self._res, *self._shape):
            if shift < self._n:
                arr[: self._n - shift] = arr[shift : self._n]
                arr[self._n - shift :] = np.nan
            else:
                arr[:] = np.nan
        self._n = max(self._n - shift, 0)
        self._base = new_base

    def _components(self, positions: IntArray) -> tuple[list[FloatArray], IntArray]:
        """Seasonal medians per period and the regime used per position.

        The regime is the index of the first period (week, then day) with two earlier cycles of
        the slot, or ``len(periods)`` for none. A period's median is computed (at least one
        earlier cycle, else NaN) only where no earlier period already applies; below a
        quarter-hour grain it pools the neighbouring slots (see ``_SEASON_POOL_SECONDS``).
        """
        n = positions.size
        regime = np.full(n, len(self._periods), dtype=np.int64)
        seasons: list[FloatArray] = []
        todo: IntArray | None = None  # the rows no period applies to yet (None: all of them)
        for i, period in enumerate(self._periods):
            if todo is None:  # the first period: every row, no subsets to gather or scatter
                med, valid = self._season(i, positions, period)
                ok = valid >= 2
                regime[ok] = i
                todo = np.flatnonzero(~ok)
            else:
                med = np.full(n, np.nan)
                if todo.size:
                    med[todo], valid = self._season(i, positions[todo], period)
                    ok = valid >= 2
                    regime[todo[ok]] = i
                    todo = todo[~ok]
            seasons.append(med)
        return seasons, regime

    def _season(self, i: int, positions: IntArray, period: int) -> tuple[FloatArray, IntArray]:
        """The seasonal median of period ``i`` at each position (NaN without an earlier cycle;
        pooled with the neighbouring slots below a quarter-hour grain) and the number of the
        slot's own samples."""
        matrix = _lookback(self._shape[i], positions, period, self._geo.cycles)
        med, valid = _row_median_count(matrix)
        if self._geo.pool:
            pooled = _row_median(self._pooled(matrix, i, positions, period))
            lo, hi = np.fmin.reduce(matrix, axis=1), np.fmax.reduce(matrix, axis=1)
            own = (lo - pooled > hi - lo) | (pooled - hi > hi - lo)
            med = np.where(own, med, pooled)
        return med, valid

    def _level(self, positions: IntArray, regime: IntArray) -> FloatArray:
        """Median residual of the regime's model over the level window before each position."""
        level = np.full(positions.size, np.nan)
        start_at = self._level_from - self._base
        short_span = self._geo.level_short
        for i, rows in _regime_rows(regime, len(self._periods) + 1):
            source = self._res[i] if i < len(self._periods) else self._y
            at = positions[rows]
            window, long, gapless = _trailing(source, at, self._geo.level_window, start_at)
            if short_span:
                recent = window[:, -short_span:]
                # compared on the transposed view, whose rows are contiguous (one offset across
                # every window): several times faster than row by row
                later = recent.T
                above = np.add.reduce(later > long, axis=0, dtype=np.int64)
                below = np.add.reduce(later < long, axis=0, dtype=np.int64)
                full = recent.shape[1]
                if gapless and 2 * full >= short_span:
                    # no gap in any window: every recent value counts
                    switch = (above >= _LEVEL_SWITCH * full) | (below >= _LEVEL_SWITCH * full)
                else:
                    valid = _row_count(~np.isnan(recent))
                    switch = (2 * valid >= short_span) & (
                        (above >= _LEVEL_SWITCH * valid) | (below >= _LEVEL_SWITCH * valid)
                    )
                if switch.any():
                    long[switch] = _row_median(recent[switch])
            level[rows] = long
        return level

    def _finalize_shapes(self, previous_last: int, cutoff: int = -1) -> None:
        """Shape samples whose window became complete since position ``previous_last`` (only
        those a look-back from ``cutoff`` on can read)."""
        last = self._n - 1
        for i, period in enumerate(self._periods):
            reach = period - period // 2 - 1  # newest offset a center's window reads
            back = self._geo.cycles * period + self._geo.pool  # the look-back, pooled slots too
            lo = max(previous_last - reach + 1, cutoff - back, 0)
            hi = last - reach
            if hi < lo:
                continue
            if hi == lo:  # one new center (stepping): the scalar twin
                if self._y[lo] == self._y[lo] and (i == 0 or not self._weekly_at(lo)):
                    level_one = _period_level_one(self._y, lo, period, self._shape_sub[i])
                    self._shape[i][lo] = self._y[lo] - level_one
                continue
            if i > 0:
                # a shorter period's samples are only read where the longer one cannot apply yet;
                # the two newest cycles of the longer one present settle it without the look-back,
                # for every center at once when none of them is missing (the usual case)
                longer, shape = self._periods[0], self._shape[0]
                newest_two = shape[lo - 2 * longer : hi + 1 - longer] if lo >= 2 * longer else None
                if newest_two is not None and not np.isnan(newest_two).any():
                    continue
            centers = np.arange(lo, hi + 1, dtype=np.int64)
            gaps = np.isnan(self._y[lo : hi + 1])
            if gaps.any():
                centers = centers[~gaps]
            if i > 0 and centers.size:
                sure = centers >= 2 * longer
                sure[sure] = ~(
                    np.isnan(shape[centers[sure] - longer])
                    | np.isnan(shape[centers[sure] - 2 * longer])
                )
                centers = centers[~sure]
                if centers.size:
                    matrix = _lookback(shape, centers, longer, self._geo.cycles)
                    centers = centers[_row_count(~np.isnan(matrix)) < 2]
            if centers.size:
                level = _period_level(self._y, centers, period, self._shape_sub[i])
                self._shape[i][centers] = self._y[centers] - level

    def _pooled(self, own: FloatArray, i: int, positions: IntArray, period: int) -> FloatArray:
        """``own`` (the look-back of ``positions`` in period ``i``) beside the look-backs of the
        ``pool`` slots either side (NaN where a slot has none); rows without one of their own
        stay without (a period applies only where its slot has history)."""
        parts = [own]
        for d in range(-self._geo.pool, self._geo.pool + 1):
            if d:
                shifted = np.maximum(positions + d, 0)  # before 0: the look-back is all NaN
                parts.append(_lookback(self._shape[i], shifted, period, self._geo.cycles))
        matrix = np.hstack(parts)
        matrix[_row_count(~np.isnan(own)) == 0] = np.nan
        return matrix

    def _pooled_one(self, i: int, p: int, period: int) -> list[float]:
        """Scalar twin of ``_pooled``: the neighbours' shape samples of position ``p``."""
        out: list[float] = []
        for d in range(-self._geo.pool, self._geo.pool + 1):
            k = min(self._geo.cycles, (p + d) // period) if p + d >= 0 else 0
            if d and k > 0:
                out += self._shape[i][p + d - k * period : p + d : period].tolist()
        return out

    def _weekly_at(self, p: int) -> bool:
        """Whether the first (longest) period has two earlier cycles of shape at ``p``."""
        period = self._periods[0]
        k = min(self._geo.cycles, p // period)
        if k < 2:
            return False
        vals = self._shape[0][p - k * period : p : period].tolist()
        return sum(1 for x in vals if x == x) >= 2

    def _fill_residuals(self, positions: IntArray, previous_last: int, lazy: bool = False) -> None:
        """Compute the residuals of newly learned ``positions`` (increasing).

        ``lazy`` (warm): only what a later bucket can still read, i.e. residuals within the
        spread window and shape samples within the seasonal look-back of the newest bucket.
        """
        geo = self._geo
        cutoff = -1
        e_cut = -1
        if lazy:
            # the spread and the window scales read the spread window before their refresh
            e_cut = self._n - (geo.spread_window + max(geo.spread_refresh, _scale_refresh(geo)) + 1)
            cutoff = e_cut - geo.level_window
            positions = positions[positions >= cutoff]
        self._finalize_shapes(previous_last, cutoff)  # first: the look-backs read them
        if not positions.size:
            return
        y = self._y[positions]
        seasons, regime = self._components(positions)
        for i, med in enumerate(seasons):
            self._res[i][positions] = y - med
        keep = int(np.searchsorted(positions, e_cut))  # positions increase: a slice, no copy
        positions, y, regime = positions[keep:], y[keep:], regime[keep:]
        season = np.zeros(positions.size)
        for i, rows in _regime_rows(regime, len(seasons) + 1):
            if i < len(seasons):
                season[rows] = seasons[i][keep:][rows]
        self._e[positions] = y - season - self._level(positions, regime)

    def _scalar_components(self, p: int) -> tuple[list[float], int, float]:
        """Scalar twin of ``_components`` + ``_level`` for one position (same numbers, faster).

        Returns the seasonal median per period (NaN before one cycle), the regime and the level.
        """
        geo = self._geo
        seasons: list[float] = []
        regime = len(self._periods)
        for i, period in enumerate(self._periods):
            k = min(geo.cycles, p // period)
            vals = self._shape[i][p - k * period : p : period].tolist() if k else []
            vals = sorted(x for x in vals if x == x)
            own = len(vals)
            med = _sorted_median(vals)
            if geo.pool and own:
                lo, hi = vals[0], vals[-1]
                pooled = sorted(vals + [x for x in self._pooled_one(i, p, period) if x == x])
                pooled_med = _sorted_median(pooled)
                if not (lo - pooled_med > hi - lo or pooled_med - hi > hi - lo):
                    med = pooled_med
            seasons.append(med)
            if own >= 2:
                regime = i
                seasons.extend([math.nan] * (len(self._periods) - i - 1))
                break
        source = self._res[regime] if regime < len(self._periods) else self._y
        start = max(self._level_from - self._base, 0)
        # a few dozen values: plain Python beats numpy's per-call overhead
        window = source[max(p - geo.level_window, start) : p].tolist()
        level = _sorted_median(sorted([x for x in window if x == x]))
        if geo.level_short and level == level:
            recent = source[max(p - geo.level_short, start) : p].tolist()
            recent = [x for x in recent if x == x]
            valid = len(recent)
            if 2 * valid >= geo.level_short:
                above = sum(1 for x in recent if x > level)
                below = sum(1 for x in recent if x < level)
                if above >= _LEVEL_SWITCH * valid or below >= _LEVEL_SWITCH * valid:
                    level = _sorted_median(sorted(recent))
        return seasons, regime, level

    def _predict(self, p: int) -> tuple[float, float] | None:
        """(mu, sigma) in model space for position ``p``, or None without enough history."""
        self._predicted = None
        if self._learned < self._geo.min_history:
            return None
        seasons, regime, level = self._scalar_components(p)
        self._predicted = (p, seasons, regime, level)
        season = seasons[regime] if regime < len(seasons) else 0.0
        mu = season + level
        if math.isnan(mu):
            return None
        geo = self._geo
        # the global spread is refreshed every `spread_refresh` buckets (a pure function of the
        # learned residuals before the refresh point, so warm() and step() agree)
        q = p - (p + self._base) % geo.spread_refresh
        key = q + self._base
        if self._sigma_cache[0] != key:
            window = self._e[max(q - geo.spread_window, 0) : q]
            self._sigma_cache = (key, _spread(window))
        sigma = self._sigma_cache[1]
        if math.isnan(sigma):
            return None
        if geo.slot_spread_period:
            period = geo.slot_spread_period
            nb = _SLOT_NEIGHBOURS if geo.day else 0
            parts = []
            for d in range(-nb, nb + 1):
                k = min(geo.slot_spread_cycles, (p + d) // period)
                if k > 0:
                    parts.append(self._e[p + d - k * period : p + d : period])
            slot = np.concatenate(parts) if parts else self._e[0:0]
            slot = slot[~np.isnan(slot)]
            if slot.size >= 3:
                s_slot = _mad_sigma(slot)
                n0 = _SLOT_PRIOR
                sigma = math.sqrt((slot.size * s_slot**2 + n0 * sigma**2) / (slot.size + n0))
        floor = 1e-9 * max(1.0, abs(mu))
        if self._log and self._integer:
            lam = max(math.expm1(mu), 0.0)
            floor = max(floor, math.sqrt(lam + 0.25) / (1.0 + lam))
        return mu, max(sigma, floor)

    def _learn_one(self, p: int, value: float) -> None:
        """Scalar twin of ``_learn_block`` for one new position."""
        y = float(np.log1p(value)) if self._log else value  # as _transform computes it
        self._raw[p] = value
        self._y[p] = y
        previous_last = self._n - 1
        self._n = p + 1
        self._learned += 1
        # first, as in _fill_residuals: after a gap, p's arrival completes shape samples its own
        # seasonal look-back reads
        self._finalize_shapes(previous_last)
        predicted, self._predicted = self._predicted, None
        if predicted is not None and predicted[0] == p and previous_last == p - 1:
            # right after the previous bucket, the shapes just completed (p minus less than a
            # period) are not in p's look-back: the components _predict computed still hold
            _, seasons, regime, level = predicted
        else:
            seasons, regime, level = self._scalar_components(p)
        for i, med in enumerate(seasons):
            self._res[i][p] = y - med
        season = seasons[regime] if regime < len(seasons) else 0.0
        self._e[p] = y - season - level

    def _judge(
        self,
        ts: pd.Timestamp,
        value: float,
        prediction: tuple[float, float] | None,
        position: int | None = None,
        quiet: bool = False,
    ) -> Verdict:
        if prediction is None:
            return Verdict(ts, value, None, None, None, 0.0, False)
        mu, sigma = prediction
        spec = self.spec
        level = spec.sensitivity * (spec.quiet_factor if quiet else 1.0)
        expected = self._inverse(mu)
        half = level * sigma
        lower = self._inverse(mu - half)
        upper = self._inverse(mu + half)
        floor = max(spec.min_relative_change * abs(expected), spec.min_absolute_change)
        lower = min(lower, expected - floor)
        upper = max(upper, expected + floor)
        y = math.log1p(max(value, 0.0)) if self._log else value
        score = (y - mu) / sigma
        up = value > upper and spec.direction in ("both", "up")
        down = value < lower and spec.direction in ("both", "down")
        sustained = 0.0
        span = 0
        if position is not None and (up or down):
            span = max(self._sustained(position, y - mu, mu, sigma, expected, floor, level)[1], 1)
            if abs(score) >= _EXTREME * level:
                span = max(span, 2)
        elif position is not None and abs(score) >= _SUSTAINED_POINT:
            sustained, span = self._sustained(position, y - mu, mu, sigma, expected, floor, level)
            span = max(span, 1) if sustained else 0
        anomalous = bool(up or down or sustained)
        return Verdict(ts, value, expected, lower, upper, float(score), anomalous, sustained, span)

    def _window_scale(self, p: int, w: int) -> float | None:
        """The robust spread of w-bucket sums of past residuals, in units of the single-bucket
        spread (sqrt(w) for independent noise, more when residuals are correlated), from the
        spread window; refreshed once per day (a pure function of the history), computed only
        when asked. None while the history is too short."""
        geo = self._geo
        refresh = _scale_refresh(geo)
        q = p - (p + self._base) % refresh
        key = q + self._base
        if self._scale_cache[0] != key:
            window = self._e[max(q - geo.spread_window, 0) : q]
            gap = np.isnan(window)
            csum = np.concatenate(([0.0], np.cumsum(np.where(gap, 0.0, window))))
            cgap = np.concatenate(([0], np.cumsum(gap)))
            self._scale_cache = (key, (csum, cgap, _robust_sigma(window)), {})
        _, (csum, cgap, single), scales = self._scale_cache
        if w not in scales:
            scale = None
            n = csum.size - 1
            if single > 0 and n >= 4 * w:
                ok = (cgap[w:] - cgap[:-w]) == 0
                sums = (csum[w:] - csum[:-w])[ok]
                if sums.size >= 2 * w:
                    # never below the independent-noise value: short histories underestimate
                    scale = max(_robust_sigma(sums) / single, math.sqrt(w))
            scales[w] = scale
        return scales[w]

    def _sustained(
        self,
        p: int,
        resid: float,
        mu: float,
        sigma: float,
        expected: float,
        floor: float,
        level: float,
    ) -> tuple[float, int]:
        """Windowed mean deviations beyond ``level`` with this bucket's sign (this bucket's
        residual capped at ``level``): the strongest (0.0 if none) and the length of the longest
        such window whose earlier buckets average ``_SPAN_EARLIER`` of the band (0 if none)."""
        spec = self.spec
        spans = _SUSTAINED_DAILY if self._geo.day == 0 else _SUSTAINED_SUBDAILY
        longest = max(spans)
        past = self._e[max(p - longest + 1, 0) : p][::-1]  # newest first
        limit = level * sigma
        # an outlier counts as at the band edge: a window passes on what the buckets before it add
        own = min(max(resid, -limit), limit)
        total = own
        earlier_limit = _SPAN_EARLIER * limit
        best = 0.0
        widest = 0
        count = 1
        for x in past.tolist():
            if x != x or abs(x) > limit:
                break  # a gap or an outlier (already judged on its own) ends the run
            total += x
            count += 1
            if count not in spans or (total > 0) != (resid > 0):
                continue
            # the scale is at least sqrt(w): skip the spans that cannot pass before computing it
            if abs(total) / (sigma * math.sqrt(count)) <= level:
                continue
            scale = self._window_scale(p, count)
            if scale is None:
                continue
            z = total / (sigma * scale)
            if abs(z) <= level:
                continue
            if abs(self._inverse(mu + total / count) - expected) <= floor:
                continue
            if (z > 0 and spec.direction == "down") or (z < 0 and spec.direction == "up"):
                continue
            if abs(total - own) >= (count - 1) * earlier_limit:
                widest = count
            if abs(z) > abs(best):
                best = z
        return best, widest


_UTC = pd.Timestamp(0, tz="UTC").tzinfo
_NAT = np.iinfo(np.int64).min  # NaT in an index's int64 stamps
_UNIT_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
_UNIT_NANOS = {unit: 10**9 // per for unit, per in _UNIT_PER_SECOND.items()}


def _as_utc(bucket: pd.Timestamp) -> pd.Timestamp:
    if type(bucket) is pd.Timestamp and bucket.tzinfo is _UTC:
        return bucket  # what tz_convert("UTC") would build anew (Timestamps are immutable)
    ts = pd.Timestamp(bucket)
    if ts.tzinfo is None:
        return ts.tz_localize("UTC")
    return ts.tz_convert("UTC")


def _as_utc_index(buckets: pd.DatetimeIndex) -> pd.DatetimeIndex:
    if isinstance(buckets, pd.DatetimeIndex) and str(buckets.tz) == "UTC":
        return buckets  # already what we need: no copy (and its cached monotonicity is kept)
    idx = pd.DatetimeIndex(buckets)
    if idx.tz is None:
        return idx.tz_localize("UTC")
    return idx.tz_convert("UTC")
