"""Buckets as local indices: a bucket's position on the business time zone's wall clock, so a
seasonal slot (hour of day, day of week) follows local time across DST changes."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

_UTC = pd.Timestamp(0, tz="UTC").tzinfo
_UNIT_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}


def as_utc(bucket: object) -> pd.Timestamp:
    """A bucket start as a tz-aware UTC Timestamp (naive ones are taken as UTC)."""
    if type(bucket) is pd.Timestamp and bucket.tzinfo is _UTC:
        return bucket  # what tz_convert("UTC") would build anew (Timestamps are immutable)
    ts = pd.Timestamp(bucket)  # type: ignore[arg-type]
    if ts.tzinfo is None:
        return ts.tz_localize("UTC")
    return ts.tz_convert("UTC")


def as_utc_index(buckets: object) -> pd.DatetimeIndex:
    if isinstance(buckets, pd.DatetimeIndex) and str(buckets.tz) == "UTC":
        return buckets  # no copy (and its cached monotonicity is kept)
    index = pd.DatetimeIndex(buckets)  # type: ignore[arg-type]
    if index.tz is None:
        return index.tz_localize("UTC")
    return index.tz_convert("UTC")


class LocalClock:
    """Local bucket indices of one grain in one time zone."""

    def __init__(self, bucket_seconds: int, timezone: str) -> None:
        self.bucket_seconds = bucket_seconds
        self.timezone = timezone
        self._utc = timezone.upper() == "UTC"

    def indices(self, utc: pd.DatetimeIndex) -> npt.NDArray[np.int64]:
        """The local index of each UTC bucket start (a repeated local hour repeats its index)."""
        local = utc if self._utc else utc.tz_convert(self.timezone).tz_localize(None)
        per = _UNIT_PER_SECOND[str(local.unit)]
        b = self.bucket_seconds
        # (seconds + b // 2) // b of the floored whole seconds: floor divisions compose
        return np.asarray((local.asi8 + b // 2 * per) // (b * per), dtype=np.int64)

    def index(self, ts: pd.Timestamp) -> int:
        """``indices`` of one bucket, without building an index."""
        seconds = int(ts.asm8.astype("datetime64[s]").astype(np.int64))  # any unit, no overflow
        if not self._utc:
            offset = ts.tz_convert(self.timezone).utcoffset()
            seconds += int(offset.total_seconds()) if offset is not None else 0
        b = self.bucket_seconds
        return int((seconds + b // 2) // b)
