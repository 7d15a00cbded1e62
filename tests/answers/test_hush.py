"""After a false alarm, the series' deviation counts as normal until it is back in its band."""

from __future__ import annotations

import pandas as pd

from monitor.answers.hush import hushed
from monitor.detection import Verdict

T = pd.Timestamp("2026-12-06 09:00", tz="UTC")


def verdict(value: float, *, anomalous: bool = False, holding: bool = False) -> Verdict:
    return Verdict(T, value, 100.0, 90.0, 110.0, (value - 100) / 2.5, anomalous,
                   span=2 if anomalous else 0, holding=holding)  # fmt: skip


def test_an_anomalous_bucket_of_the_answered_deviation_counts_as_normal() -> None:
    seen, lasting = hushed(verdict(40.0, anomalous=True))
    assert lasting and not seen.anomalous and seen.span == 0
    assert (seen.value, seen.lower, seen.score) == (40.0, 90.0, -24.0), "the numbers stay"


def test_a_bucket_still_away_the_deviations_way_keeps_the_hush() -> None:
    seen, lasting = hushed(verdict(95.0, holding=True))
    assert lasting and not seen.holding


def test_the_first_bucket_back_in_the_band_ends_it() -> None:
    seen, lasting = hushed(verdict(101.0))
    assert not lasting and seen == verdict(101.0)


def test_a_bucket_without_a_baseline_says_nothing_either_way() -> None:
    unjudged = Verdict.unjudged(T, float("nan"))
    seen, lasting = hushed(unjudged)
    assert lasting and seen == unjudged
