"""Freshness checks: the data age is measured to the newest row's own timestamp, every run
(however short the schedule) is judged, and a restart reads only the loads since the ones cached
in the state store.

Real DuckDB files and SQLite state stores; the engine with an injected clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd

from monitor.config import Config, parse_config
from monitor.warehouse import open_warehouses
from tests.conftest import EngineFactory
from tests.fake_warehouse import recorded

NEWEST = datetime(2026, 11, 26, 15, 19, 50)  # naive UTC: the newest row, 50 s into its minute


def build_loads(path: Path) -> None:
    """``kpi.events(loaded_at)``: a load of three rows every 15 minutes for three weeks, the
    newest at NEWEST."""
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA kpi")
        con.execute(
            "CREATE TABLE kpi.events AS SELECT ts - INTERVAL (r) SECOND AS loaded_at"
            " FROM range(?::TIMESTAMP - INTERVAL 21 DAY, ?::TIMESTAMP + INTERVAL 1 SECOND,"
            " INTERVAL 15 MINUTE) t(ts), range(3) g(r)",
            [NEWEST, NEWEST],
        )


def loads_config(directory: Path, **fields: object) -> Config:
    build_loads(directory / "loads.duckdb")
    check = {"name": "events_fresh", "kind": "freshness", "table": "kpi.events",
             "timestamp_column": "loaded_at", **fields}  # fmt: skip
    document = {
        "warehouse": {"kind": "duckdb", "path": str(directory / "loads.duckdb")},
        "state": {"path": str(directory / "state.db")},
        "checks": [check],
    }
    return parse_config(document, "loads.yaml")


def at(seconds_after_newest: float) -> datetime:
    return NEWEST.replace(tzinfo=UTC) + timedelta(seconds=seconds_after_newest)


def test_the_data_age_is_measured_to_the_newest_rows_own_timestamp(
    tmp_path: Path, make_engine: EngineFactory
) -> None:
    engine = make_engine(config=loads_config(tmp_path), now=at(20))
    assert engine.run("events_fresh").outcome == "ok"
    age = engine.metrics.registry.get_sample_value(
        "kpimon_data_age_seconds", {"check": "events_fresh", "segment": ""}
    )
    assert age == 20  # not 70: the newest row's minute began 70 s ago
    [status] = engine.series("events_fresh")
    assert status.verdict.expected == 15 * 60


def test_a_schedule_shorter_than_a_minute_judges_every_run(
    tmp_path: Path, make_engine: EngineFactory
) -> None:
    config = loads_config(tmp_path, max_age="30s", schedule="30s")
    now = [at(15)]
    engine = make_engine(config=config, clock=lambda: now[0])
    outcomes = []
    for seconds in (15, 45):  # two runs within one minute: the age crosses max_age between them
        now[0] = at(seconds)
        outcomes.append(engine.run("events_fresh").outcome)
    assert outcomes == ["ok", "anomaly"]
    [status] = engine.series("events_fresh")
    assert status.state.firing and status.verdict.value == 45


def test_a_restart_reads_only_the_loads_since_those_cached(
    tmp_path: Path, make_engine: EngineFactory
) -> None:
    config = loads_config(tmp_path)
    first = make_engine(config=config, store=config.state.path, now=at(-600))
    assert first.run("events_fresh").outcome == "ok"
    warehouse, counting = recorded(open_warehouses(config)["default"])
    restarted = make_engine(config=config, warehouses={"default": warehouse},
                            store=config.state.path, now=at(20))  # fmt: skip
    assert restarted.run("events_fresh").outcome == "ok"
    # one query, for the loads since an hour before the newest cached one (late rows)
    assert len(counting.rows) == 1 and counting.rows[0] <= 6
    never_stopped = make_engine(config=config, now=at(20))
    never_stopped.run("events_fresh")
    [fresh], [restored] = never_stopped.series("events_fresh"), restarted.series("events_fresh")
    assert restored.verdict == fresh.verdict
    # the page's data age chart has the cached loads too
    assert restarted.history("events_fresh", 8) == never_stopped.history("events_fresh", 8)
    assert pd.Timestamp(restored.verdict.bucket) == pd.Timestamp(at(20))
