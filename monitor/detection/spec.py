"""What a detector is told about one series: its grain, its business time zone, how sensitive
it is and which deviations count. Plain data, validated once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd

Direction = Literal["both", "up", "down"]

DIRECTIONS: tuple[Direction, ...] = ("both", "up", "down")


@dataclass(frozen=True)
class DetectorSpec:
    """How one series is judged. Only ``bucket_seconds`` is required.

    >>> DetectorSpec(3600, sensitivity=5.0, timezone="Europe/Berlin").direction
    'both'

    :raises ValueError: for a field out of its range or an unknown time zone.
    """

    bucket_seconds: int
    """Bucket size: 3600 for hourly, 86400 for daily; any positive value works."""
    sensitivity: float = 4.0
    """Band half-width in robust standard units of the series' own residuals: higher means
    fewer alerts. A residual distribution with heavier tails than the normal one widens the band
    in those units, so a sensitivity means about the same on smooth and bursty series."""
    direction: Direction = "both"
    """Which deviations count as anomalous."""
    min_relative_change: float = 0.05
    """Band floor: ``|value - expected|`` must also exceed this fraction of ``|expected|``."""
    counts: bool | None = None
    """``None``: decide from the data (a Poisson floor on the spread while every value is an
    integer; the scale chosen per series). ``True`` treats the values as counts; ``False``
    judges them as they are (no scale chosen, no Poisson floor)."""
    timezone: str = "UTC"
    """Business time zone: seasonal slots follow its wall clock (DST-safe)."""
    min_absolute_change: float = 0.0
    """Band floor in value units: ``|value - expected|`` must also exceed this."""
    season_cycles: int = 8
    """How many past cycles of the same slot the seasonal median looks at."""
    min_history: int | None = None
    """Buckets to learn before judging; ``None``: one day of sub-daily buckets, else 14."""
    quiet_factor: float = 2.0
    """Quiet period: for a day after a deviation that lasted long enough to alert (two buckets),
    a new deviation must leave a band this many times wider (the aftermath of an incident is not
    a new incident); 1 disables it, and it has no effect at daily grain."""

    def __post_init__(self) -> None:
        if self.bucket_seconds <= 0:
            raise ValueError(f"bucket_seconds must be positive, got {self.bucket_seconds}")
        if not self.sensitivity > 0:
            raise ValueError(f"sensitivity must be positive, got {self.sensitivity}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if not self.min_relative_change >= 0 or not self.min_absolute_change >= 0:
            raise ValueError("min_relative_change and min_absolute_change must be >= 0")
        if self.season_cycles < 2:
            raise ValueError(f"season_cycles must be at least 2, got {self.season_cycles}")
        if not self.quiet_factor >= 1:
            raise ValueError(f"quiet_factor must be at least 1, got {self.quiet_factor}")
        if self.min_history is not None and self.min_history < 2:
            raise ValueError(f"min_history must be at least 2, got {self.min_history}")
        try:
            pd.Timestamp(0, tz="UTC").tz_convert(self.timezone)
        except Exception as exc:  # pandas raises several types for unknown zones
            raise ValueError(f"unknown timezone {self.timezone!r}") from exc
