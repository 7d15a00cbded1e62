"""The scale a series is modelled in, chosen per series by a blind test on its own history.

The candidates are the Box-Cox powers ``((x + c)**lam - 1) / lam`` that matter for business KPIs:
``log1p`` (lam 0, c 1: multiplicative noise, growth; the default), the square root (lam 0.5:
Poisson-like counts, sums of a few orders) and the values as they are (lam 1: additive noise,
bursts that are large in absolute terms, mostly-zero rates). As soon as 48 residuals are known,
and again after as long as the history then seen (between one and four weeks), the candidates
are compared on the newest two weeks of the seasonal forecaster's out-of-sample residuals: each
scale's central 95% prediction intervals, mapped back to values, are scored with the interval
score (Gneiting and Raftery 2007: width plus 2/alpha times the miss), a proper scoring rule in
the units of the data, so scales are comparable. ``log1p`` is kept unless another scale scores
at least ``LOG_PREFERENCE`` better: a change of scale must be clearly earned.
"""

from __future__ import annotations

import math

import numpy as np

from monitor.detection.jit import FloatArray, inlined, kernel
from monitor.detection.rings import get, median, quantile

LOG_PREFERENCE = 0.3
"""log1p stays unless another scale's interval score is this much lower (a fraction)."""
_Z95 = 1.959964
_MISS = 2.0 / 0.05  # the interval score's weight on a miss, alpha = 5%
_SLOT_PRIOR = 20.0


@inlined
def forward(x: float, lam: float, shift: float) -> float:
    """The value in model space (negative values only ever meet lam 1)."""
    if lam == 1.0:
        return x
    v = max(x + shift, 1e-300)
    if lam == 0.0:
        return math.log(v)
    if lam == 0.5:
        return 2.0 * (math.sqrt(v) - 1.0)
    return float((v**lam - 1.0) / lam)


@inlined
def inverse(y: float, lam: float, shift: float) -> float:
    """The value of a point in model space (the power's domain edge maps to -shift)."""
    if lam == 1.0:
        return y
    if lam == 0.0:
        return math.exp(min(y, 700.0)) - shift
    base = lam * y + 1.0
    if base <= 0.0:
        return -shift
    if lam == 0.5:
        return base * base - shift
    return float(base ** (1.0 / lam) - shift)


@inlined
def shift_for(lam: float, integer: int) -> float:
    """The shift of a candidate: log1p's 1, Anscombe's 3/8 for the root of counts."""
    if lam == 0.0:
        return 1.0
    if lam == 0.5 and integer:
        return 0.375
    return 0.0


@kernel
def choose(
    x: FloatArray,
    y: FloatArray,
    resid: FloatArray,
    first: int,
    newest: int,
    window: int,
    lam: float,
    shift: float,
    integer: int,
    day: int,
    work: FloatArray,
    values: FloatArray,
) -> float:
    """The power (0, 0.5 or 1) with the best interval score over the newest ``window`` buckets,
    or -1.0 while fewer than 48 residuals are known. ``resid`` holds the seasonal forecaster's
    residuals in the current scale (``lam``, ``shift``)."""
    m = 0
    for index in range(max(newest - window + 1, first), newest + 1):
        xv = get(x, index, first, newest)
        rv = get(resid, index, first, newest)
        yv = get(y, index, first, newest)
        if xv == xv and rv == rv and yv == yv:
            work[0, m] = index
            work[1, m] = xv
            work[2, m] = max(inverse(yv - rv, lam, shift), 0.0)  # the forecast, as a value
            work[5, m] = rv
            m += 1
    if m < 48:
        return -1.0
    best, chosen = math.inf, 0.0
    for candidate in (0.0, 0.5, 1.0):
        c = shift_for(candidate, integer)
        # work[3]: the forecast's root (sqrt), its value plus shift (log), or itself; work[4]:
        # the residual in the candidate's space
        for j in range(m):
            xv, fx = work[1, j], work[2, j]
            if candidate == 0.0:
                work[3, j] = fx + c
                same = lam == 0.0 and shift == c and fx > 0.0
                work[4, j] = work[5, j] if same else math.log((xv + c) / (fx + c))
            elif candidate == 0.5:
                work[3, j] = math.sqrt(fx + c)
                work[4, j] = 2.0 * (math.sqrt(xv + c) - work[3, j])
            else:
                work[3, j] = fx
                work[4, j] = xv - fx
        score = _interval_score(work, m, candidate, c, day, values)
        if candidate == 0.0:
            score *= 1.0 - LOG_PREFERENCE
        if score < best:
            best, chosen = score, candidate
    return chosen


@kernel
def _interval_score(
    work: FloatArray, m: int, lam: float, shift: float, day: int, values: FloatArray
) -> float:
    """Mean 95% interval score, in value units, of the forecasts (``work[3]``, see ``choose``)
    with residuals ``work[4]`` in the candidate's space, the spread robust and per time of
    day. The band's edges are computed without a transcendental call per bucket."""
    for j in range(m):
        values[j] = work[4, j]
    centre = median(values, m)
    for j in range(m):
        values[j] = abs(work[4, j] - centre)
    mad = 1.4826 * median(values, m)
    sigma = max(mad, quantile(values, m, 0.95) / _Z95)
    if not sigma > 0:
        sigma = 1e-12
    spreads = np.full(max(day, 1), sigma)
    if day > 0:
        # the residuals grouped by time of day (a counting sort), then each group's median
        starts = np.zeros(day + 1, dtype=np.int64)
        for j in range(m):
            starts[int(work[0, j]) % day + 1] += 1
        for slot in range(day):
            starts[slot + 1] += starts[slot]
        fill = starts[:day].copy()
        for j in range(m):
            slot = int(work[0, j]) % day
            values[fill[slot]] = abs(work[4, j] - centre)
            fill[slot] += 1
        for slot in range(day):
            n = starts[slot + 1] - starts[slot]
            if n >= 3:
                own = 1.4826 * median(values[starts[slot] :], n)
                spreads[slot] = math.sqrt(
                    (n * own * own + _SLOT_PRIOR * sigma * sigma) / (n + _SLOT_PRIOR)
                )
    # per spread, what the band's edges multiply or add (log: a factor; root: a term)
    up = np.empty(spreads.shape[0])
    down = np.empty(spreads.shape[0])
    for k in range(spreads.shape[0]):
        half = _Z95 * spreads[k]
        if lam == 0.0:
            up[k], down[k] = math.exp(min(half, 700.0)), math.exp(-min(half, 700.0))
        elif lam == 0.5:
            up[k], down[k] = half / 2.0, half / 2.0
        else:
            up[k], down[k] = half, half
    total = 0.0
    for j in range(m):
        k = int(work[0, j]) % day if day > 0 else 0
        f = work[3, j]
        if lam == 0.0:
            lo, hi = f * down[k] - shift, f * up[k] - shift
        elif lam == 0.5:
            root = f - down[k]
            lo = (root * root if root > 0.0 else 0.0) - shift
            hi = (f + up[k]) * (f + up[k]) - shift
        else:
            lo, hi = f - down[k], f + up[k]
        x = work[1, j]
        total += hi - lo + _MISS * (max(lo - x, 0.0) + max(x - hi, 0.0))
    return total / m
