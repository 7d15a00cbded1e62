"""Periods, windows and buffer sizes of a spec, in buckets: derived once, shared by every
detector of that spec."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from monitor.detection.rings import ring_size
from monitor.detection.spec import DetectorSpec

DAY = 86_400
WEEK = 7 * DAY
# level: the median residual over this many days of sub-daily buckets (a day-long incident or a
# holiday does not move it) or this many daily buckets; and the shorter window that takes over
# once the level has shifted
LEVEL_DAYS = 3
LEVEL_DAILY = 10
LEVEL_SHORT_DAYS = 1.5
# below a quarter-hour grain a seasonal slot pools the slots this many seconds either side
SEASON_POOL_SECONDS = 600
# windows of the sustained test, in buckets
SUSTAINED_SUBDAILY = (2, 3, 4, 6, 12, 24)
SUSTAINED_DAILY = (2, 3, 5, 7)
# the scale is chosen with at least this many buckets of out-of-sample residuals
SCALE_MIN_SAMPLES = 48
# days of residuals a daily series keeps for the effects of the date: two years, and a margin
DATED_HISTORY = 2 * 366 + 8


@dataclass(frozen=True)
class Geometry:
    """Everything a spec fixes about the shape of the computation, in buckets."""

    week: int
    """Buckets per week (0: the grain has no weekly slot)."""
    day: int
    """Buckets per day (0: daily grain and coarser have no time-of-day slot)."""
    cycles: int
    pool: int
    """Seasonal slots pooled either side of a slot (0: none)."""
    level_window: int
    level_short: int
    """Window of the level's switch after a shift (0: none)."""
    spread_window: int
    """Out-of-sample residuals the calibration and the choices read."""
    refresh: int
    """Calibration and forecaster choice are refreshed every this many buckets (a day)."""
    min_history: int
    scale_every: int
    """The scale is chosen again after at least this long (a week), at most four times it."""
    quiet_span: int
    spans: tuple[int, ...]
    long_ring: int
    """Buffer of raw values and weekly shapes: the seasonal look-back, and what a rebuild
    replays."""
    short_ring: int
    """Buffer of everything else: the calibration window and the shorter look-backs."""
    dated: int
    """1 at daily grain: effects of the date beyond the week (monitor.detection.dates) are
    learned, and the long buffer holds two years and more."""

    @property
    def periods(self) -> tuple[int, int]:
        """The seasonal periods, longest first (0 where none): (week, day) below a daily grain,
        (week, 0) at daily grain."""
        first = self.week or self.day
        second = self.day if self.week and self.day else 0
        return first, second

    def as_array(self) -> npt.NDArray[np.int64]:
        """The fields the kernel reads, in the order of :data:`KERNEL_FIELDS`."""
        return np.array([getattr(self, name) for name in KERNEL_FIELDS], dtype=np.int64)


KERNEL_FIELDS = (
    "week", "day", "cycles", "pool", "level_window", "level_short", "spread_window", "refresh",
    "min_history", "scale_every", "quiet_span", "long_ring", "short_ring", "dated",
)  # fmt: skip
# the positions of those fields in Geometry.as_array(), for the kernels
(
    G_WEEK, G_DAY, G_CYCLES, G_POOL, G_LEVEL, G_LEVEL_SHORT, G_SPREAD, G_REFRESH, G_MIN_HISTORY,
    G_SCALE_EVERY, G_QUIET_SPAN, G_LONG_RING, G_SHORT_RING, G_DATED,
) = range(len(KERNEL_FIELDS))  # fmt: skip


@functools.lru_cache(maxsize=256)  # detectors of one spec share it (both are frozen)
def geometry(spec: DetectorSpec) -> Geometry:
    b = spec.bucket_seconds
    per_day = DAY // b if (b <= DAY and DAY % b == 0) else 0
    week = 7 * per_day if per_day else (WEEK // b if (b <= WEEK and WEEK % b == 0) else 0)
    if week < 2:
        week = 0
    day = per_day if per_day >= 2 else 0
    level_window = LEVEL_DAYS * day if day else (LEVEL_DAILY if b >= DAY else 24)
    spread_window = max(2 * week, 56) if week else max(level_window * 8, 56)
    refresh = day or 7
    min_history = spec.min_history if spec.min_history is not None else (day or 14)
    pool = SEASON_POOL_SECONDS // b if day else 0
    spans = SUSTAINED_SUBDAILY if day else SUSTAINED_DAILY
    longest = max(week, day, 1)
    short = max(spread_window + refresh, spec.season_cycles * (day or 1) + pool, level_window,
                longest, max(spans)) + 2  # fmt: skip
    dated = 1 if b == DAY else 0
    long = max(spec.season_cycles * longest + pool, short, DATED_HISTORY * dated) + 1
    return Geometry(
        week=week,
        day=day,
        cycles=spec.season_cycles,
        pool=pool,
        level_window=level_window,
        level_short=int(day * LEVEL_SHORT_DAYS) if day else 0,
        spread_window=spread_window,
        refresh=refresh,
        min_history=min_history,
        scale_every=week or 7,
        quiet_span=DAY // b,
        spans=spans,
        long_ring=ring_size(long),
        short_ring=ring_size(short),
        dated=dated,
    )
