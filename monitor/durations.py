"""Durations and schedules as written in config: ``30s``, ``5m``, ``6h``, ``7d``, ``8w``."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """Parse ``<number><unit>`` with unit s, m, h, d or w; raise ValueError otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(
            f"{text!r} is not a duration; write a number and a unit s, m, h, d or w, e.g. 5m"
        )
    value, unit = match.groups()
    return seconds(float(value) * _UNIT_SECONDS[unit], text)


MAX_SECONDS = 100 * 365 * 86400  # a century: longer is a typo, and past timedelta's range soon


def seconds(value: float, text: object = None) -> timedelta:
    """A non-negative duration of ``value`` seconds; ValueError when out of range."""
    shown = text if text is not None else value
    if not 0 <= value <= MAX_SECONDS:  # also refuses NaN
        raise ValueError(f"{shown!r} is out of range: give a duration from 0 to 100 years")
    return timedelta(seconds=value)


def is_cron(text: str) -> bool:
    """A five-field crontab expression (minute hour day month weekday)."""
    return len(text.split()) == 5
