"""The daemon's clock follows the wall clock, except a step ahead of the time elapsed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from monitor.timeline import Timeline

T0 = datetime(2026, 11, 26, 15, 20, tzinfo=UTC)


class Host:
    """A wall clock someone may set, and the elapsed time no one can."""

    def __init__(self) -> None:
        self.wall = T0
        self.ticks = 1000.0

    def passes(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.ticks += seconds


@pytest.fixture
def host() -> Host:
    return Host()


def timeline(host: Host) -> Timeline:
    return Timeline(lambda: host.wall, lambda: host.ticks)


def test_the_clock_is_the_wall_clock_while_it_keeps_time(host: Host) -> None:
    clock = timeline(host)
    assert clock() == T0
    host.passes(3600)
    host.wall += timedelta(seconds=2)  # NTP corrects a little drift
    assert clock() == T0 + timedelta(hours=1, seconds=2)


def test_a_step_ahead_of_the_elapsed_time_is_not_followed_until_the_wall_clock_agrees_again(
    host: Host, caplog: pytest.LogCaptureFixture
) -> None:
    clock = timeline(host)
    clock()
    host.passes(60)
    host.wall += timedelta(days=1)
    assert clock() == T0 + timedelta(seconds=60)
    assert "jumped ahead" in caplog.text
    host.passes(600)
    assert clock() == T0 + timedelta(seconds=660)
    host.wall -= timedelta(days=1)  # set right again
    host.passes(60)
    assert clock() == T0 + timedelta(seconds=720) == host.wall


def test_a_step_back_is_followed_and_so_is_its_correction(host: Host) -> None:
    clock = timeline(host)
    clock()
    host.wall -= timedelta(hours=3)  # a clock that ran ahead since the start comes back
    assert clock() == T0 - timedelta(hours=3)
    host.passes(60)
    host.wall += timedelta(hours=3)  # or it was wrong to: back to where it has been
    assert clock() == T0 + timedelta(seconds=60)
