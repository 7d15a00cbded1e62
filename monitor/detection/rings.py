"""Ring buffers and the small order statistics the kernels need (numba, no allocation).

A ring holds the newest ``len(ring)`` buckets of a series at ``index % len(ring)``; its length is
a power of two, so that is a bit mask. The caller knows which indices are in it (from the first
and the newest index learned) and asks for those only. Gaps are NaN.
"""

from __future__ import annotations

import math

from monitor.detection.jit import FloatArray, inlined, kernel

NAN = math.nan


@inlined
def get(ring: FloatArray, index: int, first: int, newest: int) -> float:
    """The value at local ``index``, or NaN when the ring no longer (or never) held it."""
    if index < first or index > newest or newest - index >= ring.shape[0]:
        return NAN
    return float(ring[index & (ring.shape[0] - 1)])


@inlined
def put(ring: FloatArray, index: int, value: float) -> None:
    ring[index & (ring.shape[0] - 1)] = value


def ring_size(needed: int) -> int:
    """The smallest power of two holding ``needed`` buckets."""
    return 1 << max(int(needed) - 1, 1).bit_length()


@kernel
def clear(ring: FloatArray, lo: int, hi: int) -> None:
    """NaN at the indices ``lo .. hi - 1`` (a gap; at most one whole ring)."""
    size = ring.shape[0]
    for index in range(max(lo, hi - size), hi):
        ring[index & (size - 1)] = NAN


@kernel
def gather(
    ring: FloatArray, lo: int, hi: int, first: int, newest: int, out: FloatArray
) -> int:
    """The known values at ``lo .. hi - 1`` into ``out``; returns how many."""
    n = 0
    for index in range(max(lo, first, newest - ring.shape[0] + 1), min(hi, newest + 1)):
        v = ring[index & (ring.shape[0] - 1)]
        if v == v:
            out[n] = v
            n += 1
    return n


@kernel
def select(values: FloatArray, n: int, k: int) -> float:
    """The k-th smallest of ``values[:n]``, partitioning them in place around it (Hoare's
    selection: linear time, no allocation)."""
    lo, hi = 0, n - 1
    while lo < hi:
        pivot = values[(lo + hi) // 2]
        i, j = lo, hi
        while i <= j:
            while values[i] < pivot:
                i += 1
            while values[j] > pivot:
                j -= 1
            if i <= j:
                values[i], values[j] = values[j], values[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return float(values[k])


@kernel
def median(values: FloatArray, n: int) -> float:
    """Median of ``values[:n]`` (reordered in place); NaN for n == 0."""
    if n == 0:
        return NAN
    if n <= 16:  # an insertion sort beats selection on the short look-backs
        for i in range(1, n):
            v = values[i]
            j = i - 1
            while j >= 0 and values[j] > v:
                values[j + 1] = values[j]
                j -= 1
            values[j + 1] = v
        return float(0.5 * (values[(n - 1) // 2] + values[n // 2]))
    hi = select(values, n, n // 2)
    if n % 2:
        return hi
    # the selection left every smaller value below n // 2
    return float(0.5 * (values[: n // 2].max() + hi))


@kernel
def quantile(values: FloatArray, n: int, q: float) -> float:
    """The ``int(q * (n - 1))``-th order statistic of ``values[:n]`` (reordered in place)."""
    return select(values, n, int(q * (n - 1)))
