"""Fixed rules beside the learned band: a check's absolute ``min`` and ``max``. Pure.

A value outside them is anomalous whatever the model says, and opens an alert at once: a row
count of 0 is always wrong, also while the model is still learning or has learned that zeros
happen. The engine and ``backtest`` apply them the same way, to every verdict the detector gives.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from monitor.alerts.messages import number
from monitor.detection import Verdict


@dataclass(frozen=True)
class Bounds:
    """Absolute limits of a series' values; None: no limit on that side."""

    min: float | None = None
    max: float | None = None

    @property
    def empty(self) -> bool:
        return self.min is None and self.max is None

    def broken(self, value: float) -> Literal["min", "max"] | None:
        """Which limit ``value`` breaks, if any (a missing value breaks none)."""
        if self.min is not None and value < self.min:
            return "min"
        if self.max is not None and value > self.max:
            return "max"
        return None

    def reason(self, value: float) -> str:
        """Why ``value`` is anomalous by these bounds, for the alert ("" when it is not)."""
        broken = self.broken(value)
        if broken == "min":
            return f"below its fixed minimum of {number(self.min)}"
        if broken == "max":
            return f"above its fixed maximum of {number(self.max)}"
        return ""


def apply_bounds(verdict: Verdict, bounds: Bounds, open_after: int) -> Verdict:
    """The verdict with the fixed bounds applied.

    A value beyond a bound is anomalous and worth ``open_after`` anomalous buckets, so the alert
    state machine opens at once; without a baseline yet, its expected value is the bound it
    broke. While the model is still learning, the bounds are the band: a value inside them counts
    as normal (so an alert they opened can resolve), but no expected value is made up.
    """
    if bounds.empty:
        return verdict
    lower = verdict.lower if verdict.lower is not None else bounds.min
    upper = verdict.upper if verdict.upper is not None else bounds.max
    broken = bounds.broken(verdict.value)
    if broken is None:
        if verdict.expected is not None:
            return verdict
        return replace(verdict, lower=lower, upper=upper)
    expected = verdict.expected
    if expected is None:
        expected = bounds.min if broken == "min" else bounds.max
    return replace(
        verdict,
        expected=expected,
        lower=lower,
        upper=upper,
        anomalous=True,
        span=max(verdict.span, open_after),
    )
