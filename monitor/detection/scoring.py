"""Calibration: which forecaster a series is judged against, and how far its residuals stray
(numba kernels). Refreshed once a day from the newest two weeks of out-of-sample residuals, so
``warm`` and ``step`` calibrate from the same buckets.

* **forecaster**: the seasonal forecaster unless another's blind one-step-ahead errors (the mean
  absolute residual, the largest 5% left out) are at least ``FORECASTER_PREFERENCE`` lower, over
  at least two days (and 48 buckets) of them.
* **spread** ``sigma``: of the chosen forecaster's residuals, the larger of ``1.4826 * MAD`` and
  the 95% quantile of ``|residual - median|`` scaled to a normal sigma: equal for normal noise,
  wider for heavy tails (and the only sane value for intermittent series, whose MAD is 0), and
  moved by past anomalies only once they fill more than 5% of the window.
* **per time of day**: the spread of the residuals at the same time of day (and the slots either
  side), shrunk towards ``sigma`` with the weight of 20 samples; nights and days differ.
* **window scales** of the sustained test: the robust spread of sums of ``w`` consecutive
  residuals in units of the single-bucket spread (``sqrt(w)`` for independent noise, more when
  residuals are correlated), never below ``sqrt(w)``; taken only when a bucket needs them (most
  never do).
"""

from __future__ import annotations

import math

import numpy as np

from monitor.detection.forecasters import SEASONAL
from monitor.detection.jit import FloatArray, IntArray, Record, kernel
from monitor.detection.rings import NAN, gather, get, median, quantile, select
from monitor.detection.scales import inverse

FORECASTER_PREFERENCE = 0.3
"""The seasonal forecaster stays unless another's errors are this much lower (a fraction)."""
_TRIM = 0.95
_TAIL_Q = 0.95
_TAIL_Z = 1.959964
_MAD = 1.4826
_SLOT_PRIOR = 20.0
_SLOT_CYCLES = 14
_MIN_CHOICE = 48


@kernel
def calibrate(
    state: Record,
    at: int,
    resid: FloatArray,
    first: int,
    newest: int,
    window: int,
    day: int,
    slot_sigma: FloatArray,
    work: FloatArray,
    work2: FloatArray,
) -> None:
    """Calibrate from the residuals ``resid[k]`` of the ``window`` buckets before local index
    ``at``: sets ``state.chosen``, ``state.sigma`` (NaN with fewer than 8 residuals) and
    ``slot_sigma``."""
    state.calibrated_at = at
    lo = at - window
    state.chosen = _choose(resid, lo, at, first, newest, day, work)
    r = resid[state.chosen]
    m = gather(r, lo, at, first, newest, work)
    if m < 8:
        state.sigma = NAN
        return
    centre = median(work, m)
    for j in range(m):
        work[j] = abs(work[j] - centre)
    mad = _MAD * median(work, m)
    sigma = max(mad, quantile(work, m, _TAIL_Q) / _TAIL_Z) if m >= 20 else mad
    state.sigma = sigma
    if day > 0:
        _slot_spreads(r, max(lo, at - _SLOT_CYCLES * day - 1), at, first, newest, day, centre,
                      sigma, slot_sigma, work, work2)  # fmt: skip


@kernel
def _choose(
    resid: FloatArray, lo: int, at: int, first: int, newest: int, day: int, work: FloatArray
) -> int:
    """The forecaster with the lowest trimmed mean absolute error where all three forecast; the
    seasonal one until two days (and 48 buckets) of such errors are known."""
    best, chosen = math.inf, SEASONAL
    for k in range(resid.shape[0]):
        m = 0
        for index in range(lo, at):
            a = get(resid[0], index, first, newest)
            b = get(resid[1], index, first, newest)
            c = get(resid[2], index, first, newest)
            if a == a and b == b and c == c:
                work[m] = abs(get(resid[k], index, first, newest))
                m += 1
        if m < max(_MIN_CHOICE, 2 * day):
            return SEASONAL
        keep = int(_TRIM * m) + 1
        select(work, m, keep - 1)  # the `keep` smallest errors now come first
        error = work[:keep].sum() / keep
        if k == SEASONAL:
            error *= 1.0 - FORECASTER_PREFERENCE
        if error < best:
            best, chosen = error, k
    return chosen


@kernel
def _slot_spreads(
    r: FloatArray,
    lo: int,
    at: int,
    first: int,
    newest: int,
    day: int,
    centre: float,
    sigma: float,
    slot_sigma: FloatArray,
    work: FloatArray,
    group: FloatArray,
) -> None:
    """Per time of day, the spread at it and its neighbours over the last 14 days, shrunk
    towards ``sigma`` (NaN, meaning ``sigma``, with fewer than three samples). The deviations
    are grouped by slot in one pass (a counting sort), each landing in three slots' groups."""
    starts = np.zeros(day + 1, dtype=np.int64)
    n = 0
    for index in range(lo, at):
        v = get(r, index, first, newest)
        if v == v:
            work[n] = index
            work[n + (at - lo)] = abs(v - centre)
            n += 1
            for d in (-1, 0, 1):
                starts[(index + d) % day + 1] += 1
    for slot in range(day):
        starts[slot + 1] += starts[slot]
    fill = starts[:day].copy()
    for j in range(n):
        index = int(work[j])
        for d in (-1, 0, 1):
            slot = (index + d) % day
            group[fill[slot]] = work[j + (at - lo)]
            fill[slot] += 1
    for slot in range(day):
        count = starts[slot + 1] - starts[slot]
        if count < 3:
            slot_sigma[slot] = NAN
            continue
        own = _MAD * median(group[starts[slot] :], count)
        slot_sigma[slot] = math.sqrt(
            (count * own * own + _SLOT_PRIOR * sigma * sigma) / (count + _SLOT_PRIOR)
        )


@kernel
def ensure_scales(
    state: Record,
    at: int,
    resid: FloatArray,
    first: int,
    newest: int,
    window: int,
    spans: IntArray,
    scales: FloatArray,
    work: FloatArray,
    work2: FloatArray,
) -> None:
    """The sustained test's window scales, from the window before the calibration point ``at``
    (taken when first needed after it: most buckets never need them)."""
    if state.scales_at == at and state.scales_of == state.chosen:
        return
    state.scales_at = at
    state.scales_of = state.chosen
    r = resid[state.chosen]
    lo = at - window
    m = gather(r, lo, at, first, newest, work)
    if m < 8:
        scales[:] = NAN
        return
    centre = median(work, m)
    for j in range(m):
        work[j] = abs(work[j] - centre)
    _window_scales(r, lo, at, first, newest, _MAD * median(work, m), spans, scales, work, work2)


@kernel
def _window_scales(
    r: FloatArray,
    lo: int,
    at: int,
    first: int,
    newest: int,
    single: float,
    spans: IntArray,
    scales: FloatArray,
    work: FloatArray,
    sums: FloatArray,
) -> None:
    # prefix sums of the residuals and of the gaps, so every window sum is one subtraction
    n = at - lo
    total, gaps = 0.0, 0
    work[0] = 0.0
    sums[0] = 0.0
    for j in range(n):
        v = get(r, lo + j, first, newest)
        if v == v:
            total += v
        else:
            gaps += 1
        work[j + 1] = total
        sums[j + 1] = gaps
    for s in range(spans.shape[0]):
        w = spans[s]
        scales[s] = NAN
        if not single > 0 or n < 4 * w:
            continue
        m = 0
        for j in range(n - w + 1):
            if sums[j + w] == sums[j]:
                # reuse the tail of `sums` beyond n for the window sums
                sums[n + 1 + m] = work[j + w] - work[j]
                m += 1
        if m < 2 * w:
            continue
        window_sums = sums[n + 1 : n + 1 + m]
        centre = median(window_sums, m)
        for j in range(m):
            window_sums[j] = abs(window_sums[j] - centre)
        scales[s] = max(_MAD * median(window_sums, m) / single, math.sqrt(w))


@kernel
def spread_at(
    state: Record, slot_sigma: FloatArray, index: int, day: int, forecast: float
) -> float:
    """The spread that judges ``index``: its time of day's, floored by Poisson noise for counts
    (in model space) and by a hair of the forecast."""
    sigma = state.sigma
    if day > 0:
        own = slot_sigma[index % day]
        if own == own:
            sigma = own
    floor = 1e-9 * max(1.0, abs(forecast))
    if state.integer:
        mu = max(inverse(forecast, state.lam, state.shift), 0.0)
        slope = 1.0 if state.lam == 1.0 else (mu + state.shift) ** (state.lam - 1.0)
        floor = max(floor, math.sqrt(mu + 0.25) * slope)
    return float(max(sigma, floor))
