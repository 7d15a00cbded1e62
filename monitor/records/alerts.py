"""Alert state and history (tables ``series_state`` and ``alert_events``): each series' state
machine as last judged, with its latest verdict, and every episode opening or resolving as it
happened. A state is saved with the notifications its transition causes, in one transaction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from monitor.alerts.notification import Notification
from monitor.alerts.state import AlertState
from monitor.records.outbox import queue
from monitor.statedb import BATCH, Database, Fenced, delete_keys, iso, parse


@dataclass(frozen=True)
class AlertEvent:
    """An episode of a series opening or resolving, as it happened (whatever the channels)."""

    notification: Notification
    recorded_at: datetime
    muted: bool  # the check was muted: no channel was told


_EPISODE_EVENT = re.compile(r"/\d+/(?:opened|resolved)(?=/|$)")


def _series_named(key: str) -> set[tuple[str, str]]:
    """The (check, segment) a notification key may belong to: ``check/segment/episode/kind``
    and its delivery steps (``.../update``); a segment may hold ``/``, so every reading."""
    check, _, rest = key.partition("/")
    return {(check, rest[: m.start()]) for m in _EPISODE_EVENT.finditer(rest)}


class AlertRecords:
    """The alert state and history part of the state store; a write about a check is fenced
    by the check's lease."""

    def __init__(self, db: Database, fenced: Fenced) -> None:
        self._db = db
        self._fenced = fenced

    def states(self, check: str | None = None) -> dict[tuple[str, str], AlertState]:
        sql = (
            "SELECT check_name, segment, status, anomalous_run, normal_run, since, episode,"
            " last_bucket, quiet_start, hold_sign, hold_evidence FROM series_state"
        )
        read = self._db.read
        rows = read(sql + " WHERE check_name = ?", (check,)) if check else read(sql)
        states = {}
        for name, segment, status, a_run, n_run, since, episode, last, quiet, sign, held in rows:
            states[(str(name), str(segment))] = AlertState(
                status=status,
                anomalous_run=int(a_run),
                normal_run=int(n_run),
                since=parse(since),
                episode=int(episode),
                last_bucket=parse(last),
                quiet_start=parse(quiet),
                hold_sign=int(sign or 0),
                hold_evidence=float(held or 0.0),
            )
        return states

    def record(
        self,
        check: str,
        series: Sequence[tuple[str, AlertState, list[Notification]]],
        channels: list[str],
        *,
        muted: bool = False,
        verdicts: Mapping[str, str] | None = None,
    ) -> None:
        """Save the state of several series of one check run and queue their notifications on
        every channel, in one transaction; every notification also joins the check's alert
        history (``muted``: no channel is told). ``verdicts``: per segment, its latest verdict
        as JSON (kept when not given)."""
        now = datetime.now(UTC).isoformat()
        states: list[tuple[object, ...]] = [
            (
                check,
                segment,
                state.status,
                state.anomalous_run,
                state.normal_run,
                iso(state.since),
                state.episode,
                iso(state.last_bucket),
                now,
                iso(state.quiet_start),
                state.hold_sign,
                state.hold_evidence,
                (verdicts or {}).get(segment),
            )
            for segment, state, _ in series
        ]
        notes = [note for _, _, notifications in series for note in notifications]
        with self._fenced(check) as db:
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
            queue(db, [(note.key, "alert", note.to_json()) for note in notes], channels)
            if notes:
                db.executemany(
                    "INSERT INTO alert_events (notification_key, check_name, muted, created_at,"
                    " payload) VALUES (?, ?, ?, ?, ?) ON CONFLICT (notification_key) DO NOTHING",
                    [(note.key, check, int(muted), now, note.to_json()) for note in notes],
                )

    def verdicts(self, check: str | None = None) -> dict[tuple[str, str], str]:
        """Per (check, segment), its latest verdict as JSON (see :meth:`record`)."""
        sql = "SELECT check_name, segment, verdict FROM series_state WHERE verdict IS NOT NULL"
        read = self._db.read
        rows = read(sql + " AND check_name = ?", (check,)) if check else read(sql)
        return {(str(c), str(s)): str(v) for c, s, v in rows}

    def events(self, check: str, limit: int = 100) -> list[AlertEvent]:
        """A check's alert history, newest first: what opened and resolved, and when."""
        rows = self._db.read(
            "SELECT payload, created_at, muted FROM alert_events WHERE check_name = ?"
            " ORDER BY created_at DESC, notification_key DESC LIMIT ?",
            (check, limit),
        )
        return [
            AlertEvent(Notification.from_json(str(p)), datetime.fromisoformat(str(t)), bool(m))
            for p, t, m in rows
        ]

    def opened(
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
        rows = self._db.read(
            sql + " ORDER BY created_at DESC, notification_key DESC LIMIT ?", (*params, limit)
        )
        return [
            (
                AlertEvent(Notification.from_json(str(p)), datetime.fromisoformat(str(t)), bool(m)),
                f"{t}|{k}",
            )
            for p, t, m, k in rows
        ]

    def event(self, notification_key: str) -> AlertEvent | None:
        rows = self._db.read(
            "SELECT payload, created_at, muted FROM alert_events WHERE notification_key = ?",
            (notification_key,),
        )
        return (
            AlertEvent(Notification.from_json(str(rows[0][0])),
                       datetime.fromisoformat(str(rows[0][1])), bool(rows[0][2]))
            if rows
            else None
        )  # fmt: skip

    def prune_events(self, before: datetime, firing: set[str]) -> int:
        """Delete the history of episodes whose events are all older than ``before`` and whose
        opening is not in ``firing``; how many events went."""
        newest: dict[str, str] = {}
        keys: dict[str, list[str]] = {}
        for key, created in self._db.read("SELECT notification_key, created_at FROM alert_events"):
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
        delete_keys(self._db, "alert_events", "notification_key", gone)
        return len(gone)

    def prune_states(self, before: datetime) -> int:
        """Delete the alert state of series not judged since ``before`` (a segment no longer
        tracked, a removed check) that no notification or history event names any more (a
        series that comes back must not number an episode as one whose key is still used);
        how many went."""
        cutoff = before.astimezone(UTC).isoformat()
        named: set[tuple[str, str]] = set()
        for table in ("outbox", "alert_events"):
            for (key,) in self._db.read(f"SELECT notification_key FROM {table}"):
                named |= _series_named(str(key))
        stale: list[tuple[object, ...]] = [
            (str(check), str(segment), cutoff)
            for check, segment in self._db.read(
                "SELECT check_name, segment FROM series_state WHERE updated_at < ?"
                " AND status <> 'firing'",
                (cutoff,),
            )
            if (str(check), str(segment)) not in named
        ]
        for start in range(0, len(stale), BATCH):
            with self._db.transaction() as db:
                db.executemany(
                    "DELETE FROM series_state WHERE check_name = ? AND segment = ?"
                    " AND updated_at < ? AND status <> 'firing'",
                    stale[start : start + BATCH],
                )
        return len(stale)
