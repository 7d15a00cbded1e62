"""The fast /metrics exposition is the contract, byte for byte: what ``Metrics.exposition`` writes
is exactly what prometheus_client's ``generate_latest`` writes for the same registry, and it
parses to the same families and samples as prometheus_client's own Gauge, Counter and Histogram
would expose for the same calls (label values that need escaping, NaN and infinities included).
"""

from __future__ import annotations

import math
import threading
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.exposition import Reference
from monitor.exporter import Metrics

AWKWARD = (
    'say "hi"',
    "C:\\path\\n",  # a backslash before an n: escaped as two characters, not as a newline
    "two\nlines",
    "Zürich ✓ 東京",
    "",
    "\\",
    '"\\\n',
)
VALUES = (0.0, -0.0, 1.0, -2.5, 1e20, 1.5e-9, 123456789.125, math.nan, math.inf, -math.inf)


def set_both(
    metrics: Metrics,
    reference: Reference,
    labels: tuple[str, str, str, str],
    value: float,
    band: tuple[float, float, float, float] | None,
) -> None:
    expected, lower, upper, score = band if band else (None, None, None, 0.0)
    for target in (metrics, reference):
        target.set_series(
            labels,
            value=value,
            expected=expected,
            lower=lower,
            upper=upper,
            score=score,
            firing=True,
            bucket_seconds=1_767_571_200,
        )


def populated() -> tuple[Metrics, Reference]:
    """Every per-series and per-check metric, with awkward labels and values, bands removed and
    set again, and the small metrics too."""
    metrics = Metrics()
    reference = Reference(metrics)
    for i, text in enumerate(AWKWARD):
        labels = (f"check {text}", text, "warning", f"team{i}")
        for value in VALUES:
            set_both(metrics, reference, labels, value, (value, value - 1, value + 1, -value))
        other = (labels[0], f"{text}-other", "critical", text)
        set_both(metrics, reference, other, VALUES[i], None)  # no baseline: no band
        set_both(metrics, reference, other, VALUES[i + 1], (1.0, 0.0, 2.0, 0.5))
        set_both(metrics, reference, labels, math.nan, None)  # the band goes away
        metrics.data_age.labels(labels[0], text).set(VALUES[i])
        reference.data_age.labels(labels[0], text).set(VALUES[i])
        metrics.declare_check(labels[0])
        for outcome in ("ok", "anomaly", "no_data", "error"):
            reference.runs.labels(labels[0], outcome)
        reference.duration.labels(labels[0])
        for seconds in (0.0, 0.05, 0.07, 1.0, 299.9, 300.0, 1e6):
            metrics.duration.labels(labels[0]).observe(seconds)
            reference.duration.labels(labels[0]).observe(seconds)
        metrics.runs.labels(labels[0], "ok").inc()
        metrics.runs.labels(labels[0], "error").inc(2.5)
        reference.runs.labels(labels[0], "ok").inc()
        reference.runs.labels(labels[0], "error").inc(2.5)
        metrics.last_success.labels(labels[0]).set(1_767_571_200.5 + i)
        reference.last_success.labels(labels[0]).set(1_767_571_200.5 + i)
    metrics.declare_channels(["log", "slack"])
    metrics.alerts_sent.labels("slack", "ok").inc()
    metrics.deployments.labels("prod").inc()
    metrics.warehouse_up.labels("default").set(1)
    return metrics, reference


def families(text: bytes, names: set[str] | None = None) -> list[tuple[Any, ...]]:
    """Each family's name, type, help and samples, in order; NaN compared by its repr and each
    ``_created`` value (a birth time, different in each registry) left out."""
    return [
        (
            family.name,
            family.type,
            family.documentation,
            [
                (s.name, s.labels, "created" if s.name.endswith("_created") else repr(s.value))
                for s in family.samples
            ],
        )
        for family in text_string_to_metric_families(text.decode())
        if names is None or family.name in names
    ]


def test_the_exposition_is_what_generate_latest_writes_for_the_registry() -> None:
    metrics, _ = populated()
    assert metrics.exposition() == generate_latest(metrics.registry)


def test_the_exposition_parses_to_what_prometheus_clients_own_metrics_expose() -> None:
    metrics, reference = populated()
    expected = families(generate_latest(reference.registry))
    names = {family[0] for family in expected}
    exposed = families(metrics.exposition(), names)
    assert exposed == expected
    samples = {s[0] for family in exposed for s in family[3]}
    assert {"kpimon_check_runs_created", "kpimon_check_duration_seconds_created"} <= samples
    awkward = {v for family in exposed for s in family[3] for v in s[1].values()}
    assert set(AWKWARD) <= awkward, "every awkward label value survives the round trip"


def test_the_small_metrics_are_exposed_too() -> None:
    metrics, _ = populated()
    text = metrics.exposition().decode()
    assert 'kpimon_alerts_sent_total{channel="slack",outcome="ok"} 1.0\n' in text
    assert 'kpimon_build_info{version="0.1.0"} 1.0\n' in text
    assert 'kpimon_warehouse_up{warehouse="default"} 1.0\n' in text


def test_an_empty_registry_writes_every_family_header() -> None:
    metrics = Metrics()
    assert metrics.exposition() == generate_latest(metrics.registry)
    assert "# TYPE kpimon_expected gauge\n" in metrics.exposition().decode()


def test_the_registry_answers_get_sample_value_for_the_fast_families() -> None:
    metrics, _ = populated()
    labels = {"check": 'check say "hi"', "segment": 'say "hi"-other'}
    series = {**labels, "severity": "critical", "team": 'say "hi"'}
    assert metrics.registry.get_sample_value("kpimon_expected", series) == 1.0
    check = {"check": 'check say "hi"'}
    assert metrics.registry.get_sample_value("kpimon_check_duration_seconds_count", check) == 7
    runs = {**check, "outcome": "error"}
    assert metrics.registry.get_sample_value("kpimon_check_runs_total", runs) == 2.5


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.tuples(st.text(), st.text(), st.text(), st.text()),
            st.floats(allow_nan=True, allow_infinity=True),
            st.booleans(),
        ),
        max_size=12,
    )
)
def test_any_labels_and_values_parse_as_prometheus_clients_would(
    calls: list[tuple[tuple[str, str, str, str], float, bool]],
) -> None:
    metrics = Metrics()
    reference = Reference(metrics)
    for labels, value, with_band in calls:
        band = (value, value, value, value) if with_band else None
        set_both(metrics, reference, labels, value, band)
    expected = families(generate_latest(reference.registry))
    names = {family[0] for family in expected}
    assert families(metrics.exposition(), names) == expected
    assert metrics.exposition() == generate_latest(metrics.registry)


def test_rendering_while_check_runs_update_is_safe() -> None:
    metrics = Metrics()
    failures: list[BaseException] = []

    def run_checks(worker: int) -> None:
        try:
            for i in range(3000):
                check = f"check_{worker}_{i % 300}"
                band = None if i % 3 == 0 else (1.0, 0.0, 2.0, 0.5)
                metrics.set_series(
                    (check, f"s{i % 7}", "warning", "t"),
                    value=float(i),
                    expected=band and band[0],
                    lower=band and band[1],
                    upper=band and band[2],
                    score=0.5,
                    firing=i % 2 == 0,
                    bucket_seconds=float(i),
                )
                metrics.runs.labels(check, "ok").inc()
                metrics.duration.labels(check).observe(i % 100 / 10)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    workers = [threading.Thread(target=run_checks, args=(w,)) for w in range(3)]
    for worker in workers:
        worker.start()
    renders = []
    while any(worker.is_alive() for worker in workers):
        renders.append(metrics.exposition())  # while series appear, change and lose their band
    for worker in workers:
        worker.join()
    assert not failures
    assert len(renders) > 1, "the renders overlapped the updates"
    families(renders[len(renders) // 2])  # a render made mid-way parses
    assert metrics.exposition() == generate_latest(metrics.registry)
