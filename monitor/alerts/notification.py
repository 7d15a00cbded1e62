"""What an alert says: the data every channel renders, persisted in the outbox as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal


@dataclass(frozen=True)
class Notification:
    """One episode opening or resolving on one series."""

    kind: Literal["opened", "resolved"]
    check: str
    segment: str
    episode: int
    since: datetime  # first anomalous bucket
    bucket: datetime  # bucket that caused this notification
    value: float
    expected: float | None
    lower: float | None
    upper: float | None
    score: float
    severity: str
    owner: str | None = None
    team: str = ""
    unit: str = ""  # "seconds" for freshness ages
    labels: dict[str, str] = field(default_factory=dict)
    cause: str | None = None  # the likely cause: a deployment inside its watch window
    # why an episode opened other than by the model (a fixed bound broken), or ended other than
    # by recovering (a baseline restart, the check removed from the config)
    reason: str = ""
    table: str | None = None  # what the check reads, to group alerts on one table
    links: dict[str, str] = field(default_factory=dict)  # name -> URL (dashboard, runbook)
    # recent buckets for the chart: [bucket ISO, value, expected, lower, upper, anomalous]
    history: list[list[Any]] = field(default_factory=list)
    # the calendar over the chart's buckets: [kind, name, start ISO, end ISO], shaded on it
    calendar: list[list[str]] = field(default_factory=list)
    # the drill-down of the check's incident: "DE -61% explains 87% of the drop in revenue"
    explanation: str = ""
    # the top segments beside the total in its chart: segment -> [[bucket ISO, value], ...]
    beside: dict[str, list[list[Any]]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Stable identity: the same episode event always has the same key."""
        return event_key(self.check, self.segment, self.episode, self.kind)

    @property
    def deviation_pct(self) -> float | None:
        if self.expected is None or self.expected == 0:
            return None
        return (self.value - self.expected) / abs(self.expected) * 100.0

    @property
    def direction(self) -> str:
        return "above" if self.score > 0 else "below"

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        data["since"] = self.since.isoformat()
        data["bucket"] = self.bucket.isoformat()
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Notification:
        data = json.loads(text)
        data["since"] = datetime.fromisoformat(data["since"])
        data["bucket"] = datetime.fromisoformat(data["bucket"])
        return cls(**data)


def event_key(check: str, segment: str, episode: int, kind: str) -> str:
    """The outbox key of an episode's ``kind`` event ("opened", "resolved")."""
    return f"{check}/{segment}/{episode}/{kind}"
