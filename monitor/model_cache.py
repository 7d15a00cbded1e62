"""The models of a check's series, kept between runs and rebuilt after a restart.

Each series' model lives in memory and scores only the buckets it has not judged. Each run
also keeps what it read in the state store, so the first run after a restart rebuilds the
models from there and reads only the buckets since from the warehouse (a change of the
check's query fields, see ``fingerprint``, invalidates that cache).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from monitor.alerts.state import AlertState
from monitor.buckets import bucket_start, to_utc
from monitor.config import CheckConfig
from monitor.detection import Detector, Verdict
from monitor.queries import OTHER_SEGMENT
from monitor.store import StateStore
from monitor.tuning import Tuning

log = logging.getLogger("monitor.engine")

FULL_REFRESH = timedelta(days=1)


def fingerprint(check: CheckConfig) -> str:
    """What a check's cached series depends on: a config change invalidates the cache."""
    fields = ("kind", "table", "timestamp_column", "expression", "where", "dimensions",
              "max_segments", "sql", "grain", "timezone", "fill_missing", "warehouse")  # fmt: skip
    text = json.dumps(check.model_dump(include=set(fields), mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CachedModels:
    """One check's models as a :class:`ModelCache` holds them: per segment the model and the
    newest bucket it learned; when the whole lookback was last read and the segments it
    ranked; whether they were restored from the state store already."""

    models: dict[str, Detector] = field(default_factory=dict)
    learned: dict[str, pd.Timestamp] = field(default_factory=dict)
    full: tuple[datetime, list[str]] | None = None
    restored: bool = False


class ModelCache:
    """Owns the models of every series of the engine's series checks (not freshness checks:
    see :class:`monitor.freshness_cache.LoadCache`), their restore from the series cached in
    the state store, and that cache. Thread-safe; one run of a given check at a time.

    ``alert_state``: a series' alert state, which a model carries on from (its quiet period).
    """

    def __init__(
        self,
        checks: Iterable[CheckConfig],
        store: StateStore,
        tuning: Tuning,
        alert_state: Callable[[str, str], AlertState],
    ) -> None:
        self._store = store
        self._tuning = tuning
        self._alert_state = alert_state
        self._lock = threading.Lock()
        # per check, per segment: the model, and the newest bucket it has learned
        self._models: dict[str, dict[str, Detector]] = {c.name: {} for c in checks}
        self._learned: dict[str, dict[str, pd.Timestamp]] = {n: {} for n in self._models}
        # per check: when the last full-lookback query ran, and the segments it ranked
        self._full: dict[str, tuple[datetime, list[str]]] = {}
        self._restored: set[str] = set()

    def known(self, name: str) -> set[str]:
        """The segments of the check that have a model."""
        with self._lock:  # other checks' runs add their models concurrently
            return set(self._models[name])

    def models(self, name: str) -> dict[str, Detector]:
        with self._lock:
            return dict(self._models[name])

    def learned(self, name: str) -> list[pd.Timestamp]:
        """The newest bucket each model of the check learned."""
        with self._lock:
            return list(self._learned[name].values())

    def full_read(self, name: str) -> tuple[datetime, list[str]] | None:
        """When the check's whole lookback was last read, and the segments it ranked."""
        with self._lock:
            return self._full.get(name)

    def ranked(self, name: str, at: datetime, tracked: list[str]) -> None:
        """A full read at ``at`` ranked these segments."""
        with self._lock:
            self._full[name] = (at, tracked)

    def unranked(self, name: str) -> None:
        """A segment seen for the first time: learn its history with a full read next run."""
        with self._lock:
            self._full.pop(name, None)

    def untrack(self, name: str, dropped: Iterable[str], refolded: bool) -> None:
        """Drop the models of segments no longer tracked; when ``__other__`` sums other
        segments than before, its model learns its history again."""
        with self._lock:
            for segment in [*dropped, *([OTHER_SEGMENT] if refolded else [])]:
                self._models[name].pop(segment, None)
                self._learned[name].pop(segment, None)

    def restore(self, check: CheckConfig, now: datetime) -> None:
        """At a check's first run here: rebuild its models from the series cached in the state
        store, so it reads only the buckets since, not the whole lookback."""
        with self._lock:
            if check.name in self._restored:
                return
            self._restored.add(check.name)
        saved = self._store.load_history(check.name, fingerprint(check))
        if saved is None:
            return
        full_at, ranked, cached = saved
        if now - full_at >= FULL_REFRESH:
            return
        for segment, points in cached.items():
            if len(points) < 2:
                continue
            index = pd.DatetimeIndex([to_utc(b) for b, _ in points])
            values = np.array([v for _, v in points], dtype=float)
            # the newest bucket is left to the next run to re-score, so it is exported at once
            state = self._alert_state(check.name, segment)
            model, _ = self._tuning.warmed(
                check, segment, index[:-1], values[:-1], state, replay=False
            )
            with self._lock:
                self._models[check.name][segment] = model
                self._learned[check.name][segment] = index[-2]
        with self._lock:
            self._full[check.name] = (full_at, ranked or [])
        log.info("models restored from the state store", extra={"fields": {"check": check.name}})

    def keep(
        self,
        check: CheckConfig,
        now: datetime,
        since: pd.Timestamp,
        full: bool,
        found: dict[str, pd.Series],
    ) -> None:
        """Cache what a run read from ``since`` (the whole lookback when ``full``), for the
        next start (see ``restore``)."""
        with self._lock:
            full_at, ranked = self._full.get(check.name, (now, None))
        rows = []
        for segment, series in found.items():
            recent = series[series.index >= since]
            for bucket, value in zip(
                pd.DatetimeIndex(recent.index), recent.to_numpy(), strict=True
            ):
                rows.append((segment, bucket.to_pydatetime(), float(value)))
        self._store.save_history(
            check.name,
            fingerprint(check),
            full_at,
            ranked,
            rows,
            replace=full,
            keep_from=bucket_start(now - check.effective_lookback, check.grain, check.timezone),
        )

    def score_new(
        self, check: CheckConfig, segment: str, series: pd.Series
    ) -> tuple[list[Verdict], int, Detector]:
        """Verdicts for the buckets not judged before, how many of the first ones are a
        replay, and the model that gave them: a series seen for the first time (no alert
        state) has the newer half of its history judged as ``backtest`` would, so the daemon
        starts with the episodes backtest shows; after a restart the model learns what was
        judged and judges only what came since."""
        with self._lock:
            models, learned_by_segment = self._models[check.name], self._learned[check.name]
            model = models.get(segment)
        replayed: list[Verdict] = []
        if model is None:
            state = self._alert_state(check.name, segment)
            judged = state.last_bucket
            # the newest bucket is always stepped, so a restarted daemon exports it at once (the
            # alert state ignores a bucket it has already judged)
            cut = len(series) - 1
            if judged is not None:
                cut = min(cut, int(series.index.searchsorted(to_utc(judged), side="right")))
            buckets = pd.DatetimeIndex(series.index)
            model, replayed = self._tuning.warmed(
                check, segment, buckets[:cut], series.to_numpy()[:cut], state,
                replay=judged is None,
            )  # fmt: skip
            with self._lock:
                models[segment] = model
                if cut:
                    learned_by_segment[segment] = series.index[cut - 1]
        with self._lock:
            learned = learned_by_segment.get(segment)
        new = series if learned is None else series[series.index > learned]
        verdicts = [
            model.step(bucket, float(value))
            for bucket, value in zip(pd.DatetimeIndex(new.index), new.to_numpy(), strict=True)
        ]
        if len(new):
            with self._lock:
                learned_by_segment[segment] = new.index[-1]
        return replayed + verdicts, len(replayed), model

    def forget(self, name: str, *, restore: bool = False) -> None:
        """Drop a check's models; the next run rebuilds them from the warehouse (or, with
        ``restore``, from the series cached in the state store first)."""
        with self._lock:
            self._models[name].clear()
            self._learned[name].clear()
            self._full.pop(name, None)
            if restore:
                self._restored.discard(name)

    def drop(self, name: str) -> None:
        """Forget everything about a check (another engine or replica runs it now); a run of
        it still going on here keeps its models to itself."""
        with self._lock:
            self._models[name] = {}
            self._learned[name] = {}
            self._full.pop(name, None)
            self._restored.discard(name)

    def release(self, name: str) -> CachedModels:
        """The check's models as they are, for another engine's ``adopt``."""
        with self._lock:
            return CachedModels(
                dict(self._models[name]),
                dict(self._learned[name]),
                self._full.get(name),
                name in self._restored,
            )

    def adopt(self, name: str, cached: CachedModels) -> None:
        """Carry on with the models another engine released."""
        with self._lock:
            self._models[name] = dict(cached.models)
            self._learned[name] = dict(cached.learned)
            if cached.full is not None:
                self._full[name] = cached.full
            if cached.restored:
                self._restored.add(name)
