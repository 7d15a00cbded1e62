"""The daemon's part among replicas sharing their state in PostgreSQL (see monitor/leases.py).

A replica starts with no check: it runs those whose leases it takes and stops running those it
loses, follows the run requests, mutes, rebaselines and deployments received by the others, and
hands its leases back when it stops. A single daemon (state in SQLite) runs every check and is
always the housekeeper.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from monitor.config import Config
from monitor.engine import Engine
from monitor.errors import StateStoreError
from monitor.exporter import Metrics
from monitor.leases import BEATS_PER_TTL, Coordinator
from monitor.records.outbox import OUTBOX_LEASE
from monitor.scheduler import CheckScheduler
from monitor.store import StateStore
from monitor.watcher import DeploymentWatcher

log = logging.getLogger("monitor.daemon")


@dataclass
class ReplicaCoordination:
    """Owns this daemon's leases (none for a single daemon): the checks taken over and let go
    through the engine and the scheduler, whether this process is the housekeeper, and what the
    other replicas received for the checks held here. ``engine`` gives the running engine (a
    reload replaces it)."""

    config: Config
    store: StateStore
    metrics: Metrics
    scheduler: CheckScheduler
    watcher: DeploymentWatcher
    engine: Callable[[], Engine]
    coordinator: Coordinator | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        config = self.config
        if config.state.url is None:
            self.metrics.owned_checks.set(len(config.checks))
            return
        self.coordinator = Coordinator(
            self.store,
            [c.name for c in config.checks],
            config.state.lease_ttl.total_seconds(),
            self.metrics,
            acquired=self._acquired,
            lost=self._lost,
            idle=self.scheduler.idle,
        )

    def housekeeper(self) -> bool:
        """Whether this process delivers the outbox (and prunes, re-sends, snapshots): a single
        daemon always, a replica while it holds the outbox's lease."""
        return self.coordinator is None or self.coordinator.holds(OUTBOX_LEASE)

    def start(self) -> None:
        """Take leases and follow the others, once the scheduler runs."""
        if self.coordinator is None:
            return
        self.scheduler.every(
            self.coordinator.ttl / BEATS_PER_TTL, self._follow, "follow the other replicas"
        )
        self.coordinator.start()

    def reconfigure(self, config: Config) -> None:
        """Follow a reloaded config's checks."""
        self.config = config
        if self.coordinator is not None:
            self.coordinator.reconfigure([c.name for c in config.checks])
        else:
            self.metrics.owned_checks.set(len(config.checks))

    def stop(self) -> None:
        """Hand the leases back: the other replicas take the checks over at once."""
        if self.coordinator is not None:
            self.coordinator.stop()

    def _acquired(self, names: list[str]) -> None:
        engine = self.engine()
        for name in names:
            engine.handover.take_over(name)
        self.scheduler.hold(names)

    def _lost(self, names: list[str]) -> None:
        self.scheduler.drop(names)
        engine = self.engine()
        for name in names:
            engine.handover.let_go(name)

    def _follow(self) -> None:
        """What the other replicas received for the checks held here: runs asked for, mutes,
        rebaselines; and the deployments they recorded or decided."""
        assert self.coordinator is not None
        try:
            for name in self.store.runs.take_requests(self.coordinator.held()):
                self.scheduler.run_now(name)
            engine = self.engine()
            engine.interventions.refresh(engine.config.check)
            for deployment in self.watcher.refresh():
                self.scheduler.watch(deployment)
        except StateStoreError as exc:
            log.warning(
                "cannot follow the other replicas; retried", extra={"fields": {"error": str(exc)}}
            )
