"""One check run, end to end: query -> series -> baseline -> verdict -> alert state -> sinks.

The daemon's scheduler, ``kpi-monitor check`` and the HTTP "run now" call all go through
:meth:`Engine.run`. Models are kept in memory between runs (only new buckets are scored); after
a restart they are rebuilt from the warehouse and the persisted alert state says which buckets
were already judged, so nothing is alerted twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

import numpy as np
import pandas as pd

from monitor.alerts.links import render_link
from monitor.alerts.notification import Notification
from monitor.alerts.state import AlertPolicy, AlertState, Transition, advance
from monitor.answers.hush import hushed
from monitor.answers.model import WINDOW as ANSWER_WINDOW
from monitor.answers.model import AlertRef, series_factors
from monitor.buckets import bucket_start, last_complete, next_bucket, to_utc
from monitor.calendar.book import CalendarBook
from monitor.calendar.config import EventRequest, RecordedEvent
from monitor.config import CheckConfig, Config
from monitor.detection import Detector, DetectorSpec, Verdict
from monitor.drilldown import Explanation
from monitor.errors import (
    QueryFailed,
    QueryTimeout,
    StateStoreError,
    UnknownCheck,
    WarehouseError,
    WarehouseUnavailable,
)
from monitor.exporter import Metrics
from monitor.freshness import age_history, assess
from monitor.history import Point, Replays, judge_again
from monitor.incidents import Incidents, explainable
from monitor.queries import (
    OTHER_SEGMENT,
    TOTAL_SEGMENT,
    batch_column,
    batch_key,
    freshness_query,
    newest_row_query,
    series_query,
)
from monitor.relearn import relearned
from monitor.rules import Bounds, apply_bounds
from monitor.segments import Ranking, rerank
from monitor.series import newest_rows, normalise
from monitor.store import StateStore, StoredRun
from monitor.verdicts import verdict_from_json, verdict_json
from monitor.warehouse.base import Warehouse

log = logging.getLogger("monitor.engine")

Outcome = Literal["ok", "anomaly", "no_data", "error"]
DEFAULT_SENSITIVITY = DetectorSpec(bucket_seconds=3600).sensitivity
FULL_REFRESH = timedelta(days=1)
FACTORS_REFRESH = timedelta(hours=1)  # answers ageing out of their window lower a threshold
FRESHNESS_OVERLAP = timedelta(hours=1)  # late rows stamped before the newest load seen
AGE_STEP = timedelta(minutes=15)  # a freshness chart's data age is drawn at this step
NOT_RANKED = frozenset({OTHER_SEGMENT, TOTAL_SEGMENT})  # rows that are no segment of their own


@dataclass(frozen=True)
class Window:
    """What a run reads: rows from ``since`` to ``until`` (the end of the newest complete
    bucket), segments folded by ``segments`` (None: ranked anew, or no dimensions); ``full``
    when it is the whole lookback."""

    since: pd.Timestamp
    until: pd.Timestamp
    segments: list[str] | None
    full: bool


@dataclass
class _BatchRead:
    window: Window
    frame: pd.DataFrame
    members: tuple[str, ...]  # the checks whose values it holds, in column order


@dataclass(frozen=True)
class _Judged:
    """One series' outcome of a run, before it is saved."""

    segment: str
    verdicts: list[Verdict]
    state: AlertState
    notes: list[Notification]


@dataclass(frozen=True)
class SeriesStatus:
    """The latest verdict and alert state of one (check, segment)."""

    check: str
    segment: str
    verdict: Verdict
    state: AlertState


Committed = tuple[list[SeriesStatus], list[Notification], dict[str, list[Verdict]]]
"""A run's saved outcome: the latest status per series, its notifications, its verdicts."""


@dataclass(frozen=True)
class RunResult:
    check: str
    outcome: Outcome
    started: datetime
    duration: float
    error: str | None = None
    series: list[SeriesStatus] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    verdicts: dict[str, list[Verdict]] = field(default_factory=dict)
    """Per segment, every verdict the run gave (a first start's judged history included)."""


@dataclass(frozen=True)
class CheckMemory:
    """Everything an engine holds about one check between runs, handed whole from one engine
    to the next when the config is reloaded (``Engine.release`` / ``Engine.adopt``)."""

    name: str
    models: dict[str, Detector]
    learned: dict[str, pd.Timestamp]
    full: tuple[datetime, list[str]] | None
    loads: tuple[pd.DatetimeIndex, datetime] | None
    restored: bool
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
        return replace(
            self, models={}, learned={}, full=None, loads=None, restored=False, recent={},
            explained=None,
        )  # fmt: skip


def detector_spec(check: CheckConfig, factor: float = 1.0) -> DetectorSpec:
    """How a check's series are judged; ``factor`` raises a series' threshold (false alarms
    answered on it, see ``monitor.answers.model.sensitivity_factor``)."""
    return DetectorSpec(
        bucket_seconds=check.bucket_seconds,
        sensitivity=(check.sensitivity or DEFAULT_SENSITIVITY) * factor,
        direction=check.direction,
        min_relative_change=check.min_relative_change,
        timezone=check.timezone,
        quiet_factor=check.quiet_factor,
    )


def alert_policy(check: CheckConfig) -> AlertPolicy:
    open_after = 1 if check.kind == "freshness" else check.effective_alert_after
    return AlertPolicy(open_after=open_after, resolve_after=check.resolve_after)


class Engine:
    """Runs checks; thread-safe, one run of a given check at a time."""

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
        cause: Callable[[CheckConfig, datetime, datetime], str | None] | None = None,
        chart_buckets: int = 0,
        shared: bool = False,
    ) -> None:
        """``shared``: one of several replicas (monitor/leases.py); it runs, saves and exports
        only the checks it holds (``take_over``, ``let_go``), and answers for the others from
        the state store."""
        self.config = config
        self.warehouses = warehouses
        self.store = store
        self.metrics = metrics
        self.channels = channels or []
        self.clock = clock
        self._after_run = after_run
        self.announce = announce
        self._cause = cause
        self.chart_buckets = chart_buckets
        self._mutes = store.mutes()
        self._rebaselines = store.rebaselines()
        self.calendars = CalendarBook(store, clock)
        self._recalendared: set[str] = set()  # checks whose models predate a calendar change
        self._states = store.load_states()
        # per check: the newest bucket any of its series has judged (see ``_rewind``)
        self._judged_until: dict[str, datetime] = {}
        for (name, _), state in self._states.items():
            self._note_judged(name, state)
        # per check: each series' sensitivity factor from the answers to its alerts, and when
        # it was worked out (answers age out of their window: see ``_follow_answers``)
        started = clock()
        self._factors = series_factors(store.answers.since(started - ANSWER_WINDOW), started)
        self._factors_at = {c.name: started for c in config.checks}
        # series whose alert was answered as a false alarm, while their deviation lasts
        self._hushed = store.answers.holding()
        # per check, per segment: the model, and the newest bucket it has learned
        self._models: dict[str, dict[str, Detector]] = {c.name: {} for c in config.checks}
        self._learned: dict[str, dict[str, pd.Timestamp]] = {c.name: {} for c in config.checks}
        # per check: when the last full-lookback query ran, and the segments it ranked
        self._full: dict[str, tuple[datetime, list[str]]] = {}
        # checks answered by one query, and that query's latest rows
        groups: dict[tuple[object, ...], list[CheckConfig]] = {}
        for c in config.checks:
            key = batch_key(c, config.warehouse_of(c))
            if key is not None:
                groups.setdefault(key, []).append(c)
        self._batches = {c.name: g for g in groups.values() if len(g) > 1 for c in g}
        self._batch_locks = {k: threading.Lock() for k, g in groups.items() if len(g) > 1}
        self._batch_reads: dict[tuple[object, ...], _BatchRead] = {}
        # batched checks reading alone since their shared query failed, until their own succeeds
        self._apart: set[str] = set()
        self._restored: set[str] = set()
        # per freshness check: the load times seen over the lookback, and when fully read
        self._loads: dict[str, tuple[pd.DatetimeIndex, datetime]] = {}
        self._latest: dict[tuple[str, str], SeriesStatus] = {}
        self._last_run: dict[str, RunResult] = {}
        self._locks = {c.name: threading.Lock() for c in config.checks}
        self._guard = threading.Lock()
        self._replays = Replays(self._fitted)
        self._incidents = Incidents()
        self._held: set[str] | None = set() if shared else None
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
            if self._held is not None:
                self._share_run(result)
        with self._guard:
            # kept without its verdicts: a first run's are the whole lookback of every segment
            self._last_run[name] = replace(result, verdicts={})
        if self._after_run is not None:
            try:
                self._after_run(result)
            except Exception:
                log.exception("run listener failed", extra={"fields": {"check": name}})
        return result

    def check(self, name: str) -> CheckConfig:
        """The configured check of that name.

        :raises UnknownCheck: there is none.
        """
        check = self.config.check(name)
        if check is None:
            raise UnknownCheck(name)
        return check

    def last_run(self, name: str) -> RunResult | None:
        """The check's last run: from memory, or from the state store for a check another
        replica runs."""
        if not self.holds(name):
            stored = self.store.last_runs(name).get(name)
            if stored is None:
                return None
            return _run_result(name, stored)
        with self._guard:
            return self._last_run.get(name)

    def last_runs(self) -> dict[str, RunResult]:
        """Every check's last run, as ``last_run`` gives them, in one read of the store."""
        with self._guard:
            found = dict(self._last_run)
        if self._held is not None:
            for name, stored in self.store.last_runs().items():
                if not self.holds(name) and self.config.check(name) is not None:
                    found[name] = _run_result(name, stored)
        return found

    def series(self, name: str | None = None) -> list[SeriesStatus]:
        """The latest status of a check's series (of every check's when ``name`` is None),
        by check and segment; those of checks another replica runs from the state store."""
        with self._guard:
            found = [
                s for (c, _), s in self._latest.items()
                if (name is None or c == name) and (self._held is None or c in self._held)
            ]  # fmt: skip
        if self._held is not None and (name is None or not self.holds(name)):
            found += [s for s in self._stored_series(name) if not self.holds(s.check)]
        return sorted(found, key=lambda s: (s.check, s.segment))

    def holds(self, name: str) -> bool:
        """Whether this engine runs the check (a single daemon runs every check)."""
        with self._guard:
            return self._held is None or name in self._held

    def _stored_series(self, name: str | None) -> list[SeriesStatus]:
        verdicts = self.store.latest_verdicts(name)
        states = self.store.load_states(name)
        return [
            SeriesStatus(c, s, verdict_from_json(text), states.get((c, s), AlertState()))
            for (c, s), text in verdicts.items()
            if self.config.check(c) is not None
        ]

    # --- replicas: taking a check over, letting it go -------------------------------------

    def take_over(self, name: str) -> None:
        """Run a check from now on (this replica acquired its lease): its alert state, latest
        verdicts, last run, mute and rebaseline as the previous holder saved them; its models
        are rebuilt from the cached series at its first run here (see ``_restore``), which then
        reads only the buckets since from the warehouse."""
        check = self.config.check(name)
        if check is None or self._held is None:
            return
        states = self.store.load_states(name)
        stored = self._stored_series(name)
        run = self.store.last_runs(name).get(name)
        mutes, rebaselines = self.store.mutes(), self.store.rebaselines()
        with self._locks[name], self._guard:
            self._drop(name)
            self._states.update(states)
            self._latest.update({(s.check, s.segment): s for s in stored})
            if run is not None:
                self._last_run[name] = _run_result(name, run)
            self._mutes.pop(name, None)
            if name in mutes:
                self._mutes[name] = mutes[name]
            self._rebaselines.pop(name, None)
            if name in rebaselines:
                self._rebaselines[name] = rebaselines[name]
            self._held.add(name)
        self.metrics.declare_check(name)
        for status in stored:
            self._export(check, status.segment, status.verdict, status.state)
        if run is not None and run.succeeded_at is not None:
            self.metrics.last_success.labels(name).set(run.succeeded_at.timestamp())

    def let_go(self, name: str) -> None:
        """Stop running a check (its lease went to another replica): forget it, its metrics
        too, so that one replica exports each series."""
        if self._held is None or self.config.check(name) is None:
            return
        with self._guard:
            self._held.discard(name)
            self._drop(name)
        self.metrics.forget_check(name)

    def _drop(self, name: str) -> None:
        """Forget everything held about a check; call with ``_guard`` held."""
        self._models[name] = {}
        self._learned[name] = {}
        self._full.pop(name, None)
        self._loads.pop(name, None)
        self._last_run.pop(name, None)
        self._restored.discard(name)
        for key in [k for k in self._states if k[0] == name]:
            del self._states[key]
        for key in [k for k in self._latest if k[0] == name]:
            del self._latest[key]

    def refresh(self) -> list[str]:
        """Mutes and rebaselines set through another replica: followed for the checks held
        here (a rebaseline's firing alert resolves); the checks rebaselined."""
        mutes, rebaselines = self.store.mutes(), self.store.rebaselines()
        with self._guard:
            self._mutes = mutes
            changed = [
                name for name, since in rebaselines.items()
                if self._rebaselines.get(name) != since
                and (self._held is None or name in self._held)
            ]  # fmt: skip
            self._rebaselines.update({n: s for n, s in rebaselines.items() if n not in changed})
        for name in changed:
            if self.config.check(name) is not None:
                self.rebaseline(name, rebaselines[name])
        return changed

    def _share_run(self, result: RunResult) -> None:
        """Keep the run in the state store for the other replicas; call with the check's lock."""
        try:
            self.store.record_run(
                result.check, result.started, result.outcome, result.duration, result.error
            )
        except StateStoreError as exc:
            log.warning(
                "cannot record the check's run for the other replicas",
                extra={"fields": {"check": result.check, "error": str(exc)}},
            )

    def history(self, name: str, buckets: int) -> dict[str, list[Point]]:
        """Per segment, the verdicts of a check's newest ``buckets`` (at most its cached
        lookback), each judged again by a model that learned only what came before it: what the
        page draws. Replays are kept and carried forward bucket by bucket (see
        :class:`monitor.history.Replays`); a freshness check gives its data age over the last
        ``buckets`` steps of ``AGE_STEP`` against its current band."""
        check = self.check(name)
        if check.kind == "freshness":
            with self._guard:
                loads = self._loads.get(name)
                latest = self._latest.get((name, ""))
            if loads is None or latest is None:
                return {}
            rows = age_history(loads[0], self.clock(), latest.verdict, buckets, AGE_STEP)
            return {"": [Point.from_row(row) for row in rows]}
        saved = self.store.load_history(name, fingerprint(check))
        if saved is None:
            return {}
        with self._guard:
            rebaselined = self._rebaselines.get(name)
        key = (fingerprint(check), rebaselined, self.calendars.calendar(check))
        return self._replays.judged(check, saved[2], buckets, key)

    def rebaseline(self, name: str, since: datetime) -> list[Notification] | None:
        """Accept a check's level from ``since`` on (an intended change).

        Its models stop measuring against the old level, and an alert that is firing ends with
        a resolution saying why, so the new normal is not alerted on for days. A check another
        replica runs is only saved: that replica follows it within a lease renewal (``refresh``)
        and None is returned.

        :raises UnknownCheck: no check of that name is configured.
        """
        check = self.check(name)
        if not self.holds(name):
            self.store.save_rebaseline(name, since)
            return None
        with self._locks[name]:
            self.store.save_rebaseline(name, since)
            with self._guard:
                self._rebaselines[name] = since
                models = list(self._models[name].values())
            for model in models:
                model.acknowledge(pd.Timestamp(since))
            notes = self._close_episodes(
                check, f"baseline restarted from {since.isoformat()} (an intended change)", since
            )
        log.info(
            "baseline restarted", extra={"fields": {"check": name, "since": since.isoformat()}}
        )
        return notes

    def false_alarm(self, ref: AlertRef, reason: str) -> list[Notification]:
        """An alert answered as a false alarm: its episode, if still open, resolves saying
        ``reason``, and the series' models are rebuilt at its new sensitivity (worked out from
        the recorded answers) before its next bucket is judged."""
        check = self.check(ref.check)
        with self._locks[ref.check]:
            notes = self._close_episodes(check, reason, self.clock(), only=ref)
            with self._guard:
                self._factors_at.pop(ref.check, None)
                if notes:
                    self._hushed[(ref.check, ref.segment)] = ref.episode
        log.info(
            "alert answered as a false alarm",
            extra={"fields": {"check": ref.check, "segment": ref.segment,
                              "episode": ref.episode}},
        )  # fmt: skip
        return notes

    def _close_episodes(
        self,
        check: CheckConfig,
        reason: str,
        fallback: datetime,
        segments: Mapping[str, str] | None = None,
        only: AlertRef | None = None,
    ) -> list[Notification]:
        """Resolve the check's open episodes, saying why (not a recovery); call with the
        check's lock held. ``fallback``: the bucket named when a series has judged none.
        ``segments``: only theirs, each with its own reason; ``only``: that episode, if still
        open."""
        name = check.name
        self._incidents.close(name)
        with self._guard:
            firing = {
                k: s
                for k, s in self._states.items()
                if k[0] == name
                and s.firing
                and (segments is None or k[1] in segments)
                and (only is None or (k[1], s.episode) == (only.segment, only.episode))
            }
        notes = []
        for (_, segment), state in firing.items():
            assert state.since is not None
            latest = self._latest.get((name, segment))
            closed = AlertState(episode=state.episode, last_bucket=state.last_bucket)
            bucket = state.last_bucket or fallback
            # after a restart the episode may have no verdict in memory yet
            verdict = (
                latest.verdict
                if latest is not None
                else Verdict(pd.Timestamp(bucket), float("nan"), None, None, None, 0.0, False)
            )
            transition = Transition("resolved", state.episode, state.since, bucket)
            why = reason if segments is None else segments[segment]
            note = replace(self._notification(check, segment, verdict, transition), reason=why)
            self.store.record(name, segment, closed, [note], self.channels)
            with self._guard:
                self._states[(name, segment)] = closed
                if latest is not None:
                    self._latest[(name, segment)] = SeriesStatus(
                        name, segment, latest.verdict, closed
                    )
            self.metrics.set_firing((name, segment, check.severity, check.team), False)
            notes.append(note)
        return notes

    # --- a config reload ------------------------------------------------------------------

    def release(self, name: str) -> CheckMemory:
        """Take out everything held about a check, for the engine of a reloaded config; this
        engine must not run the check again."""
        with self._locks[name], self._guard:
            return CheckMemory(
                name=name,
                models=dict(self._models[name]),
                learned=dict(self._learned[name]),
                full=self._full.get(name),
                loads=self._loads.get(name),
                restored=name in self._restored,
                states={s: st for (c, s), st in self._states.items() if c == name},
                latest={s: st for (c, s), st in self._latest.items() if c == name},
                last_run=self._last_run.get(name),
                recent=self._incidents.recent(name),
                explained=self._incidents.latest(name),
                held=self._held is None or name in self._held,
            )

    def adopt(self, memory: CheckMemory) -> None:
        """Carry on a check from another engine's ``release``: its models, alert state and
        latest verdicts, as if it had run here."""
        name = memory.name
        with self._locks[name], self._guard:
            if self._held is not None:
                if not memory.held:
                    return
                self._held.add(name)
            self._models[name] = dict(memory.models)
            self._learned[name] = dict(memory.learned)
            if memory.full is not None:
                self._full[name] = memory.full
            if memory.loads is not None:
                self._loads[name] = memory.loads
            if memory.restored:
                self._restored.add(name)
            self._states.update({(name, s): st for s, st in memory.states.items()})
            for state in memory.states.values():
                self._note_judged(name, state)
            self._latest.update({(name, s): st for s, st in memory.latest.items()})
            if memory.last_run is not None:
                self._last_run[name] = memory.last_run
        self._incidents.adopt(name, memory.recent, memory.explained)

    def retire(self, name: str, reason: str) -> list[Notification]:
        """A check removed from the config, or redefined so that its series are other ones:
        its open alerts resolve, saying ``reason``, and its metrics go (a series that is gone
        must not keep an alert rule firing)."""
        check = self.check(name)
        if not self.holds(name):  # the replica holding it resolves them
            self.metrics.forget_check(name)
            return []
        with self._locks[name]:
            notes = self._close_episodes(check, reason, self.clock())
            self.metrics.forget_check(name)
        log.info(
            "check retired",
            extra={"fields": {"check": name, "reason": reason, "resolved": len(notes)}},
        )
        return notes

    def record_event(self, request: EventRequest) -> RecordedEvent:
        """Record a calendar event or exclusion window (persisted); the checks it applies to
        rebuild their models with it at their next run.

        :raises monitor.calendar.book.UnknownChecks: for a check name not configured."""
        event = self.calendars.record(request, self.config)
        self._recalendar(event)
        return event

    def delete_event(self, event_id: str) -> RecordedEvent | None:
        """Remove a recorded event or exclusion (None: no such id)."""
        event = self.calendars.delete(event_id)
        if event is not None:
            self._recalendar(event)
        return event

    def _recalendar(self, event: RecordedEvent) -> None:
        with self._guard:
            self._recalendared.update(
                c.name
                for c in self.config.checks
                if c.kind != "freshness" and event.applies_to(c.name)
            )

    def mute(self, name: str, until: datetime, reason: str) -> None:
        """Send no notification for the check until ``until`` (a planned backfill); its metrics
        and alert state go on, so what fires during the mute is visible in Prometheus."""
        self.store.save_mute(name, until, reason)
        with self._guard:
            self._mutes[name] = (until, reason)
        log.info(
            "check muted",
            extra={"fields": {"check": name, "until": until.isoformat(), "reason": reason}},
        )

    def muted(self, check: CheckConfig, now: datetime) -> bool:
        until = self._mutes.get(check.name, (None, ""))[0]
        return any(u is not None and u > now for u in (until, check.mute_until))

    def firing(self) -> list[tuple[str, str, int]]:
        """Open episodes as (check, segment, episode): of every replica's checks when shared."""
        if self._held is not None:
            return [(c, s, st.episode) for (c, s), st in self.store.load_states().items()
                    if st.firing and self.config.check(c) is not None]  # fmt: skip
        with self._guard:
            return [(c, s, st.episode) for (c, s), st in self._states.items() if st.firing]

    def alert_state(self, name: str, segment: str) -> AlertState:
        with self._guard:
            return self._states.get((name, segment), AlertState())

    # --- one run --------------------------------------------------------------------------

    def _run(self, check: CheckConfig) -> RunResult:
        started = self.clock()
        t0 = time.perf_counter()
        warehouse_name = self.config.warehouse_of(check)
        warehouse = self.warehouses[warehouse_name]
        labels = {"check": check.name, "warehouse": warehouse_name}
        try:
            rewound = self._rewind(check, started)
            if check.kind == "freshness":
                statuses, notes, verdicts = self._run_freshness(check, warehouse, started)
            else:
                statuses, notes, verdicts = self._run_series(check, warehouse, started)
            self._reached(warehouse, True)
        except WarehouseError as exc:
            # bad SQL or a malformed answer is the check's fault: the warehouse did answer
            self._reached(warehouse, not isinstance(exc, WarehouseUnavailable | QueryTimeout))
            # the log line names the warehouse in its own field; the run's error names it itself
            fields = {**labels, "error": exc.detail}
            return self._finish(check, "error", started, t0, error=str(exc), fields=fields)
        except StateStoreError as exc:
            # what was judged could not be saved: forget it, so the next run judges it again
            self._forget(check.name)
            return self._finish(check, "error", started, t0, error=str(exc), fields=labels)
        except Exception as exc:
            self._forget(check.name)
            log.exception("check run failed unexpectedly", extra={"fields": labels})
            return self._finish(check, "error", started, t0, error=f"{type(exc).__name__}: {exc}")
        if not statuses:
            outcome: Outcome = "no_data"
        elif any(s.state.firing for s in statuses):
            outcome = "anomaly"
        else:
            outcome = "ok"
        self.metrics.last_success.labels(check.name).set(time.time())
        return self._finish(
            check, outcome, started, t0, statuses=statuses, notes=rewound + notes,
            verdicts=verdicts,
        )  # fmt: skip

    def _rewind(self, check: CheckConfig, now: datetime) -> list[Notification]:
        """Judge again what was judged ahead of its time: buckets after the newest complete one
        now were judged while the clock was ahead (empty, so as zeros). Their series' episodes
        resolve saying so, their alert states go back to before the newest complete bucket (a
        freshness check's to none: its next run is judged as a first), and the check's models
        are rebuilt from the warehouse."""
        freshness = check.kind == "freshness"
        grain, zone = check.grain, check.timezone
        newest = to_utc(now) if freshness else last_complete(now, grain, zone, check.settle)
        with self._guard:
            judged = self._judged_until.get(check.name)
            if judged is None or to_utc(judged) <= newest:
                return []
            ahead = [
                (segment, state.episode)
                for (name, segment), state in self._states.items()
                if name == check.name and state.last_bucket is not None
                and to_utc(state.last_bucket) > newest
            ]  # fmt: skip
            self._judged_until.pop(check.name)
        reason = f"judged ahead of its time: the clock was past {newest.isoformat()}, then back"
        notes = self._close_episodes(check, "", now, segments={s: reason for s, _ in ahead})
        before = None if freshness else bucket_start(newest - pd.Timedelta(seconds=1), grain, zone)
        states: list[tuple[str, AlertState, list[Notification]]] = [
            (segment, AlertState(episode=episode, last_bucket=before), [])
            for segment, episode in ahead
        ]
        self.store.record_all(check.name, states, self.channels)
        with self._guard:
            for segment, state, _ in states:
                self._states[(check.name, segment)] = state
                self._note_judged(check.name, state)
        self._forget(check.name)
        log.warning(
            "buckets judged ahead of their time are judged again",
            extra={"fields": {"check": check.name, "newest": newest.isoformat()}},
        )
        return notes

    def _note_judged(self, name: str, state: AlertState) -> None:
        """Keep ``_judged_until`` up to date; call with the guard held (or in ``__init__``)."""
        judged = self._judged_until.get(name)
        if state.last_bucket is not None and (judged is None or state.last_bucket > judged):
            self._judged_until[name] = state.last_bucket

    def _reached(self, warehouse: Warehouse, up: bool) -> None:
        """Export whether a warehouse answered, and log when it comes back (its failure is in
        the failed run's own log line)."""
        self.metrics.warehouse_up.labels(warehouse.name).set(1 if up else 0)
        if warehouse.mark_reachable(up) is False and up:
            log.info("warehouse is back", extra={"fields": {"warehouse": warehouse.name}})

    def _finish(
        self,
        check: CheckConfig,
        outcome: Outcome,
        started: datetime,
        t0: float,
        *,
        error: str | None = None,
        statuses: list[SeriesStatus] | None = None,
        notes: list[Notification] | None = None,
        fields: dict[str, str] | None = None,
        verdicts: dict[str, list[Verdict]] | None = None,
    ) -> RunResult:
        elapsed = time.perf_counter() - t0
        self.metrics.runs.labels(check.name, outcome).inc()
        self.metrics.duration.labels(check.name).observe(elapsed)
        if error is not None:
            log.warning(
                "check run failed",
                extra={"fields": {"check": check.name, "error": error, **(fields or {})}},
            )
        return RunResult(
            check.name,
            outcome,
            started,
            elapsed,
            error,
            statuses or [],
            notes or [],
            verdicts or {},
        )

    def _follow_answers(self, check: CheckConfig, now: datetime) -> None:
        """Work out the check's sensitivity factors again when an answer came in or an hour
        passed; when one changed, the check's models are rebuilt (from the series cached in the
        state store) at the new sensitivity."""
        with self._guard:
            at = self._factors_at.get(check.name)
        if at is not None and now - at < FACTORS_REFRESH:
            return
        answers = self.store.answers.since(now - ANSWER_WINDOW, check.name)
        factors = series_factors(answers, now).get(check.name, {})
        with self._guard:
            changed = factors != self._factors.get(check.name, {})
            self._factors[check.name] = factors
            self._factors_at[check.name] = now
            if changed:
                self._restored.discard(check.name)
        if changed:
            self._forget(check.name)
            log.info(
                "sensitivity follows the answers to the check's alerts",
                extra={"fields": {"check": check.name, "factors": factors}},
            )

    def _run_series(
        self, check: CheckConfig, warehouse: Warehouse, now: datetime
    ) -> Committed:
        with self._guard:
            recalendared = check.name in self._recalendared
            self._recalendared.discard(check.name)
        if recalendared:
            self._forget(check.name)  # rebuilt with the new marks; judged buckets stay judged
        self._follow_answers(check, now)
        if check.name not in self._restored:
            self._restored.add(check.name)
            self._restore(check, now)
        known = self._known(check.name)
        window = self._query_window(check, now, known)
        frame, window = self._read(check, warehouse, window, now)
        since, segments, until = window.since, window.segments, window.until
        found = normalise(
            frame,
            check,
            now,
            # a full read re-ranks: a known segment it leaves out is no longer tracked
            expected=() if window.full else known,
            start=since if known else None,
            keep=segments,
        )
        closed: list[Notification] = []
        if window.full:
            ranked = window.segments
            if ranked is None:
                ranked = sorted(set(found) - NOT_RANKED)
            with self._guard:
                previous = self._full[check.name][1] if check.name in self._full else None
                # a segment firing since before a restart has no model yet, but must resolve
                held = known | {
                    segment
                    for (name, segment), state in self._states.items()
                    if name == check.name and state.firing
                }
            newest = newest_rows(frame, check)
            # vanished while the others go on: a table that stopped loading is an outage
            latest = max(newest.values(), default=pd.Timestamp(now))
            cutoff = latest - pd.Timedelta(self.config.state.retention.segments)
            ranking = rerank(ranked, previous, held, newest, cutoff, check.max_segments)
            found = {s: v for s, v in found.items() if s in ranking.tracked or s in NOT_RANKED}
            closed = self._untrack(check, ranking, now)
            with self._guard:
                self._full[check.name] = (now, ranking.tracked)
        elif set(found) - known:
            # a segment seen for the first time: learn its history with a full query next run
            with self._guard:
                self._full.pop(check.name, None)
            found = {s: v for s, v in found.items() if s in known}
        history: dict[str, pd.Series] | None = found if window.full else None

        def lookback() -> dict[str, pd.Series]:
            # the chart of an opening alert needs the whole lookback; a warm run re-reads it
            nonlocal history
            if history is None:
                start = bucket_start(now - check.effective_lookback, check.grain, check.timezone)
                full = series_query(check, warehouse.dialect, start, segments, until)
                history = normalise(warehouse.query(full.sql, full.params), check, now)
            return history

        def chart(segment: str) -> list[list[Any]]:
            if self.chart_buckets == 0:
                return []
            series = lookback().get(segment)
            return self._replay(check, series) if series is not None else []

        def beside(names: tuple[str, ...]) -> dict[str, list[list[Any]]]:
            read = lookback()
            recent = {n: read[n][-self.chart_buckets :] for n in names if n in read}
            return {
                n: [[b.isoformat(), float(v)] for b, v in zip(s.index, s.to_numpy(), strict=True)]
                for n, s in recent.items()
            }

        policy = alert_policy(check)
        judged = []
        for segment, series in found.items():
            if series.empty:
                continue
            bounds = Bounds(check.min, check.max)
            scored, replayed = self._score_new(check, segment, series)
            verdicts = [apply_bounds(v, bounds, policy.open_after) for v in scored]
            verdicts = self._hush(check.name, segment, verdicts)
            model = self._models[check.name][segment]
            judged.append(
                self._judge(check, segment, verdicts, policy, chart, model, replayed=replayed)
            )
        committed = self._commit(check, self._explained(check, judged, beside))
        self._keep_history(check, now, window, found)
        statuses, notes, judged_verdicts = committed
        return statuses, closed + notes, judged_verdicts

    def _untrack(self, check: CheckConfig, ranking: Ranking, now: datetime) -> list[Notification]:
        """Stop tracking the segments a re-rank dropped: their open alerts resolve saying why,
        their models, memory and metric series go (their alert state stays in the store, so a
        segment that comes back numbers its episodes on, until retention prunes it). When
        ``__other__`` sums other segments than before, its model learns its history again."""
        name = check.name
        notes = self._close_episodes(check, "", now, segments=ranking.dropped)
        with self._guard:
            for segment in ranking.dropped:
                self._models[name].pop(segment, None)
                self._learned[name].pop(segment, None)
                self._latest.pop((name, segment), None)
                self._states.pop((name, segment), None)
            if ranking.refolded:
                self._models[name].pop(OTHER_SEGMENT, None)
                self._learned[name].pop(OTHER_SEGMENT, None)
            returning = [s for s in ranking.tracked if (name, s) not in self._states]
        if returning:
            # a segment tracked again carries on from its saved state: its episodes' numbers,
            # and so their notifications' keys, are never used twice
            saved = self.store.load_states(name)
            with self._guard:
                for segment in returning:
                    if (name, segment) in saved:
                        self._states[(name, segment)] = saved[(name, segment)]
        for segment, reason in ranking.dropped.items():
            self.metrics.forget_series((name, segment, check.severity, check.team))
            log.info(
                "segment no longer tracked",
                extra={"fields": {"check": name, "segment": segment, "reason": reason}},
            )
        return notes

    def _explained(
        self,
        check: CheckConfig,
        judged: list[_Judged],
        beside: Callable[[tuple[str, ...]], dict[str, list[list[Any]]]],
    ) -> list[_Judged]:
        """The run's verdicts told to the drill-down; while an episode of the check is open,
        each alert opening now says what explains the incident, and the total's chart shows
        the segments that moved most (``beside``: their recent values) under it."""
        if not explainable(check):
            return judged
        self._incidents.record(check.name, [(j.segment, j.verdicts) for j in judged])
        states = {j.segment: j.state for j in judged}
        with self._guard:
            for (name, segment), state in self._states.items():
                if name == check.name:
                    states.setdefault(segment, state)
        opened = [s.since for s in states.values() if s.firing and s.since is not None]
        found = self._incidents.explain(
            check, min(opened) if opened else None, detector_spec(check).sensitivity
        )
        if found is None:
            return judged
        text = found.text(check.name)

        def told(note: Notification) -> Notification:
            if note.kind != "opened":
                return note
            if note.segment == TOTAL_SEGMENT and note.history and found.segments:
                note = replace(note, beside=beside(found.segments))
            return replace(note, explanation=text)

        return [replace(j, notes=[told(n) for n in j.notes]) for j in judged]

    def explanation(self, name: str) -> Explanation | None:
        """The drill-down of the check's open incident, if any."""
        return self._incidents.latest(name)

    def _hush(self, name: str, segment: str, verdicts: list[Verdict]) -> list[Verdict]:
        """A series answered as a false alarm: its deviation counts as normal until it is
        back in its band (``monitor.answers.hush``)."""
        with self._guard:
            if (name, segment) not in self._hushed:
                return verdicts
        out, lasting = [], True
        for verdict in verdicts:
            if lasting:
                verdict, lasting = hushed(verdict)
            out.append(verdict)
        if not lasting:
            self.store.answers.release(name, segment)
            with self._guard:
                self._hushed.pop((name, segment), None)
        return out

    def _restore(self, check: CheckConfig, now: datetime) -> None:
        """Rebuild a check's models from the series cached in the state store, so the first
        run after a restart reads only the buckets since, not the whole lookback."""
        saved = self.store.load_history(check.name, fingerprint(check))
        if saved is None:
            return
        full_at, ranked, cached = saved
        if now - full_at >= FULL_REFRESH:
            return
        for segment, points in cached.items():
            if len(points) < 2:
                continue
            index = pd.DatetimeIndex([to_utc(b) for b, _ in points])
            values = np.array([v for _, v in points], dtype=float)
            # the newest bucket is left to the next run to re-score, so it is exported at once
            model, _ = self._warmed(check, segment, index[:-1], values[:-1], replay=False)
            with self._guard:
                self._models[check.name][segment] = model
                self._learned[check.name][segment] = index[-2]
        with self._guard:
            self._full[check.name] = (full_at, ranked or [])
        log.info("models restored from the state store", extra={"fields": {"check": check.name}})

    def _restore_loads(self, check: CheckConfig) -> None:
        """A freshness check's load times cached in the state store (see ``_run_freshness``),
        so the first run after a restart reads only the loads since."""
        saved = self.store.load_history(check.name, fingerprint(check))
        if saved is None or not saved[2].get(""):
            return
        loaded = pd.DatetimeIndex([to_utc(moment) for moment, _ in saved[2][""]])
        with self._guard:
            self._loads[check.name] = (loaded.sort_values(), saved[0])

    def _keep_history(
        self, check: CheckConfig, now: datetime, window: Window, found: dict[str, pd.Series]
    ) -> None:
        """Cache what this run read, for the next start (see ``_restore``)."""
        with self._guard:
            full_at, ranked = self._full.get(check.name, (now, None))
        rows = []
        for segment, series in found.items():
            recent = series[series.index >= window.since]
            for bucket, value in zip(
                pd.DatetimeIndex(recent.index), recent.to_numpy(), strict=True
            ):
                rows.append((segment, bucket.to_pydatetime(), float(value)))
        self.store.save_history(
            check.name,
            fingerprint(check),
            full_at,
            ranked,
            rows,
            replace=window.full,
            keep_from=bucket_start(now - check.effective_lookback, check.grain, check.timezone),
        )

    def _fitted(
        self, check: CheckConfig, buckets: pd.DatetimeIndex, values: np.ndarray
    ) -> Detector:
        """A new model that has learned this history, re-based at the check's rebaseline."""
        return relearned(
            detector_spec(check),
            buckets,
            values,
            rebaselined=self._rebaselines.get(check.name),
            calendar=self.calendars.calendar(check),
        )[0]

    def _warmed(
        self,
        check: CheckConfig,
        segment: str,
        buckets: pd.DatetimeIndex,
        values: np.ndarray,
        *,
        replay: bool,
    ) -> tuple[Detector, list[Verdict]]:
        """``_fitted`` at the series' sensitivity (answers to its alerts may have raised it),
        carrying on from the alert state saved before a restart (the quiet period in progress);
        with ``replay`` (a first start), judging the history."""
        with self._guard:
            factor = self._factors.get(check.name, {}).get(segment, 1.0)
        return relearned(
            detector_spec(check, factor),
            buckets,
            values,
            rebaselined=self._rebaselines.get(check.name),
            state=self.alert_state(check.name, segment),
            judge=replay,
            calendar=self.calendars.calendar(check),
        )

    def _replay(self, check: CheckConfig, series: pd.Series) -> list[list[Any]]:
        """Verdicts of the last ``chart_buckets`` buckets, for the chart in the alert's thread."""
        buckets = pd.DatetimeIndex(series.index)
        values = series.to_numpy(dtype=float)
        cut = max(len(series) - self.chart_buckets, 0)
        model = self._fitted(check, buckets[:cut], values[:cut])
        return [point.row() for point in judge_again(model, buckets[cut:], values[cut:])]

    def _forget(self, name: str) -> None:
        """Drop a check's models; the next run rebuilds them from the warehouse and re-judges
        every bucket the state store has not recorded as judged."""
        with self._guard:
            self._models[name].clear()
            self._learned[name].clear()
            self._full.pop(name, None)
            self._loads.pop(name, None)
        self._incidents.forget(name)

    def _known(self, name: str) -> set[str]:
        with self._guard:  # other checks' runs add their models concurrently
            return set(self._models[name])

    def _read(
        self, check: CheckConfig, warehouse: Warehouse, window: Window, now: datetime
    ) -> tuple[pd.DataFrame, Window]:
        """Rows for ``window``; checks of one batch share one query (see ``batch_key``).

        A batch query reads what every member needs (the earliest ``since``, the whole lookback
        if one needs it) and serves the members that run after it, until a new bucket completes.
        When it fails for its SQL, one member's SQL is at fault: every member then reads alone,
        so the error stays with the check that caused it, and rejoins the batch once its own
        query succeeds.
        """
        group = self._batches.get(check.name)
        with self._guard:
            apart = set(self._apart)
        # replicas: the checks of a batch another replica runs are not read here
        members = [m for m in group or () if m.name not in apart and self.holds(m.name)]
        if check.name in apart or len(members) < 2:
            return self._read_alone(check, warehouse, window, now), window
        key = batch_key(check, self.config.warehouse_of(check))
        assert key is not None  # only metric and row_count checks are batched
        names = tuple(m.name for m in members)
        with self._batch_locks[key]:
            cached = self._batch_reads.get(key)
            if cached is None or cached.members != names or not _serves(cached.window, window):
                try:
                    cached = self._read_batch(check, members, warehouse, window, now)
                except QueryFailed as exc:
                    self._batch_reads.pop(key, None)
                    with self._guard:
                        self._apart.update(names)
                    log.info(
                        "a query shared by several checks failed: each reads alone until its"
                        " own query succeeds",
                        extra={"fields": {"checks": ",".join(names), "error": exc.detail}},
                    )
                    return self._read_alone(check, warehouse, window, now), window
                self._batch_reads[key] = cached
        column = batch_column(members.index(check))
        if column not in cached.frame.columns:
            return cached.frame, cached.window  # the warehouse answered oddly: normalise says how
        frame = cached.frame[[c for c in ("bucket", "segment") if c in cached.frame.columns]]
        return frame.assign(value=cached.frame[column]), cached.window

    def _read_alone(
        self, check: CheckConfig, warehouse: Warehouse, window: Window, now: datetime
    ) -> pd.DataFrame:
        since, segments, until = window.since, window.segments, window.until
        seen = self._seen(now)
        query = series_query(check, warehouse.dialect, since, segments, until, seen=seen)
        frame = warehouse.query(query.sql, query.params)
        with self._guard:
            self._apart.discard(check.name)  # its SQL works: it may share a query again
        return frame

    def _read_batch(
        self,
        check: CheckConfig,
        members: list[CheckConfig],
        warehouse: Warehouse,
        window: Window,
        now: datetime,
    ) -> _BatchRead:
        """One query for ``members``, covering what each of them needs next."""
        wanted = [window] + [
            self._query_window(m, now, self._known(m.name)) for m in members if m is not check
        ]
        full = any(w.full for w in wanted) or any(w.segments != window.segments for w in wanted)
        since = min(w.since for w in wanted)
        union = Window(since, window.until, None if full else window.segments, full)
        query = series_query(check, warehouse.dialect, union.since, union.segments, union.until,
                             members, seen=self._seen(now))  # fmt: skip
        frame = warehouse.query(query.sql, query.params)
        if full and check.dimensions and "segment" in frame.columns:
            ranked = sorted(set(frame["segment"].astype(str)) - NOT_RANKED)
            union = Window(union.since, union.until, ranked, True)
        return _BatchRead(union, frame, tuple(m.name for m in members))

    def _seen(self, now: datetime) -> datetime:
        """A re-rank ranks the segments with a row since then first: those without make way
        for live ones (see monitor.segments)."""
        return now - self.config.state.retention.segments

    def _query_window(self, check: CheckConfig, now: datetime, known: set[str]) -> Window:
        """What to read: from when, folding segments how.

        The first run of a check (and one a day after, to re-rank segments and pick up late
        revisions) reads the whole lookback; the others read from the newest learned bucket
        minus ``refetch_buckets``, so a warm run returns rows for new buckets only.
        """
        newest = last_complete(now, check.grain, check.timezone, check.settle)
        until = next_bucket(newest, check.grain, check.timezone)
        lookback_start = bucket_start(now - check.effective_lookback, check.grain, check.timezone)
        with self._guard:
            full = self._full.get(check.name)
            learned = list(self._learned[check.name].values())
        if full is None or not known or not learned or now - full[0] >= FULL_REFRESH:
            return Window(lookback_start, until, None, True)
        since = min(learned)
        for _ in range(check.refetch_buckets):
            since = bucket_start(since - pd.Timedelta(seconds=1), check.grain, check.timezone)
        # sql checks fold in the engine: by the ranking too, not by the counts of a short read
        segments = full[1] if check.dimensions or check.kind == "sql" else None
        return Window(max(since, lookback_start), until, segments, False)

    def _score_new(
        self, check: CheckConfig, segment: str, series: pd.Series
    ) -> tuple[list[Verdict], int]:
        """Verdicts for the buckets not judged before, and how many of the first ones are a
        replay: a series seen for the first time (no alert state) has the newer half of its
        history judged as ``backtest`` would, so the daemon starts with the episodes backtest
        shows; after a restart the model learns what was judged and judges only what came
        since."""
        models, learned_by_segment = self._models[check.name], self._learned[check.name]
        model = models.get(segment)
        replayed: list[Verdict] = []
        if model is None:
            judged = self.alert_state(check.name, segment).last_bucket
            # the newest bucket is always stepped, so a restarted daemon exports it at once (the
            # alert state ignores a bucket it has already judged)
            cut = len(series) - 1
            if judged is not None:
                cut = min(cut, int(series.index.searchsorted(to_utc(judged), side="right")))
            buckets = pd.DatetimeIndex(series.index)
            model, replayed = self._warmed(
                check, segment, buckets[:cut], series.to_numpy()[:cut], replay=judged is None
            )
            with self._guard:
                models[segment] = model
                if cut:
                    learned_by_segment[segment] = series.index[cut - 1]
        learned = learned_by_segment.get(segment)
        new = series if learned is None else series[series.index > learned]
        verdicts = [
            model.step(bucket, float(value))
            for bucket, value in zip(pd.DatetimeIndex(new.index), new.to_numpy(), strict=True)
        ]
        if len(new):
            with self._guard:
                learned_by_segment[segment] = new.index[-1]
        return replayed + verdicts, len(replayed)

    def _run_freshness(
        self, check: CheckConfig, warehouse: Warehouse, now: datetime
    ) -> Committed:
        start = to_utc(now - check.effective_lookback)
        if check.name not in self._restored:
            self._restored.add(check.name)
            self._restore_loads(check)
        with self._guard:
            cache = self._loads.get(check.name)
        # a warm run reads only loads since the newest one seen (less an overlap for late rows)
        warm = cache is not None and len(cache[0]) > 0 and now - cache[1] < FULL_REFRESH
        if cache is not None and warm:
            cached, full_at = cache
            since = cached.max() - FRESHNESS_OVERLAP
        else:
            cached, full_at, since = pd.DatetimeIndex([], tz="UTC"), now, start
        query = freshness_query(check, warehouse.dialect, since, now)
        fetched = _utc_index(warehouse.query(query.sql, query.params))
        loaded = cached[cached < since].union(fetched)
        loaded = loaded[loaded >= start]
        with self._guard:
            self._loads[check.name] = (loaded, full_at)
        # cached as a series' buckets are, so a restart reads only the loads since
        self.store.save_history(
            check.name,
            fingerprint(check),
            full_at,
            None,
            [("", moment.to_pydatetime(), 1.0) for moment in fetched[fetched >= start]],
            replace=not warm,
            keep_from=start.to_pydatetime(),
        )
        if len(loaded) == 0:
            query = newest_row_query(check, warehouse.dialect, now)
            loaded = _utc_index(warehouse.query(query.sql, query.params))
        verdict = assess(loaded, now, check.sensitivity or DEFAULT_SENSITIVITY, check.max_age)
        if verdict is None:
            return [], [], {}
        self.metrics.data_age.labels(check.name, "").set(verdict.value)

        def chart(_: str) -> list[list[Any]]:
            return age_history(loaded, now, verdict, self.chart_buckets, AGE_STEP)

        verdicts = self._hush(check.name, "", [verdict])
        return self._commit(check, [self._judge(check, "", verdicts, alert_policy(check), chart)])

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
    ) -> _Judged:
        """Feed verdicts to the series' alert state: its new state and notifications; the
        ``model``'s quiet period and hold are saved with it. The first ``replayed`` verdicts
        are history a first start judged: episodes that ended within it are not announced, the
        one still open at its end is (once, as opened)."""
        state = self.alert_state(check.name, segment)
        if model is not None:
            quiet = model.quiet_start
            sign, evidence = model.hold
            state = replace(
                state,
                quiet_start=quiet.to_pydatetime() if quiet is not None else state.quiet_start,
                hold_sign=sign,
                hold_evidence=evidence,
            )
        notes: list[Notification] = []
        opening: tuple[Verdict, Transition] | None = None
        for i, verdict in enumerate(verdicts):
            state, transition = advance(state, verdict, policy)
            if i < replayed:
                if transition is not None:
                    opening = (verdict, transition) if transition.kind == "opened" else None
                if i + 1 < replayed or opening is None or not state.firing:
                    continue
                verdict, transition = opening
            if transition is not None:
                note = self._notification(check, segment, verdict, transition)
                if note.kind == "opened" and chart is not None and self.channels:
                    rows = chart(segment)
                    note = replace(note, history=rows, calendar=self._chart_calendar(check, rows))
                notes.append(note)
        return _Judged(segment, verdicts, state, notes)

    def _chart_calendar(self, check: CheckConfig, rows: list[list[Any]]) -> list[list[str]]:
        """The holidays, events and exclusions over an alert chart's buckets."""
        if not rows or check.kind == "freshness":
            return []
        first, last = to_utc(pd.Timestamp(rows[0][0])), to_utc(pd.Timestamp(rows[-1][0]))
        spans = self.calendars.calendar(check).spans(first, last + pd.Timedelta(seconds=1))
        return [[s.kind, s.name, s.start.isoformat(), s.end.isoformat()] for s in spans]

    def _commit(
        self, check: CheckConfig, judged: list[_Judged]
    ) -> Committed:
        """Persist a run's states and queued notifications in one transaction, then (only once
        they are saved) publish them: memory, metrics and log."""
        muted = self.muted(check, self.clock())
        saved = [(j.segment, j.state, j.notes) for j in judged if j.verdicts]
        if saved:
            self.store.record_all(
                check.name,
                saved,
                [] if muted else self.channels,
                muted=muted,
                verdicts={j.segment: verdict_json(j.verdicts[-1]) for j in judged if j.verdicts},
            )
        statuses: list[SeriesStatus] = []
        notes: list[Notification] = []
        for j in judged:
            key = (check.name, j.segment)
            latest = self._latest.get(key)
            if j.verdicts:
                verdict = j.verdicts[-1]
                latest = SeriesStatus(check.name, j.segment, verdict, j.state)
                self._export(check, j.segment, verdict, j.state)
            with self._guard:
                self._states[key] = j.state
                self._note_judged(check.name, j.state)
                if latest is not None:
                    self._latest[key] = latest
            if latest is not None:
                statuses.append(latest)
            notes.extend(j.notes)
        for note in notes if self.announce else []:
            # an opening asks for attention; a resolution is news, not a warning
            log.log(
                logging.WARNING if note.kind == "opened" else logging.INFO,
                f"alert {note.kind}" + (" (muted)" if muted else ""),
                extra={
                    "fields": {
                        "check": note.check,
                        "segment": note.segment,
                        "episode": note.episode,
                        "value": note.value,
                        "expected": note.expected,
                        "lower": note.lower,
                        "upper": note.upper,
                        "score": round(note.score, 2),
                        "since": note.since.isoformat(),
                        "severity": note.severity,
                        "owner": note.owner,
                    }
                },
            )
            self.metrics.alerts_sent.labels("log", "ok").inc()
        return statuses, notes, {j.segment: j.verdicts for j in judged if j.verdicts}

    def _export(
        self, check: CheckConfig, segment: str, verdict: Verdict, state: AlertState
    ) -> None:
        self.metrics.set_series(
            (check.name, segment, check.severity, check.team),
            value=verdict.value,
            expected=verdict.expected,
            lower=verdict.lower,
            upper=verdict.upper,
            score=verdict.score,
            firing=state.firing,
            bucket_seconds=to_utc(verdict.bucket).timestamp(),
        )

    def _likely_cause(self, check: CheckConfig, since: datetime) -> str | None:
        """What the ``cause`` listener names for an alert opening; a failing listener is logged
        and the alert goes out without a cause rather than not at all."""
        if self._cause is None:
            return None
        try:
            return self._cause(check, since, self.clock())
        except Exception:
            log.exception("cause listener failed", extra={"fields": {"check": check.name}})
            return None

    def _notification(
        self,
        check: CheckConfig,
        segment: str,
        verdict: Verdict,
        transition: Transition,
    ) -> Notification:
        cause, reason = None, ""
        if transition.kind == "opened":
            reason = Bounds(check.min, check.max).reason(verdict.value)
            cause = self._likely_cause(check, to_utc(transition.since).to_pydatetime())
        return Notification(
            kind=transition.kind,
            check=check.name,
            segment=segment,
            episode=transition.episode,
            since=to_utc(transition.since).to_pydatetime(),
            bucket=to_utc(transition.bucket).to_pydatetime(),
            value=verdict.value,
            expected=verdict.expected,
            lower=verdict.lower,
            upper=verdict.upper,
            score=verdict.score,
            severity=check.severity,
            owner=check.owner,
            team=check.team,
            unit="seconds" if check.kind == "freshness" else "",  # a freshness value is an age
            labels=dict(check.labels),
            cause=cause,
            reason=reason,
            table=check.table,
            links={
                name: url
                for name, url in (
                    ("dashboard", render_link(self.config.links.dashboard, check.name, segment)),
                    ("runbook", render_link(self.config.links.runbook, check.name, segment)),
                )
                if url
            },
        )


def _run_result(name: str, run: StoredRun) -> RunResult:
    return RunResult(name, cast(Outcome, run.outcome), run.started, run.duration, run.error)


def _utc_index(frame: pd.DataFrame) -> pd.DatetimeIndex:
    """The first column of a freshness query as sorted, unique tz-aware UTC instants."""
    loaded = (
        pd.DatetimeIndex(pd.to_datetime(frame.iloc[:, 0].dropna()))
        if len(frame.columns)
        else pd.DatetimeIndex([])
    )
    loaded = loaded.tz_localize("UTC") if loaded.tz is None else loaded.tz_convert("UTC")
    return loaded.unique().sort_values()


def _serves(cached: Window, wanted: Window) -> bool:
    """Can rows read for ``cached`` answer a run that wants ``wanted``?"""
    if cached.until != wanted.until or cached.since > wanted.since:
        return False
    if wanted.full:
        return cached.full
    return cached.segments == wanted.segments


def fingerprint(check: CheckConfig) -> str:
    """What a check's cached series depends on: a config change invalidates the cache."""
    fields = ("kind", "table", "timestamp_column", "expression", "where", "dimensions",
              "max_segments", "sql", "grain", "timezone", "fill_missing", "warehouse")  # fmt: skip
    text = json.dumps(check.model_dump(include=set(fields), mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
