"""The state store: alert state per series, the alert history, the notification outbox,
deployments, dbt manifests, table schemas and baseline restarts; in SQLite (the embedded default)
or PostgreSQL. This module holds the schema and its migrations, and ``StateStore``, which opens
the database and composes the records kept in it (monitor/records/, monitor/answers/records.py).

State and the notifications a transition causes are written in one transaction, and a
notification is unique per (episode event, channel): after a restart nothing is lost and
nothing already delivered is sent again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from monitor.alerts.notification import Notification, event_key
from monitor.alerts.state import AlertState
from monitor.answers.records import AnswerRecords
from monitor.closing import Closing
from monitor.config import StateConfig
from monitor.records.alerts import AlertRecords
from monitor.records.calendar import CalendarRecords
from monitor.records.controls import CheckControls
from monitor.records.deployments import DeploymentRecords
from monitor.records.outbox import OutboxRecords
from monitor.records.runs import RunRecords
from monitor.records.runs import StoredRun as StoredRun  # re-exported: monitor/engine.py's name
from monitor.records.series import SeriesCache
from monitor.statedb import Database, Executor, Fence, PostgresDatabase, SQLiteDatabase

# 2: series_state.quiet_start; 3: alert_events; 4: outbox delivery attempts;
# 5: series_state.hold_sign, hold_evidence; 6: calendar_events; 7: alert_answers,
# slack_requests (answers from Slack); 8: replicas (leases, replicas, run_requests, check_runs,
# series_state.verdict)
SCHEMA_VERSION = 8
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


class StateStore(Closing):
    """The database, its schema and its lifecycle, and the records kept in it: ``alerts``
    (alert state and history), ``outbox``, ``deployments``, ``series`` (the series cache),
    ``runs`` (what other replicas read of a check's runs), ``controls`` (mutes, baseline
    restarts), ``calendar`` and ``answers``. Shared by the scheduler's threads and the HTTP
    server; every method is thread-safe. ``with`` closes it as the block ends.

    The engine's calls (monitor/engine.py) keep their names here, answered by the records."""

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
        # version 7 (answers): its tables are in _SCHEMA
        # version 8: replicas
        self._db.script(_REPLICAS_SCHEMA)
        self._db.add_column("series_state", "verdict", "TEXT")
        # a write about a check (or a delivery step) checks, in its own transaction, that this
        # replica still holds the lease on it; set by monitor.leases.Coordinator
        self.fence: Fence | None = None
        with self._db.transaction() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
        self.alerts = AlertRecords(self._db, self._fenced)
        self.outbox = OutboxRecords(self._db, self._fenced)
        self.deployments = DeploymentRecords(self._db)
        self.series = SeriesCache(self._db, self._fenced)
        self.runs = RunRecords(self._db, self._fenced)
        self.controls = CheckControls(self._db)
        self.calendar = CalendarRecords(self._db)
        self.answers = AnswerRecords(self._db)
        # the engine's calls (monitor/engine.py), answered by the records
        self.load_states = self.alerts.states
        self.record_all = self.alerts.record
        self.latest_verdicts = self.alerts.verdicts
        self.record_run = self.runs.record
        self.last_runs = self.runs.last
        self.load_history = self.series.load
        self.save_history = self.series.save
        self.mutes = self.controls.mutes
        self.save_mute = self.controls.save_mute
        self.rebaselines = self.controls.rebaselines
        self.save_rebaseline = self.controls.save_rebaseline

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
    def _fenced(self, name: str) -> Iterator[Executor]:
        """A write's transaction, refused (LeaseLost) unless this replica holds the lease on
        ``name`` (a check, or OUTBOX_LEASE); a plain transaction for a single daemon."""
        with self._db.transaction() as db:
            if self.fence is not None:
                self.fence(db, name)
            yield db

    def ping(self) -> None:
        """Raise StateStoreError unless the store can be read and written now: another process
        holding SQLite's write lock leaves reads working while every save fails."""
        self._db.ping(PING_TIMEOUT_SECONDS)

    def close(self) -> None:
        self._db.close()

    def prune(
        self,
        notifications_before: datetime,
        deployments_before: datetime,
        alerts_before: datetime | None = None,
    ) -> dict[str, int]:
        """Delete what is done with and older than the cutoffs: notifications no longer pending
        (but not the opening of an episode still firing, nor of one whose resolution waits for
        delivery), finished deployments, and the manifests of environments not deployed to
        since; the alert history's episodes whose events are all older than ``alerts_before``
        (None: none), unless still firing; the alert state of series not judged since
        ``notifications_before`` once no notification or history event of theirs is left, and
        the cached series of checks not read since. How many rows of each went."""
        # states first: an episode resolving meanwhile has its resolution pending
        firing = {
            event_key(check, segment, state.episode, "opened")
            for (check, segment), state in self.alerts.states().items()
            if state.firing
        }
        notifications = self.outbox.prune(notifications_before, firing)
        deployments, manifests = self.deployments.prune(deployments_before)
        events = 0 if alerts_before is None else self.alerts.prune_events(alerts_before, firing)
        return {
            "notifications": notifications,
            "deployments": deployments,
            "manifests": manifests,
            "alert_events": events,
            "series_states": self.alerts.prune_states(notifications_before),
            "series_caches": self.series.prune(notifications_before),
        }

    def record(
        self,
        check: str,
        segment: str,
        state: AlertState,
        notifications: list[Notification],
        channels: list[str],
    ) -> None:
        """Save a series' state and queue its notifications on every channel, atomically (for
        several series of a check run: ``record_all``)."""
        self.alerts.record(check, [(segment, state, notifications)], channels)
