"""The sequential test of a deployment's watched series, on plain verdicts: a break fails the
deployment within two buckets and names the series that moved; one odd bucket, noise, buckets
judged before the deployment and intended changes do not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from monitor.config import CheckConfig, parse_config
from monitor.deployments import Deployment, WatchedCheck, record_evidence
from monitor.detection import Verdict
from monitor.sequential import THRESHOLD, Evidence

DEPLOYED = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
LAG = timedelta(hours=1, minutes=15)  # an hourly bucket is judged an hour and a settle later


def verdict(hour: int, score: float, value: float = 100.0, expected: float = 100.0) -> Verdict:
    bucket = pd.Timestamp(DEPLOYED) + pd.Timedelta(hours=hour)
    return Verdict(bucket, value, expected, expected * 0.8, expected * 1.2, score, False)


def check(**fields: object) -> CheckConfig:
    base = {"name": "revenue", "kind": "metric", "table": "t", "timestamp_column": "ts",
            "expression": "sum(x)", "dimensions": ["country"]}  # fmt: skip
    return parse_config({"warehouse": {"kind": "duckdb", "path": "x"},
                         "checks": [{**base, **fields}]}).checks[0]  # fmt: skip


def deployment(intended: bool = False) -> Deployment:
    until = DEPLOYED + timedelta(hours=6)
    return Deployment("d1", "prod", DEPLOYED, ["fct_orders"], [WatchedCheck("revenue", until, intended)])


def test_a_shift_of_two_buckets_breaks_the_series_but_one_odd_bucket_does_not() -> None:
    once = Evidence("revenue", "").add(verdict(0, -40.0))
    assert not once.broken  # a single bucket, however odd, counts at most CLIP
    twice = once.add(verdict(1, -2.5, 60.0))
    assert twice.broken and twice.down >= THRESHOLD and twice.buckets == 2
    assert twice.describe() == "revenue -20% over 2 buckets"


def test_noise_around_the_expected_value_never_accumulates() -> None:
    evidence = Evidence("revenue", "DE")
    for hour, score in enumerate([1.2, -0.8, 1.9, -1.5, 0.4, 2.0]):
        evidence = evidence.add(verdict(hour, score))
    assert not evidence.broken


def test_a_bucket_is_counted_once_and_one_without_a_baseline_not_at_all() -> None:
    evidence = Evidence("revenue", "").add(verdict(0, -3.0))
    assert evidence.add(verdict(0, -3.0)) == evidence
    unjudged = Verdict.unjudged(pd.Timestamp(DEPLOYED) + pd.Timedelta(hours=1), 5.0)
    assert evidence.add(unjudged) == evidence


def test_a_check_watching_one_direction_is_tested_that_way_only() -> None:
    up_only = Evidence("revenue", "")
    for hour in range(3):
        up_only = up_only.add(verdict(hour, -4.0), "up")
    assert not up_only.broken


def test_the_deployment_fails_naming_the_segments_that_broke_the_largest_move_first() -> None:
    moved = {
        "": [verdict(0, -2.8, 700.0, 1000.0), verdict(1, -2.9, 690.0, 1000.0)],
        "DE": [verdict(0, -4.0, 10.0, 300.0), verdict(1, -4.0, 5.0, 300.0)],
        "US": [verdict(0, 0.3), verdict(1, -0.2)],
    }
    failed = record_evidence(deployment(), check(), moved, LAG, DEPLOYED + timedelta(hours=2))
    assert failed.status == "failed"
    assert failed.reason == (
        "broke from the expected level after the deployment: "
        "revenue -30% over 2 buckets; revenue [DE] -98% over 2 buckets"
    )
    # what the test saw travels with the deployment, through the state store
    assert Deployment.from_json(failed.to_json()) == failed


def test_buckets_judged_before_the_deployment_are_not_its_doing() -> None:
    before = {"DE": [verdict(-3, -4.0, 5.0, 300.0), verdict(-2, -4.0, 5.0, 300.0)]}
    kept = record_evidence(deployment(), check(), before, LAG, DEPLOYED + timedelta(hours=1))
    assert kept.status == "watching" and kept.evidence == []


def test_an_intended_change_is_not_tested() -> None:
    moved = {"": [verdict(0, -4.0), verdict(1, -4.0)]}
    kept = record_evidence(deployment(intended=True), check(), moved, LAG, DEPLOYED)
    assert kept.status == "watching"


def test_a_deployment_recorded_before_the_test_existed_still_loads() -> None:
    text = deployment().to_json().replace(', "evidence": []', "")
    assert '"evidence"' not in text
    assert Deployment.from_json(text).evidence == []
