"""A wall clock that jumps ahead: the future's empty buckets are not judged as an outage, and a
check that judged them (a daemon started while the clock was ahead) recovers by itself once the
clock is back.

Real DuckDB files and SQLite state stores; the engine with a clock the test sets.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.config import parse_config
from monitor.daemon import Daemon
from monitor.timeline import Timeline
from tests.conftest import EngineFactory, demo_document
from tests.test_faults import NOW, build_visits, duckdb_config, visits_check
from tests.test_server import TOKEN, call, wait_for_run
from tests.test_timeline import Host


def test_a_wall_clock_jumping_a_day_ahead_judges_no_bucket_of_the_future(
    tmp_path: Path, make_engine: EngineFactory
) -> None:
    build_visits(tmp_path / "wh.duckdb", now=NOW + timedelta(hours=3))
    config = duckdb_config(tmp_path, [visits_check()])
    host = Host()
    host.wall = NOW
    engine = make_engine(config=config, clock=Timeline(lambda: host.wall, lambda: host.ticks))
    assert engine.run("visits").outcome == "ok"
    host.passes(3600)
    host.wall += timedelta(days=1)
    result = engine.run("visits")
    assert (result.outcome, result.notifications) == ("ok", [])
    [status] = engine.series("visits")
    assert status.verdict.bucket == NOW.replace(minute=0)  # the hour that ended, not tomorrow's
    host.wall -= timedelta(days=1)
    host.passes(3600)
    assert engine.run("visits").outcome == "ok"
    assert engine.series("visits")[0].verdict.bucket == NOW.replace(minute=0) + timedelta(hours=1)


def test_a_check_that_judged_the_future_recovers_by_itself_when_the_clock_comes_back(
    tmp_path: Path, make_engine: EngineFactory
) -> None:
    build_visits(tmp_path / "wh.duckdb", now=NOW + timedelta(hours=3))
    config = duckdb_config(tmp_path, [visits_check()])
    clock = [NOW + timedelta(days=1)]  # a daemon started while the host clock was a day ahead
    engine = make_engine(config=config, clock=lambda: clock[0])
    store = engine.store
    opened = engine.run("visits")
    assert opened.outcome == "anomaly"  # the empty hours of tomorrow, judged as zeros
    clock[0] = NOW + timedelta(hours=1)  # set right
    result = engine.run("visits")
    assert result.outcome == "ok"
    [resolved] = result.notifications
    assert resolved.kind == "resolved" and "ahead" in resolved.reason
    [status] = engine.series("visits")
    assert not status.state.firing
    assert status.verdict.bucket == NOW.replace(minute=0)
    clock[0] = NOW + timedelta(hours=2)
    result = engine.run("visits")
    assert (result.outcome, result.notifications) == ("ok", [])
    assert engine.series("visits")[0].verdict.bucket == NOW.replace(minute=0) + timedelta(hours=1)
    assert [e.notification.kind for e in store.outbox.pending("slack")] == ["opened", "resolved"]


def test_a_freshness_check_that_judged_the_future_recovers_when_the_clock_comes_back(
    tmp_path: Path, make_engine: EngineFactory
) -> None:
    build_visits(tmp_path / "wh.duckdb", now=NOW + timedelta(hours=3))
    fresh = {"name": "visits_fresh", "kind": "freshness", "table": "kpi.visits",
             "timestamp_column": "ts", "max_age": "2h"}  # fmt: skip
    config = duckdb_config(tmp_path, [fresh])
    clock = [NOW + timedelta(days=1)]
    engine = make_engine(config=config, clock=lambda: clock[0])
    assert engine.run("visits_fresh").outcome == "anomaly"
    clock[0] = NOW
    result = engine.run("visits_fresh")
    assert result.outcome == "ok"
    assert [n.kind for n in result.notifications] == ["resolved"]
    assert engine.series("visits_fresh")[0].verdict.bucket == NOW




def test_a_running_daemon_whose_host_clock_jumps_a_day_ahead_judges_no_bucket_of_the_future(
    tmp_path: Path, live_demo_warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ahead = [timedelta(0)]  # how far the host's wall clock is set ahead
    monkeypatch.setattr(
        "monitor.daemon.Timeline", lambda: Timeline(lambda: datetime.now(UTC) + ahead[0])
    )
    monkeypatch.setenv("KPIMON_API_TOKEN", TOKEN)
    shutil.copy(live_demo_warehouse, tmp_path / "demo.duckdb")
    daemon = Daemon(parse_config(demo_document(tmp_path)), host="127.0.0.1", port=0)
    daemon.start()
    try:
        before = wait_for_run(daemon, "orders_rows")
        ahead[0] = timedelta(days=1)
        assert call(daemon, "POST", "/api/v1/checks/orders_rows/run", b"", TOKEN)[0] == 202
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            after = json.loads(call(daemon, "GET", "/api/v1/checks/orders_rows")[2])
            if after["last_run"]["started"] != before["last_run"]["started"]:
                break
            time.sleep(0.1)
        assert after["last_run"]["started"] < (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
        assert after["last_run"]["outcome"] == "ok", after["last_run"]
        [series] = after["series"]
        assert series["bucket"] < datetime.now(UTC).isoformat()  # no bucket of tomorrow judged
        assert series["alert"]["status"] == "ok"
    finally:
        daemon.stop()
