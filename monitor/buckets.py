"""Time buckets cut in a business time zone. Pure and DST-safe.

Buckets are identified by their start as a tz-aware UTC timestamp. Hours are cut on the UTC
instant's local hour (the repeated hour when clocks fall back stays two buckets); days start at
local midnight, so a day can be 23 or 25 hours long.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd

from monitor.dialects import Grain

_FREQ = {"hour": "h", "day": "D"}


def to_utc(moment: datetime | pd.Timestamp) -> pd.Timestamp:
    """A tz-aware UTC timestamp; naive input is read as UTC."""
    ts = pd.Timestamp(moment)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def bucket_start(moment: datetime | pd.Timestamp, grain: Grain, tz: str) -> pd.Timestamp:
    """Start (UTC) of the bucket that holds ``moment``."""
    local = to_utc(moment).tz_convert(tz)
    if grain == "hour":
        start = local.floor("h", ambiguous=local.dst() != timedelta(0), nonexistent="shift_forward")
    else:
        start = local.normalize()
    return start.tz_convert("UTC")


def next_bucket(start: pd.Timestamp, grain: Grain, tz: str) -> pd.Timestamp:
    """Start of the bucket after the one starting at ``start``."""
    if grain == "hour":
        return start + pd.Timedelta(hours=1)
    local = start.tz_convert(tz)
    # 26 hours always lands inside the next local day, whatever its length
    return bucket_start(local + pd.Timedelta(hours=26), grain, tz)


def last_complete(now: datetime, grain: Grain, tz: str, settle: timedelta) -> pd.Timestamp:
    """Start of the newest bucket that ended at least ``settle`` before ``now``."""
    current = bucket_start(to_utc(now) - settle, grain, tz)
    return bucket_start(current - pd.Timedelta(seconds=1), grain, tz)


def grid(first: pd.Timestamp, last: pd.Timestamp, grain: Grain, tz: str) -> pd.DatetimeIndex:
    """Every bucket start from ``first`` to ``last`` inclusive."""
    if first > last:
        return pd.DatetimeIndex([], tz="UTC")
    if grain == "hour":
        return pd.date_range(first, last, freq="h")
    local = pd.date_range(
        first.tz_convert(tz).normalize(), last.tz_convert(tz).normalize(), freq=_FREQ[grain]
    )
    return local.tz_convert("UTC")
