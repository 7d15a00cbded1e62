"""Deployment watches end to end on DuckDB: a breaking change fails and is blamed, a benign one
passes, an intended one passes and is not alerted on, a dropped column is reported, and a restart
keeps the watch. The clock is injected so a six-hour window takes no time."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from monitor.alerts.dispatch import Dispatcher
from monitor.alerts.slack import SlackChannel
from monitor.config import Config, parse_config
from monitor.deployments import DeploymentRequest, summary
from monitor.errors import StateStoreError, UnknownCheck
from monitor.exporter import Metrics
from monitor.scheduler import CheckScheduler
from monitor.store import StateStore
from monitor.watcher import DeploymentConflict, DeploymentWatcher
from tests.conftest import DEMO_NOW, EngineFactory, demo_document
from tests.duckdb_writes import write
from tests.fake_warehouse import HandlerWarehouse
from tests.slack_server import SlackServer

DEPLOYED = DEMO_NOW - timedelta(hours=2)  # 13:20 UTC; the first run judges up to the 12:00 bucket


class World:
    """An engine and a watcher wired as the daemon wires them, on one state file and clock."""

    watcher: DeploymentWatcher  # the engine's listeners call it: set right after the engine

    def __init__(
        self, make_engine: EngineFactory, config: Config, state: Path, clock: list[datetime]
    ) -> None:
        self.config = config
        self.clock = clock
        self.metrics = Metrics()
        self.store = StateStore(state)
        self.engine = make_engine(
            config=config,
            store=self.store,
            metrics=self.metrics,
            clock=lambda: clock[0],
            cause=lambda check, since, now: self.watcher.cause(check, since, now),
            after_run=lambda result: self.watcher.observe(result),
        )
        self.watcher = DeploymentWatcher(
            config,
            self.store,
            self.engine,
            self.metrics,
            channels=["slack"],
            clock=lambda: clock[0],
        )

    def run_all(self) -> None:
        for check in self.config.checks:
            self.engine.run(check.name)

    def outbox(self) -> list[Any]:
        return self.store.outbox.pending("slack")


def watched_config(demo_dir: Path, **slack: Any) -> Config:
    document = demo_document(demo_dir, **slack)
    document["defaults"]["post_deploy_window"] = "6h"
    # revenue is the money: its owners tighten the band from 4 to 3.5 robust standard units
    document["checks"][0]["sensitivity"] = 3.5
    return parse_config(document)


def started_world(make_engine: EngineFactory, config: Config, demo_dir: Path) -> World:
    """A world whose checks have run once, at DEPLOYED."""
    w = World(make_engine, config, demo_dir / "state.db", [DEPLOYED])
    w.watcher.snapshot_schemas()
    w.run_all()
    return w


@pytest.fixture
def config(demo_dir: Path) -> Config:
    return watched_config(demo_dir)


@pytest.fixture
def world(make_engine: EngineFactory, config: Config, demo_dir: Path) -> World:
    return started_world(make_engine, config, demo_dir)


def fan_out(demo_dir: Path, country: str, since: datetime) -> None:
    """A join fan-out in fct_orders: every order of one country appears twice from ``since`` on."""
    write(
        demo_dir / "demo.duckdb",
        "INSERT INTO analytics.fct_orders SELECT * FROM analytics.fct_orders"
        " WHERE country = ? AND order_ts >= ?",
        [country, since.replace(tzinfo=None)],
    )


def deploy(world: World, **fields: Any) -> str:
    request = DeploymentRequest(
        **{
            "id": "run-42",
            "environment": "production",
            "models": ["fct_orders"],
            "commit": "0123456789abcdef",
            "url": "https://ci.example.com/run/42",
            **fields,
        }
    )
    return world.watcher.record(request).id


def test_a_breaking_deployment_fails_and_its_alert_names_it(world: World, demo_dir: Path) -> None:
    deployment_id = deploy(world)
    recorded = world.watcher.get(deployment_id)
    assert recorded is not None and recorded.status == "watching"
    assert sorted(c.name for c in recorded.checks) == [
        "average_order_value",
        "daily_customers",
        "orders_rows",
        "revenue",
    ]
    fan_out(demo_dir, "US", DEPLOYED.replace(minute=0))
    world.clock[0] = DEMO_NOW
    world.run_all()
    failed = world.watcher.get(deployment_id)
    assert failed is not None and failed.status == "failed"
    # the alert fails it, with the drill-down of the check's incident: Germany's outage, under
    # way before, still explains the total's drop that the US doubling shrinks
    assert failed.reason.startswith("revenue [US] deviated after the deployment (DE -")
    assert "of the drop in revenue" in failed.reason
    assert [(d.check, d.segment) for d in failed.deviations] == [("revenue", "US")]
    us = next(
        e.notification
        for e in world.outbox()
        if e.kind == "alert" and e.notification.segment == "US"
    )
    assert us.cause == (
        "deployment run-42 to production, commit 0123456789ab, 0 min before the deviation "
        "began (https://ci.example.com/run/42)"
    )
    # the alerts already firing before the deployment are not blamed on it
    de = next(
        e.notification
        for e in world.outbox()
        if e.kind == "alert" and e.notification.segment == "DE"
    )
    assert de.cause is None
    report = next(e for e in world.outbox() if e.kind == "deployment")
    assert "run-42" in report.payload and '"status": "failed"' in report.payload
    r = world.metrics.registry
    assert r.get_sample_value("kpimon_deployments_total", {"environment": "production"}) == 1
    assert (
        r.get_sample_value(
            "kpimon_deployment_verdicts_total", {"environment": "production", "verdict": "failed"}
        )
        == 1
    )
    assert (
        r.get_sample_value(
            "kpimon_last_deployment_timestamp_seconds", {"environment": "production"}
        )
        == DEPLOYED.timestamp()
    )


def test_a_break_too_small_for_an_alert_fails_the_deployment_by_the_sequential_test(
    world: World, demo_dir: Path
) -> None:
    deployment_id = deploy(world)
    # a join that adds 40% to the US's revenue: under its alert band, hour after hour
    write(
        demo_dir / "demo.duckdb",
        "INSERT INTO analytics.fct_orders SELECT * FROM analytics.fct_orders"
        " WHERE country = 'US' AND order_ts >= ? AND order_id % 10 < 4",
        [DEPLOYED.replace(minute=0, tzinfo=None)],
    )
    for minutes in (0, 60, 120):
        world.clock[0] = DEMO_NOW + timedelta(minutes=minutes)
        world.run_all()
    failed = world.watcher.get(deployment_id)
    assert failed is not None and failed.status == "failed"
    assert not any(d.segment == "US" for d in failed.deviations)
    assert failed.reason.startswith("broke from the expected level after the deployment: ")
    assert "revenue [US] +" in failed.reason and "revenue [DE]" not in failed.reason
    tested = {(t["check"], t["segment"]): t for t in summary(failed)["tests"]}
    assert tested[("revenue", "US")]["broken"] and tested[("revenue", "US")]["buckets"] >= 2
    assert ("revenue", "DE") not in tested  # its outage began before the deployment


def test_a_benign_deployment_passes_when_the_window_ends(world: World) -> None:
    deployment_id = deploy(world)
    world.clock[0] = DEMO_NOW
    world.run_all()
    world.watcher.tick(deployment_id)
    watched = world.watcher.get(deployment_id)
    assert watched is not None and watched.status == "watching"
    world.clock[0] = DEPLOYED + timedelta(hours=6, minutes=1)
    world.watcher.tick(deployment_id)
    passed = world.watcher.get(deployment_id)
    assert passed is not None and passed.status == "passed" and passed.deviations == []
    assert (
        world.metrics.registry.get_sample_value(
            "kpimon_deployment_verdicts_total", {"environment": "production", "verdict": "passed"}
        )
        == 1
    )


def test_an_intended_change_passes_and_is_not_alerted_on(world: World, demo_dir: Path) -> None:
    # the fan-out doubles US orders: revenue and the row count rise, as the deployment says
    deployment_id = deploy(world, expect_change=["revenue", "orders_rows"])
    fan_out(demo_dir, "US", DEPLOYED.replace(minute=0))
    for hours in range(1, 7):
        world.clock[0] = DEPLOYED + timedelta(hours=hours)
        world.run_all()
    world.watcher.tick(deployment_id)
    passed = world.watcher.get(deployment_id)
    assert passed is not None and passed.status == "passed"
    assert not [e for e in world.outbox() if e.kind == "alert" and e.notification.segment == "US"]
    assert world.store.rebaselines() == {"revenue": DEPLOYED, "orders_rows": DEPLOYED}


def test_a_dropped_column_a_check_uses_fails_the_deployment(world: World, demo_dir: Path) -> None:
    write(demo_dir / "demo.duckdb", "ALTER TABLE analytics.fct_orders DROP COLUMN status")
    write(
        demo_dir / "demo.duckdb",
        "ALTER TABLE analytics.fct_orders ALTER COLUMN customer_id TYPE VARCHAR",
    )
    deployment_id = deploy(world)
    failed = world.watcher.get(deployment_id)
    assert failed is not None and failed.status == "failed"
    [change] = failed.schema_changes
    assert (change.table, change.removed, change.retyped) == (
        "analytics.fct_orders",
        ["status"],
        [("customer_id", "BIGINT", "VARCHAR")],
    )
    assert change.broken_checks == ["average_order_value", "daily_customers", "revenue"]
    assert (
        failed.reason == "removed a column that average_order_value, daily_customers, revenue uses"
    )


def test_a_restart_mid_window_keeps_the_watch(
    world: World, config: Config, demo_dir: Path, make_engine: EngineFactory
) -> None:
    deployment_id = deploy(world)
    world.store.close()
    fan_out(demo_dir, "US", DEPLOYED.replace(minute=0))
    restarted = World(make_engine, config, demo_dir / "state.db", [DEMO_NOW])
    assert [d.id for d in restarted.watcher.active()] == [deployment_id]
    restarted.run_all()
    watched = restarted.watcher.get(deployment_id)
    assert watched is not None and watched.status == "failed"


def test_deployments_are_unique_and_name_known_checks(world: World) -> None:
    deploy(world)
    with pytest.raises(DeploymentConflict):
        deploy(world)
    with pytest.raises(UnknownCheck, match="expect_change names unknown checks: nope"):
        deploy(world, id="run-43", expect_change=["nope"])


def test_a_deployment_touching_no_check_passes_at_once(world: World) -> None:
    deployment_id = deploy(world, models=["dim_marketing_spend"])
    passed = world.watcher.get(deployment_id)
    assert passed is not None and passed.status == "passed" and passed.checks == []
    assert passed.reason == "no check depends on the changed models"


def test_a_manifest_diff_picks_the_checks(world: World) -> None:
    first = world.watcher.record(
        DeploymentRequest(id="d1", environment="staging", manifest=compact("manifest_v1.json"))
    )
    assert len(first.checks) == 6  # first deployment: every model counts as changed
    second = world.watcher.record(
        DeploymentRequest(id="d2", environment="staging", manifest=compact("manifest_v2.json"))
    )
    assert second.models == ["fct_orders", "fct_refunds"]
    assert sorted(c.name for c in second.checks) == [
        "average_order_value",
        "daily_customers",
        "orders_freshness",
        "orders_rows",
        "revenue",
    ]


def compact(name: str) -> dict[str, Any]:
    from monitor.dbt import compact_manifest
    from tests.test_dbt import load

    return {k: v.model_dump() for k, v in compact_manifest(load(name)).items()}


def test_a_deployment_whose_save_fails_leaves_nothing_behind_and_its_retry_is_judged_afresh(
    world: World, demo_dir: Path
) -> None:
    world.watcher.record(
        DeploymentRequest(id="d1", environment="staging", manifest=compact("manifest_v1.json"))
    )
    before = world.store.deployments.manifest("staging")
    with sqlite3.connect(demo_dir / "state.db") as db:  # the deployment's own row cannot be written
        db.execute(
            "CREATE TRIGGER full BEFORE INSERT ON deployments BEGIN"
            " SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    second = DeploymentRequest(id="d2", environment="staging", manifest=compact("manifest_v2.json"))
    with pytest.raises(StateStoreError, match="database or disk is full"):
        world.watcher.record(second)
    assert world.store.deployments.manifest("staging") == before, "the new manifest went with the deployment"
    assert world.watcher.get("d2") is None
    assert not [e for e in world.outbox() if "d2" in e.payload]
    with sqlite3.connect(demo_dir / "state.db") as db:
        db.execute("DROP TRIGGER full")
    retried = world.watcher.record(second)  # the CI job retries with the same id
    assert retried.status == "watching"
    assert sorted(c.name for c in retried.checks) == [
        "average_order_value",
        "daily_customers",
        "orders_freshness",
        "orders_rows",
        "revenue",
    ]


def test_a_watcher_that_cannot_save_fails_neither_the_run_nor_the_delivery_of_its_alert(
    demo_dir: Path,
    slack: SlackServer,
    caplog: pytest.LogCaptureFixture,
    make_engine: EngineFactory,
) -> None:
    config = watched_config(
        demo_dir, token=slack.token, api_url=slack.url, channel="#data-alerts", group_wait="0s"
    )
    assert config.slack is not None
    world = started_world(make_engine, config, demo_dir)
    deploy(world)
    fan_out(demo_dir, "US", DEPLOYED.replace(minute=0))
    with sqlite3.connect(demo_dir / "state.db") as db:  # the deployment's deviation cannot be saved
        db.execute(
            "CREATE TRIGGER stuck BEFORE UPDATE ON deployments BEGIN"
            " SELECT RAISE(ABORT, 'database is locked'); END"
        )
    world.clock[0] = DEMO_NOW
    dispatcher = Dispatcher(
        config, world.store, world.metrics, SlackChannel(config.slack), None, _now
    )
    scheduler = CheckScheduler(config, world.engine, dispatcher, world.watcher)
    scheduler.start()  # every check runs at once, each run followed by a delivery round
    try:
        deadline = time.monotonic() + 60
        while not any("revenue [US]" in m.text for m in slack.posted()):
            assert time.monotonic() < deadline, [m.text for m in slack.posted()]
            time.sleep(0.1)
    finally:
        scheduler.shutdown()
    revenue = world.engine.last_run("revenue")
    assert revenue is not None and revenue.outcome == "anomaly", revenue
    assert "run listener failed" in caplog.text and "database is locked" in caplog.text


def test_an_alert_goes_out_without_a_cause_when_the_watcher_cannot_name_one(
    world: World, demo_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    deploy(world)
    fan_out(demo_dir, "US", DEPLOYED.replace(minute=0))
    with sqlite3.connect(demo_dir / "state.db") as db:  # the deployments cannot be read
        db.execute("DROP TABLE deployments")
    world.clock[0] = DEMO_NOW
    assert world.engine.run("revenue").outcome == "anomaly"
    us = next(
        e.notification
        for e in world.outbox()
        if e.kind == "alert" and e.notification.segment == "US"
    )
    assert us.cause is None
    assert "cause listener failed" in caplog.text


def _now() -> datetime:
    return datetime.now(UTC)


def in_thread(call: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def test_recording_a_deployment_blocks_neither_reads_nor_other_environments(
    world: World,
) -> None:
    deploy(world, id="earlier", models=["dim_marketing_spend"])
    inner = world.engine.warehouses["default"]
    reading, release = threading.Event(), threading.Event()

    def held(sql: str, params: Mapping[str, object]) -> pd.DataFrame:
        if "information_schema" in sql:  # a table's columns: wait until the test lets it go
            reading.set()
            assert release.wait(timeout=30)
        return inner.query(sql, params)

    world.engine.warehouses["default"] = HandlerWarehouse(held, dialect=inner.dialect)
    production = in_thread(lambda: deploy(world, id="slow", environment="production"))
    assert reading.wait(timeout=30), "the recording reads the watched tables' columns"
    # while it waits on the warehouse: reads answer, and another environment records
    reads = in_thread(lambda: (world.watcher.get("earlier"), world.watcher.active()))
    reads.join(timeout=10)
    assert not reads.is_alive(), "a read of another deployment waited for the recording"
    elsewhere = in_thread(lambda: deploy(world, id="other", environment="qa", models=["x"]))
    elsewhere.join(timeout=10)
    assert not elsewhere.is_alive(), "another environment waited for the recording"
    assert world.watcher.get("other") is not None
    assert world.watcher.get("slow") is None, "not recorded before its tables are read"
    release.set()
    production.join(timeout=30)
    recorded = world.watcher.get("slow")
    assert recorded is not None and recorded.status == "watching"
