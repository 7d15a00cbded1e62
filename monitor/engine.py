"""One check run, end to end: query -> series -> baseline -> verdict -> alert state -> sinks.

The daemon's scheduler, ``kpi-monitor check`` and the HTTP "run now" call all go through
:meth:`Engine.run`. Models are kept in memory between runs (only new buckets are scored); after
a restart they are rebuilt from the warehouse and the persisted alert state says which buckets
were already judged, so nothing is alerted twice.

The engine keeps run -> judge -> commit and composes one class per other job:

- ``planning.QueryPlanner``: what a run reads; the reads checks of one table share
- ``model_cache.ModelCache``, ``freshness_cache.LoadCache``: models and load times, kept
  between runs and, through the state store, across restarts
- ``tuning.Tuning``: mutes, rebaselines, calendar events, answers to alerts
- ``ledger.Ledger``: alert states, latest verdicts and last runs in memory
- ``replicas.Replicas``, ``handover.Handover``: replicas (and what is read of the checks the
  others run); a check changing hands
- ``interventions.Interventions``, ``resolutions.Resolutions``: what people do to a check;
  episodes ended for a reason
- ``notifying.Notifier``, ``charting.RunCharts``, ``publishing.Publisher``: notifications,
  their charts; metrics and log lines
- ``incidents.Incidents``: the drill-down, told to the alerts opening on an incident
- ``history.CheckHistory``: what a check's page draws
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from monitor.alerts.notification import Notification
from monitor.alerts.state import AlertPolicy, AlertState, advance_all
from monitor.answers.model import AlertRef
from monitor.calendar.book import CalendarBook
from monitor.calendar.config import EventRequest, RecordedEvent
from monitor.charting import RunCharts
from monitor.config import CheckConfig, Config
from monitor.detection import Detector, Verdict
from monitor.drilldown import Explanation
from monitor.errors import (
    QueryTimeout,
    StateStoreError,
    UnknownCheck,
    WarehouseError,
    WarehouseUnavailable,
)
from monitor.exporter import Metrics
from monitor.freshness_cache import LoadCache
from monitor.handover import CheckMemory, Handover, Held
from monitor.history import AGE_STEP, CheckHistory, Point
from monitor.incidents import Incidents
from monitor.interventions import Interventions
from monitor.ledger import Judged, Ledger, Outcome, RunResult, SeriesStatus, outcome_of
from monitor.model_cache import ModelCache, fingerprint
from monitor.notifying import Cause, Notifier
from monitor.planning import QueryPlanner
from monitor.publishing import Publisher
from monitor.relearn import carried
from monitor.replicas import Replicas
from monitor.resolutions import Resolutions
from monitor.rules import Bounds, apply_bounds
from monitor.store import StateStore
from monitor.tuning import DEFAULT_SENSITIVITY, Tuning, detector_spec
from monitor.verdicts import verdict_json
from monitor.warehouse.base import Warehouse

__all__ = [
    "DEFAULT_SENSITIVITY",
    "CheckMemory",
    "Engine",
    "Outcome",
    "RunResult",
    "SeriesStatus",
    "alert_policy",
    "detector_spec",
    "fingerprint",
]

log = logging.getLogger("monitor.engine")


Committed = tuple[list[SeriesStatus], list[Notification], dict[str, list[Verdict]]]
"""A run's saved outcome: the latest status per series, its notifications, its verdicts."""


def alert_policy(check: CheckConfig) -> AlertPolicy:
    open_after = 1 if check.kind == "freshness" else check.effective_alert_after
    return AlertPolicy(open_after=open_after, resolve_after=check.resolve_after)


class Engine:
    """Owns a check's run -> judge -> commit; thread-safe, one run of a given check at a time.
    Its other public methods hand off to the parts it composes (see the module docstring); a
    replica's leases and a reload use two parts directly: ``handover``, ``interventions``."""

    def __init__(
        self,
        config: Config,
        warehouses: dict[str, Warehouse],
        store: StateStore,
        metrics: Metrics,
        *,
        channels: list[str] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        after_run: Callable[[RunResult], None] | None = None,
        announce: bool = True,
        cause: Cause | None = None,
        chart_buckets: int = 0,
        shared: bool = False,
        calendars: CalendarBook | None = None,
    ) -> None:
        """``shared``: one of several replicas (monitor/leases.py); it runs, saves and exports
        only the checks it holds (see ``Handover``), and answers for the others from the state
        store. ``calendars``: the book of recorded events of the engine this one replaces on a
        reload (a new one is read from the store otherwise)."""
        self.config = config
        self.warehouses = warehouses
        self.store = store
        self.metrics = metrics
        self.channels = channels or []
        self.clock = clock
        self._after_run = after_run
        self.chart_buckets = chart_buckets
        self._tuning = Tuning(config, store, clock, calendars)
        self._ledger = Ledger(store.load_states())
        self._models = ModelCache(config.checks, store, self._tuning, self._ledger.state)
        self._loads = LoadCache(store)
        self._replicas = Replicas(config, store, self._ledger, shared=shared)
        self._planner = QueryPlanner(config, self._models, self._replicas.holds)
        self._publisher = Publisher(metrics, announce=announce)
        self._notifier = Notifier(config, clock, cause)
        self._incidents = Incidents()
        self._resolutions = Resolutions(
            self._ledger, store, self._notifier, self._publisher, self._incidents, self.channels
        )
        self._history = CheckHistory(store, self._loads, self._ledger, self._tuning, clock)
        self._locks = {c.name: threading.Lock() for c in config.checks}
        self._held = Held(self._models, self._loads, self._ledger, self._tuning, self._incidents)
        self.handover = Handover(
            config, store, metrics, self._locks, self._held, self._replicas, self._publisher
        )
        self.interventions = Interventions(
            self._locks, clock, metrics, self._tuning, self._models, self._resolutions,
            self._replicas,
        )  # fmt: skip
        for check in config.checks if not shared else []:
            metrics.declare_check(check.name)
        for name in warehouses:
            metrics.warehouse_up.labels(name)

    # --- public surface -------------------------------------------------------------------

    def run(self, name: str) -> RunResult:
        """Run one check now and record its outcome; never raises for a check's own failure,
        nor for the ``after_run`` listener's (it is logged: the run's alerts are queued already,
        and the caller goes on to deliver them).

        :raises UnknownCheck: no check of that name is configured.
        """
        check = self.check(name)
        with self._locks[name]:
            result = self._run(check)
            self._replicas.share_run(result)
        self._ledger.ran(result)
        if self._after_run is not None:
            try:
                self._after_run(result)
            except Exception:
                log.exception("run listener failed", extra={"fields": {"check": name}})
        return result

    def check(self, name: str) -> CheckConfig:
        """The configured check of that name (raises ``UnknownCheck`` when there is none)."""
        check = self.config.check(name)
        if check is None:
            raise UnknownCheck(name)
        return check

    def last_run(self, name: str) -> RunResult | None:
        """The check's last run: see ``Replicas.last_run`` (and ``last_runs``, ``series``,
        ``firing``: what a replica answers for the checks another one runs)."""
        return self._replicas.last_run(name)

    def last_runs(self) -> dict[str, RunResult]:
        return self._replicas.last_runs()

    def series(self, name: str | None = None) -> list[SeriesStatus]:
        return self._replicas.series(name)

    @property
    def calendars(self) -> CalendarBook:
        """The recorded events and exclusions, and each check's calendar."""
        return self._tuning.calendars

    def holds(self, name: str) -> bool:
        """Whether this engine runs the check (a single daemon runs every check)."""
        return self._replicas.holds(name)

    def alert_state(self, name: str, segment: str) -> AlertState:
        return self._ledger.state(name, segment)

    def firing(self) -> list[tuple[str, str, int]]:
        return self._replicas.firing()

    def explanation(self, name: str) -> Explanation | None:
        """The drill-down of the check's open incident, if any."""
        return self._incidents.latest(name)

    def history(self, name: str, buckets: int) -> dict[str, list[Point]]:
        """What the check's page draws, per segment: see ``CheckHistory.of``."""
        return self._history.of(self.check(name), buckets)

    # --- what people do to a check: see ``Interventions`` -------------------------------

    def rebaseline(self, name: str, since: datetime) -> list[Notification] | None:
        """Accept a check's level from ``since`` on (an intended change); None when another
        replica runs the check (it follows the saved rebaseline).

        :raises UnknownCheck: no check of that name is configured.
        """
        return self.interventions.rebaseline(self.check(name), since)

    def false_alarm(self, ref: AlertRef, reason: str) -> list[Notification]:
        """An alert answered as a false alarm: its episode resolves, its sensitivity follows."""
        return self.interventions.false_alarm(self.check(ref.check), ref, reason)

    def mute(self, name: str, until: datetime, reason: str) -> None:
        """Send no notification for the check until ``until`` (a planned backfill)."""
        self.interventions.mute(name, until, reason)

    def muted(self, check: CheckConfig, now: datetime) -> bool:
        return self._tuning.muted(check, now)

    def record_event(self, request: EventRequest) -> RecordedEvent:
        """Record a calendar event or exclusion window (persisted); the checks it applies to
        rebuild their models with it at their next run.

        :raises monitor.errors.UnknownCheck: for a check name not configured."""
        return self._tuning.record_event(request)

    def delete_event(self, event_id: str) -> RecordedEvent | None:
        """Remove a recorded event or exclusion (None: no such id)."""
        return self._tuning.delete_event(event_id)

    # --- a check changing hands: see ``Handover`` ------------------------------------------

    def release(self, name: str) -> CheckMemory:
        """Take out everything held about a check, for the engine of a reloaded config; this
        engine must not run the check again."""
        return self.handover.release(name)

    def adopt(self, memory: CheckMemory) -> None:
        """Carry on a check from another engine's ``release``, as if it had run here."""
        self.handover.adopt(memory)

    # --- one run --------------------------------------------------------------------------

    def _run(self, check: CheckConfig) -> RunResult:
        started = self.clock()
        t0 = time.perf_counter()
        warehouse_name = self.config.warehouse_of(check)
        warehouse = self.warehouses[warehouse_name]
        labels = {"check": check.name, "warehouse": warehouse_name}
        outcome: Outcome = "error"
        error: str | None = None
        fields: dict[str, str] | None = None
        committed: Committed = ([], [], {})
        try:
            rewound = self._resolutions.rewind(check, started)
            if rewound is not None:
                self._held.forget(check.name)  # rebuilt from the warehouse
            if check.kind == "freshness":
                statuses, notes, verdicts = self._run_freshness(check, warehouse, started)
            else:
                statuses, notes, verdicts = self._run_series(check, warehouse, started)
            self._publisher.reached(warehouse, True)
        except WarehouseError as exc:
            # bad SQL or a malformed answer is the check's fault: the warehouse did answer
            up = not isinstance(exc, WarehouseUnavailable | QueryTimeout)
            self._publisher.reached(warehouse, up)
            # the log line names the warehouse in its own field; the run's error names it itself
            error, fields = str(exc), {**labels, "error": exc.detail}
        except StateStoreError as exc:
            # what was judged could not be saved: forget it, so the next run judges it again
            self._held.forget(check.name)
            error, fields = str(exc), labels
        except Exception as exc:
            self._held.forget(check.name)
            log.exception("check run failed unexpectedly", extra={"fields": labels})
            error = f"{type(exc).__name__}: {exc}"
        else:
            self._publisher.succeeded(check.name)
            outcome, committed = outcome_of(statuses), (statuses, (rewound or []) + notes, verdicts)
        elapsed = time.perf_counter() - t0
        statuses, notes, verdicts = committed
        result = RunResult(check.name, outcome, started, elapsed, error, statuses, notes, verdicts)
        return self._publisher.finished(result, fields)

    def _run_series(self, check: CheckConfig, warehouse: Warehouse, now: datetime) -> Committed:
        self._held.ready(check, now)
        firing = {s for s, state in self._ledger.states(check.name).items() if state.firing}
        fetched = self._planner.fetch(check, warehouse, now, self._models.known(check.name), firing)
        window, found = fetched.window, fetched.found
        closed: list[Notification] = []
        if fetched.ranking is not None:
            closed = self._resolutions.untrack(check, fetched.ranking, now)
            self._models.untrack(check.name, fetched.ranking.dropped, fetched.ranking.refolded)
            self._models.ranked(check.name, now, fetched.ranking.tracked)
        charts = RunCharts(
            check, self.chart_buckets, self._tuning.fitted,
            lambda: self._planner.lookback(check, warehouse, now, window),
            found if window.full else None,
        )  # fmt: skip
        policy, bounds = alert_policy(check), Bounds(check.min, check.max)
        judged = []
        for segment, series in found.items():
            if series.empty:
                continue
            scored, replayed, model = self._models.score_new(check, segment, series)
            verdicts = [apply_bounds(v, bounds, policy.open_after) for v in scored]
            verdicts = self._tuning.hush(check.name, segment, verdicts)
            judged.append(self._judge(check, segment, verdicts, policy, charts.chart, model,
                                      replayed=replayed))  # fmt: skip
        told = self._incidents.tell(check, judged, self._ledger.states(check.name), charts.beside)
        statuses, notes, judged_verdicts = self._commit(check, told)
        self._models.keep(check, now, window.since, window.full, found)
        return statuses, closed + notes, judged_verdicts

    def _run_freshness(self, check: CheckConfig, warehouse: Warehouse, now: datetime) -> Committed:
        sensitivity = check.sensitivity or DEFAULT_SENSITIVITY
        aged = self._loads.age(check, warehouse, now, sensitivity, (self.chart_buckets, AGE_STEP))
        if aged is None:
            return [], [], {}
        self.metrics.data_age.labels(check.name, "").set(aged.verdict.value)
        verdicts = self._tuning.hush(check.name, "", [aged.verdict])
        judged = self._judge(check, "", verdicts, alert_policy(check), aged.chart)
        return self._commit(check, [judged])

    def _judge(
        self,
        check: CheckConfig,
        segment: str,
        verdicts: list[Verdict],
        policy: AlertPolicy,
        chart: Callable[[str], list[list[Any]]] | None = None,
        model: Detector | None = None,
        *,
        replayed: int = 0,
    ) -> Judged:
        """Feed verdicts to the series' alert state: its new state and notifications (of the
        first ``replayed``, see ``advance_all``); the ``model``'s quiet period and hold are
        saved with it."""
        state = self._ledger.state(check.name, segment)
        if model is not None:
            state = carried(state, model)
        state, announced = advance_all(state, verdicts, policy, replayed=replayed)
        notes: list[Notification] = []
        for verdict, transition in announced:
            note = self._notifier.notification(check, segment, verdict, transition)
            if note.kind == "opened" and chart is not None and self.channels:
                rows = chart(segment)
                calendar = self._tuning.chart_calendar(check, rows)
                note = replace(note, history=rows, calendar=calendar)
            notes.append(note)
        return Judged(segment, verdicts, state, notes)

    def _commit(self, check: CheckConfig, judged: list[Judged]) -> Committed:
        """Persist a run's states and queued notifications in one transaction, then (only once
        they are saved) publish them: memory, metrics and log."""
        muted = self._tuning.muted(check, self.clock())
        saved = [(j.segment, j.state, j.notes) for j in judged if j.verdicts]
        if saved:
            channels = [] if muted else self.channels
            last = {j.segment: verdict_json(j.verdicts[-1]) for j in judged if j.verdicts}
            self.store.record_all(check.name, saved, channels, muted=muted, verdicts=last)
        statuses: list[SeriesStatus] = []
        notes: list[Notification] = []
        for j in judged:
            latest = self._ledger.latest(check.name, j.segment)
            if j.verdicts:
                verdict = j.verdicts[-1]
                latest = SeriesStatus(check.name, j.segment, verdict, j.state)
                self._publisher.export(check, j.segment, verdict, j.state)
            self._ledger.save(check.name, j.segment, j.state, latest)
            if latest is not None:
                statuses.append(latest)
            notes.extend(j.notes)
        self._publisher.announce(notes, muted)
        return statuses, notes, {j.segment: j.verdicts for j in judged if j.verdicts}
