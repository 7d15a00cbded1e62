"""The series cache (tables ``history_meta`` and ``series_history``): per check, the buckets
its models were built from, so that a restarted daemon rebuilds them reading from the warehouse
only what is newer; valid while the check's query is the same (its fingerprint)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

from monitor.statedb import Database, Fenced


class SeriesCache:
    """The series cache part of the state store; a write is fenced by the check's lease."""

    def __init__(self, db: Database, fenced: Fenced) -> None:
        self._db = db
        self._fenced = fenced

    def load(
        self, check: str, fingerprint: str
    ) -> tuple[datetime, list[str] | None, dict[str, list[tuple[datetime, float]]]] | None:
        """A check's cached series (when the last full read ran, the segments it ranked, and
        per segment the judged buckets); None when absent or cached for another config."""
        meta = self._db.read(
            "SELECT fingerprint, full_at, segments FROM history_meta WHERE check_name = ?",
            (check,),
        )
        if not meta or meta[0][0] != fingerprint:
            return None
        rows = self._db.read(
            "SELECT segment, bucket, value FROM series_history WHERE check_name = ?"
            " ORDER BY segment, bucket",
            (check,),
        )
        series: dict[str, list[tuple[datetime, float]]] = {}
        for segment, bucket, value in rows:
            series.setdefault(str(segment), []).append(
                (datetime.fromisoformat(str(bucket)), float(value))
            )
        segments = json.loads(meta[0][2]) if meta[0][2] is not None else None
        return datetime.fromisoformat(str(meta[0][1])), segments, series

    def save(
        self,
        check: str,
        fingerprint: str,
        full_at: datetime,
        segments: list[str] | None,
        rows: list[tuple[str, datetime, float]],
        *,
        replace: bool,
        keep_from: datetime,
    ) -> None:
        """Store new or re-read buckets (all of them when ``replace``), drop those older than
        ``keep_from``: the next start reads only what is newer."""
        with self._fenced(check) as db:
            if replace:
                db.execute("DELETE FROM series_history WHERE check_name = ?", (check,))
            else:
                db.execute(
                    "DELETE FROM series_history WHERE check_name = ? AND bucket < ?",
                    (check, keep_from.isoformat()),
                )
            db.executemany(
                "INSERT INTO series_history (check_name, segment, bucket, value)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (check_name, segment, bucket)"
                " DO UPDATE SET value = excluded.value",
                [(check, segment, bucket.isoformat(), value) for segment, bucket, value in rows],
            )
            db.execute(
                "INSERT INTO history_meta (check_name, fingerprint, full_at, segments)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (check_name) DO UPDATE SET"
                " fingerprint = excluded.fingerprint, full_at = excluded.full_at,"
                " segments = excluded.segments",
                (
                    check,
                    fingerprint,
                    full_at.isoformat(),
                    None if segments is None else json.dumps(segments),
                ),
            )

    def recent_values(
        self, series: Sequence[tuple[str, str]], since: datetime
    ) -> dict[tuple[str, str], list[float]]:
        """Per (check, segment) asked for, the cached values of its buckets from ``since`` on,
        oldest first: the overview's sparklines, without replaying any model."""
        found: dict[tuple[str, str], list[float]] = {}
        for start in range(0, len(series), 400):  # SQLite binds at most 999 parameters
            batch = series[start : start + 400]
            rows = self._db.read(
                "SELECT check_name, segment, value FROM series_history WHERE bucket >= ?"
                f" AND (check_name, segment) IN (VALUES {', '.join('(?, ?)' for _ in batch)})"
                " ORDER BY check_name, segment, bucket",
                (since.isoformat(), *(part for pair in batch for part in pair)),
            )
            for name, segment, value in rows:
                found.setdefault((str(name), str(segment)), []).append(float(value))
        return found

    def prune(self, before: datetime) -> int:
        """Delete the cached series of checks not read in full since ``before``; how many."""
        checks = [
            str(name)
            for (name,) in self._db.read(
                "SELECT check_name FROM history_meta WHERE full_at < ?",
                (before.astimezone(UTC).isoformat(),),
            )
        ]
        with self._db.transaction() as db:
            for name in checks:
                db.execute("DELETE FROM series_history WHERE check_name = ?", (name,))
                db.execute("DELETE FROM history_meta WHERE check_name = ?", (name,))
        return len(checks)
