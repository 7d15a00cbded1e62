"""The Prometheus metrics: every name and label here is a contract (see the README)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitor import __version__

OUTCOMES = ("ok", "anomaly", "no_data", "error")
_SERIES = ("check", "segment", "severity", "team")


class Metrics:
    """All kpimon_* metrics, in a registry of their own (one per daemon)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.value = Gauge(
            "kpimon_value", "Observed value of the latest complete bucket", _SERIES, registry=r
        )
        self.expected = Gauge(
            "kpimon_expected",
            "Baseline's expected value for the latest bucket",
            _SERIES,
            registry=r,
        )
        self.lower = Gauge(
            "kpimon_lower_bound", "Lower edge of the normal band", _SERIES, registry=r
        )
        self.upper = Gauge(
            "kpimon_upper_bound", "Upper edge of the normal band", _SERIES, registry=r
        )
        self.score = Gauge(
            "kpimon_anomaly_score",
            "Signed deviation in robust standard units (negative: below expected)",
            _SERIES,
            registry=r,
        )
        self.anomaly = Gauge(
            "kpimon_anomaly", "1 while the series' alert is firing, else 0", _SERIES, registry=r
        )
        self.bucket_ts = Gauge(
            "kpimon_bucket_timestamp_seconds",
            "Start of the latest scored bucket",
            _SERIES,
            registry=r,
        )
        self.data_age = Gauge(
            "kpimon_data_age_seconds",
            "Now minus the newest row's timestamp",
            ("check", "segment"),
            registry=r,
        )
        self.runs = Counter(
            "kpimon_check_runs", "Check runs by outcome", ("check", "outcome"), registry=r
        )
        self.duration = Histogram(
            "kpimon_check_duration_seconds",
            "Wall time of one check run",
            ("check",),
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, math.inf),
            registry=r,
        )
        self.last_success = Gauge(
            "kpimon_check_last_success_timestamp_seconds",
            "Last run that completed without error",
            ("check",),
            registry=r,
        )
        self.warehouse_up = Gauge(
            "kpimon_warehouse_up",
            "1 if the last query to the warehouse succeeded",
            ("warehouse",),
            registry=r,
        )
        self.alerts_sent = Counter(
            "kpimon_alerts_sent",
            "Notifications by channel and outcome",
            ("channel", "outcome"),
            registry=r,
        )
        self.deployments = Counter(
            "kpimon_deployments", "Deployment events received", ("environment",), registry=r
        )
        self.deployment_verdicts = Counter(
            "kpimon_deployment_verdicts",
            "Finished deployment watches by verdict",
            ("environment", "verdict"),
            registry=r,
        )
        self.last_deployment = Gauge(
            "kpimon_last_deployment_timestamp_seconds",
            "Time of the latest deployment event",
            ("environment",),
            registry=r,
        )
        self.build_info = Gauge(
            "kpimon_build_info", "Always 1; the running version", ("version",), registry=r
        )
        self.build_info.labels(__version__).set(1)

    def declare_check(self, check: str) -> None:
        """Create a check's counters at 0 so rates and absent() work before the first run."""
        for outcome in OUTCOMES:
            self.runs.labels(check, outcome)
        self.duration.labels(check)

    def declare_channels(self, channels: Iterable[str]) -> None:
        for channel in channels:
            for outcome in ("ok", "error"):
                self.alerts_sent.labels(channel, outcome)

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
        self.value.labels(*labels).set(value)
        self.bucket_ts.labels(*labels).set(bucket_seconds)
        self.anomaly.labels(*labels).set(1 if firing else 0)
        if expected is None or lower is None or upper is None:
            for gauge in (self.expected, self.lower, self.upper, self.score):
                with contextlib.suppress(KeyError):
                    gauge.remove(*labels)
            return
        self.expected.labels(*labels).set(expected)
        self.lower.labels(*labels).set(lower)
        self.upper.labels(*labels).set(upper)
        self.score.labels(*labels).set(score)

    def set_firing(self, labels: tuple[str, str, str, str], firing: bool) -> None:
        self.anomaly.labels(*labels).set(1 if firing else 0)
