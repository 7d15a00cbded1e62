"""Sliding medians kept sorted as buckets come and go (numba): the level's windows and the
robust level of a period move by one bucket at a time, so one insertion and one removal in a
sorted array (a binary search and a short move) replace a selection over the whole window.

A window is a row of ``values`` with its length in ``counts``; the caller says which values
enter and leave, and reads the same median a selection over the window's values would give.
"""

from __future__ import annotations

from monitor.detection.jit import FloatArray, IntArray, inlined
from monitor.detection.rings import NAN, get


@inlined
def _position(row: FloatArray, n: int, value: float) -> int:
    """The first position in the sorted ``row[:n]`` whose value is not below ``value``."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if row[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@inlined
def below(values: FloatArray, counts: IntArray, w: int, value: float) -> int:
    """How many values of window ``w`` lie below ``value``."""
    return _position(values[w], counts[w], value)


@inlined
def above(values: FloatArray, counts: IntArray, w: int, value: float) -> int:
    """How many values of window ``w`` lie above ``value``."""
    row = values[w]
    lo, hi = 0, counts[w]
    while lo < hi:  # the first position whose value is above
        mid = (lo + hi) // 2
        if row[mid] <= value:
            lo = mid + 1
        else:
            hi = mid
    return int(counts[w] - lo)


@inlined
def insert(values: FloatArray, counts: IntArray, w: int, value: float) -> None:
    """Add a finite ``value`` to window ``w``."""
    n = counts[w]
    row = values[w]
    at = _position(row, n, value)
    for k in range(n, at, -1):
        row[k] = row[k - 1]
    row[at] = value
    counts[w] = n + 1


@inlined
def remove(values: FloatArray, counts: IntArray, w: int, value: float) -> None:
    """Take one ``value`` (finite, present) out of window ``w``."""
    n = counts[w]
    row = values[w]
    at = _position(row, n, value)
    for k in range(at, n - 1):
        row[k] = row[k + 1]
    counts[w] = n - 1


@inlined
def replace(values: FloatArray, counts: IntArray, w: int, old: float, new: float) -> None:
    """Take ``old`` (present) out of window ``w`` and put ``new`` in: only the values between
    their two positions move."""
    n = counts[w]
    row = values[w]
    at = _position(row, n, old)
    if new >= old:
        while at + 1 < n and row[at + 1] < new:
            row[at] = row[at + 1]
            at += 1
    else:
        while at > 0 and row[at - 1] > new:
            row[at] = row[at - 1]
            at -= 1
    row[at] = new


@inlined
def shift(
    values: FloatArray,
    counts: IntArray,
    w: int,
    source: FloatArray,
    gone_lo: int,
    gone_hi: int,
    come_lo: int,
    come_hi: int,
    first: int,
    newest: int,
) -> None:
    """Window ``w`` loses the values of ``source`` at ``gone_lo .. gone_hi - 1`` and gains those
    at ``come_lo .. come_hi - 1`` (NaN ones were never in it); pairs are swapped in one move."""
    gone, come = gone_lo, come_lo
    while gone < gone_hi or come < come_hi:
        old = new = NAN
        while gone < gone_hi and old != old:
            old = get(source, gone, first, newest)
            gone += 1
        while come < come_hi and new != new:
            new = get(source, come, first, newest)
            come += 1
        if old == old and new == new:
            replace(values, counts, w, old, new)
        elif old == old:
            remove(values, counts, w, old)
        elif new == new:
            insert(values, counts, w, new)


@inlined
def middle(values: FloatArray, counts: IntArray, w: int) -> float:
    """The median of window ``w`` (NaN when empty)."""
    n = counts[w]
    if n == 0:
        return NAN
    row = values[w]
    return float(0.5 * (row[(n - 1) // 2] + row[n // 2]))
