"""Engine.history: a check's series judged again bucket by bucket for the page, replays kept and
carried forward, on the demo warehouse (DuckDB) with the state store's series cache."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from monitor.config import CheckConfig, Config
from monitor.detection import Detector
from monitor.engine import detector_spec, fingerprint
from monitor.history import Replays
from tests.conftest import DEMO_NOW, EngineFactory


def test_the_firing_series_history_shows_its_incident_and_the_band(
    make_engine: EngineFactory,
) -> None:
    engine = make_engine()
    engine.run("revenue")
    history = engine.history("revenue", 48)
    assert len(history) == 8 and {"", "DE", "US", "__other__"} <= set(history)  # total, 6 kept, the rest
    de = history["DE"]
    assert len(de) == 48
    assert all(p.expected is not None and p.lower is not None for p in de)
    assert [p.bucket for p in de] == sorted(p.bucket for p in de)
    # the outage's buckets are the anomalous ones at the end; a healthy series has few or none
    assert all(p.anomalous for p in de[-3:])
    assert sum(p.anomalous for p in history["US"]) <= 2


def test_a_window_longer_than_the_cache_gives_the_whole_cached_lookback(
    demo_config: Config, make_engine: EngineFactory
) -> None:
    engine = make_engine()
    engine.run("signups")
    (total,) = engine.history("signups", 100_000).values()
    check = demo_config.check("signups")
    assert check is not None
    saved = engine.store.load_history("signups", fingerprint(check))
    assert saved is not None
    assert len(total) == len(saved[2][""])


def test_a_freshness_check_shows_its_data_age_against_its_band(
    make_engine: EngineFactory,
) -> None:
    engine = make_engine()
    engine.run("events_freshness")
    (ages,) = engine.history("events_freshness", 96).values()
    assert len(ages) == 96
    assert ages[-1].upper is not None
    assert ages[-1].anomalous and ages[-1].value > ages[-1].upper
    assert engine.history("orders_freshness", 96) == {}  # not run yet: nothing to draw


def test_an_unrun_check_has_no_history(make_engine: EngineFactory) -> None:
    engine = make_engine()
    assert engine.history("revenue", 48) == {}


def _series(n: int) -> list[tuple[datetime, float]]:
    rng = np.random.default_rng(7)
    start = datetime(2026, 10, 1, tzinfo=UTC)
    return [
        (start + timedelta(hours=i), 100 + 30 * np.sin(i * 2 * np.pi / 24) + rng.normal(0, 4))
        for i in range(n)
    ]


def _fitted(check: CheckConfig, buckets: pd.DatetimeIndex, values: np.ndarray) -> Detector:
    model = Detector(detector_spec(check))
    model.warm(buckets, values)
    return model


def test_a_replay_carried_forward_equals_a_replay_from_scratch(demo_config: Config) -> None:
    check = demo_config.check("signups")
    assert check is not None
    full = _series(900)
    kept = Replays(_fitted)
    kept.judged(check, {"": full[:880]}, 100, "v1")
    carried = kept.judged(check, {"": full}, 100, "v1")[""]
    fresh = Replays(_fitted).judged(check, {"": full}, 100, "v1")[""]
    assert [p.bucket for p in carried] == [p.bucket for p in fresh]
    assert len(carried) == 100
    # the newest 20 buckets are judged by a model that went on learning: identical verdicts
    for a, b in zip(carried[-20:], fresh[-20:], strict=True):
        assert a.anomalous == b.anomalous
        assert a.expected is not None and b.expected is not None
        assert np.isclose(a.expected, b.expected)


def test_a_new_version_replays_from_scratch(demo_config: Config) -> None:
    check = demo_config.check("signups")
    assert check is not None
    calls: list[int] = []

    def counting(check: CheckConfig, buckets: pd.DatetimeIndex, values: np.ndarray) -> Detector:
        calls.append(len(buckets))
        return _fitted(check, buckets, values)

    kept = Replays(counting)
    series = {"": _series(300)}
    kept.judged(check, series, 50, "v1")
    kept.judged(check, series, 50, "v1")
    assert calls == [250]  # the second request stepped nothing new and built no model
    kept.judged(check, series, 50, ("rebaselined", pd.Timestamp(DEMO_NOW)))
    assert calls == [250, 250]
