"""When a failed delivery is tried again, and when it ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from monitor.alerts.retry import backoff, next_attempt
from monitor.config import AlertmanagerConfig, SlackConfig

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)


def test_the_wait_doubles_from_ten_seconds_to_at_most_ten_minutes() -> None:
    assert [backoff(n).total_seconds() for n in range(1, 10)] == [10, 20, 40, 80, 160, 320, 600, 600, 600]
    assert backoff(10_000) == timedelta(minutes=10)
    with pytest.raises(ValueError):
        backoff(0)


def test_a_message_is_given_up_at_its_last_attempt() -> None:
    assert next_attempt(1, NOW, max_attempts=3) == NOW + timedelta(seconds=10)
    assert next_attempt(2, NOW, max_attempts=3) == NOW + timedelta(seconds=20)
    assert next_attempt(3, NOW, max_attempts=3) is None
    assert next_attempt(1, NOW, max_attempts=1) is None


def test_the_default_attempts_last_about_four_hours() -> None:
    # the README says so for slack.max_attempts and alertmanager.max_attempts
    default = SlackConfig().max_attempts
    assert default == AlertmanagerConfig(urls=["http://am:9093"]).max_attempts == 30
    tried_for = sum((backoff(n) for n in range(1, default)), timedelta(0))
    assert timedelta(hours=3.9) < tried_for < timedelta(hours=4.1)
