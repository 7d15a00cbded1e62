"""The judgement of one complete bucket: what the engine, the alert state machine, the sinks and
``backtest`` read."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Verdict:
    """The judgement of one complete bucket."""

    bucket: pd.Timestamp
    """Start of the scored bucket, tz-aware UTC."""
    value: float
    expected: float | None
    """``None`` while there is not enough history to judge."""
    lower: float | None
    upper: float | None
    score: float
    """Signed deviation in robust standard units of the series' residuals (negative: below
    expected), scaled so that the band's edge on its side is ``sensitivity``; 0.0 without a
    baseline."""
    anomalous: bool
    """Outside ``[lower, upper]`` in a direction the spec counts (the band includes the floors),
    or part of a sustained deviation (see ``sustained``)."""
    sustained: float = 0.0
    """Signed deviation of the mean of the last few buckets (this one included) in robust
    standard units of that mean, when it alone makes the bucket anomalous: a shift that is
    moderate in every bucket but beyond ``sensitivity`` taken together; else 0.0."""
    span: int = 0
    """How many anomalous buckets in a row this one is worth: the longest window of the
    sustained test ending here that is beyond the band, 1 for a lone outlier, at least 2 for one
    four times beyond the band; 0 when not anomalous. The alert state machine counts an
    anomalous run as at least this long, so a deviation that is clear over its first two hours
    opens an episode at the second even when its first bucket stayed inside the band."""
    holding: bool = False
    """Inside the band, but still away from the expected level the way the latest anomalous run
    went (the mean of the last buckets is beyond half the band): an open episode does not count
    this bucket as a return to normal, so a wide night band does not end an incident."""

    @classmethod
    def unjudged(cls, bucket: pd.Timestamp, value: float) -> Verdict:
        """A bucket without a baseline (not enough history, or no value): it changes no alert."""
        return cls(bucket, value, None, None, None, 0.0, False)

    @property
    def deviation_pct(self) -> float | None:
        """``(value - expected) / |expected| * 100``; ``None`` without a baseline or at 0."""
        if self.expected is None or self.expected == 0 or not math.isfinite(self.value):
            return None
        return (self.value - self.expected) / abs(self.expected) * 100.0
