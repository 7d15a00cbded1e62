"""The daemon's clock: the wall clock, unless it jumped ahead of the time that has passed.

Buckets are judged once they are complete by the clock, so a wall clock stepped forward (a
mis-set host clock, a bad NTP source) would judge the buckets of the future, empty, as an
outage. The daemon's clock therefore follows the wall clock but never runs ahead of it by more
than ``TOLERANCE`` beyond the time elapsed since (``CLOCK_BOOTTIME``, which counts a suspended
machine's sleep): there it goes on from the elapsed time, with a warning, until the wall clock
agrees again. A step back is followed (a clock that ran ahead coming back), and a step forward
back to where the clock has been is too (a clock that went back being corrected); the engine
judges again what it judged ahead of time (see ``Engine``). The one step not followed is a
correct one forward past any time seen since the start (a clock that was behind when the
daemon started): the daemon then keeps judging on the elapsed time, buckets late by the
step, until it restarts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

log = logging.getLogger("monitor.timeline")

TOLERANCE = timedelta(minutes=5)


def elapsed_seconds() -> float:
    """Seconds on a clock no one sets: since boot, sleep included, where Linux has it."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


def wall_clock() -> datetime:
    return datetime.now(UTC)


class Timeline:
    """A clock (call it for now) guarded against forward steps of ``wall``; thread-safe."""

    def __init__(
        self,
        wall: Callable[[], datetime] = wall_clock,
        elapsed: Callable[[], float] = elapsed_seconds,
        tolerance: timedelta = TOLERANCE,
    ) -> None:
        self._wall = wall
        self._elapsed = elapsed
        self._tolerance = tolerance.total_seconds()
        self._lock = threading.Lock()
        # wall time minus elapsed time: what it is now, and the most it has been
        self._offset: float | None = None
        self._highest = float("-inf")
        self._ahead = False

    def __call__(self) -> datetime:
        wall, ticks = self._wall(), self._elapsed()
        offset = wall.timestamp() - ticks
        with self._lock:
            if self._offset is not None and offset > self._highest + self._tolerance:
                if not self._ahead:
                    log.warning(
                        "the wall clock jumped ahead of the time elapsed: buckets are judged on"
                        " the elapsed time until it agrees again",
                        extra={"fields": {"ahead_seconds": round(offset - self._offset, 3)}},
                    )
                self._ahead = True
                return datetime.fromtimestamp(self._offset + ticks, UTC)
            if self._ahead:
                log.info("the wall clock agrees with the time elapsed again")
            self._ahead = False
            self._offset = offset
            self._highest = max(self._highest, offset)
            return wall
