"""Which segments a check tracks: the top ``max_segments`` by rows, re-ranked once a day, the
rest in ``__other__``; a segment that leaves the top, or has no rows for
``state.retention.segments``, stops being tracked (its alert resolves, its model and metric
series go) instead of being judged as an outage.

Real DuckDB files and SQLite state stores; the engine with an injected clock.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from monitor.config import Config, RetentionConfig, parse_config
from monitor.engine import RunResult
from monitor.queries import TOTAL_SEGMENT as TOTAL
from tests.conftest import EngineFactory

NOW = datetime(2026, 11, 26, 15, 20, tzinfo=UTC)
START = datetime(2026, 11, 12)  # naive UTC: two weeks of rows before NOW


def build_shop(path: Path, segments: dict[str, tuple[datetime, datetime | None, int]]) -> None:
    """``kpi.orders(ts, country, amount)``: per country, from its start to its end (None: NOW
    plus four days), ``rows`` orders an hour of 10.0 each, with a daily rhythm in the amount."""
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA kpi")
        con.execute("CREATE TABLE kpi.orders (ts TIMESTAMP, country VARCHAR, amount DOUBLE)")
        for country, (start, end, rows) in segments.items():
            stop = end or NOW.replace(tzinfo=None) + timedelta(days=4)
            con.execute(
                "INSERT INTO kpi.orders SELECT ts + INTERVAL (r * 3) MINUTE, ?,"
                " 10.0 * (1 + 0.3 * sin(2 * pi() * hour(ts) / 24))"
                " FROM range(?::TIMESTAMP, ?::TIMESTAMP, INTERVAL 1 HOUR) t(ts), range(?) g(r)",
                [country, start, stop, rows],
            )


def shop_config(
    directory: Path, retention: RetentionConfig | None = None, **fields: Any
) -> Config:
    query = (
        {"sql": fields.pop("sql"), "fill_missing": "zero"}
        if "sql" in fields
        else {"table": "kpi.orders", "timestamp_column": "ts", "expression": "sum(amount)",
              "dimensions": ["country"]}
    )  # fmt: skip
    check = {"name": "orders", "kind": fields.pop("kind", "metric"), "lookback": "1w",
             **query, **fields}  # fmt: skip
    document = {
        "warehouse": {"kind": "duckdb", "path": str(directory / "shop.duckdb")},
        "state": {"path": str(directory / "state.db")},
        "checks": [check],
    }
    config = parse_config(document, "shop.yaml")
    if retention is not None:
        state = config.state.model_copy(update={"retention": retention})
        config = config.model_copy(update={"state": state})
    return config


class Daemon:
    """An engine over the shop with a clock the test moves; ``restart`` starts a new one on the
    same state store, as a restarted daemon would."""

    def __init__(self, make_engine: EngineFactory, config: Config, now: datetime = NOW) -> None:
        self.make_engine = make_engine
        self.config = config
        self.now = now
        self.restart()

    def restart(self) -> None:
        self.engine = self.make_engine(
            config=self.config, store=self.config.state.path, clock=lambda: self.now
        )
        self.metrics = self.engine.metrics

    def run_results(self, hours: int) -> list[RunResult]:
        """Run the check every hour for ``hours`` hours."""
        results = []
        for _ in range(hours):
            self.now += timedelta(hours=1)
            results.append(self.engine.run("orders"))
            assert results[-1].outcome in ("ok", "anomaly"), results[-1].error
        return results

    def run_hours(self, hours: int) -> list[str]:
        """Run the check every hour for ``hours`` hours; the segments whose alert opened."""
        results = self.run_results(hours)
        return [n.segment for r in results for n in r.notifications if n.kind == "opened"]

    def exported(self) -> dict[str, float]:
        """kpimon_value per segment, as /metrics shows it."""
        return {
            s.labels["segment"]: s.value
            for family in self.metrics.registry.collect()
            for s in family.samples
            if s.name == "kpimon_value" and s.labels["check"] == "orders"
        }


SQL_ORDERS = (
    "select date_trunc('hour', ts) as bucket, country as segment, sum(amount) as value"
    " from kpi.orders where ts >= :since group by 1, 2 order by 2 desc"
)


def overtaken_shop(directory: Path, kind: str = "metric") -> Config:
    """DE (5 orders an hour) and FR (2) lead; ES, open since 100 hours before NOW with 3 orders
    an hour, overtakes FR by rows over the week a day later, at the daily re-rank."""
    build_shop(
        directory / "shop.duckdb",
        {
            "DE": (START, None, 5),
            "FR": (START, None, 2),
            "ES": (NOW.replace(tzinfo=None, minute=0) - timedelta(hours=100), None, 3),
        },
    )
    if kind == "sql":  # folded by the engine, not by the query
        return shop_config(directory, max_segments=2, kind="sql", sql=SQL_ORDERS)
    return shop_config(directory, max_segments=2)


@pytest.mark.parametrize("kind", ["metric", "sql"])
@pytest.mark.parametrize("restart", [False, True])
def test_a_segment_overtaken_at_the_daily_re_rank_is_folded_not_judged_as_an_outage(
    tmp_path: Path, restart: bool, kind: str, make_engine: EngineFactory
) -> None:
    daemon = Daemon(make_engine, overtaken_shop(tmp_path, kind))
    total = {TOTAL} if kind == "metric" else set()  # an sql check's own query has no total
    assert daemon.run_hours(1) == []
    assert set(daemon.exported()) == {"DE", "FR", "__other__"} | total
    opened = daemon.run_hours(20)
    if restart:  # a cold start from the cached series, then warm runs
        daemon.restart()
    opened += daemon.run_hours(30)  # past the re-rank a day after the first run
    assert opened == []
    assert not any(s.state.firing for s in daemon.engine.series("orders"))
    if kind == "metric":
        # FR's rows count in __other__ now, consistently in every later read
        assert set(daemon.exported()) == {"DE", "ES", "__other__"} | total
        assert daemon.exported()["__other__"] == pytest.approx(hourly_amount(2, daemon.now))
    else:
        # an sql check ranks the rows it returns (one per bucket): no overtaking, and a warm
        # read, where every segment has as many rows, folds by the ranking all the same
        assert set(daemon.exported()) == {"DE", "FR", "__other__"} | total
        assert daemon.exported()["__other__"] == pytest.approx(hourly_amount(3, daemon.now))


def hourly_amount(rows: int, now: datetime) -> float:
    """What ``rows`` orders an hour add up to in the newest complete bucket at ``now``."""
    hour = (now - timedelta(minutes=10)).hour - 1
    return rows * 10.0 * (1 + 0.3 * math.sin(2 * math.pi * hour / 24))


def test_a_segment_without_rows_for_the_retention_stops_being_tracked_and_leaves_metrics(
    tmp_path: Path,
    make_engine: EngineFactory,
) -> None:
    stop = NOW.replace(tzinfo=None, minute=0) + timedelta(hours=8)
    back = stop + timedelta(hours=64)
    build_shop(
        tmp_path / "shop.duckdb",
        {"DE": (START, None, 5), "FR": (START, None, 2), "IT": (START, stop, 3)},
    )
    with duckdb.connect(str(tmp_path / "shop.duckdb")) as con:  # IT opens again later
        con.execute(
            "INSERT INTO kpi.orders SELECT ts, 'IT', 30.0 FROM range(?::TIMESTAMP,"
            " ?::TIMESTAMP + INTERVAL 10 DAY, INTERVAL 20 MINUTE) t(ts)",
            [back, back],
        )
    retention = RetentionConfig(segments=timedelta(hours=12))
    daemon = Daemon(make_engine, shop_config(tmp_path, retention=retention))
    results = daemon.run_results(50)
    opened = [n for r in results for n in r.notifications if n.kind == "opened"]
    resolved = [n for r in results for n in r.notifications if n.kind == "resolved"]
    # its rows stopped: an outage of IT, and a drop of the total (IT was 3 of its 10 orders)
    assert [(n.segment, n.episode) for n in opened] == [("IT", 1), (TOTAL, 1)]
    [it] = [n for n in resolved if n.segment == "IT"]
    assert it.episode == 1 and "no rows since" in it.reason
    assert set(daemon.exported()) == {"DE", "FR", TOTAL}
    text = daemon.metrics.exposition().decode()
    assert 'segment="IT"' not in text
    assert {s.segment for s in daemon.engine.series("orders")} == {"DE", "FR", TOTAL}
    assert not any(s.state.firing for s in daemon.engine.series("orders") if s.segment)
    # rows again: tracked again at the next re-rank, numbering its episodes on from its saved
    # state (a new episode 1 would have the key of the first one's notifications)
    results = daemon.run_results(40)
    assert "IT" in daemon.exported()
    assert daemon.engine.alert_state("orders", "IT").episode >= 1
    episodes = [n.episode for r in results for n in r.notifications if n.segment == "IT"]
    assert all(e > 1 for e in episodes)


def test_a_segment_firing_before_a_restart_that_is_no_longer_tracked_resolves(
    tmp_path: Path,
    make_engine: EngineFactory,
) -> None:
    stop = NOW.replace(tzinfo=None, minute=0) + timedelta(hours=2)
    build_shop(
        tmp_path / "shop.duckdb",
        {"DE": (START, None, 5), "FR": (START, None, 2), "IT": (START, stop, 3)},
    )
    retention = RetentionConfig(segments=timedelta(days=1))
    daemon = Daemon(make_engine, shop_config(tmp_path, retention=retention))
    assert daemon.run_hours(8) == ["IT", TOTAL]  # its rows stopped: the total dropped too
    daemon.now += timedelta(days=2)  # down for two days: no cache to restore from
    daemon.restart()
    [result] = daemon.run_results(1)
    [it] = [n for n in result.notifications if n.segment == "IT"]
    assert it.kind == "resolved" and "no rows since" in it.reason
    assert [s for _, s, _ in daemon.engine.firing()] in ([], [TOTAL])


def test_a_table_that_stops_loading_stays_an_outage_of_every_segment(
    tmp_path: Path, make_engine: EngineFactory
) -> None:
    stop = NOW.replace(tzinfo=None, minute=0) + timedelta(hours=2)
    build_shop(tmp_path / "shop.duckdb", {"DE": (START, stop, 5), "FR": (START, stop, 2)})
    retention = RetentionConfig(segments=timedelta(hours=12))
    daemon = Daemon(make_engine, shop_config(tmp_path, retention=retention))
    opened = daemon.run_hours(30)  # past the re-rank, a day after the rows stopped
    assert sorted(opened) == [TOTAL, "DE", "FR"]
    assert daemon.exported() == {TOTAL: 0.0, "DE": 0.0, "FR": 0.0}
    assert {segment for _, segment, _ in daemon.engine.firing()} == {TOTAL, "DE", "FR"}


def test_segments_without_rows_for_the_retention_make_way_for_live_ones_in_the_top(
    tmp_path: Path,
    make_engine: EngineFactory,
) -> None:
    gone = NOW.replace(tzinfo=None, minute=0) - timedelta(days=2)
    build_shop(
        tmp_path / "shop.duckdb",
        {"DE": (START, None, 5), "FR": (START, None, 2), "ES": (START, None, 1),
         "IT": (START, gone, 9), "NL": (START, gone, 8)},
    )  # fmt: skip
    daemon = Daemon(make_engine, shop_config(tmp_path, max_segments=3,
                                retention=RetentionConfig(segments=timedelta(days=1))))  # fmt: skip
    daemon.run_hours(1)
    assert set(daemon.exported()) == {"DE", "FR", "ES", "__other__", TOTAL}
    # IT and NL count in __other__, but no more since they stopped
    assert daemon.exported()["__other__"] == 0
