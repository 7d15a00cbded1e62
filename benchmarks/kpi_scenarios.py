"""A seeded generator of labelled business-KPI scenarios, hourly and daily.

Every series is a business KPI with the structure real ones have (daily and weekly seasonality,
growth, multiplicative noise; counts for hourly orders, money for daily revenue), with at most one
kind of event injected and labelled. Nothing is stored: the same seed gives the same series.

Labels per series:
* ``windows``: anomaly windows ``(first bucket, last bucket)``; an alert whose onset falls in a
  window (or within ``grace`` buckets after its end) detects it; any other onset is false.
* ``ignore``: windows where alerts count neither way (a holiday: a monitor without a calendar may
  or may not flag it; both are acceptable).
* ``acknowledge``: instants when an operator accepted an intended change (after a deployment).
* ``complete_before``: the newest buckets after this instant are incomplete (late or partial data).
* ``eval_start``: onsets before this bucket are not counted (the detector is still learning).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

Grain = Literal["hour", "day"]
FloatArray = npt.NDArray[np.float64]

BUCKET_SECONDS: dict[Grain, int] = {"hour": 3600, "day": 86400}

# scenario name -> whether it contains labelled anomalies
SCENARIOS: dict[str, bool] = {
    "clean": False,
    "small_counts": False,
    "missing_buckets": False,
    "holiday": False,
    "late_partial_bucket": False,
    "month_end": False,
    "acknowledged_shift": True,
    "deployment_shift": True,
    "gradual_drift": True,
    "spikes": True,
    "dips": True,
    "outage_zero": True,
    "variance_change": True,
    "deviation_5sigma": True,
    # shapes log-space detectors get wrong (issue 13's failure modes), each with incidents
    "bursty_counts": True,
    "intermittent_rate": True,
    "sparse_revenue": True,
}
HARD_SHAPES = ("bursty_counts", "intermittent_rate", "sparse_revenue")


@dataclass(frozen=True)
class Series:
    """One labelled series."""

    scenario: str
    grain: Grain
    seed: int
    frame: pd.DataFrame  # timestamp (tz-aware UTC), value
    windows: list[tuple[pd.Timestamp, pd.Timestamp]] = field(default_factory=list)
    ignore: list[tuple[pd.Timestamp, pd.Timestamp]] = field(default_factory=list)
    acknowledge: list[pd.Timestamp] = field(default_factory=list)
    complete_before: pd.Timestamp | None = None
    eval_start: pd.Timestamp | None = None
    noise_sigma: float = 0.0  # multiplicative noise, log units

    @property
    def bucket_seconds(self) -> int:
        return BUCKET_SECONDS[self.grain]


@dataclass
class _Base:
    index: pd.DatetimeIndex
    mean: FloatArray  # expected value per bucket (before noise)
    sigma: FloatArray  # multiplicative noise per bucket (log units)
    counts: bool
    eval_from: int


def _base(grain: Grain, rng: np.random.Generator) -> _Base:
    if grain == "hour":
        n = 10 * 168
        index = pd.date_range("2026-01-05", periods=n, freq="h", tz="UTC")
        hour = np.asarray(index.hour)
        dow = np.asarray(index.day_of_week)
        peak = rng.uniform(12, 20)
        daily = 0.15 + np.exp(-0.5 * ((hour - peak) / rng.uniform(3, 5)) ** 2)
        daily += 0.3 * np.exp(-0.5 * ((hour - peak + 8) / 2.0) ** 2)  # a lunch bump
        weekly = np.where(dow >= 5, rng.uniform(0.55, 0.85), 1.0)
        level = rng.uniform(40, 400)
        growth = rng.uniform(-0.1, 0.4)
        trend = np.exp(growth * np.arange(n) / n)
        mean = level * daily * weekly * trend
        return _Base(index, mean, np.full(n, rng.uniform(0.05, 0.12)), True, 3 * 168)
    n = 364
    index = pd.date_range("2025-03-03", periods=n, freq="D", tz="UTC")
    dow = np.asarray(index.day_of_week)
    weekly = (
        np.array([1.0, 1.02, 1.0, 0.97, 1.08, 0.75, 0.62])[dow] * rng.uniform(0.95, 1.05, 7)[dow]
    )
    level = rng.uniform(5_000, 80_000)
    growth = rng.uniform(-0.1, 0.5)
    trend = np.exp(growth * np.arange(n) / n)
    yearly = 1 + 0.05 * np.sin(2 * np.pi * np.arange(n) / 365.25 + rng.uniform(0, 6))
    mean = level * weekly * trend * yearly
    return _Base(index, mean, np.full(n, rng.uniform(0.04, 0.09)), False, 8 * 7)


def _realise(base: _Base, rng: np.random.Generator, mean: FloatArray | None = None) -> FloatArray:
    m = base.mean if mean is None else mean
    noisy = m * np.exp(rng.normal(0.0, 1.0, m.size) * base.sigma)
    if base.counts:
        return rng.poisson(np.maximum(noisy, 0.0)).astype(np.float64)
    return np.round(noisy, 2)


def _event_positions(
    rng: np.random.Generator, start: int, stop: int, count: int, length: int
) -> list[int]:
    """``count`` non-overlapping event starts in [start, stop - length), well apart."""
    span = (stop - length - start) // count
    out = []
    for k in range(count):
        lo = start + k * span
        out.append(int(rng.integers(lo + span // 5, lo + span - length)))
    return out


def _hard_shape(
    scenario: str, grain: Grain, rng: np.random.Generator
) -> tuple[pd.DatetimeIndex, FloatArray, list[tuple[int, int]], int]:
    """Values, incident windows and the evaluation start of a series whose noise is not
    multiplicative and small: bursty over-dispersed counts spanning two decades within a day, an
    intermittent rate that is zero most of the time, and a sum of a few orders an hour (many
    zero hours). Incidents are what their operators would page for."""
    hourly = grain == "hour"
    n = 10 * 168 if hourly else 364
    index = pd.date_range("2026-01-05" if hourly else "2025-03-03", periods=n,
                          freq="h" if hourly else "D", tz="UTC")  # fmt: skip
    start = 3 * 168 if hourly else 8 * 7
    hour = np.asarray(index.hour)
    dow = np.asarray(index.day_of_week)
    weekly = np.where(dow >= 5, rng.uniform(0.6, 0.85), 1.0)
    windows: list[tuple[int, int]] = []
    length = (2, 5) if hourly else (1, 3)
    positions = _event_positions(rng, start, n, 3, 34 if hourly else 3)
    if hourly:  # incidents in business hours, where an operator would see them on the chart
        positions = [p - p % 24 + int(rng.integers(9, 13)) for p in positions]
    if scenario == "bursty_counts":
        # a trickle of tens an hour (a day's rhythm) plus bursts of hundreds to thousands at
        # unpredictable times, each lasting an hour or three
        base = rng.uniform(20, 40) * (0.6 + 0.8 * (np.abs(hour - 14) < 6)) * weekly
        bursts = np.zeros(n)
        for t in np.flatnonzero(rng.random(n) < (0.08 if hourly else 0.25)):
            height = rng.lognormal(np.log(600 if hourly else 3000), 0.5)
            for k in range(int(rng.integers(1, 4))):
                if t + k < n:
                    bursts[t + k] += height * 0.5**k
        mean = base + bursts
        if not hourly:
            mean = 24 * base + bursts
        values = rng.poisson(mean).astype(np.float64)
        typical = float(np.median(mean))
        for k, pos in enumerate(positions):
            span = int(rng.integers(*length))
            if k == 0:  # a surge far beyond any burst
                values[pos : pos + span] = rng.poisson(20 * float(np.quantile(mean, 0.99)), span)
            elif k == 1:  # an outage: nothing arrives
                span = 3 * span
                values[pos : pos + span] = 0.0
            else:  # stuck high: a burst's height for half a day
                span = 4 * span
                values[pos : pos + span] = rng.poisson(30 * typical, span)
            windows.append((pos, pos + span - 1))
    elif scenario == "intermittent_rate":
        # an average latency over sparse events: 0 when nothing happened in the bucket
        busy = 0.08 + 0.12 * (np.abs(hour - 14) < 5) if hourly else np.full(n, 0.3)
        level = rng.uniform(20, 400)
        size = level * np.exp(rng.normal(0, 0.4, n))
        values = np.where(rng.random(n) < busy, np.round(size, 3), 0.0)
        for k, pos in enumerate(positions):
            span = int(rng.integers(*length))
            if k % 2 == 0:  # slow: every event five times as long
                values[pos : pos + span] = np.round(5 * size[pos : pos + span], 3)
            else:  # storm: events in every bucket for twice as long
                span = 2 * span
                values[pos : pos + span] = np.round(size[pos : pos + span], 3)
            windows.append((pos, pos + span - 1))
    else:  # sparse_revenue: a few orders an hour, each a log-normal amount
        rate = (0.2 + rng.uniform(2, 5) * np.exp(-0.5 * ((hour - 15) / 4.0) ** 2)) * weekly
        if not hourly:
            rate = rng.uniform(20, 60) * weekly
        amount = rng.uniform(40, 150)
        orders = rng.poisson(rate)
        drop = positions[0]
        long = 10 if hourly else 2
        orders[drop : drop + long] = rng.poisson(0.2 * rate[drop : drop + long])  # a market at 20%
        windows.append((drop, drop + long - 1))
        for pos in positions[1:]:
            span = int(rng.integers(*length))
            orders[pos : pos + span] = rng.poisson(5 * rate[pos : pos + span])
            windows.append((pos, pos + span - 1))
        values = np.array(
            [np.round(rng.lognormal(np.log(amount), 0.6, k).sum(), 2) for k in orders]
        )
    return index, values, windows, start


def make_series(scenario: str, grain: Grain, seed: int) -> Series:
    """The labelled series of ``scenario`` at ``grain`` for ``seed``."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    salt = sum(ord(c) for c in scenario) * 1000 + (0 if grain == "hour" else 500_000)
    rng = np.random.default_rng(seed + salt)
    if scenario in HARD_SHAPES:
        idx, values, spans, start = _hard_shape(scenario, grain, rng)
        return Series(
            scenario=scenario,
            grain=grain,
            seed=seed,
            frame=pd.DataFrame({"timestamp": idx, "value": values}),
            windows=[(idx[a], idx[min(b, idx.size - 1)]) for a, b in spans],
            eval_start=idx[start],
        )
    base = _base(grain, rng)
    idx = base.index
    n = idx.size
    hourly = grain == "hour"
    windows: list[tuple[int, int]] = []
    ignore: list[tuple[int, int]] = []
    acknowledge: list[pd.Timestamp] = []
    complete_before: pd.Timestamp | None = None
    mean = base.mean.copy()
    sigma = base.sigma.copy()
    keep = np.ones(n, dtype=bool)
    post: list[tuple[int, int, float]] = []  # (start, stop, factor) applied after noise
    start = base.eval_from

    if scenario == "small_counts":
        mean = mean / mean.mean() * rng.uniform(0.8, 3.0)
        base = _Base(idx, mean, sigma, True, base.eval_from)
    elif scenario == "missing_buckets":
        keep[rng.choice(n, size=n // 20, replace=False)] = False
        gap = int(rng.integers(start, n - 50))
        keep[gap : gap + (12 if hourly else 3)] = False
    elif scenario == "holiday":
        for pos in _event_positions(rng, start, n, 2, 24 if hourly else 1):
            day = pos - pos % 24 if hourly else pos
            length = 24 if hourly else 1
            mean[day : day + length] *= rng.uniform(0.4, 0.7)
            ignore.append((day, day + length - 1))
    elif scenario == "month_end":
        # closing and payroll: the last day of every month well above the rest (at daily
        # grain the model learns it from the third month on; hourly checks do not)
        mean *= np.where(np.asarray(idx.is_month_end), rng.uniform(1.5, 2.0), 1.0)
    elif scenario == "late_partial_bucket":
        post.append((n - 1, n, rng.uniform(0.2, 0.6)))
        complete_before = idx[-1]  # the last bucket has not ended: incomplete
    elif scenario in ("deployment_shift", "acknowledged_shift"):
        t0 = int(rng.integers(start + (168 if hourly else 28), n - (168 if hourly else 60)))
        factor = float(rng.choice([0.6, 0.65, 1.5, 1.6]))
        mean[t0:] *= factor
        if scenario == "acknowledged_shift":
            ack = t0 + (8 if hourly else 2)  # someone looked at the alert and accepted it
            acknowledge.append(idx[ack])
            windows.append((t0, ack))
        else:
            windows.append((t0, t0 + (48 if hourly else 7)))
    elif scenario == "gradual_drift":
        length = 48 if hourly else 14
        t0 = int(rng.integers(start + 50, n - length - (168 if hourly else 60)))
        target = float(rng.choice([0.5, 1.8]))
        ramp = np.exp(np.log(target) * np.clip((np.arange(n) - t0) / length, 0, 1))
        mean *= ramp
        windows.append((t0, t0 + length + (24 if hourly else 7)))
    elif scenario in ("spikes", "dips", "outage_zero"):
        length_range = (2, 5) if hourly else (1, 3)
        for pos in _event_positions(rng, start, n, 3, length_range[1]):
            length = int(rng.integers(*length_range))
            if scenario == "spikes":
                factor = rng.uniform(3.0, 5.0)
            elif scenario == "dips":
                factor = rng.uniform(0.1, 0.35)
            else:
                factor = 0.0
            post.append((pos, pos + length, factor))
            windows.append((pos, pos + length - 1))
    elif scenario == "variance_change":
        length = 72 if hourly else 28
        t0 = int(rng.integers(start + 50, n - length - 10))
        sigma[t0 : t0 + length] *= 5.0
        windows.append((t0, t0 + length - 1))
        base = _Base(idx, mean, sigma, False, base.eval_from)  # money-like so sigma shows
    elif scenario == "deviation_5sigma":
        length = 6 if hourly else 3
        for pos in _event_positions(rng, start, n, 3, length):
            sign = rng.choice([-1.0, 1.0])
            post.append((pos, pos + length, float(np.exp(sign * 5.0 * base.sigma[pos]))))
            windows.append((pos, pos + length - 1))
        base = _Base(idx, mean, sigma, False, base.eval_from)  # pure multiplicative noise

    base = _Base(idx, mean, sigma, base.counts, base.eval_from)
    values = _realise(base, rng)
    for lo, hi, factor in post:
        values[lo:hi] = np.round(values[lo:hi] * factor, 2)
    frame = pd.DataFrame({"timestamp": idx[keep], "value": values[keep]})
    return Series(
        scenario=scenario,
        grain=grain,
        seed=seed,
        frame=frame.reset_index(drop=True),
        windows=[(idx[a], idx[min(b, n - 1)]) for a, b in windows],
        ignore=[(idx[a], idx[min(b, n - 1)]) for a, b in ignore],
        acknowledge=acknowledge,
        complete_before=complete_before,
        eval_start=idx[base.eval_from],
        noise_sigma=float(np.median(base.sigma)),
    )


def suite(
    seeds: range | list[int] = range(10),
    grains: tuple[Grain, ...] = ("hour", "day"),
    scenarios: list[str] | None = None,
) -> Iterator[Series]:
    """Every (scenario, grain, seed) series, in a stable order."""
    for name in scenarios or list(SCENARIOS):
        for grain in grains:
            for seed in seeds:
                yield make_series(name, grain, seed)
