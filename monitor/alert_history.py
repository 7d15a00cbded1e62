"""``GET /api/v1/checks/{name}/alerts``: a check's alerts, newest first, each with how it ended
and how it was answered; paged by an opaque cursor, so alerts opening meanwhile never shift a
page."""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

from monitor.alerts.notification import event_key
from monitor.store import StateStore

DEFAULT_LIMIT = 50
MAX_LIMIT = 100


def alerts_page(store: StateStore, check: str, query: dict[str, list[str]]) -> dict[str, Any]:
    """:raises ValueError: for a bad ``limit`` or ``cursor``, or an unknown parameter."""
    unknown = sorted(set(query) - {"limit", "cursor"})
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r}; use limit and cursor")
    text = query.get("limit", [str(DEFAULT_LIMIT)])[-1]
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise ValueError(f"limit: expected a number from 1 to {MAX_LIMIT}")
    limit = int(text)
    before = _cursor(query["cursor"][-1]) if query.get("cursor") else None
    rows = store.alerts.opened(check, limit + 1, before)
    shown = rows[:limit]
    notes = [event.notification for event, _ in shown]
    answers = {
        (a.ref.segment, a.ref.episode): a
        for a in store.answers.of_episodes(check, [(n.segment, n.episode) for n in notes])
    }
    alerts = []
    for (event, _), note in zip(shown, notes, strict=True):
        ended = store.alerts.event(event_key(check, note.segment, note.episode, "resolved"))
        answer = answers.get((note.segment, note.episode))
        alerts.append(
            {
                "segment": note.segment,
                "episode": note.episode,
                "status": "firing" if ended is None else "resolved",
                "since": note.since.isoformat(),
                "opened_bucket": note.bucket.isoformat(),
                "opened_at": event.recorded_at.isoformat(),
                "muted": event.muted,
                "value": _number(note.value),
                "expected": _number(note.expected),
                "lower": _number(note.lower),
                "upper": _number(note.upper),
                "score": _number(note.score),
                "severity": note.severity,
                "reason": note.reason or None,
                "likely_cause": note.cause,
                "resolved": None
                if ended is None
                else {
                    "bucket": ended.notification.bucket.isoformat(),
                    "at": ended.recorded_at.isoformat(),
                    "reason": ended.notification.reason or None,
                },
                "answer": None if answer is None else answer.json(),
            }
        )
    more = len(rows) > limit
    return {
        "check": check,
        "alerts": alerts,
        "next": _encode(shown[-1][1]) if more and shown else None,
    }


def _encode(position: str) -> str:
    return base64.urlsafe_b64encode(position.encode("utf-8", "surrogatepass")).decode()


def _cursor(text: str) -> tuple[str, str]:
    try:
        recorded, _, key = base64.urlsafe_b64decode(text.encode()).decode(
            "utf-8", "surrogatepass"
        ).partition("|")
    except (binascii.Error, UnicodeError, ValueError):
        raise ValueError("cursor: not a cursor this API gave") from None
    if not recorded or not key:
        raise ValueError("cursor: not a cursor this API gave")
    return recorded, key


def _number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value
