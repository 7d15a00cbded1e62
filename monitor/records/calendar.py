"""The calendar events and exclusion windows recorded through the API (table
``calendar_events``), as JSON documents; monitor/calendar/book.py reads and writes them."""

from __future__ import annotations

from datetime import datetime

from monitor.statedb import Database, instant, rowcount


class CalendarRecords:
    """The calendar part of the state store."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def events(self) -> list[str]:
        """The events and exclusion windows (JSON documents), oldest first."""
        rows = self._db.read("SELECT document FROM calendar_events ORDER BY created_at, event_id")
        return [str(document) for (document,) in rows]

    def save(self, event_id: str, created_at: datetime, document: str) -> None:
        with self._db.transaction() as db:
            db.execute(
                "INSERT INTO calendar_events (event_id, created_at, document) VALUES (?, ?, ?)",
                (event_id, instant(created_at), document),
            )

    def delete(self, event_id: str) -> bool:
        """Whether there was such an event."""
        with self._db.transaction() as db:
            cursor = db.execute("DELETE FROM calendar_events WHERE event_id = ?", (event_id,))
            return rowcount(cursor) > 0
