"""Deployment watches: record a deployment, watch what it touched, reach and report a verdict.

The pure rules live in :mod:`monitor.deployments`; this module keeps them in the state store
(so a restart mid-window keeps the watch), reads table schemas before and after, restarts the
baselines of intended changes, and queues the verdict's report on the outbox.
"""

from __future__ import annotations

import json
import logging
import threading
import zlib
from collections.abc import Callable
from datetime import datetime, timedelta

from monitor.alerts.notification import Notification
from monitor.config import CheckConfig, Config
from monitor.dbt import changed_nodes, manifest_text, stored_checksums
from monitor.deployments import (
    Deployment,
    DeploymentRequest,
    Deviation,
    SchemaChange,
    describe_cause,
    finish_if_due,
    likely_cause,
    onset_after,
    record_deviation,
    record_evidence,
    record_schema,
    schema_change,
    start,
)
from monitor.engine import Engine, RunResult
from monitor.errors import KpiMonitorError, StateStoreError, UnknownCheck, WarehouseError
from monitor.exporter import Metrics
from monitor.store import StateStore

log = logging.getLogger("monitor.deployments")

ENVIRONMENT_LOCKS = 16


class DeploymentConflict(KpiMonitorError):
    """A deployment with this id was already recorded."""


def judging_lag(check: CheckConfig) -> timedelta:
    """How long after a bucket starts it is judged: its length plus ``settle`` (a freshness
    check judges every run, to the minute)."""
    if check.kind == "freshness":
        return timedelta(minutes=1)
    return timedelta(seconds=check.bucket_seconds) + check.settle


class DeploymentWatcher:
    def __init__(
        self,
        config: Config,
        store: StateStore,
        engine: Engine,
        metrics: Metrics,
        *,
        channels: list[str],
        clock: Callable[[], datetime],
        annotate: Callable[[Deployment], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.engine = engine
        self.metrics = metrics
        self.channels = channels
        self.clock = clock
        self.annotate = annotate
        self._lock = threading.RLock()
        # recordings to one environment take turns (a fixed set of locks, by environment)
        self._environments = [threading.Lock() for _ in range(ENVIRONMENT_LOCKS)]
        self._recording: set[str] = set()
        self._longest_window = max(c.post_deploy_window for c in config.checks)
        watching = store.deployments.documents(status="watching")
        self._active = {d.id: d for d in map(Deployment.from_json, watching)}

    def reconfigure(self, config: Config, engine: Engine, channels: list[str]) -> None:
        """Follow a reloaded config: watches in progress go on; a watched check that was
        removed is no longer run (its window ends as it would)."""
        with self._lock:
            self.config, self.engine, self.channels = config, engine, channels
            self._longest_window = max(c.post_deploy_window for c in config.checks)

    # --- queries ----------------------------------------------------------------------------

    def active(self) -> list[Deployment]:
        with self._lock:
            return list(self._active.values())

    def refresh(self) -> list[Deployment]:
        """Replicas: follow the deployments recorded or decided through another replica; the
        ones to watch here too (each replica runs the watched checks it holds)."""
        watching = self.store.deployments.documents("watching")
        stored = {d.id: d for d in map(Deployment.from_json, watching)}
        with self._lock:
            known = set(self._active) | self._recording
            new = [d for i, d in stored.items() if i not in known]
            for gone in set(self._active) - set(stored):
                del self._active[gone]
            self._active.update({d.id: d for d in new})
        return new

    def get(self, deployment_id: str) -> Deployment | None:
        with self._lock:
            if deployment_id in self._active:
                return self._active[deployment_id]
        document = self.store.deployments.get(deployment_id)
        return Deployment.from_json(document) if document else None

    def cause(self, check: CheckConfig, since: datetime, now: datetime) -> str | None:
        """The likely-cause line for an alert on ``check`` whose deviation began at ``since``."""
        recent = [
            Deployment.from_json(doc)
            for doc in self.store.deployments.documents(
                since=now - self._longest_window - judging_lag(check)
            )
        ]
        found = likely_cause(recent, check.name, since, judging_lag(check), now)
        return describe_cause(found, since) if found else None

    # --- recording ----------------------------------------------------------------------------

    def record(self, request: DeploymentRequest) -> Deployment:
        """Record a deployment and start watching what it touched.

        What it brings is saved with it in one transaction, or nothing is: the environment's
        new manifest, the columns of its tables, the report of a deployment decided at once; a
        call that failed can be repeated with the same id. Recordings to one environment take
        turns, each diffing against the manifest the one before saved; the watcher's own lock
        (which every read of a deployment takes) is never held while a manifest is diffed or a
        warehouse read.
        """
        unknown = [n for n in request.expect_change if self.config.check(n) is None]
        if unknown:
            raise UnknownCheck(
                *unknown, message=f"expect_change names unknown checks: {', '.join(unknown)}"
            )
        manifest = manifest_text(request.manifest) if request.manifest is not None else None
        stripe = self._environments[zlib.crc32(request.environment.encode()) % ENVIRONMENT_LOCKS]
        with stripe:
            self._reserve(request.id)
            try:
                now = self.clock()
                deployment, schemas = self._start(request, now)
                decided = deployment.status != "watching"
                report = (_report_key(deployment), deployment.to_json(), self.channels)
                if not self.store.deployments.record(
                    deployment.id,
                    deployment.environment,
                    deployment.status,
                    deployment.received_at,
                    deployment.to_json(),
                    manifest=manifest,
                    schemas=schemas,
                    report=report if decided else None,
                ):
                    raise DeploymentConflict(f"deployment {request.id!r} was already recorded")
                if not decided:
                    with self._lock:
                        self._active[deployment.id] = deployment
            finally:
                with self._lock:
                    self._recording.discard(request.id)
        self.metrics.deployments.labels(request.environment).inc()
        for verdict in ("passed", "failed"):
            # born at 0, so increase() sees the first verdict of an environment
            self.metrics.deployment_verdicts.labels(request.environment, verdict)
        self.metrics.last_deployment.labels(request.environment).set(now.timestamp())
        log.info(
            "deployment recorded",
            extra={
                "fields": {
                    "deployment": deployment.id,
                    "environment": deployment.environment,
                    "checks": [c.name for c in deployment.checks],
                    "watch_until": deployment.watch_until.isoformat(),
                }
            },
        )
        for watched in deployment.checks:
            if watched.intended:
                self.engine.rebaseline(watched.name, now)
        if self.annotate is not None:
            self.annotate(deployment)
        if decided:
            self._finished(deployment)
        return deployment

    def _reserve(self, deployment_id: str) -> None:
        """Claim an id for one recording at a time; the store's primary key is the last word."""
        with self._lock:
            taken = deployment_id in self._recording or deployment_id in self._active
            if not taken:
                self._recording.add(deployment_id)
        if not taken and self.store.deployments.get(deployment_id) is not None:
            with self._lock:
                self._recording.discard(deployment_id)
            taken = True
        if taken:
            raise DeploymentConflict(f"deployment {deployment_id!r} was already recorded")

    def _start(
        self, request: DeploymentRequest, now: datetime
    ) -> tuple[Deployment, dict[str, str]]:
        """The new deployment (nothing saved yet), and the columns read from its tables."""
        models, relations = list(request.models), []
        if request.manifest is not None:
            stored = self.store.deployments.manifest(request.environment)
            changed = changed_nodes(
                stored_checksums(stored) if stored else None,
                request.manifest,
                set(request.ran) if request.ran is not None else None,
            )
            models = list(dict.fromkeys([*models, *(n.name for n in changed.values())]))
            relations = [n.relation for n in changed.values() if n.relation]
        deployment = start(
            self.config,
            id=request.id,
            environment=request.environment,
            received_at=now,
            models=models,
            relations=relations,
            expect_change=list(request.expect_change),
            commit=request.commit,
            url=request.url,
            ran=sorted(request.ran or []),
        )
        changes, columns = self._schema_changes(deployment)
        return record_schema(deployment, changes, now), columns

    def _schema_changes(self, deployment: Deployment) -> tuple[list[SchemaChange], dict[str, str]]:
        """Compare each watched table's columns with the snapshot taken before the deployment;
        the columns read are the next snapshot (saved with the deployment)."""
        changes, columns = [], {}
        checks = [self.config.check(c.name) for c in deployment.checks]
        for table, check in {c.table: c for c in checks if c is not None and c.table}.items():
            before = self.store.deployments.table_schema(table)
            try:
                after = self._read_columns(check)
            except WarehouseError as exc:
                log.warning(
                    "cannot read table columns",
                    extra={"fields": {"table": table, "error": str(exc)}},
                )
                continue
            if before is not None:
                change = schema_change(table, json.loads(before), after, self.config.checks)
                if change is not None:
                    changes.append(change)
            columns[table] = json.dumps(after)
        return changes, columns

    def _read_columns(self, check: CheckConfig) -> dict[str, str]:
        assert check.table is not None
        warehouse = self.engine.warehouses[self.config.warehouse_of(check)]
        return warehouse.columns(check.table)

    def snapshot_schemas(self) -> None:
        """Remember the columns of every checked table not seen yet (the 'before' of the first
        deployment); later deployments refresh what they touched. Runs at start and then
        periodically, so a table missed while the warehouse or state store was down is caught
        up."""
        for table, check in {c.table: c for c in self.config.checks if c.table}.items():
            try:
                if self.store.deployments.table_schema(table) is not None:
                    continue
                columns = json.dumps(self._read_columns(check))
                self.store.deployments.save_table_schema(table, columns)
            except (WarehouseError, StateStoreError) as exc:
                log.warning(
                    "cannot snapshot table columns; retried later",
                    extra={"fields": {"table": table, "error": str(exc)}},
                )

    # --- watching ------------------------------------------------------------------------------

    def observe(self, result: RunResult) -> None:
        """Engine hook: a watched check's series that broke from its expected level after the
        deployment (the sequential test), or an alert opened on it, fails its deployment."""
        check = self.config.check(result.check)
        if check is None:
            return
        now = self.clock()
        # an alert is the verdict with the most to say; the test then catches what it missed
        for note in (n for n in result.notifications if n.kind == "opened"):
            for deployment in self.active():
                self._deviation(deployment, check, note, now)
        if result.verdicts:
            for deployment in self.active():
                self._test(deployment, check, result, now)

    def _test(
        self, deployment: Deployment, check: CheckConfig, result: RunResult, now: datetime
    ) -> None:
        watched = deployment.watched(check.name)
        if watched is None or watched.intended or now > watched.until:
            return
        lag = judging_lag(check)
        # a series whose incident was under way before the deployment is not its doing
        tested = {
            segment: verdicts
            for segment, verdicts in result.verdicts.items()
            if not self._under_way(deployment, check, segment, lag)
        }
        updated = self._change(
            deployment.id, lambda current: record_evidence(current, check, tested, lag, now)
        )
        if updated is not None and updated.status != "watching":
            self._finish(updated)

    def _under_way(
        self, deployment: Deployment, check: CheckConfig, segment: str, lag: timedelta
    ) -> bool:
        state = self.engine.alert_state(check.name, segment)
        return (
            state.firing
            and state.since is not None
            and not onset_after(deployment, state.since, lag)
        )

    def _deviation(
        self, deployment: Deployment, check: CheckConfig, note: Notification, now: datetime
    ) -> None:
        watched = deployment.watched(check.name)
        if watched is None or now > watched.until:
            return
        if not onset_after(deployment, note.since, judging_lag(check)):
            return
        deviation = Deviation(
            note.check,
            note.segment,
            note.value,
            note.expected,
            note.score,
            note.since,
            watched.intended,
            note.explanation,
        )
        updated = self._change(deployment.id, lambda d: record_deviation(d, deviation, now))
        if updated is not None and updated.status != "watching":
            self._finish(updated)

    def tick(self, deployment_id: str) -> None:
        """Pass the deployment if its windows all ended quietly."""
        with self._lock:
            if deployment_id not in self._active:
                return
        updated = self._change(deployment_id, lambda d: finish_if_due(d, self.clock()))
        if updated is not None and updated.status != "watching":
            self._finish(updated)

    def _change(
        self, deployment_id: str, change: Callable[[Deployment], Deployment]
    ) -> Deployment | None:
        """Apply ``change`` to the deployment as stored, under its row lock: replicas seeing
        its checks at once each build on the other's change, and one of them only decides
        it. The changed deployment, or None when it was decided already or did not change."""
        changed: Deployment | None = None

        def apply(document: str) -> tuple[str, str] | None:
            nonlocal changed
            current = Deployment.from_json(document)
            updated = change(current) if current.status == "watching" else current
            if updated == current:
                return None
            changed = updated
            return updated.status, updated.to_json()

        with self._lock:
            self.store.deployments.change(deployment_id, apply)
            stored = changed
            if stored is not None and stored.status == "watching":
                self._active[deployment_id] = stored
            elif stored is None and deployment_id in self._active:
                document = self.store.deployments.get(deployment_id)
                latest = Deployment.from_json(document) if document else None
                if latest is None or latest.status != "watching":
                    del self._active[deployment_id]  # decided through another replica
        return stored

    def _finish(self, deployment: Deployment) -> None:
        """A watch ended with a verdict (saved): publish it and queue its report."""
        self._finished(deployment)
        self.store.outbox.enqueue(
            _report_key(deployment), "deployment", deployment.to_json(), self.channels
        )

    def _finished(self, deployment: Deployment) -> None:
        with self._lock:
            self._active.pop(deployment.id, None)
        self.metrics.deployment_verdicts.labels(deployment.environment, deployment.status).inc()
        log.log(
            logging.WARNING if deployment.status == "failed" else logging.INFO,
            f"deployment {deployment.status}",
            extra={
                "fields": {
                    "deployment": deployment.id,
                    "environment": deployment.environment,
                    "reason": deployment.reason,
                }
            },
        )


def _report_key(deployment: Deployment) -> str:
    return f"deployment/{deployment.id}/{deployment.status}"
