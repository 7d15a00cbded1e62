"""The Prometheus metrics: every name and label here is a contract (see the README).

The metrics with a sample per series or per check (20,000 series and 2,000 checks in a large
deployment: some 200,000 lines) are kept here in plain dicts, each series' label text escaped
once, and rendered with string joins: prometheus_client's ``generate_latest`` builds a Sample
object and escapes every label of every line on each scrape, seconds at that size. The output is
exactly what ``generate_latest`` writes for the same metrics. The few other metrics stay
prometheus_client objects and are rendered by it.
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import prometheus_client.metrics
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from monitor import __version__

OUTCOMES = ("ok", "anomaly", "no_data", "error")
_SERIES = ("check", "segment", "severity", "team")

# prometheus_client's own number formatting (Go's, as Prometheus parses it), typed for mypy
_format_value: Callable[[float], str] = floatToGoString

Labels = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _label_text(names: Iterable[str], values: Iterable[str]) -> str:
    """``{name="value",...}`` as generate_latest writes it: names sorted, values escaped."""
    pairs = sorted(zip(names, values, strict=True))
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in pairs) + "}"


def _header(name: str, documentation: str, kind: str) -> str:
    escaped = documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {escaped}\n# TYPE {name} {kind}\n"


def _use_created() -> bool:
    # prometheus_client's switch (PROMETHEUS_DISABLE_CREATED_SERIES) for the *_created samples
    # of counters and histograms, so that these families follow it as the library's own do
    return bool(getattr(prometheus_client.metrics, "_use_created", True))


class _Family(ABC):
    """A labelled metric family, as prometheus_client's are used here (``labels`` creates a
    series at zero); a collector (``describe``, ``collect``) for the registry's generic tools, and
    ``render`` for the fast exposition. Thread-safe: check runs update it while the HTTP thread
    renders, so both take the family's lock; a series' lines are written when it changes, and a
    render holds the lock only to join them.

    ``label_texts`` caches each series' escaped label text; families over the same label names
    share one cache, so a series' text is built and stored once for all of them.
    """

    kind = ""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Labels,
        label_texts: dict[Labels, str] | None = None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self._label_texts = {} if label_texts is None else label_texts
        self._lock = threading.Lock()

    def _text(self, values: Labels) -> str:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes the labels {self.labelnames}, got {values}")
        text = self._label_texts.get(values)
        if text is None:
            # setdefault: another thread may have cached the same text meanwhile; keep one copy
            text = self._label_texts.setdefault(values, _label_text(self.labelnames, values))
        return text

    def forget_text(self, values: Labels) -> None:
        """Drop a series' cached label text (shared by the families over the same labels)."""
        self._label_texts.pop(values, None)

    def _metric(self) -> Metric:
        return Metric(self.name, self.documentation, self.kind)

    def describe(self) -> list[Metric]:
        # the registry learns the names (and refuses a duplicate) without collecting samples
        return [self._metric()]

    @abstractmethod
    def collect(self) -> Iterator[Metric]: ...

    @abstractmethod
    def drop(self, first: str) -> None:
        """Remove every series whose first label value is ``first`` (a check that is gone)."""

    @abstractmethod
    def render(self) -> str:
        """The family in the text exposition format, exactly as generate_latest writes it."""


class SeriesGauge(_Family):
    kind = "gauge"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Labels,
        label_texts: dict[Labels, str] | None = None,
    ) -> None:
        super().__init__(name, documentation, labelnames, label_texts)
        self._values: dict[Labels, float] = {}
        # each sample's line, written when it is set: a scrape only joins them
        self._lines: dict[Labels, str] = {}
        self._head = _header(name, documentation, self.kind)

    def labels(self, *values: str) -> _GaugeChild:
        line = self._line(values, 0.0)
        with self._lock:
            if values not in self._values:
                self._values[values], self._lines[values] = 0.0, line
        return _GaugeChild(self, values)

    def _line(self, values: Labels, value: float) -> str:
        return f"{self.name}{self._text(values)} {_format_value(value)}\n"

    def set(self, values: Labels, value: float) -> None:
        line = self._line(values, value)
        with self._lock:
            self._values[values], self._lines[values] = float(value), line

    def remove(self, *values: str) -> None:
        """Drop a series' sample; nothing happens when it has none."""
        with self._lock:
            self._values.pop(values, None)
            self._lines.pop(values, None)

    def drop(self, first: str) -> None:
        with self._lock:
            for values in [v for v in self._values if v[0] == first]:
                del self._values[values], self._lines[values]
                self.forget_text(values)

    def collect(self) -> Iterator[Metric]:
        metric = self._metric()
        with self._lock:
            samples = list(self._values.items())
        for values, value in samples:
            metric.add_sample(self.name, dict(zip(self.labelnames, values, strict=True)), value)
        yield metric

    def render(self) -> str:
        with self._lock:
            return self._head + "".join(self._lines.values())


@dataclass(frozen=True)
class _GaugeChild:
    gauge: SeriesGauge
    values: Labels

    def set(self, value: float) -> None:
        self.gauge.set(self.values, value)


class _Counted:
    """A counter series, or a histogram series' buckets and sum, with its lines as they are
    written for a scrape; guarded by its family's lock."""

    __slots__ = ("counts", "created", "created_line", "labels", "lines", "text", "total")

    def __init__(self, name: str, labels: dict[str, str], text: str, buckets: int) -> None:
        self.labels = labels
        self.text = text
        self.created = time.time()
        self.created_line = f"{name}_created{text} {_format_value(self.created)}\n"
        self.total = 0.0  # a counter's value, a histogram's sum
        self.counts = [0.0] * buckets  # a histogram's observations per bucket, not cumulative
        self.lines = ""


class _CountingFamily(_Family):
    """Counters and histograms: each series' lines are written anew when it changes (once per
    check run), followed by a ``_created`` family with each series' birth time."""

    def __init__(
        self, name: str, documentation: str, labelnames: Labels, head: str, buckets: int
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self._head = head
        self._buckets = buckets
        self._series: dict[Labels, _Counted] = {}
        self._created_head = _header(name + "_created", documentation, "gauge")

    def _get(self, values: Labels) -> _Counted:
        """The series, created at zero; call with the lock held."""
        series = self._series.get(values)
        if series is None:
            labels = dict(zip(self.labelnames, values, strict=True))
            text = self._text(values)
            series = self._series[values] = _Counted(self.name, labels, text, self._buckets)
            self._write(series)
        return series

    def drop(self, first: str) -> None:
        with self._lock:
            for values in [v for v in self._series if v[0] == first]:
                del self._series[values]
                self.forget_text(values)

    @abstractmethod
    def _write(self, series: _Counted) -> None:
        """Write ``series.lines`` from its values; called with the lock held."""

    @abstractmethod
    def _samples(self, metric: Metric, series: _Counted) -> None:
        """Add the series' samples (but ``_created``) to ``metric``."""

    def collect(self) -> Iterator[Metric]:
        metric = self._metric()
        with self._lock:
            for series in self._series.values():
                self._samples(metric, series)
                if _use_created():
                    metric.add_sample(self.name + "_created", series.labels, series.created)
        yield metric

    def render(self) -> str:
        with self._lock:
            lines = [self._head, *(s.lines for s in self._series.values())]
            if self._series and _use_created():
                lines.append(self._created_head)
                lines.extend(s.created_line for s in self._series.values())
        return "".join(lines)


class SeriesCounter(_CountingFamily):
    kind = "counter"

    def __init__(self, name: str, documentation: str, labelnames: Labels) -> None:
        head = _header(name + "_total", documentation, self.kind)
        super().__init__(name, documentation, labelnames, head, 0)

    def labels(self, *values: str) -> _CounterChild:
        with self._lock:
            self._get(values)
        return _CounterChild(self, values)

    def inc(self, values: Labels, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        with self._lock:
            series = self._get(values)
            series.total += amount
            self._write(series)

    def _write(self, series: _Counted) -> None:
        series.lines = f"{self.name}_total{series.text} {_format_value(series.total)}\n"

    def _samples(self, metric: Metric, series: _Counted) -> None:
        metric.add_sample(self.name + "_total", series.labels, series.total)


@dataclass(frozen=True)
class _CounterChild:
    counter: SeriesCounter
    values: Labels

    def inc(self, amount: float = 1) -> None:
        self.counter.inc(self.values, amount)


class SeriesHistogram(_CountingFamily):
    """A histogram with non-negative bucket bounds, the last one +Inf (so its _sum is always
    written, as prometheus_client writes it then)."""

    kind = "histogram"

    def __init__(
        self, name: str, documentation: str, labelnames: Labels, buckets: tuple[float, ...]
    ) -> None:
        if list(buckets) != sorted(buckets) or buckets[0] < 0 or buckets[-1] != math.inf:
            raise ValueError(f"{name}: give sorted non-negative buckets ending with +Inf")
        head = _header(name, documentation, self.kind)
        super().__init__(name, documentation, labelnames, head, len(buckets))
        self.buckets = buckets
        self._les = tuple(_format_value(b) for b in buckets)

    def labels(self, *values: str) -> _HistogramChild:
        with self._lock:
            self._get(values)
        return _HistogramChild(self, values)

    def observe(self, values: Labels, amount: float) -> None:
        with self._lock:
            series = self._get(values)
            series.total += amount
            # counted in the first bucket that holds it (none for NaN, as in prometheus_client)
            for index, bound in enumerate(self.buckets):
                if amount <= bound:
                    series.counts[index] += 1
                    break
            self._write(series)

    def _cumulative(self, series: _Counted) -> list[tuple[str, float]]:
        cumulative, counts = 0.0, []
        for le, count in zip(self._les, series.counts, strict=True):
            cumulative += count
            counts.append((le, cumulative))
        return counts

    def _write(self, series: _Counted) -> None:
        name, labels = self.name, series.labels
        cumulative = self._cumulative(series)
        lines = [
            f"{name}_bucket{_label_text((*labels, 'le'), (*labels.values(), le))} "
            f"{_format_value(count)}\n"
            for le, count in cumulative
        ]
        lines.append(f"{name}_count{series.text} {_format_value(cumulative[-1][1])}\n")
        lines.append(f"{name}_sum{series.text} {_format_value(series.total)}\n")
        series.lines = "".join(lines)

    def _samples(self, metric: Metric, series: _Counted) -> None:
        cumulative = self._cumulative(series)
        for le, count in cumulative:
            metric.add_sample(self.name + "_bucket", {**series.labels, "le": le}, count)
        metric.add_sample(self.name + "_count", series.labels, cumulative[-1][1])
        metric.add_sample(self.name + "_sum", series.labels, series.total)


@dataclass(frozen=True)
class _HistogramChild:
    histogram: SeriesHistogram
    values: Labels

    def observe(self, amount: float) -> None:
        self.histogram.observe(self.values, amount)


class Metrics:
    """All kpimon_* metrics, in a registry of their own (one per daemon).

    ``registry`` holds every metric, for prometheus_client's tools (``get_sample_value``);
    ``exposition`` is what /metrics serves.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        series_texts: dict[Labels, str] = {}

        def series_gauge(name: str, documentation: str) -> SeriesGauge:
            # the series' gauges share their label texts: one escape per series, not seven
            return SeriesGauge(name, documentation, _SERIES, series_texts)

        self.value = series_gauge("kpimon_value", "Observed value of the latest complete bucket")
        self.expected = series_gauge(
            "kpimon_expected", "Baseline's expected value for the latest bucket"
        )
        self.lower = series_gauge("kpimon_lower_bound", "Lower edge of the normal band")
        self.upper = series_gauge("kpimon_upper_bound", "Upper edge of the normal band")
        self.score = series_gauge(
            "kpimon_anomaly_score",
            "Signed deviation in robust standard units (negative: below expected)",
        )
        self.anomaly = series_gauge("kpimon_anomaly", "1 while the series' alert is firing, else 0")
        self.bucket_ts = series_gauge(
            "kpimon_bucket_timestamp_seconds", "Start of the latest scored bucket"
        )
        self.data_age = SeriesGauge(
            "kpimon_data_age_seconds", "Now minus the newest row's timestamp", ("check", "segment")
        )
        self.runs = SeriesCounter(
            "kpimon_check_runs", "Check runs by outcome", ("check", "outcome")
        )
        self.duration = SeriesHistogram(
            "kpimon_check_duration_seconds",
            "Wall time of one check run",
            ("check",),
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, math.inf),
        )
        self.last_success = SeriesGauge(
            "kpimon_check_last_success_timestamp_seconds",
            "Last run that completed without error",
            ("check",),
        )
        # answers to alerts from Slack, per check and answer (declared at 0 for every check
        # when alerts can be answered, so that increase() counts the first answer too)
        self.alert_feedback = SeriesCounter(
            "kpimon_alert_feedback",
            "Answers to alerts from Slack, by check and answer",
            ("check", "answer"),
        )
        self._families: tuple[_Family, ...] = (
            self.value,
            self.expected,
            self.lower,
            self.upper,
            self.score,
            self.anomaly,
            self.bucket_ts,
            self.data_age,
            self.runs,
            self.duration,
            self.last_success,
            self.alert_feedback,
        )
        for family in self._families:
            self.registry.register(family)
        # the metrics with a handful of samples: prometheus_client's own, rendered by it from a
        # registry of their own, which is in turn a collector of the full registry
        self._others = CollectorRegistry()
        r = self._others
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
        # named as Prometheus names its own (prometheus_config_last_reload_successful, ...)
        self.reload_success = Gauge(
            "kpimon_config_last_reload_success",
            "1 if the last config (re)load succeeded, 0 if it was refused",
            registry=r,
        )
        self.reload_timestamp = Gauge(
            "kpimon_config_last_reload_timestamp_seconds",
            "Time of the last successful config (re)load",
            registry=r,
        )
        # the precision of the checks whose alerts were answered in the last 30 days
        self.alert_precision = Gauge(
            "kpimon_alert_precision",
            "Share of the last 30 days' answered alerts of a check that were real",
            ("check",),
            registry=r,
        )
        self._precise: set[str] = set()
        self._lock = threading.Lock()
        # replicas sharing the checks (monitor/leases.py); a single daemon owns every check
        self.owned_checks = Gauge(
            "kpimon_replica_owned_checks", "Checks this replica holds leases on", registry=r
        )
        self._leases: LeaseMetrics | None = None
        self.registry.register(self._others)

    @property
    def leases(self) -> LeaseMetrics:
        """The lease metrics, registered when a replica first uses them (a single daemon on
        SQLite has no leases to report)."""
        if self._leases is None:
            self._leases = LeaseMetrics(self._others)
        return self._leases

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format, exactly as ``generate_latest`` writes
        ``registry``, in a fraction of its time."""
        ours = "".join([family.render() for family in self._families])
        return ours.encode() + generate_latest(self._others)

    def declare_check(self, check: str) -> None:
        """Create a check's counters at 0 so rates and absent() work before the first run."""
        for outcome in OUTCOMES:
            self.runs.labels(check, outcome)
        self.duration.labels(check)

    def forget_check(self, check: str) -> None:
        """Drop every sample of a check removed from the config."""
        for family in self._families:
            family.drop(check)

    def forget_series(self, labels: tuple[str, str, str, str]) -> None:
        """Drop the samples of one series (a segment no longer tracked), label text included."""
        for gauge in (self.value, self.expected, self.lower, self.upper, self.score,
                      self.anomaly, self.bucket_ts):  # fmt: skip
            gauge.remove(*labels)
        self.value.forget_text(labels)
        self.data_age.remove(*labels[:2])

    def declare_answers(self, checks: Iterable[str], answers: Iterable[str]) -> None:
        """Create the answer counters of the checks at 0 (alerts can be answered)."""
        kinds = list(answers)
        for check in checks:
            for answer in kinds:
                self.alert_feedback.labels(check, answer)

    def config_loaded(self, success: bool, when: float | None = None) -> None:
        """Record a config (re)load: refused ones leave the time of the last good one."""
        self.reload_success.set(1 if success else 0)
        if success:
            self.reload_timestamp.set(time.time() if when is None else when)

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
        self.value.set(labels, value)
        self.bucket_ts.set(labels, bucket_seconds)
        self.anomaly.set(labels, 1 if firing else 0)
        if expected is None or lower is None or upper is None:
            for gauge in (self.expected, self.lower, self.upper, self.score):
                gauge.remove(*labels)
            return
        self.expected.set(labels, expected)
        self.lower.set(labels, lower)
        self.upper.set(labels, upper)
        self.score.set(labels, score)

    def set_precision(self, figures: dict[str, float]) -> None:
        """The precision of each check with answered alerts; a check without any in the
        window has no sample (there is no figure, rather than a made-up one)."""
        with self._lock:
            for check in self._precise - set(figures):
                self.alert_precision.remove(check)
            for check, figure in figures.items():
                self.alert_precision.labels(check).set(figure)
            self._precise = set(figures)

    def set_firing(self, labels: tuple[str, str, str, str], firing: bool) -> None:
        self.anomaly.set(labels, 1 if firing else 0)


class LeaseMetrics:
    """A replica's leases (monitor/leases.py), beside ``kpimon_replica_owned_checks``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.outbox_lease = Gauge(
            "kpimon_replica_outbox_lease",
            "1 if this replica holds the outbox's lease (it delivers the notifications)",
            registry=r,
        )
        self.replicas = Gauge(
            "kpimon_replica_live_replicas", "Live replicas seen at the last lease renewal",
            registry=r,
        )  # fmt: skip
        self.last_renewal = Gauge(
            "kpimon_replica_lease_renewal_timestamp_seconds",
            "Time of the last successful lease renewal",
            registry=r,
        )
        self.renewals = Counter(
            "kpimon_replica_lease_renewals",
            "Lease renewals (heartbeats) by outcome",
            ("outcome",),
            registry=r,
        )
        self.changes = Counter(
            "kpimon_replica_lease_changes",
            "Leases acquired (taken over or new), lost (expired before renewal) or released"
            " (handed over on a rebalance)",
            ("change",),
            registry=r,
        )
        for outcome in ("ok", "error"):
            self.renewals.labels(outcome)
        for change in ("acquired", "lost", "released"):
            self.changes.labels(change)
