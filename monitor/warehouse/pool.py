"""A bounded pool of warehouse sessions, shared by the adapters that keep connections open.

At most ``size`` sessions are in use at once; idle ones are kept for the next query. A checkout
is a :class:`Lease` whose slot is released exactly once: when the session is given back, or at
once when its user gives up waiting for it (:meth:`SessionPool.abandon`), even while the session
is still being opened. A session stuck in a hung network call thus never holds a slot until the
driver's socket timeout: the next query gets a fresh session, and the stuck one is closed
whenever its call returns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from monitor.errors import QueryTimeout, WarehouseUnavailable

S = TypeVar("S")


@dataclass(eq=False)
class Lease(Generic[S]):
    """A slot of the pool, and the session checked out into it."""

    opened: S | None = None  # None until a session is in the lease
    reused: bool = False  # an idle session (the server may have dropped it meanwhile)
    holds_slot: bool = True
    abandoned: bool = False  # given up on: closed when given back, never reused

    @property
    def session(self) -> S:
        assert self.opened is not None, "no session was checked out into this lease"
        return self.opened


class SessionPool(Generic[S]):
    """Sessions of one warehouse (thread-safe).

    ``close_session`` must not block its caller for long (a session stuck in a network call
    may be closed this way); ``reusable`` says whether an idle session may be handed out again.
    """

    def __init__(
        self,
        size: int,
        noun: str,
        *,
        close_session: Callable[[S], None],
        reusable: Callable[[S], bool],
    ) -> None:
        self.size = size
        self._noun = noun
        self._close_session = close_session
        self._reusable = reusable
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[S] = []
        self._leases: set[Lease[S]] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def checkout(self, wait: float, open_session: Callable[[], S]) -> Lease[S]:
        """:meth:`reserve` a slot and :meth:`fill` it."""
        lease = self.reserve(wait)
        self.fill(lease, open_session)
        return lease

    def reserve(self, wait: float) -> Lease[S]:
        """A lease holding a free slot, without a session yet.

        :raises QueryTimeout: no slot came free within ``wait`` seconds.
        :raises WarehouseUnavailable: the pool is closed.
        """
        if not self._slots.acquire(timeout=max(wait, 0.0)):
            raise QueryTimeout(f"all {self.size} {self._noun} stayed busy for {wait:.1f}s")
        lease: Lease[S] = Lease()
        with self._lock:
            refused = self._closed
            if not refused:
                self._leases.add(lease)
        if refused:
            self._slots.release()
            self.refuse_if_closed()
        return lease

    def fill(self, lease: Lease[S], open_session: Callable[[], S]) -> None:
        """Put an idle session, or a new one from ``open_session``, into a reserved lease; when
        that fails, the lease is given back and the error raised."""
        try:
            stale: list[S] = []
            session: S | None = None
            with self._lock:
                self.refuse_if_closed()
                while self._idle and session is None:
                    candidate = self._idle.pop()
                    if self._reusable(candidate):
                        session = candidate
                    else:
                        stale.append(candidate)
            for old in stale:
                self._close_session(old)
            lease.reused = session is not None
            lease.opened = session if session is not None else open_session()
        except BaseException:
            self.checkin(lease, healthy=False)
            raise
        if self._closed:  # closed while the session was being opened
            self.checkin(lease, healthy=False)
            self.refuse_if_closed()

    def checkin(self, lease: Lease[S], healthy: bool) -> None:
        """Give a lease back: its session kept for reuse when ``healthy``, else closed."""
        with self._lock:
            self._leases.discard(lease)
            keep = healthy and not lease.abandoned and not self._closed
            session, lease.opened = lease.opened, None
            if keep and session is not None:
                self._idle.append(session)
            release, lease.holds_slot = lease.holds_slot, False
        if not keep and session is not None:
            self._close_session(session)
        if release:
            self._slots.release()

    def abandon(self, lease: Lease[S]) -> None:
        """Stop waiting for a lease whose call hangs: its slot is free at once, and its session
        is closed (never reused) when the call gives the lease back."""
        with self._lock:
            lease.abandoned = True
            release, lease.holds_slot = lease.holds_slot, False
        if release:
            self._slots.release()

    def close(self) -> list[S]:
        """Refuse new checkouts and close the idle sessions; return the sessions still in use
        (closed as their users give them back)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            busy = [lease.opened for lease in self._leases if lease.opened is not None]
        for session in idle:
            self._close_session(session)
        return busy

    def refuse_if_closed(self) -> None:
        """:raises WarehouseUnavailable: the pool is closed."""
        if self._closed:
            raise WarehouseUnavailable("the warehouse connection is closed (shutting down)")
