"""Did a deployment break a series? A sequential test over the buckets after it. Pure.

During a deployment's watch every affected series (a check's total and each segment) is tested
bucket by bucket against what the detector expected: a two-sided CUSUM (Page, 1954) of the
verdicts' scores, which are the deviation in robust standard units of the series' own residuals
(the band's edge is ``sensitivity`` of them). Each side accumulates ``score - ALLOWANCE`` and
never drops below 0; the series has broken when a side reaches ``THRESHOLD``. A bucket's score
counts at most ``CLIP``, so no single bucket, however odd, breaks a series alone: a break needs
two buckets that agree. The constants were chosen on generated deployments
(``python -m benchmarks.deployments`` measures them) as the fastest test that fails at most 2% of
deployments that changed nothing. A check watching one ``direction`` counts
only that side.

Unlike an alert, which waits for a deviation to be anomalous on its own, the test accumulates:
a doubling of a large segment that scores 3.7 robust SD in its first hour, under the band,
breaks at its second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime

from monitor.detection import Direction, Verdict

ALLOWANCE = 1.0  # half the shift (in robust SD) the test is tuned to find fastest
THRESHOLD = 3.5  # evidence at which the series has broken
CLIP = 4.0  # the most one bucket counts (less the allowance, 3): a break needs two buckets


@dataclass(frozen=True)
class Evidence:
    """The test of one series since a deployment."""

    check: str
    segment: str
    up: float = 0.0
    down: float = 0.0
    buckets: int = 0
    last: datetime | None = None
    """The newest bucket counted (a bucket is counted once)."""
    actual: float = 0.0
    expected: float = 0.0
    """Sums over the buckets counted."""

    @property
    def broken(self) -> bool:
        return max(self.up, self.down) >= THRESHOLD

    @property
    def change(self) -> float | None:
        if not self.expected or not math.isfinite(self.actual):
            return None
        return (self.actual - self.expected) / abs(self.expected)

    def add(self, verdict: Verdict, direction: Direction = "both") -> Evidence:
        """The evidence after one more bucket; a bucket without a baseline, or one counted
        already, changes nothing."""
        bucket = verdict.bucket.to_pydatetime()
        if verdict.expected is None or not math.isfinite(verdict.value):
            return self
        if self.last is not None and bucket <= self.last:
            return self
        z = max(-CLIP, min(CLIP, verdict.score))
        up = max(0.0, self.up + z - ALLOWANCE) if direction != "down" else 0.0
        down = max(0.0, self.down - z - ALLOWANCE) if direction != "up" else 0.0
        return replace(
            self,
            up=up,
            down=down,
            buckets=self.buckets + 1,
            last=bucket,
            actual=self.actual + verdict.value,
            expected=self.expected + verdict.expected,
        )

    def describe(self) -> str:
        """``revenue [DE] -61% over 2 buckets`` (``[total]`` for a check's total)."""
        where = f"{self.check} [{self.segment}]" if self.segment else self.check
        change = "" if self.change is None else f" {self.change * 100:+.0f}%"
        plural = "" if self.buckets == 1 else "s"
        return f"{where}{change} over {self.buckets} bucket{plural}"
