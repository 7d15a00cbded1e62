"""The load times of a freshness check's table, read incrementally and kept between runs, and
the age of its newest load that a run judges from them.

A freshness check judges the age of the newest load against the table's load rhythm over its
lookback. A warm run reads only the loads since the newest one seen (less an overlap for late
rows); each run keeps what it read in the state store, as a series' buckets are kept, so the
first run after a restart reads only the loads since too.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from monitor.buckets import to_utc
from monitor.config import CheckConfig
from monitor.detection import Verdict
from monitor.freshness import age_history, assess
from monitor.model_cache import FULL_REFRESH, fingerprint
from monitor.queries import freshness_query, newest_row_query
from monitor.store import StateStore
from monitor.warehouse.base import Warehouse

FRESHNESS_OVERLAP = timedelta(hours=1)  # late rows stamped before the newest load seen


@dataclass(frozen=True)
class CachedLoads:
    """One check's load times as a :class:`LoadCache` holds them: those seen over the lookback
    and when they were fully read; whether they were restored from the state store already."""

    loads: tuple[pd.DatetimeIndex, datetime] | None = None
    restored: bool = False


@dataclass(frozen=True)
class Aged:
    """A freshness run's judgement of its newest load's age, and the data age chart in its
    alert's thread (``points`` steps of ``step`` before ``now``)."""

    loaded: pd.DatetimeIndex
    now: datetime
    verdict: Verdict
    points: int
    step: timedelta

    def chart(self, _segment: str) -> list[list[Any]]:
        return age_history(self.loaded, self.now, self.verdict, self.points, self.step)


class LoadCache:
    """Owns the load times of every freshness check: what a run reads of them from the
    warehouse and the age it judges from them, and their cache in the state store.
    Thread-safe; one run of a given check at a time."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        # per freshness check: the load times seen over the lookback, and when fully read
        self._loads: dict[str, tuple[pd.DatetimeIndex, datetime]] = {}
        self._restored: set[str] = set()

    def loads(self, name: str) -> pd.DatetimeIndex | None:
        """The check's load times as its last run saw them (None: not run here yet)."""
        with self._lock:
            cache = self._loads.get(name)
        return None if cache is None else cache[0]

    def age(
        self,
        check: CheckConfig,
        warehouse: Warehouse,
        now: datetime,
        sensitivity: float,
        chart: tuple[int, timedelta],
    ) -> Aged | None:
        """Read the check's load times (see ``read``) and judge the newest one's age; None when
        the table has no rows at all. ``chart``: its points and their step."""
        loaded = self.read(check, warehouse, now)
        verdict = assess(loaded, now, sensitivity, check.max_age)
        return None if verdict is None else Aged(loaded, now, verdict, *chart)

    def read(self, check: CheckConfig, warehouse: Warehouse, now: datetime) -> pd.DatetimeIndex:
        """The check's load times over its lookback (the newest row's alone if there are none):
        at its first run here from the state store's cache and the warehouse since, later from
        memory and the warehouse since; what was read is cached in the state store."""
        start = to_utc(now - check.effective_lookback)
        self._restore(check)
        with self._lock:
            cache = self._loads.get(check.name)
        # a warm run reads only loads since the newest one seen (less an overlap for late rows)
        warm = cache is not None and len(cache[0]) > 0 and now - cache[1] < FULL_REFRESH
        if cache is not None and warm:
            cached, full_at = cache
            since = cached.max() - FRESHNESS_OVERLAP
        else:
            cached, full_at, since = pd.DatetimeIndex([], tz="UTC"), now, start
        query = freshness_query(check, warehouse.dialect, since, now)
        fetched = _utc_index(warehouse.query(query.sql, query.params))
        loaded = cached[cached < since].union(fetched)
        loaded = loaded[loaded >= start]
        with self._lock:
            self._loads[check.name] = (loaded, full_at)
        # cached as a series' buckets are, so a restart reads only the loads since
        self._store.save_history(
            check.name,
            fingerprint(check),
            full_at,
            None,
            [("", moment.to_pydatetime(), 1.0) for moment in fetched[fetched >= start]],
            replace=not warm,
            keep_from=start.to_pydatetime(),
        )
        if len(loaded) == 0:
            query = newest_row_query(check, warehouse.dialect, now)
            loaded = _utc_index(warehouse.query(query.sql, query.params))
        return loaded

    def _restore(self, check: CheckConfig) -> None:
        """At the check's first run here: its load times cached in the state store."""
        with self._lock:
            if check.name in self._restored:
                return
            self._restored.add(check.name)
        saved = self._store.load_history(check.name, fingerprint(check))
        if saved is None or not saved[2].get(""):
            return
        loaded = pd.DatetimeIndex([to_utc(moment) for moment, _ in saved[2][""]])
        with self._lock:
            self._loads[check.name] = (loaded.sort_values(), saved[0])

    def forget(self, name: str) -> None:
        """Drop the check's load times; its next run reads the whole lookback."""
        with self._lock:
            self._loads.pop(name, None)

    def drop(self, name: str) -> None:
        """Forget everything about the check (another engine or replica runs it now)."""
        with self._lock:
            self._loads.pop(name, None)
            self._restored.discard(name)

    def release(self, name: str) -> CachedLoads:
        """The check's load times as they are, for another engine's ``adopt``."""
        with self._lock:
            return CachedLoads(self._loads.get(name), name in self._restored)

    def adopt(self, name: str, cached: CachedLoads) -> None:
        """Carry on with the load times another engine released."""
        with self._lock:
            if cached.loads is not None:
                self._loads[name] = cached.loads
            if cached.restored:
                self._restored.add(name)


def _utc_index(frame: pd.DataFrame) -> pd.DatetimeIndex:
    """The first column of a freshness query as sorted, unique tz-aware UTC instants."""
    loaded = (
        pd.DatetimeIndex(pd.to_datetime(frame.iloc[:, 0].dropna()))
        if len(frame.columns)
        else pd.DatetimeIndex([])
    )
    loaded = loaded.tz_localize("UTC") if loaded.tz is None else loaded.tz_convert("UTC")
    return loaded.unique().sort_values()
