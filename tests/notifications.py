"""A sample alert for the delivery tests: revenue [DE] dropped from about 1500 to 120."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from monitor.alerts.notification import Notification

SINCE = datetime(2026, 11, 26, 11, 0, tzinfo=UTC)


def revenue_alert(kind: str = "opened", **change: Any) -> Notification:
    """The alert's ``kind`` event (judged at SINCE when opened, three hours later when
    resolved); ``change`` replaces any field."""
    fields: dict[str, Any] = dict(
        kind=kind,
        check="revenue",
        segment="DE",
        episode=1,
        since=SINCE,
        bucket=SINCE + timedelta(hours=3) if kind == "resolved" else SINCE,
        value=120.0,
        expected=1500.0,
        lower=900.0,
        upper=2400.0,
        score=-7.3,
        severity="critical",
        owner="@revenue-oncall",
        team="revenue",
    )
    fields.update(change)
    return Notification(**fields)
