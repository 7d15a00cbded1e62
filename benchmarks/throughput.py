"""Speed of the detection engine: fit + score per hourly series with 8 weeks of history.

    python -m benchmarks.throughput            # 1,000 and 10,000 series, MSTL on a sample
    python -m benchmarks.throughput --smoke    # 200 series, MSTL on 2

Per series, as the daemon does at start: ``Detector.warm`` on 8 weeks of hourly history
(1,344 buckets), then ``step`` on the newest complete bucket. Reports series per second on one
core, peak memory of the loop (tracemalloc, numpy included) and the memory one warmed detector
keeps; and, in the same run, statsmodels MSTL(24, 168) fit on a sample of the same series, with
the speed ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
import warnings

import numpy as np
import numpy.typing as npt
import pandas as pd

from monitor.detection import Detector, DetectorSpec

HOURS = 8 * 168


def make_series(n: int, seed: int = 0) -> tuple[pd.DatetimeIndex, npt.NDArray[np.float64]]:
    """``n`` hourly order-count series (daily + weekly seasonality, growth, noise), one per row,
    each 8 weeks of history plus the bucket to score."""
    rng = np.random.default_rng(seed)
    length = HOURS + 1
    idx = pd.date_range("2026-01-05", periods=length, freq="h", tz="UTC")
    hour = np.asarray(idx.hour)
    dow = np.asarray(idx.day_of_week)
    peak = rng.uniform(12, 20, (n, 1))
    daily = 0.15 + np.exp(-0.5 * ((hour[None, :] - peak) / 4.0) ** 2)
    weekly = np.where(dow[None, :] >= 5, rng.uniform(0.55, 0.85, (n, 1)), 1.0)
    level = rng.uniform(20, 500, (n, 1))
    trend = np.exp(rng.uniform(-0.1, 0.4, (n, 1)) * np.arange(length)[None, :] / length)
    lam = level * daily * weekly * trend * np.exp(rng.normal(0, 0.08, (n, length)))
    return idx, rng.poisson(lam).astype(np.float64)


def fit_and_score(
    idx: pd.DatetimeIndex, values: npt.NDArray[np.float64]
) -> tuple[float, float, int]:
    """Warm + score every series; returns (CPU seconds, wall seconds, anomalies flagged).

    CPU time of this process is the one-core figure; wall time also counts whatever else the
    machine was doing."""
    spec = DetectorSpec(3600)
    history, newest = idx[:-1], idx[-1]
    flagged = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for row in values:
        detector = Detector(spec)
        detector.warm(history, row[:-1])
        flagged += detector.step(newest, float(row[-1])).anomalous
    return time.process_time() - cpu, time.perf_counter() - wall, flagged


def detector_bytes(idx: pd.DatetimeIndex, row: npt.NDArray[np.float64]) -> int:
    """Memory one warmed detector keeps (its numpy buffers)."""
    detector = Detector(DetectorSpec(3600))
    detector.warm(idx[:-1], row[:-1])
    return detector.nbytes


def mstl_seconds(idx: pd.DatetimeIndex, values: npt.NDArray[np.float64]) -> float:
    """Seconds per series for statsmodels MSTL(24, 168) (default settings) on log1p values."""
    from statsmodels.tsa.seasonal import MSTL

    started = time.process_time()
    for row in values:
        series = pd.Series(np.log1p(row[:-1]), index=idx[:-1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            MSTL(series, periods=(24, 168)).fit()
    return (time.process_time() - started) / len(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes, for CI")
    parser.add_argument("--sizes", type=int, nargs="*", default=None)
    parser.add_argument("--mstl-sample", type=int, default=None)
    args = parser.parse_args(argv)
    sizes = args.sizes or ([200] if args.smoke else [1_000, 10_000])
    sample = args.mstl_sample or (2 if args.smoke else 10)

    print("fit + score, hourly series with 8 weeks of history (one core, CPU time)")
    header = (
        f"{'series':>8} {'CPU s':>8} {'wall s':>8} {'series/s':>10} {'ms/series':>10} "
        f"{'peak MiB':>9}"
    )
    print(header)
    rates = []
    for n in sizes:
        idx, values = make_series(n)
        tracemalloc.start()
        fit_and_score(idx, values)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        # timed again without tracemalloc, which slows allocation-heavy code
        cpu, wall, _ = fit_and_score(idx, values)
        rate = n / cpu
        rates.append(rate)
        print(
            f"{n:8d} {cpu:8.2f} {wall:8.2f} {rate:10.0f} {1000 * cpu / n:10.3f} {peak / 2**20:9.1f}"
        )
    idx, values = make_series(max(sample, 1), seed=1)
    kept = detector_bytes(idx, values[0])
    print(f"memory kept per warmed detector: {kept / 1024:.0f} KiB")
    per_mstl = mstl_seconds(idx, values[:sample])
    ours = min(rates)
    print(
        f"statsmodels MSTL(24, 168) on {sample} series: {per_mstl:.3f} s/series "
        f"({1 / per_mstl:.1f} series/s); ours is {ours * per_mstl:.0f}x faster"
    )
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
