"""The detectors users pick instead of kpi-monitor, as flags on a regular grid of buckets.

Every peer reads a ``cmd_eval.Series`` (a regular UTC grid, NaN where a bucket has no value) and
returns, per bucket, whether it is flagged and whether it was judged at all (``known``: a bucket
without a value or without a baseline changes no alert). Flags become alert onsets through
cmd_eval's ``onsets_from_flags`` (the daemon's state machine), after cmd_eval's warm-up rule: no
peer flags anything in a corpus's unscored first buckets. So every corpus, NAB and the KPI suite
included, compares the same definitions of the peers, through the same alert rule.

* ``zscore``, ``elementary``, ``prophet``: cmd_eval's ``flags_zscore``, ``flags_elementary``
  and ``flags_prophet``, called as they are. Prophet is an optional extra (``pip install
  '.[bench]'``); without it the peer is skipped with a printed note.
* ``holt-winters``: statsmodels' ``ExponentialSmoothing``, defined here (``flags_holt_winters``).

The peers give flags, not graded scores: on NAB their best-threshold figure is their alert column.
"""

from __future__ import annotations

import importlib
import math
import warnings
from dataclasses import dataclass, field
from functools import cache
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from statsmodels.tsa.holtwinters import ExponentialSmoothing

PEERS = ("zscore", "elementary", "holt-winters", "prophet")
DETECTORS = ("kpi-monitor", *PEERS)

# The two-sided 99% normal quantile: the same interval width cmd_eval gives Prophet.
Z_99 = 2.5758293035489004
DAY = 86400

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Flags:
    """One peer's judgement of every bucket of a series."""

    flagged: BoolArray
    known: BoolArray
    info: dict[str, Any] = field(default_factory=dict)


@cache
def prophet_missing() -> str | None:
    """Why Prophet cannot run here, or None when it can."""
    try:
        importlib.import_module("prophet")
    except Exception as exc:  # any failure to import (absent, broken install) means: skip it
        return f"prophet skipped: cannot import it ({exc}); pip install '.[bench]'"
    return None


def grid_series(
    cmd_eval: ModuleType,
    key: str,
    domain: str,
    timestamps: pd.Series,
    values: pd.Series,
    step: int,
) -> tuple[Any, npt.NDArray[np.int64]]:
    """Rows as a ``cmd_eval.Series`` on a regular grid of ``step`` seconds, and each row's grid
    position (-1 for a row without a usable timestamp).

    As cmd_eval loads a file: naive timestamps are UTC, several rows in a bucket are averaged
    (NaN-skipping), a bucket without rows is NaN. No labels: each corpus keeps its own."""
    ts = pd.Series(pd.to_datetime(timestamps, utc=True, errors="coerce"), index=timestamps.index)
    vals = pd.to_numeric(values, errors="coerce").astype(float)
    bucket = ts.dt.floor(pd.Timedelta(seconds=step))
    means = vals[ts.notna()].groupby(bucket[ts.notna()], sort=True).mean()
    grid = pd.date_range(
        means.index.min(), means.index.max(), freq=pd.Timedelta(seconds=step), tz="UTC"
    )
    series = cmd_eval.Series(
        key,
        domain,
        key,
        step,
        grid,
        means.reindex(grid).to_numpy(float),
        np.zeros(len(grid), dtype=int),
        {},
    )
    positions = np.full(len(ts), -1, dtype=np.int64)
    ok = ts.notna().to_numpy()
    positions[ok] = grid.get_indexer(pd.DatetimeIndex(bucket[ok]))
    return series, positions


def peer_flags(name: str, series: Any, warm: int, cmd_eval: ModuleType) -> Flags:
    """Flags of peer ``name`` on ``series``; none before bucket ``warm`` (cmd_eval's warm-up)."""
    info: dict[str, Any] = {}
    if name == "zscore":
        flagged, known = cmd_eval.flags_zscore(series)
    elif name == "elementary":
        flagged, known = cmd_eval.flags_elementary(series)
    elif name == "prophet":
        flagged, known, info = cmd_eval.flags_prophet(series, warm)
    elif name == "holt-winters":
        return flags_holt_winters(series.values, series.grid, series.step, warm)
    else:
        raise ValueError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
    flagged = np.asarray(flagged, dtype=bool).copy()
    flagged[:warm] = False
    return Flags(flagged, np.asarray(known, dtype=bool), {**info, "flagged": int(flagged.sum())})


def onsets(cmd_eval: ModuleType, flags: Flags, open_after: int, resolve_after: int) -> list[int]:
    """Bucket positions where the alert rule opens an alert on these flags."""
    found: list[int] = cmd_eval.onsets_from_flags(
        flags.flagged, flags.known, open_after, resolve_after
    )
    return found


# ----------------------------------------------------------------------------- Holt-Winters


def seasonal_period(step: int) -> int | None:
    """Buckets in one season of the grain: a day below daily grain, a week at daily grain."""
    if step < DAY and DAY % step == 0:
        return DAY // step
    if step == DAY:
        return 7
    return None


def supports_season(n: int, period: int) -> bool:
    """Whether ``n`` buckets of history are enough for statsmodels' heuristic seasonal start."""
    return n >= max(2 * period, 10 + 2 * (period // 2))


def refit_blocks(grid: pd.DatetimeIndex, step: int) -> npt.NDArray[np.int64]:
    """Block number per bucket; the model is refitted at the start of each block: once per UTC
    day below daily grain (as cmd_eval refits Prophet), once per week at daily grain."""
    period = seasonal_period(step)
    length = max(DAY, period * step) if period else step
    seconds = grid.as_unit("s").asi8
    blocks: npt.NDArray[np.int64] = seconds // length
    return blocks


def flags_holt_winters(values: FloatArray, grid: pd.DatetimeIndex, step: int, warm: int) -> Flags:
    """Holt-Winters exponential smoothing (statsmodels), refitted causally, 99% interval.

    * Model: additive damped trend, additive seasonality of the grain's period (a day below
      daily grain, a week at daily grain) when the history holds enough seasons for statsmodels'
      heuristic start; without them, trend only. Raw values (no transform): a peer as a user
      would configure it.
    * Fit: at the start of each refit block (a UTC day; a week at daily grain) on every bucket
      before that block, missing buckets carried forward; smoothing parameters by SLSQP.
    * Judgement: within the block, each bucket is compared with the fitted model's one-step
      forecast from the buckets before it (the state follows the data; the parameters stay
      those of the last refit), flagged outside forecast +- 2.576 sigma (99%), sigma the
      standard deviation of the fit's one-step residuals. A missing bucket is not judged.
    * A fit that fails flags nothing in its block; failures are counted in ``info``.
    """
    n = len(values)
    flagged = np.zeros(n, dtype=bool)
    known = np.zeros(n, dtype=bool)
    present = ~np.isnan(values)
    if not present.any():
        return Flags(flagged, known, {"fits": 0, "failed_fits": 0, "flagged": 0})
    first = int(np.argmax(present))
    # missing buckets carry the last value forward (causal); positions below count from `first`
    filled = np.asarray(pd.Series(values[first:]).ffill(), dtype=np.float64)
    blocks = refit_blocks(grid, step)
    period = seasonal_period(step)
    fits = failures = 0
    last_error = ""
    starts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]])
    for start, end in zip(starts.tolist(), [*starts[1:].tolist(), n], strict=True):
        lo = max(start, warm)
        if start < first or lo >= end:  # nothing to judge, or no history at all before it
            continue
        try:
            forecast, sigma = _one_step(
                filled[: start - first], filled[start - first : end - first], period
            )
        except (ValueError, np.linalg.LinAlgError, ZeroDivisionError) as exc:
            failures += 1
            last_error = f"{type(exc).__name__}: {exc}"[:300]
            continue
        if forecast is None:  # too little history to fit
            continue
        fits += 1
        pred = forecast[lo - start :]
        ok = present[lo:end] & np.isfinite(pred)
        tolerance = np.maximum(Z_99 * sigma, 1e-9 * np.maximum(np.abs(pred), 1.0))
        known[lo:end] = ok
        flagged[lo:end] = ok & (np.abs(values[lo:end] - pred) > tolerance)
    info: dict[str, Any] = {"fits": fits, "failed_fits": failures, "flagged": int(flagged.sum())}
    if last_error:
        info["last_error"] = last_error
    return Flags(flagged, known, info)


def _one_step(
    history: FloatArray, block: FloatArray, period: int | None
) -> tuple[FloatArray | None, float]:
    """Fit on ``history``; return the one-step forecast of every bucket of ``block`` (the buckets
    right after it) under the fitted parameters, and the fit's residual sigma. None when the
    history is too short for any model (statsmodels needs 10 buckets)."""
    if len(history) < 10:
        return None, math.nan
    seasonal = period if period and supports_season(len(history), period) else None
    structure: dict[str, Any] = {
        "trend": "add",
        "damped_trend": True,
        "seasonal": "add" if seasonal else None,
        "seasonal_periods": seasonal,
    }
    with warnings.catch_warnings():
        # convergence chatter on flat or short histories; a fit that truly fails raises
        warnings.simplefilter("ignore")
        fit = ExponentialSmoothing(history, initialization_method="heuristic", **structure).fit(
            method="SLSQP", use_brute=False
        )
        sigma = float(np.std(np.asarray(fit.resid, dtype=float)))
        if len(block) == 1:  # statsmodels cannot run a model over one bucket; same forecast
            return np.asarray(fit.forecast(1), dtype=float), sigma
        p = fit.params
        # the fitted model carried on over the block from its state at the end of the history:
        # its fitted values there are one-step forecasts, each from the buckets before it
        state: dict[str, Any] = {
            "initial_level": np.asarray(fit.level)[-1],
            "initial_trend": np.asarray(fit.trend)[-1],
        }
        if seasonal:
            state["initial_seasonal"] = np.asarray(fit.season)[-seasonal:]
        follow = ExponentialSmoothing(
            block, initialization_method="known", **state, **structure
        ).fit(
            smoothing_level=p["smoothing_level"],
            smoothing_trend=p["smoothing_trend"],
            smoothing_seasonal=p["smoothing_seasonal"] if seasonal else None,
            damping_trend=p["damping_trend"],
            optimized=False,
        )
    return np.asarray(follow.fittedvalues, dtype=float), sigma
