"""The notification outbox (table ``outbox``): every message a channel is to be told, queued in
the transaction that causes it and unique per (key, channel), with each delivery attempt's
outcome; a restart sends on what is pending and never sends again what was delivered.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from monitor.alerts.notification import Notification, event_key
from monitor.statedb import Database, Executor, Fenced, Row, delete_keys, instant, parse

OUTBOX_LEASE = "__outbox__"  # the lease of the replica that delivers the outbox


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
        delivered_at=parse(delivered),
        next_attempt_at=parse(due),
        in_doubt=doubt,
        in_doubt_at=parse(doubt_at),
        delivered_to=frozenset(json.loads(replicas)) if replicas else frozenset(),
    )


def _replicas(names: frozenset[str] | None) -> str | None:
    return None if names is None else json.dumps(sorted(names))


def queue(db: Executor, messages: Sequence[tuple[str, str, str]], channels: list[str]) -> None:
    """Inside a transaction: queue each (key, kind, payload) once per channel (a key queued
    before on a channel is left as it is)."""
    now = datetime.now(UTC).isoformat()
    rows: list[tuple[object, ...]] = [
        (key, channel, kind, payload, now)
        for key, kind, payload in messages
        for channel in channels
    ]
    if rows:
        db.executemany(
            "INSERT INTO outbox (notification_key, channel, kind, payload, created_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (notification_key, channel) DO NOTHING",
            rows,
        )


class OutboxRecords:
    """The outbox part of the state store. A delivery step's write is fenced by OUTBOX_LEASE:
    only the replica holding it delivers."""

    def __init__(self, db: Database, fenced: Fenced) -> None:
        self._db = db
        self._fenced = fenced

    def pending(
        self, channel: str, limit: int = 100, *, due: datetime | None = None, after: int = 0
    ) -> list[OutboxEntry]:
        """Undelivered entries of ``channel`` in queue order (ids above ``after``); with ``due``,
        only those whose backoff has passed by then."""
        sql = _OUTBOX + " WHERE status = 'pending' AND channel = ? AND id > ?"
        params: tuple[object, ...] = (channel, after)
        if due is not None:
            sql += " AND (next_attempt_at IS NULL OR next_attempt_at <= ?)"
            params += (instant(due),)
        return [_entry(r) for r in self._db.read(sql + " ORDER BY id LIMIT ?", (*params, limit))]

    def entries(self, statuses: Sequence[str], limit: int = 1000) -> list[OutboxEntry]:
        """Entries in any of ``statuses``, newest first."""
        marks = ", ".join("?" for _ in statuses)
        return [
            _entry(r)
            for r in self._db.read(
                _OUTBOX + f" WHERE status IN ({marks}) ORDER BY id DESC LIMIT ?",
                (*statuses, limit),
            )
        ]

    def enqueue(self, key: str, kind: str, payload: str, channels: list[str]) -> None:
        """Queue a message once per key and channel (a second enqueue of the key is ignored)."""
        with self._db.transaction() as db:
            queue(db, [(key, kind, payload)], channels)

    def pending_count(self) -> int:
        rows = self._db.read("SELECT count(*) FROM outbox WHERE status = 'pending'")
        return int(str(rows[0][0]))

    def begin_attempt(self, ids: Sequence[int], marker: str, at: datetime) -> None:
        """Record, before a post that cannot be repeated safely, that its outcome is unknown
        until :meth:`mark_delivered` or :meth:`mark_retry` says otherwise."""
        with self._fenced(OUTBOX_LEASE) as db:
            db.executemany(
                "UPDATE outbox SET in_doubt = ?, in_doubt_at = ? WHERE id = ?",
                [(marker, instant(at), i) for i in ids],
            )

    def mark_delivered(
        self, ids: Sequence[int], remote_id: str | None = None, then: Sequence[FollowUp] = ()
    ) -> None:
        """The channel accepted ``ids``; queue the delivery's next steps on the same channel,
        in the same transaction (a step is never lost between two others, nor done twice)."""
        now = datetime.now(UTC).isoformat()
        with self._fenced(OUTBOX_LEASE) as db:
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
        with self._fenced(OUTBOX_LEASE) as db:
            db.executemany(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?,"
                f" delivered_to = COALESCE(?, delivered_to){doubt} WHERE id = ?",
                [(error[:500], instant(next_attempt_at), _replicas(delivered_to), i)
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
        with self._fenced(OUTBOX_LEASE) as db:
            db.executemany(
                "UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = ?,"
                f" next_attempt_at = NULL, delivered_to = COALESCE(?, delivered_to){doubt}"
                " WHERE id = ?",
                [(error[:500], _replicas(delivered_to), i) for i in ids],
            )

    def status(self, notification_key: str, channel: str) -> str | None:
        rows = self._db.read(
            "SELECT status FROM outbox WHERE notification_key = ? AND channel = ?",
            (notification_key, channel),
        )
        return str(rows[0][0]) if rows else None

    def remote_id(self, notification_key: str, channel: str) -> str | None:
        rows = self._db.read(
            "SELECT remote_id FROM outbox WHERE notification_key = ? AND channel = ?"
            " AND status = 'sent'",
            (notification_key, channel),
        )
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def notification(self, notification_key: str, channel: str) -> Notification | None:
        rows = self._db.read(
            "SELECT payload FROM outbox WHERE notification_key = ? AND channel = ?",
            (notification_key, channel),
        )
        return Notification.from_json(str(rows[0][0])) if rows else None

    def opened_posted_as(self, remote_id: str) -> list[Notification]:
        """The alerts delivered to Slack as one message (a group), in queue order."""
        rows = self._db.read(
            "SELECT payload FROM outbox WHERE channel = 'slack' AND kind = 'alert'"
            " AND remote_id = ? ORDER BY id",
            (remote_id,),
        )
        return [Notification.from_json(str(payload)) for (payload,) in rows]

    def prune(self, before: datetime, firing: set[str]) -> int:
        """Delete the entries no longer pending created before ``before``, but not the opening
        of an episode still ``firing`` (its notification keys), nor of one whose resolution
        waits for delivery: the resolution is threaded under it and edits it, and Alertmanager
        re-sent from it. How many went."""
        needed = set(firing)
        waiting = self._db.read(
            "SELECT payload FROM outbox WHERE status = 'pending' AND kind = 'alert'"
        )
        for note in (Notification.from_json(str(payload)) for (payload,) in waiting):
            if note.kind == "resolved":
                needed.add(event_key(note.check, note.segment, note.episode, "opened"))
        done = [
            int(str(entry_id))
            for entry_id, key in self._db.read(
                "SELECT id, notification_key FROM outbox WHERE status <> 'pending'"
                " AND created_at < ?",
                (before.astimezone(UTC).isoformat(),),
            )
            if key not in needed
        ]
        delete_keys(self._db, "outbox", "id", done)
        return len(done)
