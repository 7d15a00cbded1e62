"""What the calendar says about one bucket: whether the baseline learns from it, whether it is
judged, how much wider its band is, and what it is expected to be when the calendar knows
better than the seasonal profile (last year's same holiday)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Mark:
    """How the detector treats one bucket. The default is a regular bucket."""

    learn: bool = True
    """False: judged as usual, but the baseline (level, seasonal profile, spread) never learns
    from it, as from a gap: a holiday does not drag the level down for the days after it."""
    judge: bool = True
    """False: the bucket gets no verdict (``Verdict.unjudged``): an exclusion window, a mute."""
    widen: float = 1.0
    """At least 1: the bucket's spread is this many times the regular one, so its band is that
    much wider and its score that much smaller."""
    expected: float | None = None
    """In the series' units: replaces the forecast for this bucket (the band keeps its width in
    the model's scale)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.widen) and self.widen >= 1.0):
            raise ValueError(f"Mark.widen must be a finite number >= 1, not {self.widen!r}")
        if self.expected is not None and not math.isfinite(self.expected):
            raise ValueError(f"Mark.expected must be finite, not {self.expected!r}")


REGULAR = Mark()


@dataclass(frozen=True)
class MarkArrays:
    """Marks as the kernel reads them, one entry per bucket."""

    learn: npt.NDArray[np.bool_]
    judge: npt.NDArray[np.bool_]
    widen: npt.NDArray[np.float64]
    expected: npt.NDArray[np.float64]
    """NaN where the forecast stands."""

    @classmethod
    def of(cls, marks: Sequence[Mark] | None, size: int) -> MarkArrays:
        if marks is None:
            return cls(
                np.ones(size, dtype=np.bool_),
                np.ones(size, dtype=np.bool_),
                np.ones(size),
                np.full(size, np.nan),
            )
        if len(marks) != size:
            raise ValueError(f"{size} buckets but {len(marks)} marks")
        return cls(
            np.fromiter((m.learn for m in marks), dtype=np.bool_, count=size),
            np.fromiter((m.judge for m in marks), dtype=np.bool_, count=size),
            np.fromiter((m.widen for m in marks), dtype=np.float64, count=size),
            np.fromiter(
                (np.nan if m.expected is None else m.expected for m in marks),
                dtype=np.float64,
                count=size,
            ),
        )

    def __getitem__(self, where: slice | npt.NDArray[np.bool_]) -> MarkArrays:
        return MarkArrays(
            self.learn[where], self.judge[where], self.widen[where], self.expected[where]
        )
