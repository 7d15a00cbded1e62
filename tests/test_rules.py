"""Fixed bounds beside the learned band: a check's min and max alert at once, whatever the model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from monitor.alerts.messages import alert_text
from monitor.alerts.state import AlertPolicy, AlertState, advance
from monitor.config import parse_config
from monitor.detection import Verdict
from monitor.rules import Bounds, apply_bounds
from tests.conftest import DEMO_NOW, EngineFactory, demo_document
from tests.duckdb_writes import write

T0 = pd.Timestamp("2026-11-01", tz="UTC")


def learning(i: int, value: float) -> Verdict:
    return Verdict(T0 + pd.Timedelta(hours=i), value, None, None, None, 0.0, False)


def modelled(i: int, value: float) -> Verdict:
    return Verdict(T0 + pd.Timedelta(hours=i), value, 100.0, 60.0, 140.0, 0.0, False)


def feed(verdicts: list[Verdict], bounds: Bounds, policy: AlertPolicy) -> list[str]:
    state, events = AlertState(), []
    for i, verdict in enumerate(verdicts):
        state, transition = advance(state, apply_bounds(verdict, bounds, policy.open_after), policy)
        if transition is not None:
            events.append(f"{transition.kind}@{i}")
    return events


def test_a_broken_bound_opens_at_once_even_when_the_model_calls_it_normal() -> None:
    policy = AlertPolicy(open_after=3, resolve_after=2)
    # 120 is inside the learned band (60..140) but above the fixed maximum
    values = [100, 120, 100, 100, 100]
    assert feed([modelled(i, v) for i, v in enumerate(values)], Bounds(max=110), policy) == [
        "opened@1",
        "resolved@3",
    ]
    assert feed([modelled(i, v) for i, v in enumerate(values)], Bounds(), policy) == []


def test_while_the_model_learns_the_bounds_judge_alone_and_the_alert_resolves() -> None:
    policy = AlertPolicy(open_after=2, resolve_after=2)
    verdicts = [learning(i, v) for i, v in enumerate([50, 0, 0, 40, 45, 50])]
    assert feed(verdicts, Bounds(min=1), policy) == ["opened@1", "resolved@4"]
    # without bounds a learning model judges nothing
    assert feed(verdicts, Bounds(), policy) == []


def test_the_bounded_verdict_says_what_was_broken() -> None:
    broken = apply_bounds(learning(0, 0.0), Bounds(min=1, max=500), open_after=2)
    assert broken.anomalous and broken.span == 2
    assert (broken.expected, broken.lower, broken.upper) == (1, 1, 500)
    inside = apply_bounds(learning(0, 7.0), Bounds(min=1), open_after=2)
    assert not inside.anomalous and inside.expected is None and inside.lower == 1
    unchanged = modelled(0, 100.0)
    assert apply_bounds(unchanged, Bounds(min=1, max=1000), open_after=2) is unchanged
    assert Bounds(min=1).reason(0) == "below its fixed minimum of 1"
    assert Bounds(max=2.5).reason(3) == "above its fixed maximum of 2.50"
    assert Bounds(min=1).reason(float("nan")) == ""


def test_the_daemon_alerts_on_a_broken_maximum_with_the_rule_in_the_message(
    demo_dir: Path, make_engine: EngineFactory
) -> None:
    document = demo_document(demo_dir)
    document["checks"] = [c for c in document["checks"] if c["name"] == "orders_rows"]
    document["checks"][0]["max"] = 10  # far below a normal hour: the model alone says normal
    engine = make_engine(config=parse_config(document))
    result = engine.run("orders_rows")
    assert result.outcome == "anomaly"
    [note] = result.notifications
    assert note.reason == "above its fixed maximum of 10"
    assert alert_text(note).startswith("WARNING: orders_rows is above its fixed maximum of 10: ")
    labels = {"check": "orders_rows", "segment": "", "severity": "warning", "team": "platform"}
    assert engine.metrics.registry.get_sample_value("kpimon_anomaly", labels) == 1


def test_a_new_check_alerts_on_an_empty_hour_before_its_model_has_learned(
    demo_dir: Path, make_engine: EngineFactory
) -> None:
    hour = DEMO_NOW.replace(minute=0, second=0, microsecond=0, tzinfo=None)
    write(
        demo_dir / "demo.duckdb",
        "DELETE FROM analytics.fct_orders WHERE loaded_at >= ? AND loaded_at < ?",
        [hour - timedelta(hours=1), hour],
    )
    document = demo_document(demo_dir)
    document["checks"] = [
        {**c, "lookback": "6h", "min": 1} for c in document["checks"] if c["name"] == "orders_rows"
    ]
    engine = make_engine(config=parse_config(document))
    result = engine.run("orders_rows")
    [status] = result.series
    assert status.verdict.value == 0 and status.state.firing
    assert status.verdict.bucket == pd.Timestamp(hour - timedelta(hours=1), tz=UTC)
    [note] = result.notifications
    assert note.reason == "below its fixed minimum of 1"
    assert datetime.fromisoformat(note.since.isoformat()) == hour.replace(tzinfo=UTC) - timedelta(hours=1)
