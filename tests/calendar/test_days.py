"""Specification of which bucket is which (monitor.calendar.days), on plain data: holidays are
local days of the check's time zone, events and exclusions cover what they say, and the order
of precedence."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd
import pytest

from monitor.calendar.days import BEFORE_LEARN_FROM, Calendar, Event, Exclusion, check_region

HOUR, DAY = 3600, 86400


def hours(start: str, end: str) -> pd.DatetimeIndex:
    return pd.date_range(start, end, freq="h", tz="UTC", inclusive="left")


def local_days(start: str, end: str, tz: str) -> pd.DatetimeIndex:
    return pd.date_range(start, end, freq="D", tz=tz, inclusive="left").tz_convert("UTC")


def tagged(calendar: Calendar, buckets: pd.DatetimeIndex, seconds: int) -> dict[str, str]:
    return {
        b.isoformat(): f"{t.kind}:{t.name}"
        for b, t in zip(buckets, calendar.tags(buckets, seconds), strict=True)
        if t is not None
    }


def test_a_holiday_is_the_local_day_in_the_checks_time_zone() -> None:
    calendar = Calendar(timezone="America/New_York", country="US")
    found = tagged(calendar, hours("2025-12-24T12:00Z", "2025-12-27T00:00Z"), HOUR)
    christmas = [b for b, tag in found.items() if tag == "holiday:Christmas Day"]
    # midnight to midnight in New York: 05:00 UTC on the 25th to 05:00 UTC on the 26th
    assert len(christmas) == 24
    assert christmas[0] == "2025-12-25T05:00:00+00:00"
    assert christmas[-1] == "2025-12-26T04:00:00+00:00"


def test_the_same_utc_hours_are_another_holiday_window_in_another_zone() -> None:
    berlin = Calendar(timezone="Europe/Berlin", country="DE")
    found = tagged(berlin, hours("2025-12-24T12:00Z", "2025-12-26T00:00Z"), HOUR)
    christmas = [b for b, tag in found.items() if tag == "holiday:Christmas Day"]
    assert christmas[0] == "2025-12-24T23:00:00+00:00"  # midnight in Berlin
    assert len(christmas) == 24


def test_a_daily_bucket_is_a_holiday_when_its_local_day_is() -> None:
    calendar = Calendar(timezone="America/New_York", country="US")
    buckets = local_days("2025-11-25", "2025-11-29", "America/New_York")
    tags = calendar.tags(buckets, DAY)
    assert [t.name if t else None for t in tags] == [None, None, "Thanksgiving Day", None]


def test_a_subdivision_adds_its_own_holidays() -> None:
    buckets = local_days("2025-01-05", "2025-01-08", "Europe/Berlin")
    germany = Calendar(timezone="Europe/Berlin", country="DE")
    bavaria = Calendar(timezone="Europe/Berlin", country="DE", subdivision="BY")
    assert germany.tags(buckets, DAY)[1] is None
    tag = bavaria.tags(buckets, DAY)[1]
    assert tag is not None and tag.name == "Epiphany"


def test_an_event_given_as_dates_covers_its_local_days_end_day_included() -> None:
    sale = Event("Black Friday", date(2025, 11, 28), date(2025, 12, 1))
    calendar = Calendar(timezone="America/New_York", events=(sale,))
    buckets = local_days("2025-11-27", "2025-12-03", "America/New_York")
    tags = calendar.tags(buckets, DAY)
    assert [(t.name, t.day) if t else None for t in tags] == [
        None, ("Black Friday", 0), ("Black Friday", 1), ("Black Friday", 2),
        ("Black Friday", 3), None,
    ]


def test_an_event_given_as_instants_covers_the_buckets_it_overlaps() -> None:
    migration = Event(
        "warehouse migration",
        datetime(2025, 3, 4, 10, 30, tzinfo=UTC),
        datetime(2025, 3, 4, 13, 0, tzinfo=UTC),
    )
    calendar = Calendar(events=(migration,))
    found = tagged(calendar, hours("2025-03-04T08:00Z", "2025-03-04T16:00Z"), HOUR)
    assert sorted(found) == [
        "2025-03-04T10:00:00+00:00", "2025-03-04T11:00:00+00:00", "2025-03-04T12:00:00+00:00"
    ]


def test_an_exclusion_wins_over_an_event_and_an_event_over_a_holiday() -> None:
    day = date(2025, 12, 25)
    calendar = Calendar(
        timezone="UTC",
        country="US",
        events=(Event("Christmas sale", date(2025, 12, 24), date(2025, 12, 26)),),
        exclusions=(Exclusion(date(2025, 12, 26), date(2025, 12, 26), "backfill"),),
    )
    buckets = local_days("2025-12-24", "2025-12-27", "UTC")
    tags = calendar.tags(buckets, DAY)
    assert [(t.kind, t.name) for t in tags if t] == [
        ("event", "Christmas sale"), ("event", "Christmas sale"), ("exclusion", "backfill")
    ]
    assert tags[1] is not None and tags[1].occurrence == day.replace(day=24)


def test_buckets_before_learn_from_are_excluded() -> None:
    calendar = Calendar(learn_from=date(2025, 6, 3))
    tags = calendar.tags(local_days("2025-06-01", "2025-06-05", "UTC"), DAY)
    assert [t.name if t else None for t in tags] == [BEFORE_LEARN_FROM, BEFORE_LEARN_FROM, None, None]
    assert tags[0] is not None and not tags[0].judged


def test_an_empty_calendar_tags_nothing() -> None:
    assert Calendar().empty
    assert Calendar().tags(hours("2025-12-24", "2025-12-26"), HOUR) == [None] * 48


def test_spans_are_the_holidays_events_and_exclusions_of_a_window_in_order() -> None:
    calendar = Calendar(
        timezone="America/New_York",
        country="US",
        events=(Event("Cyber Monday", date(2025, 12, 1), date(2025, 12, 1), effect=0.4),),
        exclusions=(Exclusion(datetime(2025, 11, 20, 6, tzinfo=UTC),
                              datetime(2025, 11, 21, 6, tzinfo=UTC), "outage handled"),),
    )
    spans = calendar.spans(pd.Timestamp("2025-11-15", tz="UTC"), pd.Timestamp("2025-12-05", tz="UTC"))
    assert [(s.kind, s.name) for s in spans] == [
        ("exclusion", "outage handled"), ("holiday", "Thanksgiving Day"), ("event", "Cyber Monday")
    ]
    thanksgiving = spans[1]
    assert (thanksgiving.start.isoformat(), thanksgiving.end.isoformat()) == (
        "2025-11-27T05:00:00+00:00", "2025-11-28T05:00:00+00:00"
    )
    assert spans[2].json()["effect"] == 0.4


def test_an_unknown_country_or_subdivision_is_named() -> None:
    with pytest.raises(ValueError, match="unknown country 'XX'"):
        check_region("XX", None)
    with pytest.raises(ValueError, match="DE has no subdivision 'ZZ'"):
        check_region("DE", "ZZ")
