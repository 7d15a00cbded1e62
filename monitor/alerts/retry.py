"""When a delivery that failed for a passing reason is tried again, and when it ends. Pure.

A channel that is down or slow (Slack 5xx, timeouts, a refused token, an Alertmanager replica
that does not answer) gets the same message again after 10 s, then 20 s, 40 s, ... at most 10
minutes apart, and the message is recorded as failed after ``max_attempts`` attempts (the
config's ``slack.max_attempts`` and ``alertmanager.max_attempts``, 30 by default: about four
hours of trying). A refusal that no retry can change (an archived channel, a missing scope) ends
the message at the first attempt; the caller decides which is which.
"""

from __future__ import annotations

from datetime import datetime, timedelta

FIRST_DELAY = timedelta(seconds=10)
MAX_DELAY = timedelta(minutes=10)


def backoff(attempts: int) -> timedelta:
    """How long to wait after the ``attempts``-th failed attempt (1 for the first)."""
    if attempts < 1:
        raise ValueError("attempts counts from 1")
    # 2 ** 6 * 10 s already passes the cap; the exponent stays small for any attempt count
    delay: timedelta = FIRST_DELAY * 2 ** min(attempts - 1, 6)
    return min(delay, MAX_DELAY)


def next_attempt(attempts: int, now: datetime, max_attempts: int) -> datetime | None:
    """When to try again after ``attempts`` failed attempts, or None: give up."""
    if attempts >= max_attempts:
        return None
    return now + backoff(attempts)

