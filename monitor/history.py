"""What a series looked like against its band: each bucket judged again by a model that learned
only what came before it, the same way the daemon judged it live.

A detector steps one bucket at a time (about 0.2 ms a bucket here), so a page of a check with 20
segments over a week of hours is 3,360 steps. :class:`Replays` keeps each replay with its models,
per check and window; the next request steps only the buckets completed since. A new ``version``
(the check's query fields or its baseline restart changed) starts the replay anew.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from monitor.buckets import to_utc
from monitor.config import CheckConfig
from monitor.detection import Detector, Verdict
from monitor.freshness import age_history
from monitor.freshness_cache import LoadCache
from monitor.ledger import Ledger
from monitor.model_cache import fingerprint
from monitor.store import StateStore
from monitor.tuning import Tuning

Fitted = Callable[[CheckConfig, pd.DatetimeIndex, np.ndarray], Detector]
"""Builds a model that has learned a history (``Engine._fitted``)."""

AGE_STEP = timedelta(minutes=15)  # a freshness chart's data age is drawn at this step
REPLAYS_KEPT = 64  # checks (and windows) whose replay is kept; a page view of another evicts


@dataclass(frozen=True)
class Point:
    """One bucket as a chart draws it; the band is None where there was no baseline yet."""

    bucket: pd.Timestamp  # start, tz-aware UTC
    value: float
    expected: float | None
    lower: float | None
    upper: float | None
    anomalous: bool

    @classmethod
    def of(cls, verdict: Verdict) -> Point:
        return cls(
            verdict.bucket,
            verdict.value,
            verdict.expected,
            verdict.lower,
            verdict.upper,
            verdict.anomalous,
        )

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Point:
        """From a row of ``Notification.history``."""
        bucket, value, expected, lower, upper, anomalous = row
        return cls(to_utc(pd.Timestamp(bucket)), value, expected, lower, upper, bool(anomalous))

    def row(self) -> list[Any]:
        """As a row of ``Notification.history``: [bucket ISO, value, expected, lower, upper,
        anomalous]."""
        return [
            self.bucket.isoformat(),
            self.value,
            self.expected,
            self.lower,
            self.upper,
            self.anomalous,
        ]


def judge_again(model: Detector, buckets: pd.DatetimeIndex, values: np.ndarray) -> list[Point]:
    """Step ``model`` through these buckets: a verdict each, learned as it goes."""
    return [
        Point.of(model.step(bucket, float(value)))
        for bucket, value in zip(buckets, values, strict=True)
    ]


@dataclass
class _Replay:
    model: Detector
    points: deque[Point]
    newest: pd.Timestamp


@dataclass
class _Entry:
    version: object
    lock: threading.Lock
    series: dict[str, _Replay]


class Replays:
    """Replayed histories, per check and window; thread-safe."""

    def __init__(self, fitted: Fitted, kept: int = REPLAYS_KEPT) -> None:
        self._fitted = fitted
        self._kept = kept
        self._entries: OrderedDict[tuple[str, int], _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def judged(
        self,
        check: CheckConfig,
        cached: dict[str, list[tuple[datetime, float]]],
        buckets: int,
        version: object,
    ) -> dict[str, list[Point]]:
        """Per segment of ``cached`` (the series kept in the state store), its newest
        ``buckets`` judged again; the rest of the series is what the models learned first."""
        key = (check.name, buckets)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.version != version:
                entry = _Entry(version, threading.Lock(), {})
                self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self._kept:
                self._entries.popitem(last=False)
        with entry.lock:
            entry.series = {
                segment: self._carried(check, entry.series.get(segment), points, buckets)
                for segment, points in cached.items()
                if points
            }
            return {segment: list(replay.points) for segment, replay in entry.series.items()}

    def _carried(
        self,
        check: CheckConfig,
        replay: _Replay | None,
        points: list[tuple[datetime, float]],
        buckets: int,
    ) -> _Replay:
        index = pd.DatetimeIndex(pd.to_datetime([b for b, _ in points], utc=True))
        values = np.fromiter((v for _, v in points), dtype=float, count=len(points))
        if replay is not None and replay.newest in index:
            # only buckets completed since; a re-read value of a judged bucket changes nothing,
            # as in the daemon
            new = index > replay.newest
            replay.points.extend(judge_again(replay.model, index[new], values[new]))
            replay.newest = index[-1]
            return replay
        cut = max(len(index) - buckets, 0)
        model = self._fitted(check, index[:cut], values[:cut])
        judged = judge_again(model, index[cut:], values[cut:])
        return _Replay(model, deque(judged, maxlen=buckets), index[-1])


class CheckHistory:
    """Owns what a check's page draws: per segment, the verdicts of its newest buckets judged
    again by a model that learned only what came before each (the replays kept in ``replays``);
    for a freshness check, its data age against its current band."""

    def __init__(
        self,
        store: StateStore,
        loads: LoadCache,
        ledger: Ledger,
        tuning: Tuning,
        clock: Callable[[], datetime],
    ) -> None:
        self.store, self.loads, self.ledger, self.tuning, self.clock = (
            store, loads, ledger, tuning, clock
        )  # fmt: skip
        self.replays = Replays(tuning.fitted)

    def of(self, check: CheckConfig, buckets: int) -> dict[str, list[Point]]:
        """Per segment, the verdicts of the check's newest ``buckets`` (at most its cached
        lookback); a freshness check gives its data age over the last ``buckets`` steps of
        ``AGE_STEP``."""
        if check.kind == "freshness":
            loads, latest = self.loads.loads(check.name), self.ledger.latest(check.name, "")
            if loads is None or latest is None:
                return {}
            rows = age_history(loads, self.clock(), latest.verdict, buckets, AGE_STEP)
            return {"": [Point.from_row(row) for row in rows]}
        saved = self.store.load_history(check.name, fingerprint(check))
        if saved is None:
            return {}
        calendar = self.tuning.calendars.calendar(check)
        key = (fingerprint(check), self.tuning.rebaselined(check.name), calendar)
        return self.replays.judged(check, saved[2], buckets, key)
