"""Recording a deployment: what it touched, its tables' columns before and after, its start.

The pure rules live in :mod:`monitor.deployments` and :mod:`monitor.dbt`; this module reads the
environment's stored manifest and the tables' columns, saves the deployment with them in one
transaction, and restarts the baselines of intended changes.
"""

from __future__ import annotations

import json
import logging
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from monitor.config import CheckConfig, Config
from monitor.dbt import changed_nodes, manifest_text, stored_checksums
from monitor.deployments import (
    Deployment,
    DeploymentRequest,
    SchemaChange,
    record_schema,
    schema_change,
    start,
)
from monitor.engine import Engine
from monitor.errors import StateStoreError, UnknownCheck, WarehouseError
from monitor.exporter import Metrics
from monitor.store import StateStore
from monitor.watches import DeploymentConflict, Watches, report_key

log = logging.getLogger("monitor.deployments")

ENVIRONMENT_LOCKS = 16


@dataclass
class DeploymentRecorder:
    """Owns recording a deployment (validation, the manifest diff, the schema changes, the
    transaction that saves them) and the snapshots of the checked tables' columns that the
    next deployment compares with. Its config and engine follow a reload (the watcher sets
    them)."""

    config: Config
    store: StateStore
    engine: Engine
    metrics: Metrics
    watches: Watches
    clock: Callable[[], datetime]
    annotate: Callable[[Deployment], None] | None = None
    # recordings to one environment take turns (a fixed set of locks, by environment)
    _environments: list[threading.Lock] = field(
        init=False, default_factory=lambda: [threading.Lock() for _ in range(ENVIRONMENT_LOCKS)]
    )

    def record(self, request: DeploymentRequest) -> Deployment:
        """Record a deployment and start watching what it touched.

        What it brings is saved with it in one transaction, or nothing is: the environment's
        new manifest, the columns of its tables, the report of a deployment decided at once; a
        call that failed can be repeated with the same id. Recordings to one environment take
        turns, each diffing against the manifest the one before saved; the watches' lock
        (which every read of a deployment takes) is never held while a manifest is diffed or a
        warehouse read.

        :raises UnknownCheck: ``expect_change`` names a check not configured.
        :raises DeploymentConflict: a deployment with that id was recorded already.
        """
        unknown = [n for n in request.expect_change if self.config.check(n) is None]
        if unknown:
            raise UnknownCheck(
                *unknown, message=f"expect_change names unknown checks: {', '.join(unknown)}"
            )
        manifest = manifest_text(request.manifest) if request.manifest is not None else None
        stripe = self._environments[zlib.crc32(request.environment.encode()) % ENVIRONMENT_LOCKS]
        with stripe:
            self.watches.reserve(request.id)
            watched = None
            try:
                now = self.clock()
                deployment, schemas = self._start(request, now)
                decided = deployment.status != "watching"
                report = (report_key(deployment), deployment.to_json(), self.watches.channels)
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
                watched = None if decided else deployment
            finally:
                self.watches.recorded(request.id, watched)
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
        for check in deployment.checks:
            if check.intended:
                self.engine.rebaseline(check.name, now)
        if self.annotate is not None:
            self.annotate(deployment)
        if decided:
            self.watches.finished(deployment)
        return deployment

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
