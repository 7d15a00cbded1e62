"""Each series gets its own scale and forecaster, chosen by blind tests on its own history."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.kpi_scenarios import make_series
from monitor.detection import Detector, DetectorSpec
from monitor.detection.scales import forward, inverse
from tests.detection.test_detector import HOUR, hourly_orders


@pytest.mark.parametrize(("lam", "shift"), [(0.0, 1.0), (0.5, 0.375), (0.5, 0.0), (1.0, 0.0)])
def test_every_scale_maps_back_to_the_values(lam: float, shift: float) -> None:
    for x in (0.0, 0.25, 1.0, 3.0, 120.5, 8.5e6):
        assert inverse(forward(x, lam, shift), lam, shift) == pytest.approx(x, rel=1e-12, abs=1e-9)


def learned(frame: pd.DataFrame) -> Detector:
    detector = Detector(DetectorSpec(HOUR))
    detector.warm(pd.DatetimeIndex(frame["timestamp"]), frame["value"].to_numpy())
    return detector


def test_multiplicative_business_series_keep_log1p_and_the_seasonal_forecaster() -> None:
    idx, v = hourly_orders(2, weeks=6)
    detector = learned(pd.DataFrame({"timestamp": idx, "value": v}))
    assert (detector.scale, detector.forecaster) == ("log1p", "seasonal")


def test_a_sum_of_a_few_orders_an_hour_leaves_log1p_for_a_power_that_fits_it() -> None:
    # about 40% of the hours have no order: in log1p their zeros sit far below the rest
    detector = learned(make_series("sparse_revenue", "hour", 0).frame)
    assert detector.scale == "sqrt"


def test_a_wandering_series_is_judged_against_the_short_memory_forecaster() -> None:
    rng = np.random.default_rng(1)
    idx = pd.date_range("2026-01-05", periods=6 * 168, freq="h", tz="UTC")
    walk = 1000 + np.cumsum(rng.normal(0, 20, idx.size))
    detector = Detector(DetectorSpec(HOUR))
    detector.warm(idx[:-1], walk[:-1])
    detector.step(idx[-1], walk[-1])  # judging calibrates: the choice is made then
    assert detector.forecaster == "fast"


def test_values_that_are_not_counts_are_judged_as_they_are() -> None:
    idx, v = hourly_orders(3, weeks=4)
    detector = Detector(DetectorSpec(HOUR, counts=False))
    detector.warm(idx, v)
    assert detector.scale == "as is"


def test_the_band_of_a_non_negative_series_never_goes_below_zero() -> None:
    # revenue of a small market: many empty hours (the band of -0.45 .. 71,751)
    frame = make_series("sparse_revenue", "hour", 3).frame
    detector = Detector(DetectorSpec(HOUR))
    verdicts = detector.warm(
        pd.DatetimeIndex(frame["timestamp"]), frame["value"].to_numpy(), judge_last=600
    )
    lowers = [v.lower for v in verdicts if v.lower is not None]
    assert lowers and min(lowers) >= 0.0
    uppers = [v.upper / v.expected for v in verdicts if v.upper and v.expected and v.expected > 50]
    assert np.median(uppers) < 20  # not the 360 times the expected value log1p gave it
