"""Speed of /metrics' exposition at the soak's size: 2,000 checks, 20,000 series.

    python -m benchmarks.exposition            # 20,000 series, 7 renders of each kind
    python -m benchmarks.exposition --smoke    # 2,000 series, 3 renders

Fills a ``monitor.exporter.Metrics`` as check runs do (every series with a value and a band,
every check with its run counters, a duration and its last success) and, with the same calls, a
registry of prometheus_client's own Gauge, Counter and Histogram under the same names (how the
exporter kept these metrics before). Then times, in the same process: ``Metrics.exposition``
(what /metrics serves), prometheus_client's ``generate_latest`` on the same registry, and
``generate_latest`` on the prometheus_client registry; prints the medians, their ratios and the
exposition's size, after checking that the three texts carry the same samples.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.harness import arguments, median_seconds
from monitor.exporter import Metrics

START = 1_767_571_200.0  # 2026-01-05, a bucket start


class Reference:
    """prometheus_client's own Gauge, Counter and Histogram under the exporter's names, filled
    through the same calls as ``Metrics``: how the exporter kept these metrics before."""

    def __init__(self, metrics: Metrics) -> None:
        m = metrics
        self.registry = r = CollectorRegistry()
        self.gauges = {
            g.name: Gauge(g.name, g.documentation, g.labelnames, registry=r)
            for g in (m.value, m.expected, m.lower, m.upper, m.score, m.anomaly, m.bucket_ts)
        }
        self.data_age = Gauge(
            m.data_age.name, m.data_age.documentation, m.data_age.labelnames, registry=r
        )
        self.runs = Counter(m.runs.name, m.runs.documentation, m.runs.labelnames, registry=r)
        self.duration = Histogram(
            m.duration.name,
            m.duration.documentation,
            m.duration.labelnames,
            buckets=m.duration.buckets,
            registry=r,
        )
        self.last_success = Gauge(
            m.last_success.name,
            m.last_success.documentation,
            m.last_success.labelnames,
            registry=r,
        )

    def set_series(
        self,
        labels: tuple[str, str, str, str],
        *,
        value: float,
        expected: float | None,
        lower: float | None,
        upper: float | None,
        score: float,
        firing: bool,
        bucket_seconds: float,
    ) -> None:
        """As ``Metrics.set_series``: without a band, the band's gauges are removed."""
        g = self.gauges
        g["kpimon_value"].labels(*labels).set(value)
        g["kpimon_bucket_timestamp_seconds"].labels(*labels).set(bucket_seconds)
        g["kpimon_anomaly"].labels(*labels).set(1 if firing else 0)
        band = (
            "kpimon_expected",
            "kpimon_lower_bound",
            "kpimon_upper_bound",
            "kpimon_anomaly_score",
        )
        if expected is None or lower is None or upper is None:
            for name in band:
                with contextlib.suppress(KeyError):
                    g[name].remove(*labels)
            return
        for name, band_value in zip(band, (expected, lower, upper, score), strict=True):
            g[name].labels(*labels).set(band_value)


class Both:
    """The new ``Metrics`` and its ``Reference``, filled alike."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.reference = Reference(self.metrics)

    def check_run(self, check: str, segments: int, seconds: float) -> None:
        m, r = self.metrics, self.reference
        m.declare_check(check)
        m.runs.labels(check, "ok").inc()
        r.runs.labels(check, "ok").inc()
        for outcome in ("anomaly", "no_data", "error"):
            r.runs.labels(check, outcome)
        m.duration.labels(check).observe(seconds)
        r.duration.labels(check).observe(seconds)
        m.last_success.labels(check).set(START + seconds)
        r.last_success.labels(check).set(START + seconds)
        for s in range(segments):
            labels = (check, f"segment_{s}", "warning", "growth")
            value = 1000.0 + len(check) * 0.37 + s * 11.3
            series: dict[str, Any] = {
                "value": value,
                "expected": value * 0.98,
                "lower": value * 0.9,
                "upper": value * 1.1,
                "score": (value - 1000) / 7,
                "firing": s == 0,
                "bucket_seconds": START + 3600 * s,
            }
            m.set_series(labels, **series)
            r.set_series(labels, **series)


def samples_of(text: bytes, names: set[str] | None = None) -> list[str]:
    """Every sample but the *_created ones (each registry has its own birth times)."""
    return sorted(
        f"{s.name} {sorted(s.labels.items())} {s.value!r}"
        for family in text_string_to_metric_families(text.decode())
        if names is None or family.name in names
        for s in family.samples
        if not s.name.endswith("_created")
    )


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__, "2,000 series, 3 renders")
    parser.add_argument("--repeats", type=int, help="renders of each kind (default 7; --smoke 3)")
    args = parser.parse_args(argv)
    checks, segments = (200, 10) if args.smoke else (2000, 10)
    repeats = args.repeats or (3 if args.smoke else 7)
    both = Both()
    for c in range(checks):
        both.check_run(f"check_{c:04d}", segments, 0.01 * (c % 50))
    metrics, plain = both.metrics, both.reference.registry
    fast = metrics.exposition()
    if samples_of(fast) != samples_of(generate_latest(metrics.registry)):
        print("the fast exposition differs from generate_latest's", file=sys.stderr)
        return 1
    names = {family.name for family in plain.collect()}
    if samples_of(fast, names) != samples_of(generate_latest(plain)):
        print("the fast exposition differs from prometheus_client's metrics", file=sys.stderr)
        return 1
    print(f"{checks:,} checks, {checks * segments:,} series; median of {repeats} renders each")
    fast_s, size = median_seconds(metrics.exposition, repeats)
    generic_s, _ = median_seconds(lambda: generate_latest(metrics.registry), repeats)
    plain_s, _ = median_seconds(lambda: generate_latest(plain), repeats)
    print(f"Metrics.exposition() (/metrics):        {fast_s:.3f} s, {size / 2**20:.1f} MiB")
    print(f"generate_latest(Metrics.registry):      {generic_s:.3f} s ({generic_s / fast_s:.0f}x)")
    print(f"generate_latest(prometheus_client's):   {plain_s:.3f} s ({plain_s / fast_s:.0f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
