"""Mostly-zero series: a blip of the usual size never pages, one far larger does, and so does a
storm of events where they are rare. A zero never pages on its own."""

from __future__ import annotations

import numpy as np
import pandas as pd

from monitor.detection import Detector, DetectorSpec
from tests.detection.test_detector import HOUR


def latency_of_sparse_calls(seed: int, busy: float = 0.07) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """An average latency per hour over calls that happen in a few hours only (fractional)."""
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2026-01-05", periods=6 * 168, freq="h", tz="UTC")
    sizes = np.round(120 * np.exp(rng.normal(0, 0.3, idx.size)), 3)
    return idx, np.where(rng.random(idx.size) < busy, sizes, 0.0)


def test_blips_of_the_usual_size_never_page_and_the_band_does_not_collapse() -> None:
    idx, v = latency_of_sparse_calls(1)
    detector = Detector(DetectorSpec(HOUR))
    verdicts = detector.warm(idx, v, judge_last=3 * 168)
    assert sum(x.anomalous for x in verdicts) == 0
    blips = [x for x in verdicts if x.value > 0]
    uppers = [x.upper for x in blips if x.upper is not None]
    assert uppers and min(uppers) > 1.5 * 120  # well above the usual blip, never around 0
    assert all(x.lower == 0.0 for x in verdicts if x.lower is not None)


def test_a_blip_ten_times_the_usual_size_pages() -> None:
    idx, v = latency_of_sparse_calls(2)
    detector = Detector(DetectorSpec(HOUR))
    detector.warm(idx[:-1], v[:-1])
    assert detector.step(idx[-1], 1200.0).anomalous


def test_a_storm_of_events_where_they_are_rare_pages() -> None:
    idx, v = latency_of_sparse_calls(3)
    storm = v.copy()
    storm[-8:] = 118.0  # every hour busy, at the usual size
    detector = Detector(DetectorSpec(HOUR))
    verdicts = detector.warm(idx, storm, judge_last=8)
    assert any(x.anomalous for x in verdicts)
    assert not any(x.anomalous for x in verdicts[:3])  # two or three busy hours are not a storm


def test_a_zero_never_pages_on_its_own() -> None:
    idx, v = latency_of_sparse_calls(4, busy=0.3)
    detector = Detector(DetectorSpec(HOUR))
    detector.warm(idx[:-1], v[:-1])
    assert not detector.step(idx[-1], 0.0).anomalous
