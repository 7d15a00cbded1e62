"""Intermittent series, judged on purpose (numba kernels).

A series that is exactly zero in most buckets (an average latency over sparse calls, the errors
of a quiet service, the revenue of a small market at night) has no useful spread around a
forecast: its median deviation is zero, and a band built on it pages at every blip. Once at
least half of the calibration window is zeros, the series is judged as a hurdle model would:

* **size**: a non-zero value against the distribution of the non-zero values of the window (in
  the series' scale): anomalous when beyond ``sensitivity`` robust spreads (1.4826 MAD: the few
  big blips of past incidents do not widen it), so a blip of the usual size never pages and a
  blip ten times that does;
* **occurrence**: how many of the last few buckets were non-zero (or zero) against the binomial
  tail of the window's share of zeros: a storm of events where they are rare, or a silence of
  hours where they are frequent, is anomalous when less likely than ``sensitivity`` normal
  standard deviations.

A zero is never anomalous on its own, and a small non-zero value never is either.
"""

from __future__ import annotations

import math

from monitor.detection.jit import FloatArray, IntArray, Record, inlined, kernel
from monitor.detection.rings import NAN, get, median

INTERMITTENT = 0.5
"""A series whose calibration window is at least this share zeros is judged as intermittent."""
_MIN_SIZES = 5


@kernel
def calibrate(
    state: Record,
    x: FloatArray,
    y: FloatArray,
    lo: int,
    at: int,
    first: int,
    newest: int,
    work: FloatArray,
) -> None:
    """The share of zeros of the raw values ``x`` at ``lo .. at - 1`` and the centre and spread
    of the non-zero ones in model space ``y``."""
    zeros = known = sizes = 0
    for index in range(lo, at):
        v = get(x, index, first, newest)
        if v != v:
            continue
        known += 1
        if v == 0.0:
            zeros += 1
        else:
            work[sizes] = get(y, index, first, newest)
            sizes += 1
    state.zero_share = zeros / known if known else 0.0
    state.size_centre = state.size_sigma = NAN
    if sizes < _MIN_SIZES:
        return
    centre = median(work, sizes)
    for j in range(sizes):
        work[j] = abs(work[j] - centre)
    spread = 1.4826 * median(work, sizes)  # robust: a few big blips do not widen it
    if spread > 0:
        state.size_centre, state.size_sigma = centre, spread


@inlined
def applies(state: Record) -> bool:
    return bool(state.zero_share >= INTERMITTENT and state.size_sigma == state.size_sigma)


@kernel
def occurrence(
    x: FloatArray,
    index: int,
    v: float,
    share: float,
    spans: IntArray,
    tail: float,
    first: int,
    newest: int,
) -> int:
    """The longest window of ``spans`` ending at ``index`` whose run of non-zero buckets (when
    ``v`` is non-zero) or of zeros (when it is zero) is less likely than ``tail`` under the
    window's share of zeros; 0 when none is."""
    p = share if v == 0.0 else 1.0 - share  # the chance of a bucket like this one
    if not 0.0 < p < 1.0:
        return 0
    longest = spans[spans.shape[0] - 1]
    same = known = 1
    widest = 0
    for j in range(index - 1, index - longest, -1):
        w = get(x, j, first, newest)
        if w != w:
            continue
        known += 1
        same += (w == 0.0) == (v == 0.0)
        for k in range(spans.shape[0]):
            if spans[k] == known and _binomial_tail(known, same, p) < tail:
                widest = known
    return widest


@kernel
def _binomial_tail(n: int, k: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    total = 0.0
    for i in range(k, n + 1):
        log_term = (math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                    + i * math.log(p) + (n - i) * math.log(1.0 - p))  # fmt: skip
        total += math.exp(log_term)
    return total
