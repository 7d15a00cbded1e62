"""A check changing hands: between replicas when a lease is won or lost, between engines when
the config is reloaded. Everything held about the check goes with it, or is forgotten."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from datetime import datetime

from monitor.alerts.state import AlertState
from monitor.config import CheckConfig, Config
from monitor.detection import Verdict
from monitor.drilldown import Explanation
from monitor.exporter import Metrics
from monitor.freshness_cache import CachedLoads, LoadCache
from monitor.incidents import Incidents
from monitor.ledger import Ledger, RunResult, SeriesStatus
from monitor.model_cache import CachedModels, ModelCache
from monitor.publishing import Publisher
from monitor.replicas import Replicas, run_result
from monitor.store import StateStore
from monitor.tuning import Tuning


@dataclass(frozen=True)
class CheckMemory:
    """Everything an engine holds about one check between runs, handed whole from one engine
    to the next when the config is reloaded (``Engine.release`` / ``Engine.adopt``)."""

    name: str
    models: CachedModels
    loads: CachedLoads
    states: dict[str, AlertState]
    latest: dict[str, SeriesStatus]
    last_run: RunResult | None
    recent: dict[str, list[Verdict]] = field(default_factory=dict)
    """Per segment, the recent verdicts the drill-down works on."""
    explained: Explanation | None = None
    held: bool = True  # this replica holds the check's lease (always, for a single daemon)

    def without_models(self) -> CheckMemory:
        """The check's alert state and latest verdicts only: its settings changed, so its
        models are rebuilt (from the series cached in the state store when still valid)."""
        return replace(self, models=CachedModels(), loads=CachedLoads(), recent={}, explained=None)


@dataclass(frozen=True)
class Held:
    """What an engine holds about its checks, part by part; owns dropping a check's models
    (``forget``) and getting them ready for a run (``ready``)."""

    models: ModelCache
    loads: LoadCache
    ledger: Ledger
    tuning: Tuning
    incidents: Incidents

    def forget(self, name: str, *, restore: bool = False) -> None:
        """Drop a check's models; its next run rebuilds them from the warehouse (with
        ``restore``, from the series cached in the state store first) and re-judges every
        bucket the state store has not recorded as judged."""
        self.models.forget(name, restore=restore)
        self.loads.forget(name)
        self.incidents.forget(name)

    def ready(self, check: CheckConfig, now: datetime) -> None:
        """Before a run of a series check: its models follow a calendar change and the answers
        to its alerts, and are restored from the state store at its first run here."""
        if self.tuning.recalendared(check.name):
            self.forget(check.name)  # rebuilt with the new marks; judged buckets stay judged
        if self.tuning.follow_answers(check, now):
            # rebuilt from the cached series, at the new sensitivity
            self.forget(check.name, restore=True)
        self.models.restore(check, now)


@dataclass(frozen=True)
class Handover:
    """Owns taking a check over and letting it go (a replica's lease, see ``Replicas``), and
    releasing and adopting it (a reload), across every part in ``held``; each under the
    check's lock of ``locks``, so never during one of its runs."""

    config: Config
    store: StateStore
    metrics: Metrics
    locks: dict[str, threading.Lock]
    held: Held
    replicas: Replicas
    publisher: Publisher

    def take_over(self, name: str) -> None:
        """Run a check from now on (this replica acquired its lease): its alert state, latest
        verdicts, last run, mute and rebaseline as the previous holder saved them; its models
        are rebuilt from the cached series at its first run here, which then reads only the
        buckets since from the warehouse."""
        check = self.config.check(name)
        if check is None or not self.replicas.shared:
            return
        states = self.store.load_states(name)
        stored = self.replicas.stored_series(name)
        stored_run = self.store.last_runs(name).get(name)
        run = None if stored_run is None else run_result(name, stored_run)
        with self.locks[name]:
            self._drop(name)
            self.held.ledger.take_over(name, states, stored, run)
            self.held.tuning.take_over(name)
            self.replicas.hold(name)
        self.metrics.declare_check(name)
        for status in stored:
            self.publisher.export(check, status.segment, status.verdict, status.state)
        if stored_run is not None and stored_run.succeeded_at is not None:
            self.publisher.succeeded(name, stored_run.succeeded_at.timestamp())

    def let_go(self, name: str) -> None:
        """Stop running a check (its lease went to another replica): forget it, its metrics
        too, so that one replica exports each series."""
        if not self.replicas.shared or self.config.check(name) is None:
            return
        self.replicas.let_go(name)
        self._drop(name)
        self.metrics.forget_check(name)

    def _drop(self, name: str) -> None:
        """Forget everything held about a check."""
        self.held.models.drop(name)
        self.held.loads.drop(name)
        self.held.ledger.drop(name)

    def release(self, name: str) -> CheckMemory:
        """Take out everything held about a check, for the engine of a reloaded config; this
        engine must not run the check again."""
        held = self.held
        with self.locks[name]:
            return CheckMemory(
                name=name,
                models=held.models.release(name),
                loads=held.loads.release(name),
                states=held.ledger.states(name),
                latest=held.ledger.latest_of(name),
                last_run=held.ledger.last_run(name),
                recent=held.incidents.recent(name),
                explained=held.incidents.latest(name),
                held=self.replicas.holds(name),
            )

    def adopt(self, memory: CheckMemory) -> None:
        """Carry on a check from another engine's ``release``: its models, alert state and
        latest verdicts, as if it had run here."""
        name, held = memory.name, self.held
        with self.locks[name]:
            if self.replicas.shared:
                if not memory.held:
                    return
                self.replicas.hold(name)
            held.models.adopt(name, memory.models)
            held.loads.adopt(name, memory.loads)
            held.ledger.adopt(name, memory.states, memory.latest, memory.last_run)
        held.incidents.adopt(name, memory.recent, memory.explained)
