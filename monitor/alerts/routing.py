"""Which Slack channel an alert goes to, and which alerts share one message. Pure."""

from __future__ import annotations

from monitor.alerts.notification import Notification
from monitor.config import Config


def channel_for(note: Notification, config: Config) -> str:
    """The check's own channel, else the first route matching its team and severity, else the
    default channel."""
    assert config.slack is not None
    check = config.check(note.check)
    if check is not None and check.channel:
        return check.channel
    for route in config.slack.routes:
        if route.team not in (None, note.team):
            continue
        if route.severity not in (None, note.severity):
            continue
        return route.channel
    return config.slack.channel


def group_key(note: Notification, channel: str) -> tuple[str, str]:
    """Alerts opening together in one channel on the same team (else table, else check) are
    sent as one message."""
    return channel, note.team or note.table or note.check
