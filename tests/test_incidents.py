"""An incident's drill-down from the verdicts a check's runs gave: which checks it explains,
which buckets it adds up, and when it forgets."""

from __future__ import annotations

import pandas as pd

from monitor.config import CheckConfig, parse_config
from monitor.detection import Verdict
from monitor.incidents import MAX_BUCKETS, Incidents, explain_buckets, explainable

START = pd.Timestamp("2026-11-26 00:00", tz="UTC")


def check(**fields: object) -> CheckConfig:
    base = {"name": "revenue", "kind": "metric", "table": "t", "timestamp_column": "ts",
            "expression": "sum(amount)", "dimensions": ["country"]}  # fmt: skip
    return parse_config({"warehouse": {"kind": "duckdb", "path": "x"},
                         "checks": [{**base, **fields}]}).checks[0]  # fmt: skip


def hours(values: list[float], expected: float) -> list[Verdict]:
    band = (expected * 0.8, expected * 1.2)
    return [
        Verdict(START + pd.Timedelta(hours=i), v, expected, *band, (v / expected - 1) * 20, v < band[0])
        for i, v in enumerate(values)
    ]


def test_only_checks_whose_segments_add_up_to_their_total_are_explained() -> None:
    assert explainable(check())
    assert explainable(check(kind="row_count", expression=None))
    assert explainable(check(expression="COUNT(order_id)"))
    for expression in ("avg(amount)", "count(distinct customer_id)", "sum(a) / sum(b)"):
        assert not explainable(check(expression=expression))
    assert not explainable(check(dimensions=[]))


def test_the_incident_adds_up_its_newest_buckets_since_it_began() -> None:
    normal = [100.0] * 12
    series = {
        "DE": hours(normal[:4] + [0.0] * 8, 100.0),
        "US": hours(normal, 100.0),
        "": hours(normal[:4] + [100.0] * 8, 200.0),
    }
    found = explain_buckets(series, ["country"], START + pd.Timedelta(hours=4), 4.0)
    assert found is not None and found.kind == "one"
    assert found.buckets == MAX_BUCKETS  # of the 8 since it began, the newest 6
    assert found.since == (START + pd.Timedelta(hours=6)).isoformat()
    assert found.text("revenue") == "DE -100% explains 100% of the drop in revenue"
    assert found.segments == ("DE",)


def test_an_explanation_lasts_while_an_episode_is_open_and_is_forgotten_after() -> None:
    incidents = Incidents()
    incidents.record("revenue", [("DE", hours([100.0, 0.0, 0.0], 100.0)),
                                 ("US", hours([100.0] * 3, 100.0))])  # fmt: skip
    began = (START + pd.Timedelta(hours=1)).to_pydatetime()
    assert incidents.explain(check(), began, 4.0) is not None
    assert incidents.latest("revenue") is not None
    assert incidents.explain(check(), None, 4.0) is None  # no episode open any more
    assert incidents.latest("revenue") is None
    # a check that cannot be explained never is
    assert incidents.explain(check(expression="avg(amount)"), began, 4.0) is None
