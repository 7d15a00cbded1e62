"""One step of a Slack delivery: the call, how to find it again, and what follows it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from monitor.alerts.slack import SlackRef
from monitor.records.outbox import FollowUp, OutboxEntry

Send = Callable[[str | None], SlackRef]  # posts, given the marker to carry
Find = Callable[[str, datetime], SlackRef | None]  # finds a post by marker, since a time


@dataclass(frozen=True)
class Step:
    """One Slack call on behalf of ``entries``."""

    entries: list[OutboxEntry]
    what: str  # for the log
    send: Send
    find: Find | None  # None: the call can be repeated safely, nothing to look up
    then: Callable[[SlackRef], list[FollowUp]] = lambda _: []


# A step to run for these entries, built just before it runs (None: not yet, it waits)
Planned = tuple[list[OutboxEntry], Callable[[], Step | None]]
