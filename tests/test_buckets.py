"""Business-time buckets across daylight-saving changes."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd

from monitor.buckets import bucket_start, grid, last_complete, next_bucket

NY = "America/New_York"


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def test_the_repeated_hour_in_autumn_is_two_buckets() -> None:
    # 2026-11-01 01:00-02:00 happens twice in New York: 05:00 and 06:00 UTC
    assert bucket_start(utc("2026-11-01 05:30"), "hour", NY) == utc("2026-11-01 05:00")
    assert bucket_start(utc("2026-11-01 06:30"), "hour", NY) == utc("2026-11-01 06:00")


def test_days_start_at_local_midnight_and_can_be_23_or_25_hours() -> None:
    assert bucket_start(utc("2026-11-01 15:00"), "day", NY) == utc("2026-11-01 04:00")
    assert next_bucket(utc("2026-11-01 04:00"), "day", NY) == utc("2026-11-02 05:00")  # 25 h
    assert next_bucket(utc("2026-03-08 05:00"), "day", NY) == utc("2026-03-09 04:00")  # 23 h
    days = grid(utc("2026-10-31 04:00"), utc("2026-11-02 05:00"), "day", NY)
    assert list(days) == [utc("2026-10-31 04:00"), utc("2026-11-01 04:00"), utc("2026-11-02 05:00")]


def test_half_hour_zones_cut_hours_on_the_half_hour() -> None:
    assert bucket_start(utc("2026-11-01 05:10"), "hour", "Asia/Kolkata") == utc("2026-11-01 04:30")


def test_last_complete_bucket_waits_for_settle() -> None:
    now = utc("2026-11-26 15:20")
    assert last_complete(now, "hour", NY, timedelta(minutes=15)) == utc("2026-11-26 14:00")
    assert last_complete(now, "hour", NY, timedelta(minutes=30)) == utc("2026-11-26 13:00")
    assert last_complete(now, "day", NY, timedelta(hours=2)) == utc("2026-11-25 05:00")
