"""Freshness: how late is unusually late, learned from the table's own load rhythm."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from monitor.freshness import assess

NOW = datetime(2026, 11, 26, 15, 20, tzinfo=UTC)


def loads(every: timedelta, last: datetime, count: int = 200) -> pd.DatetimeIndex:
    return pd.DatetimeIndex([last - i * every for i in range(count)]).tz_convert("UTC")


def test_a_table_on_its_rhythm_is_fresh() -> None:
    verdict = assess(loads(timedelta(minutes=15), NOW - timedelta(minutes=12)), NOW, sensitivity=4)
    assert verdict is not None
    assert verdict.value == 12 * 60
    assert verdict.expected == 15 * 60
    assert not verdict.anomalous


def test_a_table_that_stopped_loading_is_late() -> None:
    verdict = assess(loads(timedelta(minutes=15), NOW - timedelta(hours=2)), NOW, sensitivity=4)
    assert verdict is not None and verdict.anomalous
    assert verdict.upper is not None and verdict.upper < 2 * 3600
    assert verdict.score > 4


def test_a_daily_load_is_not_late_after_twenty_hours() -> None:
    verdict = assess(
        loads(timedelta(days=1), NOW - timedelta(hours=20), count=30), NOW, sensitivity=4
    )
    assert verdict is not None and not verdict.anomalous


def test_max_age_is_a_hard_limit() -> None:
    verdict = assess(
        loads(timedelta(minutes=15), NOW - timedelta(minutes=40)),
        NOW,
        4,
        max_age=timedelta(minutes=30),
    )
    assert verdict is not None and verdict.anomalous and verdict.upper == 1800


def test_too_little_history_reports_age_without_judging() -> None:
    verdict = assess(loads(timedelta(hours=1), NOW - timedelta(hours=9), count=3), NOW, 4)
    assert verdict is not None
    assert (verdict.value, verdict.expected, verdict.anomalous) == (9 * 3600, None, False)
    assert assess(pd.DatetimeIndex([], tz="UTC"), NOW, 4) is None


def seconds(value: object) -> float:
    """An age from an age-history row (its cells are typed ``object``, as a chart's rows are)."""
    assert isinstance(value, float), value
    return value


def test_the_age_history_shows_when_the_table_went_quiet() -> None:
    from monitor.freshness import age_history

    history = loads(timedelta(minutes=15), NOW - timedelta(hours=2))
    verdict = assess(history, NOW, sensitivity=4)
    assert verdict is not None and verdict.upper is not None
    rows = age_history(history, NOW, verdict, points=12, step=timedelta(minutes=15))
    assert len(rows) == 12 and rows[-1][0] == NOW.isoformat()
    ages = [seconds(r[1]) for r in rows]
    assert ages[-1] == 2 * 3600 and ages[0] < 15 * 60  # 2h45m ago loads were still arriving
    assert [r[5] for r in rows] == [a > verdict.upper for a in ages]
    assert any(r[5] for r in rows) and not all(r[5] for r in rows)
