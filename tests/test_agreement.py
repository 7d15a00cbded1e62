"""The daemon and ``backtest`` agree, and an episode lasts as long as the incident.

On a first start the daemon judges the whole history it reads, as ``kpi-monitor backtest`` replays
it, so an incident already under way is reported with the start backtest gives it, not the hour
the daemon happened to start. An open episode holds while the series stays away from its
expected level, even through night hours whose band is wide enough to hold the low values.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest

from monitor.config import parse_config
from monitor.engine import Engine
from monitor.store import StateStore
from tests.conftest import EngineFactory, free_port, write_config
from tests.daemon_process import DaemonProcess, run_kpi_monitor

SHARE = {"US": 0.5, "DE": 0.2, "FR": 0.15, "GB": 0.15}
BROKEN = "DE"


def build_orders(path: Path, now: datetime, down_from: datetime, down_to: datetime) -> None:
    """Eight weeks of hourly orders by country (a New York day, quieter nights and weekends);
    Germany at 20% from ``down_from`` to ``down_to``."""
    rng = np.random.default_rng(11)
    hours = pd.date_range(
        pd.Timestamp(now).floor("h") - pd.Timedelta(weeks=8), pd.Timestamp(now).floor("h"),
        freq="h", tz="UTC", inclusive="left",
    )  # fmt: skip
    local = hours.tz_convert("America/New_York")
    rhythm = (0.15 + np.exp(-((local.hour.to_numpy() - 14) ** 2) / 20.0)) * np.where(
        local.day_of_week.to_numpy() >= 5, 0.8, 1.0
    )
    rows = []
    for country, share in SHARE.items():
        counts = rng.poisson(200 * share * rhythm)
        if country == BROKEN:
            down = (hours >= pd.Timestamp(down_from)) & (hours < pd.Timestamp(down_to))
            counts[down] = rng.poisson(0.2 * 200 * share * rhythm[down])
        for hour, count in zip(hours, counts, strict=True):
            minutes = rng.integers(0, 60, count)
            rows += [(hour + pd.Timedelta(minutes=int(m)), country, 40.0) for m in minutes]
    frame = pd.DataFrame(rows, columns=["order_ts", "country", "amount"])
    frame["order_ts"] = frame["order_ts"].dt.tz_localize(None)
    con = duckdb.connect(str(path))
    try:
        con.execute("CREATE SCHEMA analytics")
        con.execute("CREATE TABLE analytics.fct_orders AS SELECT * FROM frame")
    finally:
        con.close()


def orders_config(directory: Path) -> dict[str, Any]:
    return {
        "warehouse": {"kind": "duckdb", "path": str(directory / "orders.duckdb")},
        "state": {"path": str(directory / "state.db")},
        "defaults": {"grain": "hour", "timezone": "America/New_York", "schedule": "1h"},
        "checks": [
            {
                "name": "orders",
                "kind": "metric",
                "table": "analytics.fct_orders",
                "timestamp_column": "order_ts",
                "expression": "count(*)",
                "dimensions": ["country"],
                "settle": "0m",
            }
        ],
    }


def test_a_daemon_started_ten_hours_into_an_incident_reports_the_start_backtest_gives(
    tmp_path: Path,
) -> None:
    now = datetime.now(UTC)
    hour = pd.Timestamp(now).floor("h")
    build_orders(tmp_path / "orders.duckdb", now, hour - pd.Timedelta(hours=10), hour)
    config = write_config(tmp_path / "kpi-monitor.yaml", orders_config(tmp_path))
    port = free_port()
    daemon = DaemonProcess(["run", "-c", str(config)], port, log=tmp_path / "daemon.log")
    try:
        daemon.wait_ready(60)
        firing = daemon.wait_firing(120)
        assert firing == {("orders", BROKEN)}, daemon.output()
        series = next(s for c in daemon.checks() for s in c["series"] if s["segment"] == BROKEN)
        since = pd.Timestamp(series["alert"]["since"])
    finally:
        daemon.stop()
    backtest = run_kpi_monitor("backtest", "-c", str(config), "--check", "orders", "--since", "1h")
    assert backtest.returncode == 0, backtest.stderr
    line = next(x for x in backtest.stdout.splitlines() if f"[{BROKEN}]" in x)
    assert "still open" in line, backtest.stdout
    replayed = re.search(r"deviating since (\d{4}-\d\d-\d\d \d\d:\d\d) UTC", line)
    assert replayed is not None, line
    assert since == pd.Timestamp(replayed.group(1), tz="UTC")
    # the incident's first hours: the daemon did not start the episode when it started
    assert hour - pd.Timedelta(hours=10) <= since <= hour - pd.Timedelta(hours=8)


@pytest.mark.parametrize("restart_after", [None, 9], ids=["running", "restarted at night"])
def test_an_episode_holds_through_the_night_while_the_level_stays_down(
    tmp_path: Path, restart_after: int | None, make_engine: EngineFactory
) -> None:
    # Germany falls to 20% at 16:00 New York time and stays there through the night; a restart
    # at 01:00 (the pod rescheduled) keeps the episode's hold
    recovers_after = 18
    now = datetime(2026, 11, 12, 12, 30, tzinfo=UTC)  # a Thursday, 07:30 in New York
    start = pd.Timestamp("2026-11-11 16:00", tz="America/New_York").tz_convert("UTC")
    end = start + pd.Timedelta(hours=recovers_after)
    later = now + timedelta(hours=14)
    build_orders(tmp_path / "orders.duckdb", later, start, end)
    config = parse_config(orders_config(tmp_path))
    clock = [start.to_pydatetime() + timedelta(hours=1)]
    restart = None if restart_after is None else clock[0] + timedelta(hours=restart_after)

    def started() -> Engine:
        store = StateStore(str(tmp_path / "state.db"))  # closed by the restart
        return make_engine(config=config, store=store, clock=lambda: clock[0])

    engine = started()
    statuses = []
    while clock[0] <= later:
        if clock[0] == restart:
            engine.store.close()
            engine = started()
        engine.run("orders")
        state = engine.alert_state("orders", BROKEN)
        statuses.append((pd.Timestamp(clock[0]), state.status, state.episode))
        clock[0] += timedelta(hours=1)
    engine.store.close()
    down = [s for t, s, _ in statuses if start + pd.Timedelta(hours=3) <= t <= end]
    assert down and all(s == "firing" for s in down), statuses
    assert {episode for _, _, episode in statuses} <= {0, 1}  # one episode, never re-opened
    after = [s for t, s, _ in statuses if t >= end + pd.Timedelta(hours=5)]
    assert after and all(s == "ok" for s in after), statuses
