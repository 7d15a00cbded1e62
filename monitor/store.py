"""The state store: alert state per series, the alert history, the notification outbox,
deployments, dbt manifests, table schemas and baseline restarts; in SQLite (the embedded default)
or PostgreSQL.

State and the notifications a transition causes are written in one transaction, and a
notification is unique per (episode event, channel): after a restart nothing is lost and
nothing already delivered is sent again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from monitor.alerts.notification import Notification, event_key
from monitor.alerts.state import AlertState
from monitor.answers.records import AnswerRecords
from monitor.closing import Closing
from monitor.config import StateConfig
from monitor.statedb import Database, Executor, PostgresDatabase, Row, SQLiteDatabase

# 2: series_state.quiet_start; 3: alert_events; 4: outbox delivery attempts;
# 5: series_state.hold_sign, hold_evidence; 6: calendar_events; 7: alert_answers,
# slack_requests (answers from Slack); 8: replicas (leases, replicas, run_requests, check_runs,
# series_state.verdict)
SCHEMA_VERSION = 8
OUTBOX_LEASE = "__outbox__"  # the lease of the replica that delivers the outbox
PING_TIMEOUT_SECONDS = 1.0  # /readyz answers well within the Helm chart's 5 s probe timeout

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
    quiet_start TEXT,
    hold_sign INTEGER,
    hold_evidence REAL,
    PRIMARY KEY (check_name, segment)
);
CREATE TABLE IF NOT EXISTS outbox (
    id {serial},
    notification_key TEXT NOT NULL,
    channel TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'alert',
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
CREATE TABLE IF NOT EXISTS deployments (
    id TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    status TEXT NOT NULL,
    received_at TEXT NOT NULL,
    document TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS manifests (
    environment TEXT PRIMARY KEY,
    nodes TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS table_schemas (
    table_name TEXT PRIMARY KEY,
    columns TEXT NOT NULL,
    captured_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS history_meta (
    check_name TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    full_at TEXT NOT NULL,
    segments TEXT
);
CREATE TABLE IF NOT EXISTS series_history (
    check_name TEXT NOT NULL,
    segment TEXT NOT NULL,
    bucket TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (check_name, segment, bucket)
);
CREATE TABLE IF NOT EXISTS mutes (
    check_name TEXT PRIMARY KEY,
    until TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rebaselines (
    check_name TEXT PRIMARY KEY,
    since TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_events (
    notification_key TEXT PRIMARY KEY,
    check_name TEXT NOT NULL,
    muted INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_events_check ON alert_events (check_name, created_at);
CREATE TABLE IF NOT EXISTS calendar_events (
    event_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    document TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_answers (
    check_name TEXT NOT NULL,
    segment TEXT NOT NULL,
    episode INTEGER NOT NULL,
    answer TEXT NOT NULL,
    user_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    answered_at TEXT NOT NULL,
    since TEXT NOT NULL,
    applied INTEGER NOT NULL,
    holds INTEGER NOT NULL,
    PRIMARY KEY (check_name, segment, episode)
);
CREATE INDEX IF NOT EXISTS alert_answers_time ON alert_answers (answered_at);
CREATE TABLE IF NOT EXISTS slack_requests (
    digest TEXT PRIMARY KEY,
    seen_at TEXT NOT NULL
);
"""

# Version 6: replicas sharing the checks through PostgreSQL (monitor/leases.py). A lease names a
# check (or the outbox): its holder, a number raised at every change of holder (the fencing
# token) and when it expires, in seconds of the database's clock. ``check_runs`` and the
# ``verdict`` of ``series_state`` let any replica answer for a check another one runs.
_REPLICAS_SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT,
    epoch BIGINT NOT NULL DEFAULT 0,
    expires_at DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS replicas (
    replica_id TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS run_requests (
    check_name TEXT PRIMARY KEY,
    requested_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS check_runs (
    check_name TEXT PRIMARY KEY,
    started TEXT NOT NULL,
    outcome TEXT NOT NULL,
    duration DOUBLE PRECISION NOT NULL,
    error TEXT,
    succeeded_at TEXT
);
"""


@dataclass(frozen=True)
class OutboxEntry:
    """A queued message: an alert (``kind`` "alert"), a deployment report ("deployment"), or a
    later step of an alert's delivery on Slack ("chart", "update").

    ``status`` is ``pending`` until the channel accepted it (``sent``) or it was given up
    (``failed``, with ``last_error``). ``in_doubt`` is the marker of an attempt whose outcome is
    unknown (Slack may have taken it: the answer never came or could not be recorded), started
    at ``in_doubt_at``; ``delivered_to`` the Alertmanager replicas that accepted it.
    """

    id: int
    channel: str
    kind: str
    payload: str
    attempts: int
    created_at: datetime
    key: str = ""
    status: str = "pending"
    last_error: str | None = None
    remote_id: str | None = None
    delivered_at: datetime | None = None
    next_attempt_at: datetime | None = None
    in_doubt: str | None = None
    in_doubt_at: datetime | None = None
    delivered_to: frozenset[str] = frozenset()

    @property
    def notification(self) -> Notification:
        return Notification.from_json(self.payload)


@dataclass(frozen=True)
class AlertEvent:
    """An episode of a series opening or resolving, as it happened (whatever the channels)."""

    notification: Notification
    recorded_at: datetime
    muted: bool  # the check was muted: no channel was told


_PRUNE_BATCH = 500


def _rowcount(cursor: object) -> int:
    return max(int(getattr(cursor, "rowcount", 0)), 0)


@dataclass(frozen=True)
class FollowUp:
    """The next step of a delivery, queued in the transaction that records the step before."""

    key: str
    kind: str
    payload: str


_OUTBOX = (
    "SELECT id, channel, kind, payload, attempts, created_at, notification_key, status,"
    " last_error, remote_id, delivered_at, next_attempt_at, in_doubt, in_doubt_at, delivered_to"
    " FROM outbox"
)


def _entry(row: Row) -> OutboxEntry:
    (i, channel, kind, payload, attempts, created, key, status, error, remote, delivered,
     due, doubt, doubt_at, replicas) = row  # fmt: skip
    return OutboxEntry(
        id=int(i),
        channel=str(channel),
        kind=str(kind),
        payload=str(payload),
        attempts=int(attempts),
        created_at=datetime.fromisoformat(str(created)),
        key=str(key),
        status=str(status),
        last_error=error,
        remote_id=remote,
        delivered_at=_parse(delivered),
        next_attempt_at=_parse(due),
        in_doubt=doubt,
        in_doubt_at=_parse(doubt_at),
        delivered_to=frozenset(json.loads(replicas)) if replicas else frozenset(),
    )


def _instant(moment: datetime) -> str:
    # fixed width, so that instants compare as text in SQL (isoformat drops zero microseconds)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _replicas(names: frozenset[str] | None) -> str | None:
    return None if names is None else json.dumps(sorted(names))


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _parse(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


class StateStore(Closing):
    """Shared by the scheduler's threads and the HTTP server; every method is thread-safe.
    ``with`` closes it as the block ends."""

    def __init__(self, database: Database | str | Path) -> None:
        self._db = database if isinstance(database, Database) else SQLiteDatabase(database)
        self.path = self._db.name
        self._db.script(_SCHEMA.replace("{serial}", self._db.serial))
        # a store created by version 1 has every table but lacks this column
        self._db.add_column("series_state", "quiet_start", "TEXT")
        self._migrate_delivery_attempts()
        # version 5: the detector's hold on an open episode
        self._db.add_column("series_state", "hold_sign", "INTEGER")
        self._db.add_column("series_state", "hold_evidence", "REAL")
        # version 7: its tables are in _SCHEMA; what they hold is read and written there
        self.answers = AnswerRecords(self._db, _enqueue)
        # version 8: replicas
        self._db.script(_REPLICAS_SCHEMA)
        self._db.add_column("series_state", "verdict", "TEXT")
        # a write about a check (or a delivery step) checks, in its own transaction, that this
        # replica still holds the lease on it; set by monitor.leases.Coordinator
        self.fence: Callable[[Executor, str], None] | None = None
        with self._db.transaction() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )

    def _migrate_delivery_attempts(self) -> None:
        """Version 4: each outbox row records its own delivery attempts (see OutboxEntry); a
        ``status`` may now also be ``failed``. Rows of older versions read as never tried."""
        for column in ("next_attempt_at", "in_doubt", "in_doubt_at", "delivered_to"):
            self._db.add_column("outbox", column, "TEXT")

    @classmethod
    def open(cls, config: StateConfig, *, exclusive: bool = True) -> StateStore:
        """The daemon's store: a SQLite file is locked against a second daemon. A command that
        only reads the store beside a running daemon (the backtest) opens it not ``exclusive``."""
        if config.url is not None:
            return cls(PostgresDatabase(config.url.get_secret_value()))
        return cls(SQLiteDatabase(config.path, exclusive=exclusive))

    @property
    def database(self) -> Database:
        """The database itself, for the replicas' leases (monitor/leases.py)."""
        return self._db

    @contextmanager
    def _transaction(self) -> Iterator[Executor]:
        with self._db.transaction() as db:
            yield db

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[Row]:
        return self._db.read(sql, params)

    def _fenced(self, db: Executor, name: str) -> None:
        """Inside a write's transaction: refuse it (LeaseLost) unless this replica holds the
        lease on ``name`` (a check, or OUTBOX_LEASE); no-op for a single daemon."""
        if self.fence is not None:
            self.fence(db, name)

    def ping(self) -> None:
        """Raise StateStoreError unless the store can be read and written now: another process
        holding SQLite's write lock leaves reads working while every save fails."""
        self._db.ping(PING_TIMEOUT_SECONDS)

    def load_states(self, check: str | None = None) -> dict[tuple[str, str], AlertState]:
        sql = (
            "SELECT check_name, segment, status, anomalous_run, normal_run, since, episode,"
            " last_bucket, quiet_start, hold_sign, hold_evidence FROM series_state"
        )
        rows = self._read(sql + " WHERE check_name = ?", (check,)) if check else self._read(sql)
        states = {}
        for name, segment, status, a_run, n_run, since, episode, last, quiet, sign, held in rows:
            states[(str(name), str(segment))] = AlertState(
                status=status,
                anomalous_run=int(a_run),
                normal_run=int(n_run),
                since=_parse(since),
                episode=int(episode),
                last_bucket=_parse(last),
                quiet_start=_parse(quiet),
                hold_sign=int(sign or 0),
                hold_evidence=float(held or 0.0),
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
        self.record_all(check, [(segment, state, notifications)], channels)

    def record_all(
        self,
        check: str,
        series: Sequence[tuple[str, AlertState, list[Notification]]],
        channels: list[str],
        *,
        muted: bool = False,
        verdicts: Mapping[str, str] | None = None,
    ) -> None:
        """:meth:`record` for several series of one check run, in one transaction; every
        notification also joins the check's alert history (``muted``: no channel is told).
        ``verdicts``: per segment, its latest verdict as JSON (kept when not given)."""
        now = datetime.now(UTC).isoformat()
        states: list[tuple[object, ...]] = [
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
                _iso(state.quiet_start),
                state.hold_sign,
                state.hold_evidence,
                (verdicts or {}).get(segment),
            )
            for segment, state, _ in series
        ]
        outbox: list[tuple[object, ...]] = [
            (note.key, channel, note.to_json(), now)
            for _, _, notifications in series
            for note in notifications
            for channel in channels
        ]
        with self._transaction() as db:
            self._fenced(db, check)
            db.executemany(
                "INSERT INTO series_state (check_name, segment, status, anomalous_run, normal_run,"
                " since, episode, last_bucket, updated_at, quiet_start, hold_sign, hold_evidence,"
                " verdict) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (check_name, segment) DO UPDATE SET status = excluded.status,"
                " anomalous_run = excluded.anomalous_run, normal_run = excluded.normal_run,"
                " since = excluded.since, episode = excluded.episode,"
                " last_bucket = excluded.last_bucket, updated_at = excluded.updated_at,"
                " quiet_start = excluded.quiet_start, hold_sign = excluded.hold_sign,"
                " hold_evidence = excluded.hold_evidence,"
                " verdict = COALESCE(excluded.verdict, series_state.verdict)",
                states,
            )
            if outbox:
                db.executemany(
                    "INSERT INTO outbox (notification_key, channel, payload, created_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (notification_key, channel) DO NOTHING",
                    outbox,
                )
            events: list[tuple[object, ...]] = [
                (note.key, check, int(muted), now, note.to_json())
                for _, _, notifications in series
                for note in notifications
            ]
            if events:
                db.executemany(
                    "INSERT INTO alert_events (notification_key, check_name, muted, created_at,"
                    " payload) VALUES (?, ?, ?, ?, ?) ON CONFLICT (notification_key) DO NOTHING",
                    events,
                )

    def alert_events(self, check: str, limit: int = 100) -> list[AlertEvent]:
        """A check's alert history, newest first: what opened and resolved, and when."""
        rows = self._read(
            "SELECT payload, created_at, muted FROM alert_events WHERE check_name = ?"
            " ORDER BY created_at DESC, notification_key DESC LIMIT ?",
            (check, limit),
        )
        return [
            AlertEvent(Notification.from_json(str(p)), datetime.fromisoformat(str(t)), bool(m))
            for p, t, m in rows
        ]

    def pending(
        self, channel: str, limit: int = 100, *, due: datetime | None = None, after: int = 0
    ) -> list[OutboxEntry]:
        """Undelivered entries of ``channel`` in queue order (ids above ``after``); with ``due``,
        only those whose backoff has passed by then."""
        sql = _OUTBOX + " WHERE status = 'pending' AND channel = ? AND id > ?"
        params: tuple[object, ...] = (channel, after)
        if due is not None:
            sql += " AND (next_attempt_at IS NULL OR next_attempt_at <= ?)"
            params += (_instant(due),)
        return [_entry(r) for r in self._read(sql + " ORDER BY id LIMIT ?", (*params, limit))]

    def outbox(self, statuses: Sequence[str], limit: int = 1000) -> list[OutboxEntry]:
        """Entries in any of ``statuses``, newest first."""
        marks = ", ".join("?" for _ in statuses)
        return [
            _entry(r)
            for r in self._read(
                _OUTBOX + f" WHERE status IN ({marks}) ORDER BY id DESC LIMIT ?",
                (*statuses, limit),
            )
        ]

    def enqueue(self, key: str, kind: str, payload: str, channels: list[str]) -> None:
        """Queue a message once per key and channel (a second enqueue of the key is ignored)."""
        with self._transaction() as db:
            _enqueue(db, key, kind, payload, channels)

    def pending_count(self) -> int:
        rows = self._read("SELECT count(*) FROM outbox WHERE status = 'pending'")
        return int(str(rows[0][0]))

    def begin_attempt(self, ids: Sequence[int], marker: str, at: datetime) -> None:
        """Record, before a post that cannot be repeated safely, that its outcome is unknown
        until :meth:`mark_delivered` or :meth:`mark_retry` says otherwise."""
        with self._transaction() as db:
            self._fenced(db, OUTBOX_LEASE)
            db.executemany(
                "UPDATE outbox SET in_doubt = ?, in_doubt_at = ? WHERE id = ?",
                [(marker, _instant(at), i) for i in ids],
            )

    def mark_delivered(
        self, ids: Sequence[int], remote_id: str | None = None, then: Sequence[FollowUp] = ()
    ) -> None:
        """The channel accepted ``ids``; queue the delivery's next steps on the same channel,
        in the same transaction (a step is never lost between two others, nor done twice)."""
        now = datetime.now(UTC).isoformat()
        with self._transaction() as db:
            self._fenced(db, OUTBOX_LEASE)
            db.executemany(
                "UPDATE outbox SET status = 'sent', remote_id = ?, delivered_at = ?,"
                " attempts = attempts + 1, next_attempt_at = NULL WHERE id = ?",
                [(remote_id, now, i) for i in ids],
            )
            created = datetime.now(UTC).isoformat()
            db.executemany(
                "INSERT INTO outbox (notification_key, channel, kind, payload, created_at)"
                " SELECT ?, channel, ?, ?, ? FROM outbox WHERE id = ?"
                " ON CONFLICT (notification_key, channel) DO NOTHING",
                [(step.key, step.kind, step.payload, created, ids[0]) for step in then],
            )

    def mark_retry(
        self,
        ids: Sequence[int],
        error: str,
        next_attempt_at: datetime,
        *,
        in_doubt: bool,
        delivered_to: frozenset[str] | None = None,
    ) -> None:
        """An attempt failed for a passing reason: try again from ``next_attempt_at``. Unless
        the attempt is ``in_doubt`` (the channel may have taken it) its marker is cleared."""
        doubt = "" if in_doubt else ", in_doubt = NULL, in_doubt_at = NULL"
        with self._transaction() as db:
            self._fenced(db, OUTBOX_LEASE)
            db.executemany(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?,"
                f" delivered_to = COALESCE(?, delivered_to){doubt} WHERE id = ?",
                [(error[:500], _instant(next_attempt_at), _replicas(delivered_to), i)
                 for i in ids],
            )  # fmt: skip

    def mark_failed(
        self,
        ids: Sequence[int],
        error: str,
        delivered_to: frozenset[str] | None = None,
        *,
        in_doubt: bool = False,
    ) -> None:
        """Give ``ids`` up: the channel refused them for good, or every attempt failed. An
        attempt ``in_doubt`` keeps its marker: the channel may show the message all the same."""
        doubt = "" if in_doubt else ", in_doubt = NULL, in_doubt_at = NULL"
        with self._transaction() as db:
            self._fenced(db, OUTBOX_LEASE)
            db.executemany(
                "UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = ?,"
                f" next_attempt_at = NULL, delivered_to = COALESCE(?, delivered_to){doubt}"
                " WHERE id = ?",
                [(error[:500], _replicas(delivered_to), i) for i in ids],
            )

    def status(self, notification_key: str, channel: str) -> str | None:
        rows = self._read(
            "SELECT status FROM outbox WHERE notification_key = ? AND channel = ?",
            (notification_key, channel),
        )
        return str(rows[0][0]) if rows else None

    def remote_id(self, notification_key: str, channel: str) -> str | None:
        rows = self._read(
            "SELECT remote_id FROM outbox WHERE notification_key = ? AND channel = ?"
            " AND status = 'sent'",
            (notification_key, channel),
        )
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    # --- deployments, manifests, schemas, baseline restarts -------------------------------

    def record_deployment(
        self,
        deployment_id: str,
        environment: str,
        status: str,
        received_at: datetime,
        document: str,
        *,
        manifest: str | None = None,
        schemas: Mapping[str, str] | None = None,
        report: tuple[str, str, list[str]] | None = None,
    ) -> bool:
        """Record a new deployment with what comes with it, in one transaction: the manifest of
        its environment, the columns of its tables as read after it, and the report (key,
        payload, channels) of a deployment decided at once. False, with nothing written, when
        a deployment with this id was recorded before."""
        try:
            with self._transaction() as db:
                inserted = db.execute(
                    "INSERT INTO deployments (id, environment, status, received_at, document)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    (deployment_id, environment, status, received_at.isoformat(), document),
                )
                if _rowcount(inserted) == 0:
                    raise _Recorded
                if manifest is not None:
                    _save_manifest(db, environment, manifest)
                for table, columns in (schemas or {}).items():
                    _save_table_schema(db, table, columns)
                if report is not None:
                    _enqueue(db, report[0], "deployment", report[1], report[2])
        except _Recorded:
            return False
        return True

    def change_deployment(
        self, deployment_id: str, change: Callable[[str], tuple[str, str] | None]
    ) -> str | None:
        """Apply ``change`` (the document -> the new (status, document), or None for no change)
        to a deployment under its row lock, so that replicas observing its checks at once each
        build on the other's change; the document before, or None when there is no such
        deployment or nothing changed."""
        with self._transaction() as db:
            found = db.execute(
                "SELECT document FROM deployments WHERE id = ?" + self._db.row_lock,
                (deployment_id,),
            )
            row = _fetchone(found)
            if row is None:
                return None
            before = str(row[0])
            after = change(before)
            if after is None:
                return None
            db.execute(
                "UPDATE deployments SET status = ?, document = ? WHERE id = ?",
                (*after, deployment_id),
            )
        return before

    def deployment(self, deployment_id: str) -> str | None:
        rows = self._read("SELECT document FROM deployments WHERE id = ?", (deployment_id,))
        return str(rows[0][0]) if rows else None

    def deployments(self, status: str | None = None, since: datetime | None = None) -> list[str]:
        """Deployment documents, oldest first, optionally by status or received since."""
        sql = "SELECT document FROM deployments WHERE 1 = 1"
        params: list[object] = []
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        if since is not None:
            sql += " AND received_at >= ?"
            params.append(since.isoformat())
        return [str(r[0]) for r in self._read(sql + " ORDER BY received_at", tuple(params))]

    def manifest(self, environment: str) -> str | None:
        rows = self._read("SELECT nodes FROM manifests WHERE environment = ?", (environment,))
        return str(rows[0][0]) if rows else None

    def save_manifest(self, environment: str, nodes: str) -> None:
        with self._transaction() as db:
            _save_manifest(db, environment, nodes)

    def table_schema(self, table: str) -> str | None:
        rows = self._read("SELECT columns FROM table_schemas WHERE table_name = ?", (table,))
        return str(rows[0][0]) if rows else None

    def save_table_schema(self, table: str, columns: str) -> None:
        with self._transaction() as db:
            _save_table_schema(db, table, columns)

    def rebaselines(self) -> dict[str, datetime]:
        rows = self._read("SELECT check_name, since FROM rebaselines")
        return {str(name): datetime.fromisoformat(str(since)) for name, since in rows}

    def save_rebaseline(self, check: str, since: datetime) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO rebaselines (check_name, since) VALUES (?, ?)"
                " ON CONFLICT (check_name) DO UPDATE SET since = excluded.since",
                (check, since.isoformat()),
            )

    def calendar_events(self) -> list[str]:
        """The events and exclusion windows recorded through the API (JSON documents), oldest
        first."""
        rows = self._read("SELECT document FROM calendar_events ORDER BY created_at, event_id")
        return [str(document) for (document,) in rows]

    def save_calendar_event(self, event_id: str, created_at: datetime, document: str) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO calendar_events (event_id, created_at, document) VALUES (?, ?, ?)",
                (event_id, _instant(created_at), document),
            )

    def delete_calendar_event(self, event_id: str) -> bool:
        """Whether there was such an event."""
        with self._transaction() as db:
            cursor = db.execute("DELETE FROM calendar_events WHERE event_id = ?", (event_id,))
            return _rowcount(cursor) > 0

    def load_history(
        self, check: str, fingerprint: str
    ) -> tuple[datetime, list[str] | None, dict[str, list[tuple[datetime, float]]]] | None:
        """A check's cached series (when the last full read ran, the segments it ranked, and
        per segment the judged buckets); None when absent or cached for another config."""
        meta = self._read(
            "SELECT fingerprint, full_at, segments FROM history_meta WHERE check_name = ?",
            (check,),
        )
        if not meta or meta[0][0] != fingerprint:
            return None
        rows = self._read(
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

    def save_history(
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
        with self._transaction() as db:
            self._fenced(db, check)
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
            rows = self._read(
                "SELECT check_name, segment, value FROM series_history WHERE bucket >= ?"
                f" AND (check_name, segment) IN (VALUES {', '.join('(?, ?)' for _ in batch)})"
                " ORDER BY check_name, segment, bucket",
                (since.isoformat(), *(part for pair in batch for part in pair)),
            )
            for name, segment, value in rows:
                found.setdefault((str(name), str(segment)), []).append(float(value))
        return found

    # --- what any replica answers for checks another one runs -----------------------------

    def record_run(
        self, check: str, started: datetime, outcome: str, duration: float, error: str | None
    ) -> None:
        """A check's last run (and, unless it failed, its last success), for the replicas
        that do not run it and for the one that takes it over."""
        success = None if outcome == "error" else datetime.now(UTC).isoformat()
        with self._transaction() as db:
            self._fenced(db, check)
            db.execute(
                "INSERT INTO check_runs (check_name, started, outcome, duration, error,"
                " succeeded_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (check_name) DO UPDATE"
                " SET started = excluded.started, outcome = excluded.outcome,"
                " duration = excluded.duration, error = excluded.error,"
                " succeeded_at = COALESCE(excluded.succeeded_at, check_runs.succeeded_at)",
                (check, started.isoformat(), outcome, duration, error, success),
            )

    def last_runs(self, check: str | None = None) -> dict[str, StoredRun]:
        sql = "SELECT check_name, started, outcome, duration, error, succeeded_at FROM check_runs"
        rows = self._read(sql + " WHERE check_name = ?", (check,)) if check else self._read(sql)
        return {
            str(name): StoredRun(
                datetime.fromisoformat(str(started)), str(outcome), float(duration), error,
                _parse(success),
            )
            for name, started, outcome, duration, error, success in rows
        }  # fmt: skip

    def latest_verdicts(self, check: str | None = None) -> dict[tuple[str, str], str]:
        """Per (check, segment), its latest verdict as JSON (see ``record_all``)."""
        sql = "SELECT check_name, segment, verdict FROM series_state WHERE verdict IS NOT NULL"
        rows = self._read(sql + " AND check_name = ?", (check,)) if check else self._read(sql)
        return {(str(c), str(s)): str(v) for c, s, v in rows}

    def request_run(self, check: str) -> None:
        """Ask the replica holding ``check`` to run it now (POST .../run on another one)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO run_requests (check_name, requested_at) VALUES (?, ?)"
                " ON CONFLICT (check_name) DO NOTHING",
                (check, datetime.now(UTC).isoformat()),
            )

    def take_run_requests(self, checks: Sequence[str]) -> list[str]:
        """The runs asked for among ``checks``, each handed out once."""
        if not checks:
            return []
        marks = ", ".join("?" for _ in checks)
        with self._transaction() as db:
            taken = db.execute(
                f"DELETE FROM run_requests WHERE check_name IN ({marks}) RETURNING check_name",
                tuple(checks),
            )
            return [str(row[0]) for row in _fetchall(taken)]

    def mutes(self) -> dict[str, tuple[datetime, str]]:
        rows = self._read("SELECT check_name, until, reason FROM mutes")
        return {str(n): (datetime.fromisoformat(str(u)), str(r)) for n, u, r in rows}

    def save_mute(self, check: str, until: datetime, reason: str) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO mutes (check_name, until, reason) VALUES (?, ?, ?)"
                " ON CONFLICT (check_name) DO UPDATE SET until = excluded.until,"
                " reason = excluded.reason",
                (check, until.isoformat(), reason),
            )

    def prune(
        self,
        notifications_before: datetime,
        deployments_before: datetime,
        alerts_before: datetime | None = None,
    ) -> dict[str, int]:
        """Delete what is done with and older than the cutoffs: notifications no longer pending
        (but not the opening of an episode still firing, nor of one whose resolution waits for
        delivery: the resolution is threaded under it and edits it, and Alertmanager re-sent
        from it), finished deployments, and the manifests of environments not deployed to
        since; the alert history's episodes whose events are all older than ``alerts_before``
        (None: none), unless still firing; the alert state of series not judged since
        ``notifications_before`` (a segment no longer tracked, a removed check) once no
        notification or history event of theirs is left (a series that comes back must not
        number an episode as one whose key is still used), and the cached series of checks not
        read since. How many rows of each went."""
        # states first: an episode resolving meanwhile has its resolution pending below
        firing = {
            event_key(check, segment, state.episode, "opened")
            for (check, segment), state in self.load_states().items()
            if state.firing
        }
        needed = set(firing)
        waiting = self._read(
            "SELECT payload FROM outbox WHERE status = 'pending' AND kind = 'alert'"
        )
        for note in (Notification.from_json(str(payload)) for (payload,) in waiting):
            if note.kind == "resolved":
                needed.add(event_key(note.check, note.segment, note.episode, "opened"))
        done = [
            int(str(entry_id))
            for entry_id, key in self._read(
                "SELECT id, notification_key FROM outbox WHERE status <> 'pending'"
                " AND created_at < ?",
                (notifications_before.astimezone(UTC).isoformat(),),
            )
            if key not in needed
        ]
        self._delete_keys("outbox", "id", done)
        cutoff = deployments_before.astimezone(UTC).isoformat()
        with self._transaction() as db:
            deployments = db.execute(
                "DELETE FROM deployments WHERE status <> 'watching' AND received_at < ?", (cutoff,)
            )
            manifests = db.execute("DELETE FROM manifests WHERE updated_at < ?", (cutoff,))
        events = 0 if alerts_before is None else self._prune_alert_events(alerts_before, firing)
        states, caches = self._prune_series(notifications_before)
        return {
            "notifications": len(done),
            "deployments": _rowcount(deployments),
            "manifests": _rowcount(manifests),
            "alert_events": events,
            "series_states": states,
            "series_caches": caches,
        }

    def _prune_alert_events(self, before: datetime, firing: set[str]) -> int:
        """Delete the history of episodes whose events are all older than ``before`` and whose
        opening is not in ``firing``; how many events went."""
        newest: dict[str, str] = {}
        keys: dict[str, list[str]] = {}
        for key, created in self._read("SELECT notification_key, created_at FROM alert_events"):
            episode = str(key).rsplit("/", 1)[0]
            newest[episode] = max(newest.get(episode, ""), str(created))
            keys.setdefault(episode, []).append(str(key))
        cutoff = before.astimezone(UTC).isoformat()
        gone = [
            key
            for episode, created in newest.items()
            if created < cutoff and f"{episode}/opened" not in firing
            for key in keys[episode]
        ]
        self._delete_keys("alert_events", "notification_key", gone)
        return len(gone)

    def _prune_series(self, before: datetime) -> tuple[int, int]:
        """Delete the alert state of series not judged since ``before`` that no notification or
        history event names any more, and the cached series of checks not read since; how many
        states and caches went."""
        cutoff = before.astimezone(UTC).isoformat()
        named: set[tuple[str, str]] = set()
        for table in ("outbox", "alert_events"):
            for (key,) in self._read(f"SELECT notification_key FROM {table}"):
                named |= _series_named(str(key))
        stale: list[tuple[object, ...]] = [
            (str(check), str(segment), cutoff)
            for check, segment in self._read(
                "SELECT check_name, segment FROM series_state WHERE updated_at < ?"
                " AND status <> 'firing'",
                (cutoff,),
            )
            if (str(check), str(segment)) not in named
        ]
        for start in range(0, len(stale), _PRUNE_BATCH):
            with self._transaction() as db:
                db.executemany(
                    "DELETE FROM series_state WHERE check_name = ? AND segment = ?"
                    " AND updated_at < ? AND status <> 'firing'",
                    stale[start : start + _PRUNE_BATCH],
                )
        checks = [
            str(name)
            for (name,) in self._read(
                "SELECT check_name FROM history_meta WHERE full_at < ?", (cutoff,)
            )
        ]
        with self._transaction() as db:
            for name in checks:
                db.execute("DELETE FROM series_history WHERE check_name = ?", (name,))
                db.execute("DELETE FROM history_meta WHERE check_name = ?", (name,))
        return len(stale), len(checks)

    def _delete_keys(self, table: str, column: str, keys: Sequence[object]) -> None:
        for start in range(0, len(keys), _PRUNE_BATCH):  # short transactions, small statements
            batch = keys[start : start + _PRUNE_BATCH]
            with self._transaction() as db:
                db.execute(
                    f"DELETE FROM {table} WHERE {column} IN ({', '.join('?' * len(batch))})",
                    tuple(batch),
                )

    def close(self) -> None:
        self._db.close()

    def opened_posted_as(self, remote_id: str) -> list[Notification]:
        """The alerts delivered to Slack as one message (a group), in queue order."""
        rows = self._read(
            "SELECT payload FROM outbox WHERE channel = 'slack' AND kind = 'alert'"
            " AND remote_id = ? ORDER BY id",
            (remote_id,),
        )
        return [Notification.from_json(str(payload)) for (payload,) in rows]

    def opened_alerts(
        self, check: str, limit: int, before: tuple[str, str] | None = None
    ) -> list[tuple[AlertEvent, str]]:
        """A check's alerts (episodes opened), newest first, ``limit`` of them from ``before``
        (the position of the last one of the previous page), each with its position."""
        sql = (
            "SELECT payload, created_at, muted, notification_key FROM alert_events"
            " WHERE check_name = ? AND substr(notification_key, length(notification_key) - 6)"
            " = '/opened'"
        )
        params: tuple[object, ...] = (check,)
        if before is not None:
            sql += " AND (created_at < ? OR (created_at = ? AND notification_key < ?))"
            params += (before[0], before[0], before[1])
        rows = self._read(
            sql + " ORDER BY created_at DESC, notification_key DESC LIMIT ?", (*params, limit)
        )
        return [
            (
                AlertEvent(Notification.from_json(str(p)), datetime.fromisoformat(str(t)), bool(m)),
                f"{t}|{k}",
            )
            for p, t, m, k in rows
        ]

    def alert_event(self, notification_key: str) -> AlertEvent | None:
        rows = self._read(
            "SELECT payload, created_at, muted FROM alert_events WHERE notification_key = ?",
            (notification_key,),
        )
        return (
            AlertEvent(Notification.from_json(str(rows[0][0])),
                       datetime.fromisoformat(str(rows[0][1])), bool(rows[0][2]))
            if rows
            else None
        )  # fmt: skip

    def notification(self, notification_key: str, channel: str) -> Notification | None:
        rows = self._read(
            "SELECT payload FROM outbox WHERE notification_key = ? AND channel = ?",
            (notification_key, channel),
        )
        return Notification.from_json(str(rows[0][0])) if rows else None


_EPISODE_EVENT = re.compile(r"/\d+/(?:opened|resolved)(?=/|$)")


def _series_named(key: str) -> set[tuple[str, str]]:
    """The (check, segment) a notification key may belong to: ``check/segment/episode/kind``
    and its delivery steps (``.../update``); a segment may hold ``/``, so every reading."""
    check, _, rest = key.partition("/")
    return {(check, rest[: m.start()]) for m in _EPISODE_EVENT.finditer(rest)}


@dataclass(frozen=True)
class StoredRun:
    """A check's last run as the state store keeps it (``check_runs``)."""

    started: datetime
    outcome: str
    duration: float
    error: str | None
    succeeded_at: datetime | None


def _fetchone(cursor: object) -> Row | None:
    row: Row | None = getattr(cursor, "fetchone")()  # noqa: B009 - sqlite3 and psycopg cursors
    return row


def _fetchall(cursor: object) -> list[Row]:
    rows: list[Row] = getattr(cursor, "fetchall")()  # noqa: B009 - sqlite3 and psycopg cursors
    return rows


class _Recorded(Exception):
    """Rolls back the recording of a deployment whose id exists."""


def _enqueue(db: Executor, key: str, kind: str, payload: str, channels: list[str]) -> None:
    now = datetime.now(UTC).isoformat()
    for channel in channels:
        db.execute(
            "INSERT INTO outbox (notification_key, channel, kind, payload, created_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (notification_key, channel) DO NOTHING",
            (key, channel, kind, payload, now),
        )


def _save_manifest(db: Executor, environment: str, nodes: str) -> None:
    _upsert(db, "manifests", ("environment", "nodes", "updated_at"), (environment, nodes))


def _save_table_schema(db: Executor, table: str, columns: str) -> None:
    _upsert(db, "table_schemas", ("table_name", "columns", "captured_at"), (table, columns))


def _upsert(db: Executor, table: str, columns: tuple[str, str, str], row: tuple[str, str]) -> None:
    """Insert or replace the (key, value, now) row of a table keyed by its first column."""
    key, value, stamp = columns
    db.execute(
        f"INSERT INTO {table} ({key}, {value}, {stamp}) VALUES (?, ?, ?) ON CONFLICT ({key})"
        f" DO UPDATE SET {value} = excluded.{value}, {stamp} = excluded.{stamp}",
        (*row, datetime.now(UTC).isoformat()),
    )
