"""The engine's side of a false alarm, with an injected clock: the answered deviation opens
nothing while it lasts, the series comes back, and what it does next is alerted again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from monitor.answers.model import AlertRef, Feedback
from monitor.config import parse_config
from monitor.store import StateStore
from tests.answers.shop import build_shop, shop_document
from tests.conftest import EngineFactory
from tests.slack_server import SlackServer

NOW = datetime(2026, 12, 3, 15, 5, tzinfo=UTC)


def test_a_false_alarm_holds_until_the_series_is_back_then_lets_go(
    tmp_path: Path, make_engine: EngineFactory
) -> None:
    build_shop(tmp_path / "shop.duckdb", NOW, recovered=3)  # back for the last three hours
    config = parse_config(shop_document(tmp_path, SlackServer()))
    store = StateStore(tmp_path / "state.db")
    during = NOW - timedelta(hours=3)
    engine = make_engine(config=config, store=store, now=during)
    engine.run("visits")
    [(check, segment, episode)] = [f for f in engine.firing() if f[0] == "visits"]
    ref = AlertRef(check, segment, episode)
    onset = engine.alert_state(check, segment).since
    assert onset is not None
    store.answers.record(Feedback(ref, "false_alarm", "U1", "ana", during, onset), [])
    [resolution] = engine.false_alarm(ref, "answered as a false alarm by ana")
    assert resolution.kind == "resolved" and resolution.reason.endswith("by ana")
    assert store.answers.holding() == {("visits", ""): episode}

    # a restart while the deviation lasts: still held, nothing opens
    engine = make_engine(config=config, store=store, now=during + timedelta(minutes=50))
    assert engine.run("visits").notifications == []
    assert engine.metrics.registry.get_sample_value("kpimon_anomaly", {
        "check": "visits", "segment": "", "severity": "warning", "team": ""}) == 0  # fmt: skip

    # back in the band: the hold ends, and the series is judged as any other again
    engine = make_engine(config=config, store=store, now=NOW)
    result = engine.run("visits")
    assert result.outcome == "ok" and result.notifications == []
    assert store.answers.holding() == {}
    assert engine.alert_state("visits", "").episode == episode, "nothing opened meanwhile"
