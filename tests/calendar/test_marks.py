"""Specification of the marks (monitor.calendar.marks) on plain generated data: what the
detector is told about holidays, events, exclusions and the days before ``learn_from``."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import numpy as np
import pandas as pd
import pytest

from monitor.calendar.days import Calendar, Event, Exclusion
from monitor.calendar.marks import COMPARE_WIDEN, DEFAULT_WIDEN, Marker
from monitor.detection import REGULAR, Mark

DAY = 86400
TZ = "America/New_York"
US = Calendar(timezone=TZ, country="US")


def daily(start: str, days: int, seed: int = 1, growth: float = 0.0) -> pd.Series:
    """A retail-like daily series: weekly shape, growth per year, a little noise; Thanksgiving
    at 60% of a normal day."""
    index = pd.date_range(start, periods=days, freq="D", tz=TZ).tz_convert("UTC")
    rng = np.random.default_rng(seed)
    weekday = np.array([1.0, 0.95, 0.95, 1.0, 1.2, 1.3, 0.8])[index.tz_convert(TZ).day_of_week]
    level = 1000.0 * (1 + growth) ** (np.arange(days) / 365)
    values = level * weekday * rng.normal(1, 0.03, days)
    series = pd.Series(values, index=index)
    for day in ("2024-11-28", "2025-11-27"):
        at = pd.Timestamp(day, tz=TZ).tz_convert("UTC")
        if at in series.index:
            series.at[at] = series[at] * 0.6
    return series


def marks_of(calendar: Calendar, series: pd.Series) -> dict[str, Mark]:
    marks = Marker(calendar, DAY, sensitivity=4.0).marks(
        pd.DatetimeIndex(series.index), series.to_numpy()
    )
    local = pd.DatetimeIndex(series.index).tz_convert(TZ)
    return {d.date().isoformat(): m for d, m in zip(local, marks, strict=True)}


def test_a_regular_day_is_a_regular_bucket_and_a_holiday_is_never_learned() -> None:
    marks = marks_of(US, daily("2025-10-01", 60))
    assert marks["2025-11-26"] == REGULAR
    assert not marks["2025-11-27"].learn and marks["2025-11-27"].judge


def test_a_holiday_is_compared_with_the_same_holiday_last_year_scaled_by_the_level() -> None:
    series = daily("2024-09-01", 460, growth=0.2)
    marks = marks_of(US, series)
    thanksgiving = marks["2025-11-27"]
    last = series[pd.Timestamp("2024-11-28", tz=TZ).tz_convert("UTC")]
    actual = series[pd.Timestamp("2025-11-27", tz=TZ).tz_convert("UTC")]
    assert thanksgiving.expected is not None
    # last year's Thanksgiving, grown by the level's 20% a year: close to this year's
    assert thanksgiving.expected == pytest.approx(last * 1.2, rel=0.06)
    assert thanksgiving.expected == pytest.approx(actual, rel=0.08)
    assert thanksgiving.widen == COMPARE_WIDEN


def test_without_an_earlier_occurrence_a_holiday_gets_a_wider_band() -> None:
    marks = marks_of(US, daily("2025-10-01", 60))
    assert marks["2025-11-27"] == Mark(learn=False, widen=DEFAULT_WIDEN)


def test_widen_never_compares_and_mute_never_judges() -> None:
    series = daily("2024-09-01", 460)
    widened = marks_of(replace(US, on_holiday="widen"), series)["2025-11-27"]
    assert widened.expected is None and widened.widen >= 1 and not widened.learn
    muted = marks_of(replace(US, on_holiday="mute"), series)["2025-11-27"]
    assert muted == Mark(learn=False, judge=False)


def test_a_configured_widening_is_used_as_given() -> None:
    marks = marks_of(replace(US, on_holiday="widen", widen=2.5), daily("2025-10-01", 60))
    assert marks["2025-11-27"].widen == 2.5


def test_the_widening_is_learned_from_the_earlier_holidays_of_the_history() -> None:
    # a year of holidays, each at 60% of a normal day: the band must let such a day through
    series = daily("2024-06-01", 550)
    for day, _ in US.holidays_in(date(2024, 6, 1), date(2025, 12, 31)):
        at = pd.Timestamp(day, tz=TZ).tz_convert("UTC")
        if at in series.index:
            series.at[at] = series[at - pd.Timedelta(days=7)] * 0.6
    marks = marks_of(replace(US, on_holiday="widen"), series)
    learned = marks["2025-11-27"].widen
    assert learned != DEFAULT_WIDEN
    # |log(0.6)| = 0.51 against a band of 4 x the regular spread (about 0.03 x 1.4): wider
    assert 2.0 < learned < 8.0


def test_an_event_with_an_expected_effect_is_judged_against_the_regular_forecast_times_it() -> None:
    sale = Event("Spring campaign", date(2025, 11, 5), date(2025, 11, 6), effect=0.5)
    series = daily("2025-09-01", 80)
    marks = marks_of(Calendar(timezone=TZ, events=(sale,)), series)
    same_weekday = [  # local days: the clocks went back on 2025-11-02
        series[pd.Timestamp(day, tz=TZ).tz_convert("UTC")]
        for day in ("2025-10-29", "2025-10-22", "2025-10-15", "2025-10-08")
    ]
    campaign = marks["2025-11-05"]
    assert campaign.expected == pytest.approx(np.median(same_weekday) * 1.5)
    assert not campaign.learn


def test_an_exclusion_and_the_days_before_learn_from_are_neither_learned_nor_judged() -> None:
    calendar = Calendar(
        timezone=TZ,
        exclusions=(Exclusion(date(2025, 10, 10), date(2025, 10, 12), "backfill"),),
        learn_from=date(2025, 10, 3),
    )
    marks = marks_of(calendar, daily("2025-10-01", 20))
    excluded = Mark(learn=False, judge=False)
    assert [marks[f"2025-10-{d:02d}"] for d in (1, 2, 3)] == [excluded, excluded, REGULAR]
    assert [marks[f"2025-10-{d}"] for d in (10, 11, 12, 13)] == [excluded] * 3 + [REGULAR]


def test_marks_are_causal_a_bucket_is_marked_alike_however_the_history_is_fed() -> None:
    series = daily("2024-09-01", 460, growth=0.2)
    whole = Marker(US, DAY, 4.0).marks(pd.DatetimeIndex(series.index), series.to_numpy())
    marker = Marker(US, DAY, 4.0)
    cut = 300
    stepped = marker.marks(pd.DatetimeIndex(series.index[:cut]), series.to_numpy()[:cut])
    for bucket, value in series.iloc[cut:].items():
        stepped += marker.marks(pd.DatetimeIndex([bucket]), [value])
    assert stepped == whole


def test_a_marker_keeps_a_bounded_memory_however_long_it_runs() -> None:
    import pickle

    calendar = Calendar(timezone=TZ, events=(Event("sale", date(2024, 1, 10), date(2024, 1, 10)),))
    hours = pd.date_range("2024-01-01", periods=24 * 400, freq="h", tz="UTC")
    values = np.random.default_rng(2).poisson(100, len(hours)).astype(float)
    marker = Marker(calendar, 3600, 4.0)
    sizes = []
    for day in range(0, 400, 20):  # twenty days at a time, as a daemon would over months
        chunk = slice(day * 24, (day + 20) * 24)
        marker.marks(hours[chunk], values[chunk])
        sizes.append(len(pickle.dumps(marker)))
    # about two months of regular hours are kept: the size stops growing after that
    assert max(sizes[4:]) < 1.2 * sizes[4]
