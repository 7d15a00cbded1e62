"""How late is unusually late: the age of the newest row against the table's own load rhythm.

Pure. The history is when rows arrived (a minute's newest row, exact); the gaps say how
long the table normally goes without new rows. The open gap (now minus the newest load) is
scored against the closed ones, so it never trains its own baseline.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from monitor.alerts.state import AlertPolicy, AlertState, advance
from monitor.backtest import OUTPUT_COLUMNS, Episode, Replay, alert_score
from monitor.buckets import to_utc
from monitor.detection import DetectorSpec, Verdict
from monitor.queries import FRESHNESS_HISTORY_LIMIT

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

    ``loaded`` holds tz-aware load times (see ``freshness_query``). Without ``max_age`` and with
    fewer than five gaps in the history there is no baseline yet (``expected`` is None): the age
    is reported, not judged. The verdict's bucket is ``now``: every run is judged.
    """
    if len(loaded) == 0:
        return None
    moment = to_utc(now)
    epoch = pd.Timestamp(0, tz="UTC")
    stamps = np.unique((loaded.tz_convert("UTC") - epoch).total_seconds().to_numpy())
    age = max(0.0, moment.timestamp() - float(stamps[-1]))
    bucket = moment  # every run is judged, however short the schedule
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


def replay_ages(
    loaded: pd.DatetimeIndex,
    moments: pd.DatetimeIndex,
    lookback: timedelta,
    sensitivity: float,
    max_age: timedelta | None,
    policy: AlertPolicy,
) -> Replay:
    """The data age judged at each of ``moments`` as a freshness check run then would have:
    against the load times of the lookback before it (the newest ``FRESHNESS_HISTORY_LIMIT``;
    the newest load ever when none is that recent), with the limit learned from them, through
    the alert state machine. ``loaded``: every load minute (tz-aware), in any order."""
    stamps = loaded.tz_convert("UTC").unique().sort_values()
    spec = DetectorSpec(60, direction="up")  # ages are too old, never too young
    state = AlertState()
    rows: list[dict[str, object]] = []
    episodes: list[Episode] = []
    for moment in moments.tz_convert("UTC"):
        newest = int(stamps.searchsorted(moment, side="right"))
        oldest = max(int(stamps.searchsorted(moment - lookback)), newest - FRESHNESS_HISTORY_LIMIT)
        window = stamps[oldest:newest] if oldest < newest else stamps[max(newest - 1, 0) : newest]
        verdict = assess(window, moment.to_pydatetime(), sensitivity, max_age)
        if verdict is None:
            continue
        state, transition = advance(state, verdict, policy)
        opened = transition is not None and transition.kind == "opened"
        if transition is not None and opened:
            episodes.append(Episode(pd.Timestamp(transition.since), verdict.bucket))
        elif transition is not None and episodes:
            episodes[-1] = Episode(episodes[-1].since, episodes[-1].opened, verdict.bucket)
        rows.append(
            {
                "bucket": verdict.bucket,
                "value": verdict.value,
                "expected": verdict.expected,
                "lower": verdict.lower,
                "upper": verdict.upper,
                "z": verdict.score,
                "sustained": 0.0,
                "score": alert_score(verdict, spec, opened=opened),
                "anomalous": verdict.anomalous,
                "firing": state.firing,
                "alert": int(opened),
            }
        )
    buckets = pd.DataFrame(rows, columns=list(_REPLAY_COLUMNS)).astype(
        {c: float for c in ("value", "expected", "lower", "upper", "z", "sustained", "score")}
    )
    scored = buckets.rename(columns={"bucket": "timestamp"})[OUTPUT_COLUMNS]
    step = int((moments[1] - moments[0]).total_seconds()) if len(moments) > 1 else 60
    return Replay(rows=scored, buckets=buckets, episodes=episodes, bucket_seconds=step)


_REPLAY_COLUMNS = ("bucket", "value", "expected", "lower", "upper", "z", "sustained", "score",
                   "anomalous", "firing", "alert")  # fmt: skip
