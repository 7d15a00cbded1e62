"""Calendar events and exclusion windows recorded through the API: ``/api/v1/events``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from monitor.api.http import HttpError, Response, json_response, no_body, validate
from monitor.calendar.config import EventRequest, RecordedEvent
from monitor.engine import Engine
from monitor.errors import UnknownCheck


@dataclass(frozen=True)
class Events:
    """The events' resource. ``annotate`` (when set) shows a recorded event on Grafana, in its
    checks' time zone."""

    engine: Engine
    annotate: Callable[[RecordedEvent, str], None] | None

    def index(self) -> Response:
        """The events and exclusion windows recorded through the API, oldest first."""
        return json_response(200, {"events": [e.json() for e in self.engine.calendars.events()]})

    def record(self, body: object) -> Response:
        request = validate(EventRequest, body)
        try:
            event = self.engine.record_event(request)
        except UnknownCheck as exc:  # a check the event names: the body is wrong, not the URL
            raise HttpError(400, str(exc)) from None
        if self.annotate is not None:
            self.annotate(event, self._zone(request.checks))
        return json_response(201, event.json())

    def delete(self, event_id: str, body: object) -> Response:
        no_body(body)
        event = self.engine.delete_event(event_id)
        if event is None:
            raise HttpError(404, f"no event with id {event_id!r}")
        return json_response(200, {"deleted": event.json()})

    def _zone(self, names: list[str]) -> str:
        """The time zone of these checks (of every check when empty) if they share one, else
        UTC: what the dates of an event mean on a Grafana annotation."""
        checks = [c for c in self.engine.config.checks if not names or c.name in names]
        zones = {c.timezone for c in checks}
        return zones.pop() if len(zones) == 1 else "UTC"
