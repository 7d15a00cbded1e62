"""The query plan (monitor/planning.py): checks of one table share one read, a check whose shared
read failed reads alone until its own query succeeds, and a warm run reads only the newest
buckets.

No warehouse runs here: a handler answers the SQL the engine built for DuckDB with hourly rows
computed in Python (tests/fake_warehouse.py), so what is asserted is the SQL and parameters the
planner sent and what the engine made of the answers. That the SQL itself runs on DuckDB,
PostgreSQL and Databricks is tests/test_queries.py's and the adapters' tests' business.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from monitor.config import Config, parse_config
from monitor.errors import QueryFailed
from tests.conftest import DEMO_NOW, EngineFactory
from tests.fake_warehouse import Handler, HandlerWarehouse

HOUR = timedelta(hours=1)
NEWEST = pd.Timestamp(DEMO_NOW.replace(minute=0)) - HOUR  # the newest complete hour at DEMO_NOW
BROKEN = "sum(no_such_column)"
REVENUE = {"name": "revenue", "expression": "sum(amount)"}
ORDERS = {"name": "orders", "kind": "row_count"}


# each aggregate's hourly values are a multiple of one daily cycle
SCALE = {"sum(amount)": 1.0, "count(*)": 0.25, "avg(amount)": 0.01}


def hourly(bucket: pd.Timestamp, aggregate: str) -> float:
    """The value of ``aggregate`` over ``shop.orders`` for the hour starting at ``bucket``: a
    daily cycle with noise seeded by the hour."""
    noise = np.random.default_rng(int(bucket.timestamp())).normal(0, 3)
    return SCALE[aggregate] * float(100 + 30 * np.sin(bucket.hour * np.pi / 12) + noise)


def naive(moment: pd.Timestamp) -> datetime:
    """A UTC moment as the queries bind it: naive UTC."""
    return moment.tz_convert("UTC").tz_localize(None).to_pydatetime()


def shop(sent: list[tuple[str, dict[str, object]]]) -> Handler:
    """A handler for ``shop.orders``: every hour from ``since`` to ``until`` (naive UTC),
    with the value column of each aggregate the query asks for (``value``, or ``value_i`` in a
    batch); it rejects a query naming a column the table lacks, as DuckDB's binder would. Notes
    every query it is sent in ``sent``."""

    def answer(sql: str, params: Mapping[str, object]) -> pd.DataFrame:
        sent.append((sql, dict(params)))
        if "no_such_column" in sql:
            raise QueryFailed('Binder Error: Referenced column "no_such_column" not found')
        assert isinstance(params["since"], datetime) and isinstance(params["until"], datetime)
        buckets = pd.date_range(params["since"], params["until"], freq="h", inclusive="left")
        rows: dict[str, object] = {"bucket": buckets, "segment": [""] * len(buckets)}
        for aggregate, column in re.findall(r"(\w+\([^()]*\)) AS (value(?:_\d+)?)\b", sql):
            rows[column] = [hourly(b.tz_localize("UTC"), aggregate) for b in buckets]
        return pd.DataFrame(rows)

    return answer


def orders_config(*checks: dict[str, Any]) -> Config:
    """Hourly checks on ``shop.orders``; the DuckDB file named is never opened."""
    base = {"kind": "metric", "table": "shop.orders", "timestamp_column": "ts", "lookback": "2w"}
    return parse_config(
        {
            "warehouse": {"kind": "duckdb", "path": "never-opened.duckdb"},
            "checks": [{**base, **check} for check in checks],
        },
        "shop.yaml",
    )


def test_checks_on_one_table_share_one_read_and_each_judges_its_own_column(
    make_engine: EngineFactory,
) -> None:
    config = orders_config(REVENUE, ORDERS, {"name": "basket", "expression": "avg(amount)"})
    sent: list[tuple[str, dict[str, object]]] = []
    engine = make_engine(config=config, warehouses={"default": HandlerWarehouse(shop(sent))})
    outcomes = {c.name: engine.run(c.name).outcome for c in config.checks}
    assert outcomes == {"revenue": "ok", "orders": "ok", "basket": "ok"}
    [(sql, params)] = sent  # one query for the three
    assert "sum(amount) AS value_0" in sql
    assert "count(*) AS value_1" in sql
    assert "avg(amount) AS value_2" in sql
    # the whole lookback, up to the end of the newest complete hour
    lookback = config.checks[0].effective_lookback
    assert params["since"] == naive(pd.Timestamp(DEMO_NOW - lookback).floor("h"))
    assert params["until"] == naive(NEWEST + HOUR)
    # each check judged its own column of the shared rows
    for name, aggregate in (("revenue", "sum(amount)"), ("orders", "count(*)"),
                            ("basket", "avg(amount)")):  # fmt: skip
        [status] = engine.series(name)
        assert status.verdict.bucket == NEWEST
        assert status.verdict.value == hourly(NEWEST, aggregate)


def test_a_check_whose_shared_read_failed_reads_alone_until_its_own_query_succeeds(
    make_engine: EngineFactory,
) -> None:
    config = orders_config(REVENUE, ORDERS, {"name": "broken", "expression": BROKEN})
    sent: list[tuple[str, dict[str, object]]] = []
    clock = [DEMO_NOW]
    engine = make_engine(
        config=config, warehouses={"default": HandlerWarehouse(shop(sent))}, clock=lambda: clock[0]
    )
    results = {c.name: engine.run(c.name) for c in config.checks}
    assert {n: r.outcome for n, r in results.items()} == {
        "revenue": "ok",
        "orders": "ok",
        "broken": "error",
    }
    assert "no_such_column" in (results["broken"].error or "")
    # the shared query failed for one member's SQL: then each member read alone
    first_hour = [sql for sql, _ in sent]
    assert len(first_hour) == 4 and BROKEN in first_hour[0] and "value_2" in first_hour[0]
    assert ["value_" in sql for sql in first_hour[1:]] == [False, False, False]
    assert [BROKEN in sql for sql in first_hour[1:]] == [False, False, True]

    # an hour later the two whose own queries worked share one read again; the broken one,
    # whose own query failed, still reads alone and its error stays its own
    sent.clear()
    clock[0] = DEMO_NOW + HOUR
    outcomes = {c.name: engine.run(c.name).outcome for c in config.checks}
    assert outcomes == {"revenue": "ok", "orders": "ok", "broken": "error"}
    [(shared, _), (alone, _)] = sent
    assert "sum(amount) AS value_0" in shared and "count(*) AS value_1" in shared
    assert BROKEN not in shared and "value_2" not in shared
    assert BROKEN in alone and "value_" not in alone
    assert engine.series("orders")[0].verdict.value == hourly(NEWEST + HOUR, "count(*)")


def test_a_warm_run_reads_from_the_newest_learned_hour_less_the_refetched_ones(
    make_engine: EngineFactory,
) -> None:
    config = orders_config(REVENUE)
    check = config.checks[0]
    sent: list[tuple[str, dict[str, object]]] = []
    clock = [DEMO_NOW]
    engine = make_engine(
        config=config, warehouses={"default": HandlerWarehouse(shop(sent))}, clock=lambda: clock[0]
    )
    assert engine.run("revenue").outcome == "ok"
    clock[0] = DEMO_NOW + 2 * HOUR
    result = engine.run("revenue")
    assert result.outcome == "ok"
    [_, (sql, params)] = sent
    assert "value_0" not in sql  # a check alone reads alone
    # from the newest hour the first run learned, less the hours re-read for late rows, to the
    # end of the newest complete one
    refetched = NEWEST - check.refetch_buckets * HOUR
    assert params["since"] == naive(refetched)
    assert params["until"] == naive(NEWEST + 3 * HOUR)
    # the two new hours are judged, each with the value the handler gave
    [status] = result.series
    assert status.verdict.bucket == NEWEST + 2 * HOUR
    assert status.verdict.value == hourly(NEWEST + 2 * HOUR, "sum(amount)")
