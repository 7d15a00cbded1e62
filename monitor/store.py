"""The state store: alert state per series and the notification outbox, in SQLite.

State and the notifications a transition causes are written in one transaction, and a
notification is unique per (episode event, channel): after a restart nothing is lost and
nothing already delivered is sent again.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from monitor.alerts.notification import Notification
from monitor.alerts.state import AlertState
from monitor.errors import StateStoreError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS series_state (
    check_name TEXT NOT NULL,
    segment TEXT NOT NULL,
    status TEXT NOT NULL,
    anomalous_run INTEGER NOT NULL,
    normal_run INTEGER NOT NULL,
    since TEXT,
    episode INTEGER NOT NULL,
    last_bucket TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (check_name, segment)
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    notification_key TEXT NOT NULL,
    channel TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    remote_id TEXT,
    created_at TEXT NOT NULL,
    delivered_at TEXT,
    UNIQUE (notification_key, channel)
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (status, channel);
"""


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    channel: str
    notification: Notification
    attempts: int


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _parse(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


class StateStore:
    """A SQLite file shared by the scheduler's threads and the HTTP server."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            if self.path.parent != Path():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, check_same_thread=False, timeout=10.0, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
        except (sqlite3.Error, OSError) as exc:
            raise StateStoreError(
                f"cannot open the state store {self.path}: {exc}. If the file is corrupt, move it "
                "aside: the monitor rebuilds baselines from the warehouse, but forgets open alerts"
            ) from None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StateStoreError(f"state store {self.path}: {exc}") from None

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StateStoreError(f"state store {self.path}: {exc}") from None

    def ping(self) -> None:
        self._read("SELECT count(*) FROM meta")

    def load_states(self, check: str | None = None) -> dict[tuple[str, str], AlertState]:
        sql = (
            "SELECT check_name, segment, status, anomalous_run, normal_run, since, episode,"
            " last_bucket FROM series_state"
        )
        rows = self._read(sql + " WHERE check_name = ?", (check,)) if check else self._read(sql)
        states = {}
        for name, segment, status, a_run, n_run, since, episode, last in rows:
            states[(str(name), str(segment))] = AlertState(
                status=status,  # type: ignore[arg-type]
                anomalous_run=int(a_run),  # type: ignore[call-overload]
                normal_run=int(n_run),  # type: ignore[call-overload]
                since=_parse(since),  # type: ignore[arg-type]
                episode=int(episode),  # type: ignore[call-overload]
                last_bucket=_parse(last),  # type: ignore[arg-type]
            )
        return states

    def record(
        self,
        check: str,
        segment: str,
        state: AlertState,
        notifications: list[Notification],
        channels: list[str],
    ) -> None:
        """Save a series' state and queue its notifications on every channel, atomically."""
        now = datetime.now(UTC).isoformat()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO series_state (check_name, segment, status, anomalous_run, normal_run,"
                " since, episode, last_bucket, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (check_name, segment) DO UPDATE SET status = excluded.status,"
                " anomalous_run = excluded.anomalous_run, normal_run = excluded.normal_run,"
                " since = excluded.since, episode = excluded.episode,"
                " last_bucket = excluded.last_bucket, updated_at = excluded.updated_at",
                (
                    check,
                    segment,
                    state.status,
                    state.anomalous_run,
                    state.normal_run,
                    _iso(state.since),
                    state.episode,
                    _iso(state.last_bucket),
                    now,
                ),
            )
            for note in notifications:
                for channel in channels:
                    db.execute(
                        "INSERT OR IGNORE INTO outbox (notification_key, channel, payload,"
                        " created_at) VALUES (?, ?, ?, ?)",
                        (note.key, channel, note.to_json(), now),
                    )

    def pending(self, channel: str, limit: int = 100) -> list[OutboxEntry]:
        rows = self._read(
            "SELECT id, channel, payload, attempts FROM outbox WHERE status = 'pending'"
            " AND channel = ? ORDER BY id LIMIT ?",
            (channel, limit),
        )
        return [
            OutboxEntry(int(i), str(c), Notification.from_json(str(p)), int(a))  # type: ignore[call-overload]
            for i, c, p, a in rows
        ]

    def pending_count(self) -> int:
        rows = self._read("SELECT count(*) FROM outbox WHERE status = 'pending'")
        return int(str(rows[0][0]))

    def mark_delivered(self, entry_id: int, remote_id: str | None = None) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET status = 'sent', remote_id = ?, delivered_at = ?,"
                " attempts = attempts + 1 WHERE id = ?",
                (remote_id, datetime.now(UTC).isoformat(), entry_id),
            )

    def mark_failed(self, entry_id: int, error: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                (error[:500], entry_id),
            )

    def remote_id(self, notification_key: str, channel: str) -> str | None:
        rows = self._read(
            "SELECT remote_id FROM outbox WHERE notification_key = ? AND channel = ?"
            " AND status = 'sent'",
            (notification_key, channel),
        )
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def notification(self, notification_key: str, channel: str) -> Notification | None:
        rows = self._read(
            "SELECT payload FROM outbox WHERE notification_key = ? AND channel = ?",
            (notification_key, channel),
        )
        return Notification.from_json(str(rows[0][0])) if rows else None
