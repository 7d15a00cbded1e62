"""A detector that knows its series' calendar: every bucket it learns or judges carries the mark
the calendar gives it (see :mod:`monitor.calendar.marks`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy.typing as npt
import pandas as pd

from monitor.calendar.days import Calendar
from monitor.calendar.marks import Marker
from monitor.detection import Detector, DetectorSpec, Mark, Verdict


class CalendarDetector(Detector):
    """:class:`Detector` with the marks of ``calendar``: the engine, ``backtest`` and the pages
    use it wherever a check has a calendar, so they judge a holiday alike.

    >>> detector = CalendarDetector(DetectorSpec(86400), Calendar(country="US"))
    >>> detector.warm(history.index, history.to_numpy())          # doctest: +SKIP
    """

    def __init__(self, spec: DetectorSpec, calendar: Calendar) -> None:
        super().__init__(spec)
        self.calendar = calendar
        self._marker = Marker(calendar, spec.bucket_seconds, spec.sensitivity)

    def warm(
        self,
        buckets: pd.DatetimeIndex,
        values: npt.ArrayLike,
        *,
        judge_last: int = 0,
        marks: Sequence[Mark] | None = None,
    ) -> list[Verdict]:
        """As :meth:`Detector.warm`, each bucket marked by the calendar (``marks`` given: those
        instead, and the calendar still remembers the buckets)."""
        found = self._marker.marks(pd.DatetimeIndex(buckets), values)
        return super().warm(buckets, values, judge_last=judge_last, marks=marks or found)

    def step(self, bucket: pd.Timestamp, value: float, mark: Mark | None = None) -> Verdict:
        """As :meth:`Detector.step`, the bucket marked by the calendar unless ``mark`` is given."""
        found = self._marker.mark(bucket, value)
        return super().step(bucket, value, mark or found)


def detector_for(spec: DetectorSpec, calendar: Calendar | None) -> Detector:
    """The model of one series: a plain :class:`Detector` when the calendar is empty, so a check
    without one pays nothing for it."""
    if calendar is None or calendar.empty:
        return Detector(spec)
    return CalendarDetector(spec, calendar)
