"""Specification of the date's effects beyond the week (monitor.detection.dates): positions in
the month chosen per series by a blind test, and the date of the year once two years agree."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.detection import Detector, DetectorSpec, Verdict, dates

DAY = 86400
EPOCH = dt.date(1970, 1, 1)


@settings(deadline=None)  # the first example compiles the kernels
@given(st.integers(min_value=-200_000, max_value=200_000))
def test_day_numbers_are_the_calendar_dates(days: int) -> None:
    date = EPOCH + dt.timedelta(days=days)
    assert dates.civil(days) == (date.year, date.month, date.day)
    assert dates.day_number(date.year, date.month, date.day) == days
    assert dates.weekday(days) == date.weekday()


def number(date: str) -> int:
    return (dt.date.fromisoformat(date) - EPOCH).days


def test_positions_in_earlier_months() -> None:
    # the last day of March 2024, one month back: the last day of February, a leap year
    assert dates.same_position(dates.MONTH_END, number("2024-03-31"), 1) == number("2024-02-29")
    # the 31st has no counterpart in February
    assert dates.same_position(dates.DAY_OF_MONTH, number("2024-03-31"), 1) == -1
    # Monday 1 July 2024 is the first working day; in June it was Monday the 3rd
    assert dates.business_day_of_month(number("2024-07-01")) == 1
    assert dates.same_position(dates.BUSINESS_DAY, number("2024-07-01"), 1) == number("2024-06-03")
    assert dates.business_day_of_month(number("2024-06-01")) == 0  # a Saturday


def daily_sales(
    seed: int, days: int, effect: str = "", start: str = "2024-01-01"
) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """Daily revenue with a weekly pattern, +-8% noise and one effect of the date."""
    rng = np.random.default_rng(seed)
    idx = pd.date_range(start, periods=days, freq="D", tz="UTC")
    weekly = np.where(np.asarray(idx.day_of_week) >= 5, 0.6, 1.0)
    values = 1000.0 * weekly * np.exp(rng.normal(0, 0.08, days))
    if effect == "month end":
        values *= np.where(idx.is_month_end, 1.8, 1.0)
    if effect == "business day":
        starts = pd.DatetimeIndex(
            [pd.bdate_range(m.start_time, m.end_time)[0] for m in idx.tz_localize(None).to_period("M").unique()]
        ).tz_localize("UTC")
        values *= np.where(idx.isin(starts), 2.0, 1.0)
    if effect == "christmas":
        values *= np.where((idx.month == 12) & (idx.day >= 24) & (idx.day <= 26), 0.3, 1.0)
    return idx, values


def judged(idx: pd.DatetimeIndex, values: np.ndarray) -> tuple[Detector, list[Verdict]]:
    detector = Detector(DetectorSpec(DAY))
    return detector, detector.warm(idx, values, judge_last=len(idx))


@pytest.mark.parametrize("effect", ["month end", "business day"])
def test_a_monthly_pattern_is_learned_from_its_third_month_and_stops_paging(effect: str) -> None:
    idx, values = daily_sales(1, 400, effect)
    detector, verdicts = judged(idx, values)
    assert detector.date_effect == effect
    paged = [v.bucket for v in verdicts if v.anomalous]
    assert paged, "before it is learned, the pattern pages"
    assert max(paged) < pd.Timestamp("2024-06-01", tz="UTC")


def test_a_series_without_a_pattern_of_the_date_is_forecast_by_the_week_alone() -> None:
    idx, values = daily_sales(2, 400)
    detector, verdicts = judged(idx, values)
    assert detector.date_effect == "none"
    assert sum(v.anomalous for v in verdicts) <= 1


def christmas(year: int, days: list[Verdict]) -> list[Verdict]:
    return [v for v in days if v.bucket.year == year and v.bucket.month == 12
            and 24 <= v.bucket.day <= 26]  # fmt: skip


def test_christmas_is_expected_once_two_years_agree_and_a_collapse_on_it_still_pages() -> None:
    idx, values = daily_sales(3, 1100, "christmas")
    _, verdicts = judged(idx, values)
    assert all(v.anomalous for v in christmas(2024, verdicts))  # once is not a pattern
    assert all(v.anomalous for v in christmas(2025, verdicts))  # nor twice, until it is learned
    assert not any(v.anomalous for v in christmas(2026, verdicts))
    collapsed = values.copy()
    collapsed[np.flatnonzero((idx.year == 2026) & (idx.month == 12) & (idx.day == 25))] *= 0.1
    _, verdicts = judged(idx, collapsed)
    assert [v.bucket.day for v in christmas(2026, verdicts) if v.anomalous] == [25]


def test_an_incident_in_one_earlier_year_does_not_move_this_years_expectation() -> None:
    idx, values = daily_sales(4, 1100)
    once = values.copy()
    once[np.flatnonzero((idx.year == 2025) & (idx.month == 3) & (idx.day == 12))] *= 0.2
    _, plain = judged(idx, values)
    _, after_incident = judged(idx, once)
    day = pd.Timestamp("2026-03-12", tz="UTC")
    [a] = [v for v in plain if v.bucket == day]
    [b] = [v for v in after_incident if v.bucket == day]
    assert a.expected == pytest.approx(b.expected, rel=0.02)
