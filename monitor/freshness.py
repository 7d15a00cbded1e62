"""How late is unusually late: the age of the newest row against the table's own load rhythm.

Pure. The history is the set of minutes in which rows arrived; the gaps between them say how
long the table normally goes without new rows. The open gap (now minus the newest load) is
scored against the closed ones, so it never trains its own baseline.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from monitor.buckets import to_utc
from monitor.detect import Verdict

MIN_GAPS = 5
MIN_SPREAD_SECONDS = 60.0
TAIL_FACTOR = 1.5  # an age 50% past the longest normal gap (99th percentile) is late


def assess(
    loaded: pd.DatetimeIndex,
    now: datetime,
    sensitivity: float,
    max_age: timedelta | None = None,
) -> Verdict | None:
    """Score the current data age; None when the table has no rows at all.

    ``loaded`` holds tz-aware load minutes. Without ``max_age`` and with fewer than five gaps in
    the history there is no baseline yet (``expected`` is None): the age is reported, not judged.
    """
    if len(loaded) == 0:
        return None
    moment = to_utc(now)
    epoch = pd.Timestamp(0, tz="UTC")
    stamps = np.unique((loaded.tz_convert("UTC") - epoch).total_seconds().to_numpy())
    age = max(0.0, moment.timestamp() - float(stamps[-1]))
    bucket = moment.floor("min")
    gaps = np.diff(stamps)
    gaps = gaps[gaps > 0]
    limit = max_age.total_seconds() if max_age is not None else None
    if len(gaps) < MIN_GAPS:
        if limit is None:
            return Verdict(bucket, age, None, None, None, 0.0, False)
        return Verdict(bucket, age, limit / 2, 0.0, limit, 0.0, age > limit)
    typical = float(np.median(gaps))
    spread = max(
        1.4826 * float(np.median(np.abs(gaps - typical))), 0.25 * typical, MIN_SPREAD_SECONDS
    )
    upper = (
        limit
        if limit is not None
        else max(TAIL_FACTOR * float(np.quantile(gaps, 0.99)), typical + sensitivity * spread)
    )
    score = (age - typical) / spread
    return Verdict(bucket, age, typical, 0.0, upper, score, age > upper)


def age_history(
    loaded: pd.DatetimeIndex, now: datetime, verdict: Verdict, points: int, step: timedelta
) -> list[list[object]]:
    """The data age at each of the last ``points`` steps before ``now``, against the current
    band: the chart in a freshness alert's thread. Rows as in ``Notification.history``."""
    if verdict.expected is None or verdict.upper is None or len(loaded) == 0:
        return []
    epoch = pd.Timestamp(0, tz="UTC")
    stamps = np.unique((loaded.tz_convert("UTC") - epoch).total_seconds().to_numpy())
    end = to_utc(now)
    rows: list[list[object]] = []
    for k in range(points - 1, -1, -1):
        moment = end - k * step
        at = (moment - epoch).total_seconds()
        seen = stamps[stamps <= at]
        if seen.size == 0:
            continue
        age = at - float(seen[-1])
        rows.append(
            [moment.isoformat(), age, verdict.expected, 0.0, verdict.upper, age > verdict.upper]
        )
    return rows
