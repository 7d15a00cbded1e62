"""What the benchmarks share: a command line with the ``--smoke`` flag CI runs, and a timer."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable


def arguments(doc: str | None, smoke: str) -> argparse.ArgumentParser:
    """A benchmark's parser, described by its module docstring's first line; ``smoke`` says
    what ``--smoke`` (the small run ``make bench-smoke`` does) shrinks the benchmark to."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--smoke", action="store_true", help=smoke)
    return parser


def median_seconds(
    get: Callable[[], bytes], repeats: int, before: Callable[[], None] = lambda: None
) -> tuple[float, int]:
    """The median seconds of ``get`` (after ``before`` each time) and the size of its answer."""
    times, size = [], 0
    for _ in range(repeats):
        before()
        started = time.perf_counter()
        size = len(get())
        times.append(time.perf_counter() - started)
    return statistics.median(times), size
