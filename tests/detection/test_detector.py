"""Specification of a series' model (monitor.detection.Detector), on plain generated data."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from monitor.detection import Detector, DetectorSpec, Direction, Verdict
from monitor.detection.geometry import geometry

HOUR = 3600
DAY = 86400
# a warm() that judges nothing starts no quiet period; equivalence is checked without one
NO_QUIET = 1.0


def hourly_orders(
    seed: int,
    weeks: int = 8,
    base: float = 100.0,
    noise: float = 0.10,
    growth: float = 0.2,
    start: str = "2026-01-05",
) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """E-commerce orders per hour: daily and weekly seasonality, growth, +-noise, Poisson counts."""
    rng = np.random.default_rng(seed)
    n = weeks * 168
    idx = pd.date_range(start, periods=n, freq="h", tz="UTC")
    hour = np.arange(n) % 24
    dow = (np.arange(n) // 24) % 7
    daily = 0.25 + 0.75 * np.clip(np.sin((hour - 6) / 24 * 2 * np.pi) * 0.5 + 0.6, 0.05, None)
    weekly = np.where(dow >= 5, 0.7, 1.0)
    trend = 1 + growth * np.arange(n) / n
    lam = base * daily * weekly * trend * np.exp(rng.normal(0, noise, n))
    return idx, rng.poisson(lam).astype(float)


def daily_revenue(seed: int, days: int = 120) -> tuple[pd.DatetimeIndex, np.ndarray]:
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2026-01-01", periods=days, freq="D", tz="UTC")
    dow = np.asarray(idx.day_of_week)
    weekly = np.where(dow >= 5, 0.6, 1.0)
    trend = 1 + 0.3 * np.arange(days) / days
    return idx, 50_000 * weekly * trend * np.exp(rng.normal(0, 0.08, days))


def step_all(det: Detector, idx: pd.DatetimeIndex, values: np.ndarray) -> list[Verdict]:
    return [det.step(t, float(v)) for t, v in zip(idx, values, strict=True)]


def same(a: list[Verdict], b: list[Verdict]) -> bool:
    """Equal verdicts (floats to 1e-9, NaN equal to NaN)."""

    def close(x: float | None, y: float | None) -> bool:
        if x is None or y is None:
            return x is y
        if math.isnan(x) or math.isnan(y):
            return math.isnan(x) and math.isnan(y)
        return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)

    return len(a) == len(b) and all(
        u.bucket == v.bucket
        and u.anomalous == v.anomalous
        and u.span == v.span
        and all(
            close(getattr(u, f), getattr(v, f))
            for f in ("value", "expected", "lower", "upper", "score", "sustained")
        )
        for u, v in zip(a, b, strict=True)
    )


def warmed(spec: DetectorSpec, idx: pd.DatetimeIndex, values: np.ndarray, n: int) -> Detector:
    det = Detector(spec)
    det.warm(idx[:n], values[:n])
    return det


# --------------------------------------------------------------------------- quiet when healthy


@pytest.mark.parametrize("seed", range(8))
def test_quiet_on_clean_hourly_seasonal_series_with_trend(seed: int) -> None:
    idx, v = hourly_orders(seed, weeks=8)
    det = warmed(DetectorSpec(HOUR), idx, v, 2 * 168)
    verdicts = step_all(det, idx[2 * 168 :], v[2 * 168 :])
    flagged = sum(x.anomalous for x in verdicts)
    # 6 weeks = 1008 buckets: at most the rare tail events of its noise (0.3%)
    assert flagged <= 3, [(x.bucket, x.value, x.expected) for x in verdicts if x.anomalous]
    assert all(x.expected is not None for x in verdicts)


@pytest.mark.parametrize("seed", range(5))
def test_quiet_on_clean_daily_series(seed: int) -> None:
    idx, v = daily_revenue(seed)
    det = warmed(DetectorSpec(DAY), idx, v, 28)
    verdicts = step_all(det, idx[28:], v[28:])
    assert sum(x.anomalous for x in verdicts) <= 1


def test_band_contains_expected_and_deviation_pct() -> None:
    idx, v = hourly_orders(0, weeks=4)
    det = warmed(DetectorSpec(HOUR), idx, v, len(v) - 1)
    verdict = det.step(idx[-1], v[-1])
    assert verdict.expected is not None and verdict.lower is not None
    assert verdict.upper is not None
    assert verdict.lower < verdict.expected < verdict.upper
    assert verdict.bucket == idx[-1] and str(verdict.bucket.tz) == "UTC"
    pct = verdict.deviation_pct
    assert pct is not None
    assert math.isclose(pct, (verdict.value - verdict.expected) / verdict.expected * 100)


# --------------------------------------------------------------------------- flags incidents


@pytest.mark.parametrize("factor", [0.1, 0.0])
def test_flags_a_segment_collapse(factor: float) -> None:
    idx, v = hourly_orders(3, weeks=6)
    cut = len(v) - 12
    det = warmed(DetectorSpec(HOUR), idx, v, cut)
    verdicts = step_all(det, idx[cut:], v[cut:] * factor)
    assert all(x.anomalous for x in verdicts)
    assert all(x.score < -4 for x in verdicts)
    assert all(x.value < (x.lower or 0) for x in verdicts)


@pytest.mark.parametrize("factor", [3.0, 5.0])
def test_flags_a_spike(factor: float) -> None:
    idx, v = hourly_orders(4, weeks=6)
    cut = len(v) - 3
    det = warmed(DetectorSpec(HOUR), idx, v, cut)
    verdicts = step_all(det, idx[cut:], v[cut:] * factor)
    assert all(x.anomalous and x.score > 4 for x in verdicts)


def test_flags_a_flat_lined_zero_count_series() -> None:
    rng = np.random.default_rng(7)
    idx = pd.date_range("2026-02-02", periods=21 * 24, freq="h", tz="UTC")
    v = rng.poisson(20, idx.size).astype(float)
    cut = idx.size - 6
    det = warmed(DetectorSpec(HOUR), idx, v, cut)
    verdicts = step_all(det, idx[cut:], np.zeros(6))
    assert all(x.anomalous for x in verdicts)


def test_flags_a_daily_drop() -> None:
    idx, v = daily_revenue(1)
    det = warmed(DetectorSpec(DAY), idx, v, len(v) - 1)
    verdict = det.step(idx[-1], v[-1] * 0.5)
    assert verdict.anomalous and verdict.score < 0


def test_past_anomalies_do_not_widen_future_bands() -> None:
    idx, v = hourly_orders(5, weeks=6)
    cut = 5 * 168
    clean = warmed(DetectorSpec(HOUR), idx, v, cut)
    spiky_values = v.copy()
    spiky_values[cut - 100 : cut - 90] *= 6  # an incident ten hours long, four days ago
    spiky = warmed(DetectorSpec(HOUR), idx, spiky_values, cut)
    a, b = clean.step(idx[cut], v[cut]), spiky.step(idx[cut], v[cut])
    assert a.upper is not None and b.upper is not None and a.expected is not None
    assert b.expected is not None
    assert abs(b.upper - a.upper) / a.upper < 0.1  # robust: a few percent at most
    assert abs(b.expected - a.expected) / a.expected < 0.05


def test_does_not_alert_on_steady_growth() -> None:
    idx, v = hourly_orders(6, weeks=8, growth=1.5)  # +150% over eight weeks
    det = warmed(DetectorSpec(HOUR), idx, v, 3 * 168)
    verdicts = step_all(det, idx[3 * 168 :], v[3 * 168 :])
    assert sum(x.anomalous for x in verdicts) <= 2


# --------------------------------------------------------------------------- causality


def test_verdicts_are_causal() -> None:
    idx, v = hourly_orders(8, weeks=3)
    full = step_all(Detector(DetectorSpec(HOUR)), idx, v)
    prefix = step_all(Detector(DetectorSpec(HOUR)), idx[:300], v[:300])
    assert same(full[:300], prefix)
    # changing the future does not change the past
    w = v.copy()
    w[300:] *= 10
    changed = step_all(Detector(DetectorSpec(HOUR)), idx, w)
    assert same(changed[:300], full[:300])


def test_the_scored_bucket_is_not_part_of_its_own_baseline() -> None:
    idx, v = hourly_orders(9, weeks=4)
    det_a = warmed(DetectorSpec(HOUR), idx, v, len(v) - 1)
    det_b = warmed(DetectorSpec(HOUR), idx, v, len(v) - 1)
    a = det_a.step(idx[-1], 1.0)
    b = det_b.step(idx[-1], 10_000.0)
    assert a.expected == b.expected and a.lower == b.lower and a.upper == b.upper


@pytest.mark.parametrize("split", [1, 50, 24 * 15, 24 * 20])
def test_warm_then_step_equals_stepping_everything(split: int) -> None:
    idx, v = hourly_orders(10, weeks=4)
    v[100:110] = np.nan  # gaps inside the warm block
    stepped = Detector(DetectorSpec(HOUR, quiet_factor=NO_QUIET))
    step_all(stepped, idx[:split], v[:split])
    warm = warmed(DetectorSpec(HOUR, quiet_factor=NO_QUIET), idx, v, split)
    assert warm.history_size == stepped.history_size
    assert same(step_all(warm, idx[split:], v[split:]), step_all(stepped, idx[split:], v[split:]))


@pytest.mark.parametrize("seed", range(4))
def test_warm_then_step_equals_stepping_through_a_sustained_shift(seed: int) -> None:
    # the sustained test reads residuals a day before the spread window: warm must learn them
    idx, v = hourly_orders(seed, weeks=8)
    v[-6:] = np.round(v[-6:] * 0.6)
    stepped = warmed(DetectorSpec(HOUR, quiet_factor=NO_QUIET), idx, v, 300)
    warm = warmed(DetectorSpec(HOUR, quiet_factor=NO_QUIET), idx, v, len(v) - 6)
    through = step_all(stepped, idx[300:], v[300:])[-6:]
    assert any(x.sustained for x in through)
    assert same(step_all(warm, idx[-6:], v[-6:]), through)


def test_warm_equivalence_survives_buffer_wrap_and_long_gaps() -> None:
    idx, v = hourly_orders(11, weeks=24)
    keep = np.ones(v.size, dtype=bool)
    keep[2000:2400] = False  # a gap of more than two weeks
    idx, v = idx[keep], v[keep]
    split = 3500
    stepped = Detector(DetectorSpec(HOUR, quiet_factor=NO_QUIET))
    step_all(stepped, idx[:split], v[:split])
    warm = warmed(DetectorSpec(HOUR, quiet_factor=NO_QUIET), idx, v, split)
    assert same(step_all(warm, idx[split:], v[split:]), step_all(stepped, idx[split:], v[split:]))


def test_step_rejects_buckets_that_are_not_new() -> None:
    idx, v = hourly_orders(0, weeks=1)
    det = warmed(DetectorSpec(HOUR), idx, v, 50)
    with pytest.raises(ValueError, match="not after"):
        det.step(idx[49], 1.0)
    with pytest.raises(ValueError):
        det.warm(idx[10:20], v[10:20])


# --------------------------------------------------------------------------- gaps, history


def test_gaps_are_allowed_and_judged_by_slot() -> None:
    idx, v = hourly_orders(12, weeks=6)
    keep = np.ones(v.size, dtype=bool)
    keep[3 * 168 : 3 * 168 + 30] = False  # thirty missing hours
    keep[rng_drop(v.size)] = False
    det = Detector(DetectorSpec(HOUR))
    verdicts = step_all(det, idx[keep], v[keep])
    assert det.history_size == int(keep.sum())
    assert sum(x.anomalous for x in verdicts[400:]) <= 2
    # a collapse right after a gap is still caught
    after = warmed(DetectorSpec(HOUR), idx[keep], v[keep], int(keep.sum()) - 1)
    gap_then = after.step(idx[-1] + pd.Timedelta(hours=5), 0.0)
    assert gap_then.anomalous


def rng_drop(n: int) -> np.ndarray:
    return np.random.default_rng(0).choice(n, size=n // 20, replace=False)


def test_nan_values_are_gaps() -> None:
    idx, v = hourly_orders(13, weeks=3)
    det = warmed(DetectorSpec(HOUR), idx, v, 400)
    verdict = det.step(idx[400], math.nan)
    assert verdict.expected is None and not verdict.anomalous
    assert det.history_size == 400


def test_no_verdict_without_enough_history() -> None:
    det = Detector(DetectorSpec(HOUR))
    idx = pd.date_range("2026-01-01", periods=30, freq="h", tz="UTC")
    verdicts = step_all(det, idx, np.full(30, 10.0))
    assert verdicts[0].expected is None and verdicts[0].score == 0.0
    assert not any(x.anomalous for x in verdicts[:24])
    assert verdicts[-1].expected is not None


def test_no_seasonal_term_without_two_full_cycles() -> None:
    # every day has a peak at 10:00 UTC; after one day there is no seasonal term yet
    idx = pd.date_range("2026-01-01", periods=24 * 4, freq="h", tz="UTC")
    v = np.where(idx.hour == 10, 1000.0, 10.0)
    det = Detector(DetectorSpec(HOUR, min_history=12))
    verdicts = step_all(det, idx, v)
    day2, day3, day4 = verdicts[24 + 10], verdicts[48 + 10], verdicts[72 + 10]
    assert day2.expected is not None and day2.expected < 50  # one cycle: level only
    assert day2.anomalous
    # two full cycles of 10:00 seen before day 3: the hour-of-day slot applies
    assert day3.expected is not None and day3.expected > 500
    assert not day3.anomalous and not day4.anomalous


def test_weekly_slot_once_two_weeks_are_known() -> None:
    # the weekend is quiet; hour-of-week slots learn that after two weeks
    idx = pd.date_range("2026-01-05", periods=24 * 7 * 4, freq="h", tz="UTC")
    rng = np.random.default_rng(1)
    v = np.where(idx.day_of_week >= 5, 20.0, 200.0) * np.exp(rng.normal(0, 0.05, idx.size))
    det = warmed(DetectorSpec(HOUR), idx, v, 24 * 7 * 3 + 24 * 5)  # up to Saturday of week 4
    saturday = step_all(det, idx[24 * 7 * 3 + 24 * 5 :], v[24 * 7 * 3 + 24 * 5 :])
    assert not any(x.anomalous for x in saturday)
    assert all(x.expected is not None and x.expected < 40 for x in saturday)


# --------------------------------------------------------------------------- floors, direction


def test_min_relative_change_keeps_tiny_variance_series_quiet() -> None:
    rng = np.random.default_rng(2)
    idx = pd.date_range("2026-01-01", periods=24 * 10, freq="h", tz="UTC")
    v = 1000.0 + rng.normal(0, 0.01, idx.size)
    det = warmed(DetectorSpec(HOUR), idx, v, idx.size - 1)
    small = det.step(idx[-1], 1020.0)  # +2%: hundreds of sigmas, but below the 5% floor
    assert abs(small.score) > 100 and not small.anomalous
    assert small.upper is not None and small.upper >= 1050.0 - 1e-6
    strict = warmed(DetectorSpec(HOUR, min_relative_change=0.0), idx, v, idx.size - 1)
    assert strict.step(idx[-1], 1020.0).anomalous
    big = warmed(DetectorSpec(HOUR), idx, v, idx.size - 1).step(idx[-1], 1100.0)
    assert big.anomalous


def test_min_absolute_change_floor() -> None:
    idx = pd.date_range("2026-01-01", periods=24 * 10, freq="h", tz="UTC")
    v = np.full(idx.size, 2.0)
    spec = DetectorSpec(HOUR, min_absolute_change=5.0, counts=False)
    verdict = warmed(spec, idx, v, idx.size - 1).step(idx[-1], 6.0)
    assert not verdict.anomalous
    assert warmed(spec, idx, v, idx.size - 1).step(idx[-1], 8.0).anomalous


@pytest.mark.parametrize(
    ("direction", "up", "down"),
    [("both", True, True), ("up", True, False), ("down", False, True)],
)
def test_direction_filter(direction: Direction, up: bool, down: bool) -> None:
    idx, v = hourly_orders(14, weeks=4)
    spec = DetectorSpec(HOUR, direction=direction)
    high = warmed(spec, idx, v, len(v) - 1).step(idx[-1], v[-1] * 5)
    low = warmed(spec, idx, v, len(v) - 1).step(idx[-1], 0.0)
    assert high.anomalous is up and high.score > 4
    assert low.anomalous is down and low.score < -4


def test_sensitivity_widens_the_band() -> None:
    idx, v = hourly_orders(15, weeks=4)
    narrow = warmed(DetectorSpec(HOUR, sensitivity=2), idx, v, len(v) - 1).step(idx[-1], v[-1])
    wide = warmed(DetectorSpec(HOUR, sensitivity=6), idx, v, len(v) - 1).step(idx[-1], v[-1])
    assert narrow.upper is not None and wide.upper is not None
    assert wide.upper > narrow.upper
    assert narrow.score == wide.score


# --------------------------------------------------------------------------- value spaces


def test_negative_series_work_in_linear_space() -> None:
    rng = np.random.default_rng(3)
    idx = pd.date_range("2026-01-01", periods=24 * 21, freq="h", tz="UTC")
    v = 5 * np.sin(np.arange(idx.size) / 24 * 2 * np.pi) + rng.normal(0, 0.5, idx.size)
    det = Detector(DetectorSpec(HOUR))
    verdicts = step_all(det, idx[:-1], v[:-1])
    assert det.scale == "as is"
    assert sum(x.anomalous for x in verdicts) <= 2
    assert det.step(idx[-1], v[-1] + 20).anomalous


def test_switching_to_linear_space_keeps_warm_equivalence() -> None:
    idx, v = hourly_orders(16, weeks=3)
    v[200] = -5.0
    stepped = Detector(DetectorSpec(HOUR, quiet_factor=NO_QUIET))
    step_all(stepped, idx[:400], v[:400])
    warm = warmed(DetectorSpec(HOUR, quiet_factor=NO_QUIET), idx, v, 400)
    assert stepped.scale == warm.scale == "as is"
    assert same(step_all(warm, idx[400:], v[400:]), step_all(stepped, idx[400:], v[400:]))


def test_poisson_floor_keeps_small_counts_quiet() -> None:
    rng = np.random.default_rng(4)
    idx = pd.date_range("2026-01-05", periods=24 * 7 * 5, freq="h", tz="UTC")
    v = rng.poisson(1.5, idx.size).astype(float)  # mostly 0..4, many zeros
    det = warmed(DetectorSpec(HOUR), idx, v, 24 * 14)
    verdicts = step_all(det, idx[24 * 14 :], v[24 * 14 :])
    assert sum(x.anomalous for x in verdicts) <= 2


# --------------------------------------------------------------------------- time zones


def test_slots_follow_the_business_timezone_across_dst() -> None:
    # a peak at 09:00 New York time every day, through the March DST change
    local = pd.date_range("2026-02-20", "2026-03-25", freq="h", tz="America/New_York")
    idx = local.tz_convert("UTC")
    rng = np.random.default_rng(5)
    v = np.where(local.hour == 9, 500.0, 50.0) * np.exp(rng.normal(0, 0.05, idx.size))
    spec = DetectorSpec(HOUR, timezone="America/New_York")
    det = warmed(spec, idx, v, 24 * 10)
    verdicts = step_all(det, idx[24 * 10 :], v[24 * 10 :])
    assert sum(x.anomalous for x in verdicts) <= 2
    # in UTC slots the peak moves by an hour at the DST change and alerts
    utc = warmed(DetectorSpec(HOUR), idx, v, 24 * 10)
    assert sum(x.anomalous for x in step_all(utc, idx[24 * 10 :], v[24 * 10 :])) >= 2


def test_dst_fall_back_repeated_hour_is_judged_not_learned() -> None:
    local = pd.date_range("2026-10-20", "2026-11-05", freq="h", tz="America/New_York")
    idx = local.tz_convert("UTC")
    v = np.full(idx.size, 100.0)
    det = Detector(DetectorSpec(HOUR, timezone="America/New_York"))
    verdicts = step_all(det, idx, v)
    assert det.history_size == idx.size - 1  # the repeated 01:00 on 1 November
    assert not any(x.anomalous for x in verdicts)


def test_acknowledge_accepts_a_new_level() -> None:
    idx, v = hourly_orders(17, weeks=5)
    cut = 4 * 168 + 10
    shifted = v.copy()
    shifted[cut:] *= 0.4
    unacknowledged = warmed(DetectorSpec(HOUR), idx, shifted, cut)
    before = step_all(unacknowledged, idx[cut : cut + 12], shifted[cut : cut + 12])
    assert sum(x.anomalous for x in before) >= 6
    det = warmed(DetectorSpec(HOUR), idx, shifted, cut + 3)
    det.acknowledge(since=idx[cut])
    after = step_all(det, idx[cut + 3 :], shifted[cut + 3 :])
    assert sum(x.anomalous for x in after) <= 1


def test_spec_validation() -> None:
    with pytest.raises(ValueError):
        DetectorSpec(0)
    with pytest.raises(ValueError):
        DetectorSpec(HOUR, sensitivity=0)
    with pytest.raises(ValueError):
        DetectorSpec(HOUR, direction="sideways")  # type: ignore[arg-type]  # the error under test
    with pytest.raises(ValueError):
        DetectorSpec(HOUR, min_relative_change=-1)
    with pytest.raises(ValueError, match="timezone"):
        DetectorSpec(HOUR, timezone="Mars/Olympus_Mons")
    with pytest.raises(ValueError, match="quiet_factor"):
        DetectorSpec(HOUR, quiet_factor=0.5)


# --------------------------------------------------------------------------- onset and quiet


def test_a_deviation_clear_over_two_buckets_spans_both() -> None:
    idx, v = hourly_orders(22, weeks=5, noise=0.05)
    cut = 4 * 168 + 12
    det = warmed(DetectorSpec(HOUR), idx, v, cut)
    first = det.step(idx[cut], v[cut] * 1.5)  # inside the band on its own
    second = det.step(idx[cut + 1], v[cut + 1] * 1.5)
    assert not first.anomalous and first.span == 0
    assert second.anomalous and second.span == 2, second
    assert det.step(idx[cut + 2], v[cut + 2]).span == 0


def test_a_collapse_far_beyond_the_band_counts_as_two_buckets_at_once() -> None:
    idx, v = hourly_orders(24, weeks=5)
    cut = 4 * 168 + 12
    det = warmed(DetectorSpec(HOUR), idx, v, cut)
    assert det.step(idx[cut], 0.0).span >= 2


def test_a_new_deviation_within_a_day_of_an_incident_needs_a_wider_band() -> None:
    idx, v = hourly_orders(23, weeks=5)
    cut = 4 * 168 + 10
    v = v.copy()
    v[cut : cut + 3] = 0.0  # an outage of three hours
    later = cut + 8
    v[later] = np.round(v[later] * 0.25)  # a dip the same day
    runs = {}
    for factor in (1.0, 2.0):
        det = warmed(DetectorSpec(HOUR, quiet_factor=factor), idx, v, cut)
        runs[factor] = step_all(det, idx[cut : cut + 30], v[cut : cut + 30])
    quiet, plain = runs[2.0], runs[1.0]
    assert all(x.anomalous for x in quiet[:3])  # the incident itself: the normal band throughout
    assert plain[8].anomalous and not quiet[8].anomalous
    assert quiet[8].upper is not None and plain[8].upper is not None
    assert quiet[8].upper > plain[8].upper  # the band shows why
    assert quiet[26].upper == plain[26].upper  # a day later the band is back


@pytest.mark.parametrize("restart_after", [1, 2, 5])
def test_a_restarted_detector_resumes_the_quiet_period(restart_after: int) -> None:
    idx, v = hourly_orders(23, weeks=5)
    cut = 4 * 168 + 10
    v = v.copy()
    v[cut : cut + 3] = 0.0  # the incident of the test above, and its dip 8 hours later
    v[cut + 8] = np.round(v[cut + 8] * 0.25)
    end = cut + 30
    running = warmed(DetectorSpec(HOUR), idx, v, cut)
    before = step_all(running, idx[cut : cut + restart_after], v[cut : cut + restart_after])
    saved = running.quiet_start
    after = step_all(running, idx[cut + restart_after : end], v[cut + restart_after : end])
    # the daemon saved the run the alert state counts and the quiet start, then restarted;
    # it steps the newest judged bucket again, as the engine does
    run = 0
    for verdict in before:
        run = max(run + 1, verdict.span) if verdict.anomalous else 0
    start = cut + restart_after - 1
    restarted = warmed(DetectorSpec(HOUR), idx, v, start)
    restarted.resume(run, saved, idx[start])
    assert restarted.step(idx[start], v[start]).anomalous == before[-1].anomalous
    resumed = step_all(restarted, idx[cut + restart_after : end], v[cut + restart_after : end])
    assert [x.anomalous for x in resumed] == [x.anomalous for x in after]
    assert [x.upper for x in resumed] == pytest.approx([x.upper for x in after], rel=1e-9)
    dip = 8 - restart_after
    assert after[dip].value < v[cut + 8 - 1] and not after[dip].anomalous
    if restart_after > 3:  # the incident was over: a detector that forgot it alerts on the dip
        forgetful = warmed(DetectorSpec(HOUR), idx, v, start + 1)
        forgot = step_all(forgetful, idx[cut + restart_after : end], v[cut + restart_after : end])
        assert forgot[dip].anomalous


# --------------------------------------------------------------------------- shifts, tails


def test_a_moderate_sustained_shift_is_flagged_inside_the_band() -> None:
    idx, v = hourly_orders(18, weeks=5, noise=0.12)
    cut = 4 * 168 + 10  # a weekday, 10:00
    det = warmed(DetectorSpec(HOUR), idx, v, cut)
    verdicts = step_all(det, idx[cut : cut + 8], v[cut : cut + 8] * 0.6)
    sustained = [x for x in verdicts if x.sustained]
    assert sustained, [(x.score, x.anomalous) for x in verdicts]
    assert all(x.sustained < -4 and x.anomalous for x in sustained)
    assert any(x.lower is not None and x.value > x.lower for x in sustained)  # in the band


def test_sustained_test_is_quiet_on_clean_data_and_after_a_spike() -> None:
    idx, v = hourly_orders(19, weeks=6)
    spiked = v.copy()
    spiked[5 * 168] *= 8  # one wild bucket, then normal ones
    det = warmed(DetectorSpec(HOUR), idx, spiked, 3 * 168)
    verdicts = step_all(det, idx[3 * 168 :], spiked[3 * 168 :])
    assert sum(bool(x.sustained) for x in verdicts) <= 1
    after = verdicts[2 * 168 + 1 : 2 * 168 + 25]
    assert not any(x.anomalous for x in after)


def test_an_accepted_shift_does_not_come_back_weeks_later() -> None:
    # the seasonal medians hold the shape only: when they fill with post-shift weeks nothing jumps
    idx, v = hourly_orders(20, weeks=10)
    shift = 3 * 168 + 12
    v = v.copy()
    v[shift:] = np.round(v[shift:] * 0.55)
    det = warmed(DetectorSpec(HOUR), idx, v, shift + 8)
    det.acknowledge(since=idx[shift])
    verdicts = step_all(det, idx[shift + 8 :], v[shift + 8 :])
    assert sum(x.anomalous for x in verdicts) <= 3


def test_an_unacknowledged_shift_is_accepted_after_a_day_and_a_half() -> None:
    idx, v = hourly_orders(21, weeks=6)
    shift = 4 * 168 + 12
    v = v.copy()
    v[shift:] *= 1.8
    det = warmed(DetectorSpec(HOUR), idx, v, shift)
    verdicts = step_all(det, idx[shift:], v[shift:])
    assert sum(x.anomalous for x in verdicts[:12]) >= 6
    assert sum(x.anomalous for x in verdicts[48:]) <= 2


def test_intermittent_series_with_bursts_stays_quiet() -> None:
    rng = np.random.default_rng(6)
    idx = pd.date_range("2026-01-05", periods=24 * 7 * 4, freq="h", tz="UTC")
    v = np.where(rng.random(idx.size) < 0.12, rng.lognormal(12, 1.5, idx.size), 0.0)
    det = warmed(DetectorSpec(HOUR), idx, v, 24 * 14)
    verdicts = step_all(det, idx[24 * 14 :], v[24 * 14 :])
    assert sum(x.anomalous for x in verdicts) <= 3


def test_warm_equivalence_in_a_business_timezone_across_dst() -> None:
    local = pd.date_range("2026-02-01", "2026-03-31", freq="h", tz="America/New_York")
    idx = local.tz_convert("UTC")
    rng = np.random.default_rng(8)
    v = rng.poisson(np.where(local.hour >= 9, 80.0, 20.0)).astype(float)
    spec = DetectorSpec(HOUR, timezone="America/New_York", quiet_factor=NO_QUIET)
    split = 24 * 36  # just before the March change
    stepped = Detector(spec)
    step_all(stepped, idx[:split], v[:split])
    warm = warmed(spec, idx, v, split)
    assert same(step_all(warm, idx[split:], v[split:]), step_all(stepped, idx[split:], v[split:]))


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    split=st.integers(1, 24 * 30),
    drop=st.floats(0.0, 0.3),
    daily=st.booleans(),
)
# a gap right after the split: the stepped bucket completes a shape sample its own look-back reads
@example(seed=1203, split=6, drop=0.25, daily=True)
def test_property_warm_then_step_equals_stepping(
    seed: int, split: int, drop: float, daily: bool
) -> None:
    rng = np.random.default_rng(seed)
    if daily:
        idx, v = daily_revenue(seed, days=120)
        split = split % 100 + 1
    else:
        idx, v = hourly_orders(seed, weeks=5)
    keep = rng.random(v.size) >= drop
    idx, v = idx[keep], v[keep]
    spec = DetectorSpec(DAY if daily else HOUR, quiet_factor=NO_QUIET)
    stepped = Detector(spec)
    step_all(stepped, idx[:split], v[:split])
    warm = warmed(spec, idx, v, split)
    tail = slice(split, split + 200)
    assert same(step_all(warm, idx[tail], v[tail]), step_all(stepped, idx[tail], v[tail]))


# --------------------------------------------------------------------------- sub-hourly grains

FIVE_MINUTES = 300


def five_minute_load(seed: int, days: int, bump: int = 0) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """A 5-minute metric: a smooth daily profile under noise as large as a slot's own history
    can resolve; ``bump`` 5-minute slots at 03:00 every day carry a job's load (+60)."""
    rng = np.random.default_rng(seed)
    n = days * 288
    idx = pd.date_range("2026-01-05", periods=n, freq="5min", tz="UTC")
    slot = np.arange(n) % 288
    v = 40 + 10 * np.sin(2 * np.pi * slot / 288) + rng.normal(0, 4, n)
    v[(slot >= 36) & (slot < 36 + bump)] += 60
    return idx, v


def test_five_minute_slots_pool_ten_minutes_either_side() -> None:
    assert geometry(DetectorSpec(FIVE_MINUTES)).pool == 2
    assert geometry(DetectorSpec(60)).pool == 10
    assert geometry(DetectorSpec(900)).pool == 0
    assert geometry(DetectorSpec(HOUR)).pool == 0
    assert geometry(DetectorSpec(DAY)).pool == 0


def test_pooled_slots_steady_the_expected_value_of_noisy_five_minute_data(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    idx, v = five_minute_load(1, days=10)

    def jumps() -> float:
        det = warmed(DetectorSpec(FIVE_MINUTES), idx, v, 8 * 288)
        expected = [x.expected for x in step_all(det, idx[8 * 288 :], v[8 * 288 :])]
        return float(np.mean(np.abs(np.diff(np.asarray(expected, dtype=float)))))

    pooled = jumps()
    spec = DetectorSpec(FIVE_MINUTES)
    unpooled = replace(geometry(spec), pool=0)
    monkeypatch.setattr("monitor.detection.detector.geometry", lambda _: unpooled)
    alone = jumps()
    assert pooled < 0.6 * alone


@pytest.mark.parametrize("bump", [1, 2, 3])
def test_a_job_at_a_fixed_five_minute_slot_stays_part_of_the_profile(bump: int) -> None:
    """A slot whose every past sample lies clear of its neighbours keeps its own median: pooling
    smooths noise, not a pattern the series repeats at that very time every day."""
    idx, v = five_minute_load(2, days=12, bump=bump)
    det = warmed(DetectorSpec(FIVE_MINUTES), idx, v, 4 * 288)
    verdicts = step_all(det, idx[4 * 288 :], v[4 * 288 :])
    slot = (np.arange(idx.size) % 288)[4 * 288 :]
    at_job = [x for x, s in zip(verdicts, slot, strict=True) if 36 <= s < 36 + bump]
    assert not any(x.anomalous for x in at_job)


@pytest.mark.parametrize("split", [1, 300, 2500, 3500])
def test_warm_equivalence_with_pooled_five_minute_slots(split: int) -> None:
    idx, v = five_minute_load(3, days=16, bump=2)
    v[1000:1010] = np.nan
    keep = np.ones(v.size, dtype=bool)
    keep[3000:3100] = False  # a gap of more than eight hours
    idx, v = idx[keep], v[keep]
    spec = DetectorSpec(FIVE_MINUTES, quiet_factor=NO_QUIET)
    stepped = Detector(spec)
    step_all(stepped, idx[:split], v[:split])
    warm = warmed(spec, idx, v, split)
    tail = slice(split, split + 400)
    assert same(step_all(warm, idx[tail], v[tail]), step_all(stepped, idx[tail], v[tail]))


def test_an_outage_in_one_of_two_known_weeks_does_not_halve_the_weekly_profile() -> None:
    idx, values = hourly_orders(21, weeks=3)
    values = values.copy()
    outage = slice(24 + 9, 24 + 12)  # Tuesday 09:00-12:00 of the first week
    values[outage] = 0.0
    detector = Detector(DetectorSpec(HOUR))
    two_weeks_on = 2 * 168 + 24 + 9
    verdicts = detector.warm(idx[: two_weeks_on + 3], values[: two_weeks_on + 3], judge_last=3)
    clean_week = values[168 + 24 + 9 : 168 + 24 + 12]  # the same hours a week after the outage
    for verdict, usual in zip(verdicts, clean_week, strict=True):
        assert verdict.expected is not None
        assert verdict.expected == pytest.approx(usual, rel=0.3)
        assert not verdict.anomalous
