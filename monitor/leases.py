"""Replicas sharing the checks through PostgreSQL: leases with expiry, renewed and rebalanced.

Each replica (one daemon process; a pod) holds a lease on its share of the checks, and at most
one replica holds the outbox's lease and delivers notifications. A lease is a row of ``leases``:
its holder, an ``epoch`` raised at every change of holder, and when it expires, in seconds of
the database's clock (replicas' clocks never meet). No protocol of our own: every
:meth:`Coordinator.beat` is one short transaction that

1. marks this replica alive (``replicas``, with the same expiry) and counts the live ones;
2. renews the leases it holds that have not expired; one that expired is lost, even if no
   other replica took it yet;
3. releases what it holds beyond its share (``fair_share``: the checks divided evenly among
   the live replicas, the first by name taking one more of the remainder; a scale-up), and
   takes free or expired leases up to its share (a scale-down, a replica that died, hung or lost
   the database), with ``SELECT ... FOR UPDATE SKIP LOCKED``, so replicas beating at once take
   different checks. Checks are taken and handed over in the order of a hash of their names,
   so a family of alike checks (the segmented ones) spreads over the replicas.

Fencing: a replica may have lost a lease without knowing (it was stopped past the TTL, or cut
off from the database). It acts on a lease only before its local deadline (the monotonic time
before the renewal began plus 90% of the TTL; the monotonic clock runs on while a process is
stopped), and every write about a check, or a step of a delivery, checks the lease in its own
transaction (``StateStore.fence``): holder, epoch and expiry, under a share lock on the lease row
that a take-over must wait for. The server ends a session idle in a transaction after a few
seconds (``statedb.IDLE_IN_TRANSACTION_MS``), so a stopped process cannot hold that lock. A
take-over reads the state the previous holder committed last; nothing it writes after lands.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from monitor.errors import StateStoreError
from monitor.exporter import Metrics
from monitor.records.outbox import OUTBOX_LEASE
from monitor.statedb import Executor, PostgresDatabase, Row
from monitor.store import StateStore

log = logging.getLogger("monitor.leases")

BEATS_PER_TTL = 6  # a lease is renewed this many times before it would expire
SAFETY = 0.9  # the share of the TTL a replica acts on a lease after the renewal began
_NOW = "extract(epoch from clock_timestamp())::float8"


class LeaseLost(StateStoreError):
    """A write about a check (or a delivery step) whose lease this replica no longer holds:
    another replica has taken it over, or will; nothing was written."""


def fair_share(checks: int, replicas: int, rank: int = 0) -> int:
    """How many checks the replica ranked ``rank`` (by name) among ``replicas`` live ones
    holds: the first ``checks % replicas`` hold one more, so the shares add up to ``checks``."""
    replicas = max(replicas, 1)
    return checks // replicas + (1 if rank < checks % replicas else 0)


def replica_name() -> str:
    """This process's name among the replicas: the pod (host) name, the pid and a random part,
    so a restarted process never mistakes the leases of its previous life for its own."""
    host = os.environ.get("HOSTNAME") or socket.gethostname()
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Beat:
    """What one heartbeat found and changed."""

    replicas: int
    acquired: tuple[str, ...]
    lost: tuple[str, ...]
    released: tuple[str, ...]


class Coordinator:
    """This replica's leases. Callbacks (called outside the database transaction): ``acquired``
    with checks taken over (to load their state and schedule them), ``lost`` with checks held no
    longer (to stop and forget them), ``idle`` says whether a check may be handed over now (no
    run in progress)."""

    def __init__(
        self,
        store: StateStore,
        checks: Sequence[str],
        ttl: float,
        metrics: Metrics,
        *,
        acquired: Callable[[list[str]], None],
        lost: Callable[[list[str]], None],
        idle: Callable[[str], bool],
        after_beat: Callable[[], None] = lambda: None,
        replica: str | None = None,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.metrics = metrics
        self.replica = replica or replica_name()
        self._acquired, self._lost, self._idle, self._after_beat = acquired, lost, idle, after_beat
        self._checks = list(checks)
        self._new_names = True  # lease rows to create before the next beat
        self._held: dict[str, tuple[int, float]] = {}  # name -> (epoch, local deadline)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = datetime.now(UTC).isoformat()
        # renewals on a connection of their own: the store's one is queued behind the check
        # runs' writes (a first run writes a check's whole history), which can outlast a TTL
        database = store.database
        self._db = database.another() if isinstance(database, PostgresDatabase) else database
        store.fence = self.fence
        metrics.leases  # noqa: B018 - registered at once, so a scrape sees them from the start

    # --- what this replica may do -------------------------------------------------------------

    def holds(self, name: str) -> bool:
        """Whether this replica may act on ``name`` now (a check, or OUTBOX_LEASE)."""
        with self._lock:
            lease = self._held.get(name)
        return lease is not None and time.monotonic() < lease[1]

    def held(self) -> list[str]:
        """The checks this replica holds now."""
        with self._lock:
            now = time.monotonic()
            return sorted(n for n, (_, d) in self._held.items() if d > now and n != OUTBOX_LEASE)

    def fence(self, db: Executor, name: str) -> None:
        """Inside a write's transaction: LeaseLost unless this replica holds ``name``'s lease,
        which then cannot change hands before the transaction ends (a share lock on its row)."""
        with self._lock:
            lease = self._held.get(name)
        if lease is None or time.monotonic() >= lease[1]:
            raise LeaseLost(f"replica {self.replica} does not hold the lease on {name!r}")
        found = _rows(
            db.execute(
                "SELECT epoch FROM leases WHERE name = ? AND holder = ? AND epoch = ?"
                f" AND expires_at > {_NOW} FOR SHARE",
                (name, self.replica, lease[0]),
            )
        )
        if not found:
            raise LeaseLost(
                f"replica {self.replica} lost the lease on {name!r}: another replica takes it over"
            )

    # --- lifecycle ----------------------------------------------------------------------------

    def reconfigure(self, checks: Sequence[str]) -> None:
        """The checks of a reloaded config: leases on removed ones are let go at the next beat."""
        with self._lock:
            self._checks = list(checks)
            self._new_names = True

    def start(self) -> None:
        """Take this replica's first share now (or as much as is free), then keep beating."""
        self._safe_beat()
        self._thread = threading.Thread(target=self._loop, name="leases", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and hand every lease back at once (a restart or a rolling update then
        costs no TTL): the caller has stopped running checks."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            names = list(self._held)
            self._held.clear()
        try:
            with self._db.transaction() as db:
                db.execute(
                    "UPDATE leases SET holder = NULL, expires_at = 0 WHERE holder = ?",
                    (self.replica,),
                )
                db.execute("DELETE FROM replicas WHERE replica_id = ?", (self.replica,))
        except StateStoreError as exc:
            log.warning(
                "could not hand the leases back; they expire by themselves",
                extra={"fields": {"error": str(exc), "leases": len(names)}},
            )
        self.metrics.owned_checks.set(0)
        if self._db is not self.store.database:
            self._db.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.ttl / BEATS_PER_TTL):
            self._safe_beat()

    def _safe_beat(self) -> None:
        try:
            self.beat()
        except StateStoreError as exc:
            self.metrics.leases.renewals.labels("error").inc()
            log.warning("lease renewal failed", extra={"fields": {"error": str(exc)}})
        self._expire()
        try:
            self._after_beat()
        except Exception:
            log.exception("work after the lease renewal failed")

    def _expire(self) -> None:
        """Forget the leases whose local deadline passed (their renewal failed or came late)."""
        now = time.monotonic()
        with self._lock:
            gone = sorted(n for n, (_, deadline) in self._held.items() if deadline <= now)
            for name in gone:
                del self._held[name]
        if gone:
            self.metrics.leases.changes.labels("lost").inc(len(gone))
            log.warning(
                "leases expired before they could be renewed; other replicas take them over",
                extra={"fields": {"replica": self.replica, "leases": gone}},
            )
            self._publish()
            self._lost([n for n in gone if n != OUTBOX_LEASE])

    # --- one heartbeat --------------------------------------------------------------------------

    def beat(self) -> Beat:
        """Renew, rebalance, take over: one transaction (see the module's docstring)."""
        with self._lock:
            checks, create = list(self._checks), self._new_names
        started = time.monotonic()
        deadline = started + self.ttl * SAFETY
        with self._db.transaction() as db:
            if create:
                db.executemany(
                    "INSERT INTO leases (name) VALUES (?) ON CONFLICT (name) DO NOTHING",
                    [(name,) for name in [*checks, OUTBOX_LEASE]],
                )
            now = float(_rows(db.execute(f"SELECT {_NOW}"))[0][0])
            expiry = now + self.ttl
            db.execute(
                "INSERT INTO replicas (replica_id, started_at, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (replica_id) DO UPDATE SET expires_at = excluded.expires_at",
                (self.replica, self._started, expiry),
            )
            db.execute("DELETE FROM replicas WHERE expires_at <= ?", (now,))
            live = [str(r[0]) for r in _rows(db.execute("SELECT replica_id FROM replicas"))]
            replicas = len(live)
            renewed = {
                str(name): int(epoch)
                for name, epoch in _rows(
                    db.execute(
                        "UPDATE leases SET expires_at = ? WHERE holder = ? AND expires_at > ?"
                        " RETURNING name, epoch",
                        (expiry, self.replica, now),
                    )
                )
            }
            configured = set(checks)
            share = fair_share(len(checks), replicas, sorted(live).index(self.replica))
            mine = sorted((n for n in renewed if n in configured), key=_spread)
            stale = [n for n in renewed if n != OUTBOX_LEASE and n not in configured]
            excess = max(len(mine) - share, 0)  # a replica joined: hand some over
            surplus = stale + [n for n in reversed(mine) if self._idle(n)][:excess]
            room = share - (len(mine) - (len(surplus) - len(stale)))
            wanted = checks if room > 0 else []
            if OUTBOX_LEASE not in renewed:
                wanted = [*wanted, OUTBOX_LEASE]
            with self._lock:  # no write of ours is fenced by them from here on
                for name in surplus:
                    self._held.pop(name, None)
            if surplus:
                db.execute(
                    "UPDATE leases SET holder = NULL, expires_at = 0"
                    " WHERE holder = ? AND name = ANY(?)",
                    (self.replica, surplus),
                )
            taken = self._take(db, wanted, room, now, expiry) if wanted else {}
        for name in surplus:
            renewed.pop(name, None)
        with self._lock:
            before = set(self._held) | set(surplus)
            self._held = {n: (e, deadline) for n, e in {**renewed, **taken}.items()}
            after = set(self._held)
        beat = Beat(
            replicas,
            tuple(sorted(after - before)),
            tuple(sorted(before - after - set(surplus))),
            tuple(sorted(surplus)),
        )
        self._report(beat)
        return beat

    def _take(
        self, db: Executor, wanted: list[str], room: int, now: float, expiry: float
    ) -> dict[str, int]:
        """Free or expired leases among ``wanted``: up to ``room`` checks, and the outbox's if
        it is wanted; rows another replica is taking at this moment are skipped."""
        outbox = OUTBOX_LEASE in wanted
        names = [n for n in wanted if n != OUTBOX_LEASE]
        free = [
            str(row[0])
            for row in _rows(
                db.execute(
                    "SELECT name FROM leases WHERE name = ANY(?)"
                    " AND (holder IS NULL OR expires_at <= ?)"
                    " ORDER BY name = ? DESC, md5(name) LIMIT ? FOR UPDATE SKIP LOCKED",
                    (
                        [*names, OUTBOX_LEASE] if outbox else names,
                        now,
                        OUTBOX_LEASE,
                        max(room, 0) + int(outbox),
                    ),
                )
            )
        ]
        if not outbox:
            free = [n for n in free if n != OUTBOX_LEASE]
        if not free:
            return {}
        return {
            str(name): int(epoch)
            for name, epoch in _rows(
                db.execute(
                    "UPDATE leases SET holder = ?, epoch = epoch + 1, expires_at = ?"
                    " WHERE name = ANY(?) RETURNING name, epoch",
                    (self.replica, expiry, free),
                )
            )
        }

    def _report(self, beat: Beat) -> None:
        self.metrics.leases.renewals.labels("ok").inc()
        self.metrics.leases.replicas.set(beat.replicas)
        self.metrics.leases.last_renewal.set(time.time())
        for kind, names in (("acquired", beat.acquired), ("lost", beat.lost),
                            ("released", beat.released)):  # fmt: skip
            if names:
                self.metrics.leases.changes.labels(kind).inc(len(names))
                log.info(
                    f"leases {kind}",
                    extra={"fields": {"replica": self.replica, "leases": list(names),
                                      "replicas": beat.replicas}},
                )  # fmt: skip
        self._publish()
        checks = [n for n in beat.lost + beat.released if n != OUTBOX_LEASE]
        if checks:
            self._lost(checks)
        taken = [n for n in beat.acquired if n != OUTBOX_LEASE]
        if taken:
            self._acquired(taken)

    def _publish(self) -> None:
        self.metrics.owned_checks.set(len(self.held()))
        self.metrics.leases.outbox_lease.set(1 if self.holds(OUTBOX_LEASE) else 0)


def _spread(name: str) -> str:
    """The order in which checks are taken and handed over: by a hash of the name (PostgreSQL's
    md5), so that checks named alike (a family of segmented ones) spread over the replicas."""
    return hashlib.md5(name.encode()).hexdigest()  # noqa: S324 - an order, not a secret


def _rows(cursor: object) -> list[Row]:
    rows: list[Row] = getattr(cursor, "fetchall")()  # noqa: B009 - a DB-API cursor
    return rows
