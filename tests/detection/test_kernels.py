"""The kernels' building blocks give the numbers of their plain definitions: ring buffers, order
statistics and sorted sliding windows against numpy, on arbitrary data."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.detection.rings import clear, get, median, put, quantile, ring_size, select
from monitor.detection.windows import above, below, insert, middle, remove, shift

values = st.lists(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(lambda x: round(x, 1)),
    min_size=1,
    max_size=80,
)


@given(values)
@settings(max_examples=200, deadline=None)
def test_median_select_and_quantile_are_numpys(data: list[float]) -> None:
    array = np.array(data)
    assert median(array.copy(), array.size) == np.median(array)
    ordered = np.sort(array)
    for k in range(array.size):
        assert select(array.copy(), array.size, k) == ordered[k]
    assert quantile(array.copy(), array.size, 0.95) == ordered[int(0.95 * (array.size - 1))]


def test_a_ring_answers_only_for_the_indices_it_still_holds() -> None:
    size = ring_size(10)
    assert size == 16
    ring = np.full(size, math.nan)
    for index in range(100, 140):
        put(ring, index, float(index))
    assert get(ring, 139, 100, 139) == 139.0
    assert get(ring, 124, 100, 139) == 124.0
    assert math.isnan(get(ring, 123, 100, 139))  # overwritten: 16 buckets back is gone
    assert math.isnan(get(ring, 140, 100, 139))  # not learned yet
    clear(ring, 130, 135)
    assert math.isnan(get(ring, 132, 100, 139)) and get(ring, 135, 100, 139) == 135.0


@given(st.lists(values, min_size=1, max_size=6), st.integers(min_value=2, max_value=40))
@settings(max_examples=150, deadline=None)
def test_a_sliding_window_is_the_median_of_what_it_holds(
    blocks: list[list[float]], width: int
) -> None:
    stream = [x for block in blocks for x in block]
    source = np.full(ring_size(len(stream) + 1), math.nan)
    windows = np.empty((1, width + 1))
    counts = np.zeros(1, dtype=np.int64)
    lo = 0
    for end, x in enumerate(stream):
        if end % 7 == 3:
            x = math.nan  # gaps are never in a window
        put(source, end, x)
        new_lo = max(end + 1 - width, 0)
        # one swap per bucket, as the kernel slides
        shift(windows, counts, 0, source, lo, new_lo, end, end + 1, 0, end)
        lo = new_lo
        held = np.array([v for v in stream[new_lo : end + 1]])
        held = np.array([v for i, v in zip(range(new_lo, end + 1), held, strict=True)
                         if i % 7 != 3])  # fmt: skip
        assert counts[0] == held.size
        if held.size:
            assert middle(windows, counts, 0) == np.median(held)
            pivot = float(np.median(held))
            assert below(windows, counts, 0, pivot) == int((held < pivot).sum())
            assert above(windows, counts, 0, pivot) == int((held > pivot).sum())


def test_insert_and_remove_keep_a_window_sorted() -> None:
    windows = np.empty((1, 8))
    counts = np.zeros(1, dtype=np.int64)
    for x in (5.0, 1.0, 3.0, 3.0, 9.0):
        insert(windows, counts, 0, x)
    assert list(windows[0, : counts[0]]) == [1.0, 3.0, 3.0, 5.0, 9.0]
    remove(windows, counts, 0, 3.0)
    remove(windows, counts, 0, 9.0)
    assert list(windows[0, : counts[0]]) == [1.0, 3.0, 5.0]
    assert middle(windows, counts, 0) == 3.0
