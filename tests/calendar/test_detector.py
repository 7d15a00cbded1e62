"""What a check's calendar changes in what fires, through the daemon's replay path
(monitor.backtest.replay with the calendar: CalendarDetector and the alert state machine)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import numpy as np
import pandas as pd

from monitor.alerts.state import AlertPolicy
from monitor.backtest import Replay, replay
from monitor.calendar.days import Calendar, Event
from monitor.calendar.detector import CalendarDetector, detector_for
from monitor.detection import Detector, DetectorSpec

DAY = 86400
TZ = "America/New_York"
SPEC = DetectorSpec(DAY, timezone=TZ)
US = Calendar(timezone=TZ, country="US")
SALES = tuple(
    Event("Black Friday", day, day) for day in (date(2024, 11, 29), date(2025, 11, 28))
)


def local(day: str) -> pd.Timestamp:
    return pd.Timestamp(day, tz=TZ).tz_convert("UTC")


def revenue(days: int = 900, seed: int = 7) -> pd.Series:
    """Daily revenue from 2023-07-03: weekly shape, 15% growth a year, 3% noise; every US
    public holiday at half a normal day, Black Friday at twice."""
    index = pd.date_range("2023-07-03", periods=days, freq="D", tz=TZ)
    rng = np.random.default_rng(seed)
    shape = np.array([1.0, 0.97, 0.98, 1.0, 1.12, 1.2, 0.85])[index.day_of_week]
    values = 20_000 * 1.15 ** (np.arange(days) / 365) * shape * rng.normal(1, 0.03, days)
    series = pd.Series(values, index=index.tz_convert("UTC"))
    for day, _ in US.holidays_in(index[0].date(), index[-1].date()):
        holiday = local(str(day))
        series.at[holiday] = series[holiday] * 0.5
    for sale in SALES:
        if (sale_day := local(str(sale.start))) in series.index:
            series.at[sale_day] = series[sale_day] * 2.0
    return series


def replayed(series: pd.Series, calendar: Calendar | None) -> Replay:
    frame = pd.DataFrame({"timestamp": series.index, "value": series.to_numpy()})
    return replay(frame, SPEC, AlertPolicy.for_grain(DAY), calendar=calendar)


def onsets(result: Replay) -> list[str]:
    return [e.since.tz_convert(TZ).date().isoformat() for e in result.episodes]


def test_holidays_and_events_page_without_a_calendar_and_not_with_one() -> None:
    series = revenue()
    before = onsets(replayed(series, None))
    after = onsets(replayed(series, replace(US, events=SALES)))
    holidays = {str(day) for day, _ in US.holidays_in(date(2023, 7, 3), date(2025, 12, 31))}
    assert len([d for d in before if d in holidays]) >= 20
    # once a holiday has a year to compare with, it never pages; in the first year, with only
    # a wider band, hardly any does
    assert [d for d in after if d >= "2024-07-03"] == []
    assert len(after) <= 2


def test_a_collapse_on_black_friday_is_still_caught() -> None:
    series = revenue()
    black_friday = local("2025-11-28")
    series.at[black_friday] = series[black_friday] * 0.3  # checkout broken on the year's best day
    after = onsets(replayed(series, replace(US, events=SALES)))
    assert "2025-11-28" in after


def test_the_level_does_not_sag_after_a_week_long_closure() -> None:
    series = revenue(days=500)
    closure = Event("inventory closure", date(2024, 8, 5), date(2024, 8, 11))
    week = (series.index >= local("2024-08-05")) & (series.index < local("2024-08-12"))
    series[week] *= 0.2
    calendar = Calendar(timezone=TZ, events=(closure,))
    after = replayed(series, calendar).buckets.set_index("bucket")
    before = replayed(series, None).buckets.set_index("bucket")
    following = (after.index >= local("2024-08-12")) & (after.index < local("2024-08-19"))
    regular = series[following].to_numpy()
    # with the calendar the week after is expected at its regular level; without, far below
    assert np.allclose(after["expected"][following], regular, rtol=0.12)
    assert not after["anomalous"][following].any()
    assert before["anomalous"][following].any() or (
        before["expected"][following].to_numpy() < 0.88 * regular
    ).any()


def test_mute_leaves_holidays_unjudged() -> None:
    result = replayed(revenue(), replace(US, on_holiday="mute")).buckets.set_index("bucket")
    assert np.isnan(result["expected"][local("2024-12-25")])
    assert not np.isnan(result["expected"][local("2024-12-24")])


def test_the_days_before_learn_from_are_never_learned_nor_judged() -> None:
    series = revenue(days=200)
    # a backfill wrote ten times the truth before 2023-10-01
    series[series.index < local("2023-10-01")] *= 10
    after = replayed(series, Calendar(timezone=TZ, learn_from=date(2023, 10, 1)))
    before = replayed(series, None)
    assert "2023-10-01" in onsets(before)  # the drop to the true level pages
    assert [d for d in onsets(after) if d < "2023-11-01"] == []  # (November has holidays)
    early = after.buckets[after.buckets["bucket"] < local("2023-10-01")]
    assert early["expected"].isna().all()


def test_a_detector_without_a_calendar_is_the_plain_one() -> None:
    assert type(detector_for(SPEC, None)) is Detector
    assert type(detector_for(SPEC, Calendar(timezone=TZ))) is Detector
    assert isinstance(detector_for(SPEC, US), CalendarDetector)


def test_warming_a_history_judges_it_as_stepping_through_it() -> None:
    series = revenue(days=500)
    calendar = replace(US, events=SALES)
    buckets = pd.DatetimeIndex(series.index)
    warmed = CalendarDetector(SPEC, calendar).warm(buckets, series.to_numpy(), judge_last=len(series))
    stepper = CalendarDetector(SPEC, calendar)
    stepped = [stepper.step(b, float(v)) for b, v in zip(buckets, series, strict=True)]
    assert warmed == stepped
