"""Specification of the calendar's marks (monitor.detection.Mark): what a holiday, an event or an
exclusion window does to a series' model, on plain generated data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitor.detection import REGULAR, Detector, DetectorSpec, Mark, Verdict
from tests.detection.test_detector import DAY, HOUR, daily_revenue, hourly_orders, same

HOLIDAY = 100  # the index of the marked day in daily_revenue()


def stepped(
    spec: DetectorSpec, idx: pd.DatetimeIndex, values: np.ndarray, marks: dict[int, Mark]
) -> tuple[Detector, list[Verdict]]:
    detector = Detector(spec)
    verdicts = [
        detector.step(t, float(v), marks.get(i, REGULAR))
        for i, (t, v) in enumerate(zip(idx, values, strict=True))
    ]
    return detector, verdicts


def test_a_bucket_that_is_not_learned_leaves_the_baseline_as_a_gap_would() -> None:
    idx, values = daily_revenue(1)
    closed = values.copy()
    closed[HOLIDAY] *= 0.2  # the shops are closed
    _, marked = stepped(DetectorSpec(DAY), idx, closed, {HOLIDAY: Mark(learn=False)})
    gap = closed.copy()
    gap[HOLIDAY] = np.nan
    _, skipped = stepped(DetectorSpec(DAY), idx, gap, {})
    assert same(marked[HOLIDAY + 1 :], skipped[HOLIDAY + 1 :])
    # the holiday itself is still judged: a closed day that nobody marked as expected pages
    assert marked[HOLIDAY].anomalous


def test_the_week_after_a_learned_holiday_is_expected_lower_and_after_a_marked_one_not() -> None:
    idx, values = daily_revenue(2)
    closed = values.copy()
    closed[HOLIDAY : HOLIDAY + 3] *= 0.2
    holiday = {HOLIDAY + k: Mark(learn=False, judge=False) for k in range(3)}
    _, marked = stepped(DetectorSpec(DAY), idx, closed, holiday)
    _, learned = stepped(DetectorSpec(DAY), idx, closed, {})
    after = slice(HOLIDAY + 3, HOLIDAY + 10)
    marked_error = [abs(v.expected - v.value) / v.value for v in marked[after] if v.expected]
    learned_error = [abs(v.expected - v.value) / v.value for v in learned[after] if v.expected]
    assert np.median(marked_error) < np.median(learned_error)
    assert not any(v.anomalous for v in marked[after])


def test_a_wider_band_lets_a_busy_event_day_pass_and_scores_it_lower() -> None:
    idx, values = daily_revenue(3)
    busy = values.copy()
    regular = stepped(DetectorSpec(DAY), idx, values, {})[1][HOLIDAY]
    assert regular.upper is not None and regular.expected is not None
    busy[HOLIDAY] = regular.expected + 1.5 * (regular.upper - regular.expected)
    plain = stepped(DetectorSpec(DAY), idx, busy, {})[1][HOLIDAY]
    widened = stepped(DetectorSpec(DAY), idx, busy, {HOLIDAY: Mark(widen=3.0)})[1][HOLIDAY]
    assert plain.anomalous and not widened.anomalous
    assert widened.upper is not None and plain.upper is not None
    assert widened.upper > plain.upper
    assert 0 < widened.score < plain.score


def test_a_holiday_is_judged_against_the_value_the_calendar_expects() -> None:
    idx, values = daily_revenue(4)
    closed = values.copy()
    closed[HOLIDAY] *= 0.3
    told = Mark(learn=False, expected=float(values[HOLIDAY]) * 0.3)
    quiet = stepped(DetectorSpec(DAY), idx, closed, {HOLIDAY: told})[1][HOLIDAY]
    assert not quiet.anomalous
    assert quiet.expected == pytest.approx(told.expected)
    # an incident on the holiday itself is still caught: revenue collapsing on Black Friday
    collapsed = closed.copy()
    collapsed[HOLIDAY] *= 0.1
    caught = stepped(DetectorSpec(DAY), idx, collapsed, {HOLIDAY: told})[1][HOLIDAY]
    assert caught.anomalous and caught.score < 0


def test_an_excluded_bucket_gets_no_verdict_and_is_not_learned() -> None:
    idx, values = hourly_orders(5, weeks=4)
    detector = Detector(DetectorSpec(HOUR))
    detector.warm(idx[:-1], values[:-1])
    learned = detector.history_size
    verdict = detector.step(idx[-1], 10 * float(values[-1]), Mark(learn=False, judge=False))
    assert verdict == Verdict.unjudged(idx[-1], 10 * float(values[-1]))
    assert detector.history_size == learned


def test_a_bucket_that_is_not_judged_is_still_learned() -> None:
    idx, values = hourly_orders(6, weeks=4)
    detector = Detector(DetectorSpec(HOUR))
    detector.warm(idx[:-1], values[:-1])
    learned = detector.history_size
    verdict = detector.step(idx[-1], float(values[-1]), Mark(judge=False))
    assert verdict.expected is None and not verdict.anomalous
    assert detector.history_size == learned + 1


def test_warm_with_marks_equals_stepping_with_them() -> None:
    idx, values = hourly_orders(7, weeks=6)
    values = values.copy()
    values[700:724] *= 0.3  # a holiday, told as expected
    values[900:912] = 0.0  # an outage already handled, excluded
    marks = {i: Mark(learn=False, expected=float(values[i]) * 1.1) for i in range(700, 724)}
    marks |= {i: Mark(learn=False, judge=False) for i in range(900, 912)}
    marks |= {i: Mark(widen=2.0) for i in range(950, 960)}
    spec = DetectorSpec(HOUR, quiet_factor=1.0)
    _, each = stepped(spec, idx, values, marks)
    warmed = Detector(spec)
    block = warmed.warm(
        idx, values, judge_last=len(idx), marks=[marks.get(i, REGULAR) for i in range(len(idx))]
    )
    assert same(block, each)


def test_marks_are_checked() -> None:
    with pytest.raises(ValueError, match="widen"):
        Mark(widen=0.5)
    with pytest.raises(ValueError, match="expected"):
        Mark(expected=float("nan"))
    idx, values = hourly_orders(8, weeks=1)
    with pytest.raises(ValueError, match="marks"):
        Detector(DetectorSpec(HOUR)).warm(idx, values, marks=[REGULAR])
