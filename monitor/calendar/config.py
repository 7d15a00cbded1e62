"""The calendar's shapes in the config file and the API, and the calendar of one check made
from them: its ``calendar`` (holidays, events, ``widen``), ``exclude``, ``learn_from`` and
``on_holiday``, with the events and exclusions recorded through ``/api/v1/events``."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from monitor.calendar.days import Calendar, Event, Exclusion, Moment, check_region

if TYPE_CHECKING:
    from monitor.config import CheckConfig

EARLIEST, LATEST = date(1970, 1, 1), date(2200, 12, 31)


def _in_range(moment: Moment) -> Moment:
    day = moment.date() if isinstance(moment, datetime) else moment
    if not EARLIEST <= day <= LATEST:
        raise ValueError(f"{moment.isoformat()} is out of range: give a time from 1970 to 2200")
    return moment


# an instant first: "2026-11-27T00:00:00Z" is that instant, not a local date
When = Annotated[AwareDatetime | date, AfterValidator(_in_range)]


def _ordered(start: Moment, end: Moment, names: tuple[str, str]) -> None:
    if isinstance(start, datetime) != isinstance(end, datetime):
        raise ValueError(f"give {names[0]} and {names[1]} both as dates or both as instants")
    if end < start:
        raise ValueError(f"{names[1]} ({end}) is before {names[0]} ({start})")
    if isinstance(start, datetime) and end == start:
        raise ValueError(f"{names[1]} must be after {names[0]}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class EventConfig(_Model):
    """A known day or period: a sale, a campaign, a planned migration."""

    name: str = Field(min_length=1, max_length=200)
    start: When
    end: When | None = Field(default=None, description="default: the start day")
    effect: float | None = Field(
        default=None, gt=-1, le=100, description="expected relative change: 0.3 is +30%"
    )

    @model_validator(mode="after")
    def _order(self) -> EventConfig:
        _ordered(self.start, self.until, ("start", "end"))
        return self

    @property
    def until(self) -> Moment:
        return self.start if self.end is None else self.end

    def event(self) -> Event:
        return Event(self.name, self.start, self.until, self.effect)


class ExclusionConfig(_Model):
    """A window the model neither learns from nor alerts on."""

    start: When = Field(alias="from")
    end: When = Field(alias="to")
    reason: str = Field(min_length=1, max_length=500)

    @model_validator(mode="after")
    def _order(self) -> ExclusionConfig:
        _ordered(self.start, self.end, ("from", "to"))
        return self

    def exclusion(self) -> Exclusion:
        return Exclusion(self.start, self.end, self.reason)


class CalendarConfig(_Model):
    """A check's calendar: public holidays of a country (and subdivision), and events."""

    country: str | None = Field(default=None, description="ISO 3166 code: US, DE, GB...")
    subdivision: str | None = Field(default=None, description="a state or region: CA, BY...")
    events: list[EventConfig] = Field(default_factory=list, max_length=1000)
    widen: float | None = Field(
        default=None,
        ge=1,
        le=100,
        description="band widening on a holiday or event with nothing to compare with;"
        " default: learned from the earlier ones",
    )

    @field_validator("country", "subdivision")
    @classmethod
    def _stripped(cls, value: str | None) -> str | None:
        return None if value is None else value.strip()

    @model_validator(mode="after")
    def _region(self) -> CalendarConfig:
        if self.subdivision is not None and self.country is None:
            raise ValueError("a subdivision needs its country")
        if self.country is not None:
            check_region(self.country, self.subdivision)
        return self


OnHoliday = Literal["compare", "widen", "mute"]


class EventRequest(_Model):
    """Body of ``POST /api/v1/events``: an event (``name``) or an exclusion (``reason``)."""

    kind: Literal["event", "exclusion"] = "event"
    name: str | None = Field(default=None, min_length=1, max_length=200)
    reason: str | None = Field(default=None, min_length=1, max_length=500)
    start: When
    end: When | None = None
    effect: float | None = Field(default=None, gt=-1, le=100)
    checks: list[str] = Field(default_factory=list, max_length=1000)
    """The checks it applies to; empty: every check."""

    @model_validator(mode="after")
    def _shape(self) -> EventRequest:
        if self.kind == "event" and self.name is None:
            raise ValueError("an event needs a name")
        if self.kind == "exclusion":
            if self.reason is None:
                raise ValueError("an exclusion needs a reason")
            if self.end is None:
                raise ValueError("an exclusion needs an end")
            if self.effect is not None or self.name is not None:
                raise ValueError("an exclusion takes a reason, not a name or effect")
        _ordered(self.start, self.until, ("start", "end"))
        return self

    @property
    def until(self) -> Moment:
        return self.start if self.end is None else self.end


@dataclass(frozen=True)
class RecordedEvent:
    """An event or exclusion recorded through the API, as the state store keeps it."""

    id: str
    request: EventRequest
    created_at: datetime

    @classmethod
    def new(cls, request: EventRequest, now: datetime) -> RecordedEvent:
        return cls(uuid.uuid4().hex[:12], request, now)

    def applies_to(self, check: str) -> bool:
        return not self.request.checks or check in self.request.checks

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            **self.request.model_dump(mode="json", exclude_none=True),
            "end": self.request.until.isoformat(),
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> RecordedEvent:
        fields = {k: v for k, v in document.items() if k not in ("id", "created_at")}
        return cls(
            str(document["id"]),
            EventRequest.model_validate(fields),
            datetime.fromisoformat(str(document["created_at"])),
        )


def calendar_for(check: CheckConfig, recorded: Sequence[RecordedEvent] = ()) -> Calendar:
    """The calendar of ``check``: its config, and the API's events and exclusions for it."""
    config = check.calendar or CalendarConfig()
    events = [e.event() for e in config.events]
    exclusions = [x.exclusion() for x in check.exclude]
    for r in recorded:
        if not r.applies_to(check.name):
            continue
        q = r.request
        if q.kind == "event" and q.name is not None:
            events.append(Event(q.name, q.start, q.until, q.effect, r.id))
        elif q.reason is not None:
            exclusions.append(Exclusion(q.start, q.until, q.reason, r.id))
    return Calendar(
        timezone=check.timezone,
        country=config.country,
        subdivision=config.subdivision,
        events=tuple(events),
        exclusions=tuple(exclusions),
        learn_from=check.learn_from,
        on_holiday=check.on_holiday,
        widen=config.widen,
    )
