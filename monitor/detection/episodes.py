"""From deviations to episodes (numba kernels): the sustained test, how many anomalous buckets a
verdict is worth, the quiet period after an incident, and whether an open episode still holds.

* **sustained deviations**: a bucket inside the band is anomalous too when the mean residual of
  the last few buckets (2 to 24 hours; 2 to 7 days), this one deviating by at least one robust
  spread the same way, is beyond the band in the empirical spread of such window sums: a -40%
  shift on a noisy hourly count is 2-3 spreads per bucket but unmistakable over four hours.
* **span**: the longest such window beyond the band ending at a bucket (its own residual capped
  at the band edge, the buckets before it averaging 80% of it), so a deviation that is clear over
  its first two hours counts as two anomalous buckets for the alert state machine even when its
  first bucket stayed inside the band; so does one bucket four times beyond it.
* **quiet period**: for a day after a deviation that lasted long enough to alert (two buckets
  below daily grain), a new deviation (one after a bucket that was not anomalous) is judged
  against a band ``quiet_factor`` times wider; the incident's own run keeps the normal band.
* **holding**: after an anomalous bucket the series is held to be away until the evidence says
  it is back: a one-sided CUSUM (Page 1954) in robust spreads, starting at the band's width,
  gaining each bucket's deviation the run's way and losing two spreads a bucket. A low-volume
  night bucket that happens to fit a wide band leaves most of it; two buckets back at their
  expected value end it. An open episode does not resolve while the series holds.
"""

from __future__ import annotations

import math

from monitor.detection.jit import FloatArray, IntArray, Record, kernel
from monitor.detection.rings import get
from monitor.detection.scales import inverse

BOTH, UP, DOWN = 0, 1, 2
EXTREME = 4.0
"""A deviation this many times beyond the band is as clear as two anomalous buckets in a row."""
QUIET_RUN = 2
"""The anomalous run that starts a quiet period (the daemon's alert_after below daily grain)."""
POINT = 1.0
"""A bucket must itself deviate by this many spreads for the sustained test to look at it."""
_EARLIER = 0.8  # the buckets before an anomalous one must average this fraction of the band
_DRAIN = 2.0  # spreads of evidence a bucket at its expected value takes away


@kernel
def sustained(
    resid: FloatArray,
    first: int,
    newest: int,
    index: int,
    r: float,
    sigma: float,
    limit_z: float,
    spans: IntArray,
    scales: FloatArray,
    forecast: float,
    expected: float,
    floor: float,
    lam: float,
    shift: float,
    direction: int,
) -> tuple[int, float]:
    """The widest window ending at ``index`` (residual ``r``) that is beyond the band, and the
    strongest windowed deviation in units of its own spread (0 when none)."""
    limit = limit_z * sigma
    own = min(max(r, -limit), limit)  # an outlier counts as at the band edge
    total, best, widest, count = own, 0.0, 0, 1
    longest = spans[spans.shape[0] - 1]
    for j in range(index - 1, index - longest, -1):
        v = get(resid, j, first, newest)
        if v != v or abs(v) > limit:
            break  # a gap, or an outlier already judged on its own, ends the run
        total += v
        count += 1
        s = -1
        for k in range(spans.shape[0]):
            if spans[k] == count:
                s = k
        if s < 0 or (total > 0) != (r > 0):
            continue
        # the scale is at least sqrt(w): skip the windows that cannot pass before reading it
        if abs(total) / (sigma * math.sqrt(count)) <= limit_z:
            continue
        scale = scales[s]
        if scale != scale:
            continue
        z = total / (sigma * scale)
        if abs(z) <= limit_z:
            continue
        if abs(inverse(forecast + total / count, lam, shift) - expected) <= floor:
            continue
        if (z > 0 and direction == DOWN) or (z < 0 and direction == UP):
            continue
        if abs(total - own) >= (count - 1) * _EARLIER * limit:
            widest = count
        if abs(z) > abs(best):
            best = z
    return widest, best


@kernel
def judged_span(
    resid: FloatArray,
    first: int,
    newest: int,
    index: int,
    r: float,
    sigma: float,
    limit_z: float,
    spans: IntArray,
    scales: FloatArray,
    forecast: float,
    expected: float,
    floor: float,
    lam: float,
    shift: float,
    direction: int,
    outside: bool,
) -> tuple[int, float]:
    """(span, sustained deviation) of a bucket: ``outside`` the band, at least 1 (2 when four
    times beyond it); inside, the sustained test's (0, 0.0 when it does not pass)."""
    z = r / sigma
    if outside:
        widest, _ = sustained(resid, first, newest, index, r, sigma, limit_z, spans, scales,
                              forecast, expected, floor, lam, shift, direction)  # fmt: skip
        span = max(widest, 1)
        if abs(z) >= EXTREME * limit_z:
            span = max(span, 2)
        return span, 0.0
    if abs(z) < POINT:
        return 0, 0.0
    widest, best = sustained(resid, first, newest, index, r, sigma, limit_z, spans, scales,
                             forecast, expected, floor, lam, shift, direction)  # fmt: skip
    if best == 0.0:
        return 0, 0.0
    return max(widest, 1), best


@kernel
def holds(state: Record, r: float, sigma: float, limit_z: float) -> bool:
    """Whether the series is still away the way its latest anomalous run went: evidence that
    starts at the band (``limit_z`` spreads) after an anomalous bucket, gains what each bucket
    deviates that way and loses ``_DRAIN`` spreads a bucket, so a bucket back at its expected
    value drains it in two and a noisy night bucket does not end it."""
    if state.sign == 0:
        return False
    evidence = min(state.evidence + state.sign * r / sigma - _DRAIN, limit_z)
    state.evidence = evidence
    if evidence > 0.0:
        return True
    state.sign = 0
    return False


@kernel
def remember(
    state: Record,
    index: int,
    bucket_ns: int,
    anomalous: bool,
    span: int,
    score: float,
    evidence: float,
    quiet_span: int,
) -> None:
    """Track the run of anomalous verdicts as the alert state machine counts it: a run long
    enough to alert starts the quiet period; the run's direction holds until the series is
    back."""
    if bucket_ns <= state.counted_ns:
        return  # counted before a restart (see Detector.resume)
    if not anomalous:
        state.run = 0
        return
    before = state.run
    state.run = max(before + 1, span)
    state.sign = 1 if score > 0 else -1
    state.evidence = evidence
    if before < QUIET_RUN <= state.run:
        state.quiet_until = index + quiet_span
        state.quiet_start_ns = bucket_ns
