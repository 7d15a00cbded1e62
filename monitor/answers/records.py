"""Answers in the state store (tables ``alert_answers`` and ``slack_requests``, schema version 6).

An answer is saved with the Slack steps it causes (the reply in the alert's thread, the edit of
the alert) in one transaction, and it is unique per alert: a double click, Slack delivering a
click twice, or a click replayed after a restart records nothing more. ``applied`` says its
effect (mute, baseline restart, threshold) was carried out; a restart between the two carries
out what is left (``unapplied``). ``holds`` marks a false alarm whose deviation is not over yet:
until the series is back in its band, its verdicts count as normal (see ``model.hushed``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import cast

from monitor.answers.model import AlertRef, AnswerKind, Feedback
from monitor.records.outbox import queue
from monitor.statedb import Database, Row, instant, rowcount

_COLUMNS = (
    "SELECT check_name, segment, episode, answer, user_id, user_name, answered_at, since, applied"
    " FROM alert_answers"
)


def _feedback(row: Row) -> Feedback:
    check, segment, episode, answer, user_id, user_name, at, since, applied = row
    return Feedback(
        ref=AlertRef(str(check), str(segment), int(episode)),
        answer=cast(AnswerKind, str(answer)),
        user_id=str(user_id),
        user_name=str(user_name),
        answered_at=datetime.fromisoformat(str(at)),
        since=datetime.fromisoformat(str(since)),
        applied=bool(applied),
    )


class AnswerRecords:
    """The answers part of the state store; thread-safe as the store is."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def record(self, feedback: Feedback, messages: Sequence[tuple[str, str, str]]) -> bool:
        """Save an answer and queue its Slack ``messages`` (key, kind, payload), atomically.
        False, with nothing written, when the alert was answered before."""
        ref = feedback.ref
        with self._db.transaction() as db:
            inserted = db.execute(
                "INSERT INTO alert_answers (check_name, segment, episode, answer, user_id,"
                " user_name, answered_at, since, applied, holds)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?)"
                " ON CONFLICT (check_name, segment, episode) DO NOTHING",
                (ref.check, ref.segment, ref.episode, feedback.answer, feedback.user_id,
                 feedback.user_name, instant(feedback.answered_at), instant(feedback.since),
                 int(feedback.answer == "false_alarm")),
            )  # fmt: skip
            if rowcount(inserted) == 0:
                return False
            queue(db, messages, ["slack"])
        return True

    def mark_applied(self, ref: AlertRef) -> None:
        with self._db.transaction() as db:
            db.execute(
                "UPDATE alert_answers SET applied = 1"
                " WHERE check_name = ? AND segment = ? AND episode = ?",
                (ref.check, ref.segment, ref.episode),
            )

    def holding(self) -> dict[tuple[str, str], int]:
        """Per (check, segment), the episode of a false alarm whose deviation is not over."""
        rows = self._db.read(
            "SELECT check_name, segment, episode FROM alert_answers WHERE holds = 1"
        )
        return {(str(c), str(s)): int(e) for c, s, e in rows}

    def release(self, check: str, segment: str) -> None:
        """The series is back in its band: its false alarms hold no more."""
        with self._db.transaction() as db:
            db.execute(
                "UPDATE alert_answers SET holds = 0"
                " WHERE check_name = ? AND segment = ? AND holds = 1",
                (check, segment),
            )

    def get(self, ref: AlertRef) -> Feedback | None:
        rows = self._db.read(
            _COLUMNS + " WHERE check_name = ? AND segment = ? AND episode = ?",
            (ref.check, ref.segment, ref.episode),
        )
        return _feedback(rows[0]) if rows else None

    def since(self, moment: datetime, check: str | None = None) -> list[Feedback]:
        """Answers given from ``moment`` on (of one check), oldest first."""
        sql = _COLUMNS + " WHERE answered_at >= ?"
        params: tuple[object, ...] = (instant(moment),)
        if check is not None:
            sql, params = sql + " AND check_name = ?", (*params, check)
        return [_feedback(r) for r in self._db.read(sql + " ORDER BY answered_at", params)]

    def of_episodes(self, check: str, episodes: Sequence[tuple[str, int]]) -> list[Feedback]:
        """The answers of a check's (segment, episode) alerts, where there are some."""
        found: list[Feedback] = []
        for start in range(0, len(episodes), 400):  # SQLite binds at most 999 parameters
            batch = episodes[start : start + 400]
            pairs = ", ".join("(?, ?)" for _ in batch)
            found += [
                _feedback(r)
                for r in self._db.read(
                    _COLUMNS + f" WHERE check_name = ? AND (segment, episode) IN (VALUES {pairs})",
                    (check, *(part for pair in batch for part in pair)),
                )
            ]
        return found

    def unapplied(self) -> list[Feedback]:
        return [_feedback(r) for r in self._db.read(_COLUMNS + " WHERE applied = 0")]

    def first_sight(self, digest: str, now: datetime, forget_before: datetime) -> bool:
        """Remember a signed request; False when it was seen before (a replay). Requests older
        than ``forget_before`` are forgotten: their timestamps are refused as stale anyway."""
        with self._db.transaction() as db:
            db.execute("DELETE FROM slack_requests WHERE seen_at < ?", (instant(forget_before),))
            inserted = db.execute(
                "INSERT INTO slack_requests (digest, seen_at) VALUES (?, ?)"
                " ON CONFLICT (digest) DO NOTHING",
                (digest, instant(now)),
            )
            return rowcount(inserted) == 1
