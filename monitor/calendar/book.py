"""The events and exclusion windows recorded through ``/api/v1/events``, kept in the state store
and read once at start; with the config, the calendar of each check."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import datetime

from monitor.calendar.config import EventRequest, RecordedEvent, calendar_for
from monitor.calendar.days import Calendar
from monitor.config import CheckConfig, Config
from monitor.errors import UnknownCheck
from monitor.store import StateStore


class CalendarBook:
    """Thread-safe: the API records and deletes while check runs read calendars."""

    def __init__(self, store: StateStore, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()
        self._events = [RecordedEvent.from_json(json.loads(d)) for d in store.calendar.events()]

    def events(self) -> list[RecordedEvent]:
        with self._lock:
            return list(self._events)

    def calendar(self, check: CheckConfig) -> Calendar:
        with self._lock:
            return calendar_for(check, self._events)

    def record(self, request: EventRequest, config: Config) -> RecordedEvent:
        """Persist a new event; :raises UnknownCheck: for a check name not configured."""
        unknown = [name for name in request.checks if config.check(name) is None]
        if unknown:
            raise UnknownCheck(
                *unknown, message=f"checks: no check named {', '.join(map(repr, unknown))}"
            )
        event = RecordedEvent.new(request, self.clock())
        with self._lock:
            self.store.calendar.save(event.id, event.created_at, json.dumps(event.json()))
            self._events.append(event)
        return event

    def delete(self, event_id: str) -> RecordedEvent | None:
        """Remove an event; the one removed, or None when there was none with this id."""
        with self._lock:
            found = next((e for e in self._events if e.id == event_id), None)
            if found is not None and self.store.calendar.delete(event_id):
                self._events.remove(found)
                return found
        return None
