"""The charts an opening alert carries in its thread: how the series was judged lately, and
under an incident's total, the recent values of the segments that explain it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from monitor.config import CheckConfig
from monitor.history import Fitted, judge_again


@dataclass
class RunCharts:
    """Owns the charts of one run of a series check: ``buckets`` of them (none when 0), drawn
    from the check's whole lookback, which ``lookback`` reads again only when a warm run
    (which read new buckets only) opens an alert; ``history``, what the run read when it
    was the whole lookback."""

    check: CheckConfig
    buckets: int
    fitted: Fitted
    lookback: Callable[[], dict[str, pd.Series]]
    history: dict[str, pd.Series] | None

    def _read(self) -> dict[str, pd.Series]:
        if self.history is None:
            self.history = self.lookback()
        return self.history

    def chart(self, segment: str) -> list[list[Any]]:
        """Verdicts of the segment's last ``buckets`` buckets, each judged by a model that
        learned only what came before it."""
        if self.buckets == 0:
            return []
        series = self._read().get(segment)
        if series is None:
            return []
        buckets = pd.DatetimeIndex(series.index)
        values = series.to_numpy(dtype=float)
        cut = max(len(series) - self.buckets, 0)
        model = self.fitted(self.check, buckets[:cut], values[:cut])
        return [point.row() for point in judge_again(model, buckets[cut:], values[cut:])]

    def beside(self, names: tuple[str, ...]) -> dict[str, list[list[Any]]]:
        """The recent values of these segments, as (bucket, value) rows."""
        read = self._read()
        recent = {n: read[n][-self.buckets :] for n in names if n in read}
        return {
            n: [[b.isoformat(), float(v)] for b, v in zip(s.index, s.to_numpy(), strict=True)]
            for n, s in recent.items()
        }
