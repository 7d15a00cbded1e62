"""A detector's scalar state: one numpy record the kernels read and update by name.

The buffers (raw values, transformed values, seasonal shapes, residuals) are rings indexed by the
bucket's local index modulo their size (see :mod:`monitor.detection.rings`); everything else a
series carries from one bucket to the next is a field of :data:`STATE`.
"""

from __future__ import annotations

import numpy as np

NO_INDEX = -(2**62)
"""A local bucket index before any bucket."""

STATE = np.dtype(
    [
        # what has been learned
        ("first", np.int64),  # local index of the first bucket learned
        ("newest", np.int64),  # local index of the newest bucket learned
        ("learned", np.int64),  # buckets learned (gaps excluded)
        # scale (monitor.detection.scales)
        ("lam", np.float64),  # Box-Cox power: 0 log, 0.5 square root, 1 as is
        ("shift", np.float64),  # added before the power (1 for log1p)
        ("integer", np.int64),  # 1 while every value has been an integer (counts: a floor)
        ("counts", np.int64),  # the spec's counts: 1 True, 0 None (decide), -1 False
        ("nonnegative", np.int64),  # 1 while no value has been negative
        ("scale_locked", np.int64),  # 1: as is for good (negative values, or counts=False)
        ("next_scale", np.int64),  # local index from which the scale is chosen again
        ("rebuild", np.float64),  # NaN, or the power to rebuild the model with
        # forecasters (monitor.detection.forecasters)
        ("hw_level", np.float64),
        ("hw_spread", np.float64),
        ("fast_level", np.float64),
        ("fast_spread", np.float64),
        ("level_from", np.int64),  # the level learns from this local index on (rebaseline)
        ("regime", np.int64),  # the seasonal regime whose residuals the level windows hold
        ("level_lo", np.int64),  # the oldest index the level's long window may hold
        ("short_lo", np.int64),  # the oldest index the level's short window may hold
        ("level_hi", np.int64),  # the level windows hold the indices before this one
        ("period_lo0", np.int64),  # the oldest index each period's level window holds
        ("period_lo1", np.int64),
        ("period_hi0", np.int64),  # ... and the indices before this one
        ("period_hi1", np.int64),
        # calibration (monitor.detection.scoring)
        ("calibrated_at", np.int64),  # refresh point of the calibration in force
        ("chosen", np.int64),  # forecaster judged against
        ("sigma", np.float64),  # its robust spread, NaN before enough residuals
        ("zero_share", np.float64),  # share of zeros in the window (monitor.detection.intermittent)
        ("size_centre", np.float64),  # centre and spread of its non-zero values, model space
        ("size_sigma", np.float64),
        ("scales_at", np.int64),  # the week start the sustained test's scales were taken at
        ("scales_of", np.int64),  # ... for this forecaster's residuals
        ("dated_kind", np.int64),  # the effect of the date applied (monitor.detection.dates)
        # episodes (monitor.detection.episodes)
        ("run", np.int64),  # anomalous verdicts in a row, as the alert state machine counts
        ("sign", np.int64),  # direction of the latest anomalous run while it holds, else 0
        ("evidence", np.float64),  # that it still holds, in robust spreads (episodes.holds)
        ("quiet_until", np.int64),  # local index before which a new deviation needs more
        ("quiet_start_ns", np.int64),  # UTC ns of the bucket that started it (NO_INDEX: none)
        ("counted_ns", np.int64),  # verdicts up to this UTC ns are in the resumed run
    ]
)


def new_state(lam: float, shift: float, locked: bool, counts: int) -> np.ndarray:
    """A fresh state in the given scale (a one-element record array); ``counts`` as the spec
    says: 1 the values are counts, -1 they are not, 0 decide from the data."""
    key = (lam, shift, locked, counts)
    template = _TEMPLATES.get(key)
    if template is None:
        template = _TEMPLATES[key] = _fresh(lam, shift, locked, counts)
    return template.copy()


_TEMPLATES: dict[tuple[float, float, bool, int], np.ndarray] = {}
# the fields that hold a local index (or a UTC ns), none before any bucket
_INDICES = (
    "first", "newest", "next_scale", "calibrated_at", "quiet_until", "quiet_start_ns",
    "counted_ns", "level_from", "level_lo", "short_lo", "level_hi", "period_lo0", "period_lo1",
    "period_hi0", "period_hi1", "scales_at",
)  # fmt: skip


def _fresh(lam: float, shift: float, locked: bool, counts: int) -> np.ndarray:
    state = np.zeros(1, dtype=STATE)
    s = state[0]
    for name in _INDICES:
        s[name] = NO_INDEX
    s["lam"] = lam
    s["shift"] = shift
    s["integer"] = 0 if counts < 0 else 1
    s["counts"] = counts
    s["nonnegative"] = 1
    s["scale_locked"] = 1 if locked else 0
    s["regime"] = -1
    for name in ("rebuild", "hw_level", "hw_spread", "fast_level", "fast_spread", "sigma",
                 "size_centre", "size_sigma"):
        s[name] = np.nan
    return state
