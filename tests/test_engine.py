"""The engine judges the demo's incidents and leaves healthy series alone; failures stay local."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
from prometheus_client import CollectorRegistry

from monitor.config import Config, parse_config
from monitor.demo import INCIDENTS
from monitor.detection import Verdict
from monitor.engine import Engine
from monitor.store import StateStore
from monitor.warehouse import open_warehouses
from tests.conftest import DEMO_NOW, EngineFactory, demo_document
from tests.duckdb_writes import write
from tests.fake_warehouse import recorded


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def firing(engine: Engine, config: Config) -> set[tuple[str, str]]:
    found = set()
    for check in config.checks:
        for status in engine.series(check.name):
            if status.state.firing:
                found.add((status.check, status.segment))
    return found


def demo_with_checks(demo_dir: Path, checks: list[dict[str, object]]) -> Config:
    """The demo config pointed at ``demo_dir``, its checks replaced by ``checks``."""
    document = demo_document(demo_dir)
    document["checks"] = checks
    return parse_config(document)


def test_demo_incidents_fire_and_healthy_series_stay_quiet(
    demo_config: Config, make_engine: EngineFactory
) -> None:
    engine = make_engine()
    outcomes = {c.name: engine.run(c.name).outcome for c in demo_config.checks}
    assert firing(engine, demo_config) == INCIDENTS
    assert outcomes == {
        "revenue": "anomaly",
        "average_order_value": "ok",
        "orders_rows": "ok",
        "orders_freshness": "ok",
        "events_freshness": "anomaly",
        "signups": "anomaly",
        "daily_customers": "ok",
    }
    r = engine.metrics.registry
    de = {"check": "revenue", "segment": "DE", "severity": "critical", "team": "revenue"}
    us = {**de, "segment": "US"}
    assert sample(r, "kpimon_anomaly", **de) == 1
    assert sample(r, "kpimon_anomaly", **us) == 0
    assert sample(r, "kpimon_anomaly_score", **de) < -4  # type: ignore[operator]
    assert sample(r, "kpimon_value", **de) < sample(r, "kpimon_lower_bound", **de)  # type: ignore[operator]
    lower, expected, upper = (
        sample(r, n, **us) for n in ("kpimon_lower_bound", "kpimon_expected", "kpimon_upper_bound")
    )
    assert lower < expected < upper  # type: ignore[operator]
    last_bucket = sample(r, "kpimon_bucket_timestamp_seconds", **us)
    assert last_bucket == (DEMO_NOW.replace(minute=0) - timedelta(hours=1)).timestamp()
    assert sample(r, "kpimon_data_age_seconds", check="events_freshness", segment="") > 4 * 3600  # type: ignore[operator]
    assert sample(r, "kpimon_check_runs_total", check="revenue", outcome="anomaly") == 1
    assert sample(r, "kpimon_check_runs_total", check="orders_rows", outcome="ok") == 1
    assert sample(r, "kpimon_warehouse_up", warehouse="default") == 1
    assert sample(r, "kpimon_check_last_success_timestamp_seconds", check="revenue") is not None


def test_each_episode_is_queued_once_and_survives_a_restart(
    demo_config: Config, demo_dir: Path, make_engine: EngineFactory
) -> None:
    store_path = demo_dir / "state.db"
    engine = make_engine(store=store_path)
    for check in demo_config.checks:
        engine.run(check.name)
        engine.run(check.name)  # a second run in the same bucket judges nothing new
    queued = StateStore(store_path).outbox.pending("slack")
    assert sorted(
        (e.notification.check, e.notification.segment, e.notification.kind) for e in queued
    ) == sorted((check, segment, "opened") for check, segment in INCIDENTS)
    restarted = make_engine(store=store_path, now=DEMO_NOW + timedelta(minutes=3))
    for check in demo_config.checks:
        restarted.run(check.name)
    assert len(StateStore(store_path).outbox.pending("slack")) == len(INCIDENTS)
    de = {"check": "revenue", "segment": "DE", "severity": "critical", "team": "revenue"}
    assert sample(restarted.metrics.registry, "kpimon_anomaly", **de) == 1


def test_a_failing_check_is_counted_and_the_others_run(
    demo_dir: Path, make_engine: EngineFactory
) -> None:
    document = demo_document(demo_dir)
    document["checks"].append(
        {
            "name": "broken_sql",
            "kind": "sql",
            "sql": "select * from no_such_table where ts >= :since",
        }
    )
    config = parse_config(document)
    engine = make_engine(config=config)
    results = {c.name: engine.run(c.name) for c in config.checks}
    assert results["broken_sql"].outcome == "error"
    assert "no_such_table" in (results["broken_sql"].error or "")
    assert results["revenue"].outcome == "anomaly"
    r = engine.metrics.registry
    assert sample(r, "kpimon_check_runs_total", check="broken_sql", outcome="error") == 1
    # bad SQL is the check's fault, not the warehouse's
    assert sample(r, "kpimon_warehouse_up", warehouse="default") == 1
    assert sample(r, "kpimon_check_last_success_timestamp_seconds", check="broken_sql") is None


def test_an_unreachable_warehouse_is_an_error_not_an_anomaly(
    demo_dir: Path, make_engine: EngineFactory
) -> None:
    document = demo_document(demo_dir)
    document["warehouse"]["path"] = str(demo_dir / "missing.duckdb")
    engine = make_engine(config=parse_config(document))
    result = engine.run("revenue")
    assert result.outcome == "error"
    assert "does not exist" in (result.error or "")
    assert sample(engine.metrics.registry, "kpimon_warehouse_up", warehouse="default") == 0
    assert engine.series("revenue") == []


def test_malformed_results_are_errors(demo_dir: Path, make_engine: EngineFactory) -> None:
    checks: list[dict[str, object]] = [
        {
            "name": "text_values",
            "kind": "sql",
            "grain": "day",
            "sql": "select date_trunc('day', order_ts) as bucket, 'many' as value from analytics.fct_orders where order_ts >= :since group by 1",
        },
        {
            "name": "no_bucket",
            "kind": "sql",
            "sql": "select 1 as value where current_date >= :since",
        },
    ]
    engine = make_engine(config=demo_with_checks(demo_dir, checks))
    assert "value 'many' is not a number" in (engine.run("text_values").error or "")
    assert "returned no bucket column" in (engine.run("no_bucket").error or "")


def test_new_buckets_are_scored_as_time_passes(make_engine: EngineFactory) -> None:
    clock = [DEMO_NOW]
    engine = make_engine(clock=lambda: clock[0])
    engine.run("orders_rows")
    first = engine.series("orders_rows")[0].verdict.bucket
    clock[0] = DEMO_NOW + timedelta(hours=2)
    engine.run("orders_rows")
    assert engine.series("orders_rows")[0].verdict.bucket == first + timedelta(hours=2)


def test_sql_checks_cannot_write(demo_dir: Path, make_engine: EngineFactory) -> None:
    checks: list[dict[str, object]] = [
        {
            "name": "sneaky",
            "kind": "sql",
            # closes the LIMIT wrapper around the check's query to slip a DELETE in between
            "sql": "select 1); delete from analytics.signups; select * from (select :since as bucket, 1 as value",
        }
    ]
    engine = make_engine(config=demo_with_checks(demo_dir, checks))
    result = engine.run("sneaky")
    assert result.outcome == "error"
    assert "read-only" in (result.error or "").lower()
    with duckdb.connect(str(demo_dir / "demo.duckdb"), read_only=True) as con:
        assert con.execute("select count(*) from analytics.signups").fetchone()[0] > 0  # type: ignore[index]


@pytest.mark.parametrize("hours_later", [13, 29, 47, 70, 101, 130])
def test_demo_is_judged_right_at_any_hour(
    tmp_path: Path, hours_later: int, make_engine: EngineFactory
) -> None:
    from monitor import demo

    now = DEMO_NOW + timedelta(hours=hours_later, minutes=hours_later % 50)
    demo.build(tmp_path / "demo.duckdb", now=now, seed=hours_later)
    config = parse_config(demo_document(tmp_path))
    engine = make_engine(config=config, now=now)
    for check in config.checks:
        assert engine.run(check.name).outcome != "error"
    assert firing(engine, config) == INCIDENTS


def test_a_warm_run_reads_only_the_newest_buckets(
    demo_config: Config, make_engine: EngineFactory
) -> None:
    clock = [DEMO_NOW - timedelta(hours=3)]
    warehouse, counting = recorded(open_warehouses(demo_config)["default"])
    engine = make_engine(warehouses={"default": warehouse}, clock=lambda: clock[0])
    engine.run("revenue")
    cold = counting.rows[-1]
    assert cold > 7 * 8 * 24 * 6  # 7 segments x 8 weeks of hours
    clock[0] = DEMO_NOW
    assert engine.run("revenue").outcome == "anomaly"
    warm = counting.rows[-1]
    # three new hours plus three re-read for late rows, for 7 segments and the total
    assert warm <= 8 * (3 + 3 + 1)
    assert "top_segments" not in counting.sql[-1] and "$s0" in counting.sql[-1]
    de = next(s for s in engine.series("revenue") if s.segment == "DE")
    assert de.state.firing and de.verdict.bucket.hour == 14
    # freshness reads the load minutes since the newest one it has seen, and judges the same
    clock[0] = DEMO_NOW - timedelta(minutes=30)
    engine.run("orders_freshness")
    assert counting.rows[-1] > 1000  # hourly loads over 8 weeks
    clock[0] = DEMO_NOW
    assert engine.run("orders_freshness").outcome == "ok"
    assert counting.rows[-1] <= 3  # the loads of the last hour and a half
    assert engine.series("orders_freshness")[0].verdict.expected == 3600


def test_a_segment_whose_rows_stop_is_judged_as_zero(
    demo_dir: Path, make_engine: EngineFactory
) -> None:
    clock = [DEMO_NOW - timedelta(hours=6)]
    engine = make_engine(clock=lambda: clock[0])
    engine.run("revenue")
    write(demo_dir / "demo.duckdb",
          "DELETE FROM analytics.fct_orders WHERE country = 'GB' AND order_ts >= ?",
          [(DEMO_NOW - timedelta(hours=5)).replace(tzinfo=None, minute=0)])
    clock[0] = DEMO_NOW
    engine.run("revenue")
    gb = next(s for s in engine.series("revenue") if s.segment == "GB")
    assert gb.verdict.value == 0 and gb.state.firing


def test_demo_incidents_resolve_when_the_data_recovers(
    demo_config: Config, make_engine: EngineFactory
) -> None:
    clock = [DEMO_NOW]
    engine = make_engine(clock=lambda: clock[0])
    store = engine.store
    # the incidents end within two hours; an episode holds until two buckets are back (revenue's
    # total, noisier than its segments, holds an hour longer)
    for minutes in (0, 60, 120, 180, 240, 300, 301, 302, 360):
        clock[0] = DEMO_NOW + timedelta(minutes=minutes)
        for check in demo_config.checks:
            engine.run(check.name)
    assert firing(engine, demo_config) == set()
    events = sorted((e.notification.check, e.notification.segment, e.notification.kind) for e in store.outbox.pending("slack"))
    assert events == sorted([(c, s, k) for c, s in INCIDENTS for k in ("opened", "resolved")])


def band_in_sigmas(verdict: Verdict) -> float:
    """Half-width of the upper band in the detector's robust standard units (log1p space)."""
    assert verdict.expected is not None and verdict.upper is not None
    sigma = (math.log1p(verdict.value) - math.log1p(verdict.expected)) / verdict.score
    return (math.log1p(verdict.upper) - math.log1p(verdict.expected)) / sigma


def test_a_restart_keeps_the_quiet_period_after_an_incident(
    demo_dir: Path, make_engine: EngineFactory
) -> None:
    """For a day after DE's outage a new deviation must leave a band twice as wide; a daemon
    restarted after the outage ended still knows, and so does one started for the first time
    (it judges the history as backtest does)."""
    clock = [DEMO_NOW]
    state = demo_dir / "state.db"

    running = make_engine(store=state, clock=lambda: clock[0])
    for hours in (0, 4):  # by 4 h the outage is over
        clock[0] = DEMO_NOW + timedelta(hours=hours)
        running.run("revenue")
    clock[0] = DEMO_NOW + timedelta(hours=6)
    restarted = make_engine(store=state, clock=lambda: clock[0])
    first_start = make_engine(clock=lambda: clock[0])
    widths = {}
    for name, daemon in (("running", running), ("restarted", restarted), ("new", first_start)):
        daemon.run("revenue")
        de = next(s for s in daemon.series("revenue") if s.segment == "DE")
        assert not de.state.firing and not de.verdict.anomalous
        widths[name] = band_in_sigmas(de.verdict)
    assert widths == pytest.approx({"running": 8.0, "restarted": 8.0, "new": 8.0})


def test_checks_on_one_table_share_one_query(demo_dir: Path, make_engine: EngineFactory) -> None:
    document = demo_document(demo_dir)
    revenue = document["checks"][0]
    document["checks"] = [
        revenue,
        {**revenue, "name": "orders", "kind": "row_count", "expression": None},
        {**revenue, "name": "basket", "expression": "avg(amount)", "fill_missing": "none"},
    ]
    config = parse_config(document)
    clock = [DEMO_NOW - timedelta(hours=2)]
    warehouse, counting = recorded(open_warehouses(config)["default"])
    engine = make_engine(config=config, warehouses={"default": warehouse}, clock=lambda: clock[0])
    for check in config.checks:
        engine.run(check.name)
    assert len(counting.sql) == 1 and "value_2" in counting.sql[0]
    clock[0] = DEMO_NOW
    for check in config.checks:
        engine.run(check.name)
    assert len(counting.sql) == 2 and "top_segments" not in counting.sql[1]
    # each check sees exactly what it would have read on its own
    alone = make_engine(config=parse_config({**document, "checks": [document["checks"][2]]}),
                        clock=lambda: clock[0])
    alone.run("basket")
    # (the warehouse may add the rows of the total's average in another order: the last bit)
    assert {s.segment: s.verdict.value for s in alone.series("basket")} == pytest.approx({
        s.segment: s.verdict.value for s in engine.series("basket")}, rel=1e-12)
    assert engine.run("revenue").outcome == "anomaly"  # DE is down, in the batch as alone


def test_a_restart_reads_only_what_is_new_from_the_cached_history(
    demo_config: Config, demo_dir: Path, make_engine: EngineFactory
) -> None:
    clock = [DEMO_NOW - timedelta(hours=2)]
    state = demo_dir / "state.db"
    first = make_engine(store=state, clock=lambda: clock[0])
    first.run("revenue")
    queued = len(StateStore(state).outbox.pending("slack"))
    clock[0] = DEMO_NOW
    warehouse, counting = recorded(open_warehouses(demo_config)["default"])
    restarted = make_engine(warehouses={"default": warehouse}, store=state,
                            clock=lambda: clock[0])
    assert restarted.run("revenue").outcome == "anomaly"
    # two new hours, the newest cached one re-scored, three re-read for late rows; 7 segments
    # and the total
    assert "top_segments" not in counting.sql[0] and counting.rows[0] <= 8 * (2 + 1 + 3 + 1)
    de = next(s for s in restarted.series("revenue") if s.segment == "DE")
    assert de.state.firing and de.verdict.bucket.hour == 14
    # the same verdicts as a daemon that never stopped
    fresh = make_engine(clock=lambda: clock[0])
    fresh.run("revenue")
    expected = {s.segment: round(s.verdict.expected or 0, 6) for s in fresh.series("revenue")}
    assert {s.segment: round(s.verdict.expected or 0, 6) for s in restarted.series("revenue")} == expected
    # the DE episode opened before the restart is not queued again
    assert len([e for e in StateStore(state).outbox.pending("slack") if e.notification.segment == "DE"]) == 1
    assert len(StateStore(state).outbox.pending("slack")) >= queued


def test_a_config_change_invalidates_the_cached_history(
    demo_dir: Path, make_engine: EngineFactory
) -> None:
    document = demo_document(demo_dir)
    state = demo_dir / "state.db"
    make_engine(config=parse_config(document), store=state).run("revenue")
    document["checks"][0]["where"] = "status <> 'cancelled'"
    changed = parse_config(document)
    warehouse, counting = recorded(open_warehouses(changed)["default"])
    make_engine(config=changed, warehouses={"default": warehouse}, store=state).run("revenue")
    assert "top_segments" in counting.sql[0]  # the whole lookback again


def test_an_opened_alert_is_a_warning_and_a_resolved_one_is_info(
    demo_dir: Path, caplog: pytest.LogCaptureFixture, make_engine: EngineFactory
) -> None:
    document = demo_document(demo_dir)
    document["checks"] = [{**c, "max": 10} for c in document["checks"] if c["name"] == "orders_rows"]
    state = demo_dir / "state.db"
    engine = make_engine(config=parse_config(document), store=state)
    with caplog.at_level("INFO", logger="monitor.engine"):
        assert engine.run("orders_rows").outcome == "anomaly"
        document["checks"][0].pop("max")  # the bound goes: the next buckets are normal again
        later = make_engine(
            config=parse_config(document), store=state, now=DEMO_NOW + timedelta(hours=3)
        )
        assert later.run("orders_rows").outcome == "ok"
    levels = {r.getMessage(): r.levelname for r in caplog.records if r.getMessage().startswith("alert ")}
    assert levels == {"alert opened": "WARNING", "alert resolved": "INFO"}


def test_a_warehouse_coming_back_is_logged(
    demo_dir: Path, caplog: pytest.LogCaptureFixture, make_engine: EngineFactory
) -> None:
    engine = make_engine()
    metrics = engine.metrics
    (demo_dir / "demo.duckdb").rename(demo_dir / "away.duckdb")
    with caplog.at_level("INFO", logger="monitor.engine"):
        assert engine.run("signups").outcome == "error"
        assert sample(metrics.registry, "kpimon_warehouse_up", warehouse="default") == 0
        (demo_dir / "away.duckdb").rename(demo_dir / "demo.duckdb")
        assert engine.run("signups").outcome == "anomaly"
        assert engine.run("orders_rows").outcome == "ok"
    back = [r for r in caplog.records if r.getMessage() == "warehouse is back"]
    assert [(r.levelname, r.fields) for r in back] == [("INFO", {"warehouse": "default"})]  # type: ignore[attr-defined]  # set by extra=
    assert sample(metrics.registry, "kpimon_warehouse_up", warehouse="default") == 1
