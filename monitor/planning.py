"""What a run reads from its warehouse, and the reads that checks of one table share.

A check's first run (and one a day after) reads its whole lookback; the others read only the
buckets since the newest one its models learned. Checks on the same table, timestamp, filter,
dimensions and grain (``monitor.queries.batch_key``) are answered by one query computing all
their aggregates, kept until a new bucket completes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from monitor.buckets import bucket_start, last_complete, next_bucket
from monitor.config import CheckConfig, Config
from monitor.errors import QueryFailed
from monitor.model_cache import FULL_REFRESH, ModelCache
from monitor.queries import NOT_RANKED, batch_column, batch_key, series_query
from monitor.segments import Ranking, rerank
from monitor.series import newest_rows, normalise
from monitor.warehouse.base import Warehouse

log = logging.getLogger("monitor.engine")


@dataclass(frozen=True)
class Window:
    """What a run reads: rows from ``since`` to ``until`` (the end of the newest complete
    bucket), segments folded by ``segments`` (None: ranked anew, or no dimensions); ``full``
    when it is the whole lookback."""

    since: pd.Timestamp
    until: pd.Timestamp
    segments: list[str] | None
    full: bool


@dataclass(frozen=True)
class Fetched:
    """What a run of a series check read: its series by segment, the window they cover, and
    the re-rank of its segments when it read the whole lookback (None otherwise)."""

    found: dict[str, pd.Series]
    window: Window
    ranking: Ranking | None


@dataclass(frozen=True)
class _BatchRead:
    window: Window
    frame: pd.DataFrame
    members: tuple[str, ...]  # the checks whose values it holds, in column order


class QueryPlanner:
    """Owns the query plan of every check: which window a run reads (from the ``models``' cache
    of what was learned) and the batch reads shared by checks of one table, with the checks
    reading alone since their shared query failed.

    ``holds``: whether this replica runs a check; a batch leaves out the checks it does not.
    """

    def __init__(self, config: Config, models: ModelCache, holds: Callable[[str], bool]) -> None:
        self._config = config
        self._models = models
        self._holds = holds
        groups: dict[tuple[object, ...], list[CheckConfig]] = {}
        for c in config.checks:
            key = batch_key(c, config.warehouse_of(c))
            if key is not None:
                groups.setdefault(key, []).append(c)
        self._batches = {c.name: g for g in groups.values() if len(g) > 1 for c in g}
        self._batch_locks = {k: threading.Lock() for k, g in groups.items() if len(g) > 1}
        self._batch_reads: dict[tuple[object, ...], _BatchRead] = {}
        # batched checks reading alone since their shared query failed, until their own succeeds
        self._apart: set[str] = set()
        self._lock = threading.Lock()

    def fetch(
        self,
        check: CheckConfig,
        warehouse: Warehouse,
        now: datetime,
        known: set[str],
        firing: set[str],
    ) -> Fetched:
        """The check's series for this run, of its ``known`` segments (those with a model) or,
        when it reads the whole lookback, of the segments a re-rank tracks from now on (the
        ``firing`` ones have no model after a restart, but must be resolved if dropped)."""
        window = self.window(check, now, known)
        frame, window = self.read(check, warehouse, window, now)
        found = normalise(
            frame,
            check,
            now,
            # a full read re-ranks: a known segment it leaves out is no longer tracked
            expected=() if window.full else known,
            start=window.since if known else None,
            keep=window.segments,
        )
        if window.full:
            ranked = window.segments
            if ranked is None:
                ranked = sorted(set(found) - NOT_RANKED)
            full = self._models.full_read(check.name)
            newest = newest_rows(frame, check)
            # vanished while the others go on: a table that stopped loading is an outage
            latest = max(newest.values(), default=pd.Timestamp(now))
            cutoff = latest - pd.Timedelta(self._config.state.retention.segments)
            previous = full[1] if full is not None else None
            ranking = rerank(ranked, previous, known | firing, newest, cutoff, check.max_segments)
            found = {s: v for s, v in found.items() if s in ranking.tracked or s in NOT_RANKED}
            return Fetched(found, window, ranking)
        if set(found) - known:
            # a segment seen for the first time: learn its history with a full query next run
            self._models.unranked(check.name)
            found = {s: v for s, v in found.items() if s in known}
        return Fetched(found, window, None)

    def lookback(
        self, check: CheckConfig, warehouse: Warehouse, now: datetime, window: Window
    ) -> dict[str, pd.Series]:
        """The check's whole lookback, of the segments ``window`` folds by."""
        start = bucket_start(now - check.effective_lookback, check.grain, check.timezone)
        query = series_query(check, warehouse.dialect, start, window.segments, window.until)
        return normalise(warehouse.query(query.sql, query.params), check, now)

    def window(self, check: CheckConfig, now: datetime, known: set[str]) -> Window:
        """What to read: from when, folding segments how.

        The first run of a check (and one a day after, to re-rank segments and pick up late
        revisions) reads the whole lookback; the others read from the newest learned bucket
        minus ``refetch_buckets``, so a warm run returns rows for new buckets only.
        """
        newest = last_complete(now, check.grain, check.timezone, check.settle)
        until = next_bucket(newest, check.grain, check.timezone)
        lookback_start = bucket_start(now - check.effective_lookback, check.grain, check.timezone)
        full = self._models.full_read(check.name)
        learned = self._models.learned(check.name)
        if full is None or not known or not learned or now - full[0] >= FULL_REFRESH:
            return Window(lookback_start, until, None, True)
        since = min(learned)
        for _ in range(check.refetch_buckets):
            since = bucket_start(since - pd.Timedelta(seconds=1), check.grain, check.timezone)
        # sql checks fold in the engine: by the ranking too, not by the counts of a short read
        segments = full[1] if check.dimensions or check.kind == "sql" else None
        return Window(max(since, lookback_start), until, segments, False)

    def read(
        self, check: CheckConfig, warehouse: Warehouse, window: Window, now: datetime
    ) -> tuple[pd.DataFrame, Window]:
        """Rows for ``window``; checks of one batch share one query (see ``batch_key``).

        A batch query reads what every member needs (the earliest ``since``, the whole lookback
        if one needs it) and serves the members that run after it, until a new bucket completes.
        When it fails for its SQL, one member's SQL is at fault: every member then reads alone,
        so the error stays with the check that caused it, and rejoins the batch once its own
        query succeeds.
        """
        group = self._batches.get(check.name)
        with self._lock:
            apart = set(self._apart)
        # replicas: the checks of a batch another replica runs are not read here
        members = [m for m in group or () if m.name not in apart and self._holds(m.name)]
        if check.name in apart or len(members) < 2:
            return self._read_alone(check, warehouse, window, now), window
        key = batch_key(check, self._config.warehouse_of(check))
        assert key is not None  # only metric and row_count checks are batched
        names = tuple(m.name for m in members)
        with self._batch_locks[key]:
            cached = self._batch_reads.get(key)
            if cached is None or cached.members != names or not _serves(cached.window, window):
                try:
                    cached = self._read_batch(check, members, warehouse, window, now)
                except QueryFailed as exc:
                    self._batch_reads.pop(key, None)
                    with self._lock:
                        self._apart.update(names)
                    log.info(
                        "a query shared by several checks failed: each reads alone until its"
                        " own query succeeds",
                        extra={"fields": {"checks": ",".join(names), "error": exc.detail}},
                    )
                    return self._read_alone(check, warehouse, window, now), window
                self._batch_reads[key] = cached
        column = batch_column(members.index(check))
        if column not in cached.frame.columns:
            return cached.frame, cached.window  # the warehouse answered oddly: normalise says how
        frame = cached.frame[[c for c in ("bucket", "segment") if c in cached.frame.columns]]
        return frame.assign(value=cached.frame[column]), cached.window

    def _read_alone(
        self, check: CheckConfig, warehouse: Warehouse, window: Window, now: datetime
    ) -> pd.DataFrame:
        since, segments, until = window.since, window.segments, window.until
        seen = self._seen(now)
        query = series_query(check, warehouse.dialect, since, segments, until, seen=seen)
        frame = warehouse.query(query.sql, query.params)
        with self._lock:
            self._apart.discard(check.name)  # its SQL works: it may share a query again
        return frame

    def _read_batch(
        self,
        check: CheckConfig,
        members: list[CheckConfig],
        warehouse: Warehouse,
        window: Window,
        now: datetime,
    ) -> _BatchRead:
        """One query for ``members``, covering what each of them needs next."""
        wanted = [window] + [
            self.window(m, now, self._models.known(m.name)) for m in members if m is not check
        ]
        full = any(w.full for w in wanted) or any(w.segments != window.segments for w in wanted)
        since = min(w.since for w in wanted)
        union = Window(since, window.until, None if full else window.segments, full)
        query = series_query(check, warehouse.dialect, union.since, union.segments, union.until,
                             members, seen=self._seen(now))  # fmt: skip
        frame = warehouse.query(query.sql, query.params)
        if full and check.dimensions and "segment" in frame.columns:
            ranked = sorted(set(frame["segment"].astype(str)) - NOT_RANKED)
            union = Window(union.since, union.until, ranked, True)
        return _BatchRead(union, frame, tuple(m.name for m in members))

    def _seen(self, now: datetime) -> datetime:
        """A re-rank ranks the segments with a row since then first: those without make way
        for live ones (see monitor.segments)."""
        return now - self._config.state.retention.segments


def _serves(cached: Window, wanted: Window) -> bool:
    """Can rows read for ``cached`` answer a run that wants ``wanted``?"""
    if cached.until != wanted.until or cached.since > wanted.since:
        return False
    if wanted.full:
        return cached.full
    return cached.segments == wanted.segments
