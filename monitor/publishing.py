"""What check runs tell the outside besides the state store: metrics and log lines."""

from __future__ import annotations

import logging
import time

from monitor.alerts.notification import Notification
from monitor.alerts.state import AlertState
from monitor.buckets import to_utc
from monitor.config import CheckConfig
from monitor.detection import Verdict
from monitor.exporter import Metrics
from monitor.ledger import RunResult
from monitor.warehouse.base import Warehouse

log = logging.getLogger("monitor.engine")


def series_labels(check: CheckConfig, segment: str) -> tuple[str, str, str, str]:
    """The metric labels of one of a check's series."""
    return check.name, segment, check.severity, check.team


class Publisher:
    """Owns the engine's side of the metrics (each run, series and warehouse) and of the log
    (failed runs, warehouses coming back, alerts opening and resolving).

    ``announce``: whether each alert is also a log line (``kpi-monitor check`` prints them
    itself).
    """

    def __init__(self, metrics: Metrics, *, announce: bool) -> None:
        self._metrics = metrics
        self._announce = announce

    def reached(self, warehouse: Warehouse, up: bool) -> None:
        """Export whether a warehouse answered, and log when it comes back (its failure is in
        the failed run's own log line)."""
        self._metrics.warehouse_up.labels(warehouse.name).set(1 if up else 0)
        if warehouse.mark_reachable(up) is False and up:
            log.info("warehouse is back", extra={"fields": {"warehouse": warehouse.name}})

    def finished(self, result: RunResult, fields: dict[str, str] | None = None) -> RunResult:
        """Count a run and its duration; a failed one is a warning naming its error (and
        ``fields``)."""
        self._metrics.runs.labels(result.check, result.outcome).inc()
        self._metrics.duration.labels(result.check).observe(result.duration)
        if result.error is not None:
            fields = {"check": result.check, "error": result.error, **(fields or {})}
            log.warning("check run failed", extra={"fields": fields})
        return result

    def succeeded(self, name: str, at: float | None = None) -> None:
        """The check ran through (at ``at``, seconds since the epoch; now when None)."""
        self._metrics.last_success.labels(name).set(time.time() if at is None else at)

    def export(self, check: CheckConfig, segment: str, verdict: Verdict, state: AlertState) -> None:
        """A series' latest verdict and whether it fires."""
        self._metrics.set_series(
            series_labels(check, segment),
            value=verdict.value,
            expected=verdict.expected,
            lower=verdict.lower,
            upper=verdict.upper,
            score=verdict.score,
            firing=state.firing,
            bucket_seconds=to_utc(verdict.bucket).timestamp(),
        )

    def resolved(self, check: CheckConfig, segment: str) -> None:
        """A series' episode ended for a reason (not a recovery): it no longer fires."""
        self._metrics.set_firing(series_labels(check, segment), False)

    def untracked(self, check: CheckConfig, segment: str, reason: str) -> None:
        """A segment a re-rank dropped: its metrics go."""
        self._metrics.forget_series(series_labels(check, segment))
        log.info(
            "segment no longer tracked",
            extra={"fields": {"check": check.name, "segment": segment, "reason": reason}},
        )

    def announce(self, notes: list[Notification], muted: bool) -> None:
        """A log line per alert, whatever the channels (when ``announce``)."""
        for note in notes if self._announce else []:
            # an opening asks for attention; a resolution is news, not a warning
            log.log(
                logging.WARNING if note.kind == "opened" else logging.INFO,
                f"alert {note.kind}" + (" (muted)" if muted else ""),
                extra={
                    "fields": {
                        "check": note.check,
                        "segment": note.segment,
                        "episode": note.episode,
                        "value": note.value,
                        "expected": note.expected,
                        "lower": note.lower,
                        "upper": note.upper,
                        "score": round(note.score, 2),
                        "since": note.since.isoformat(),
                        "severity": note.severity,
                        "owner": note.owner,
                    }
                },
            )
            self._metrics.alerts_sent.labels("log", "ok").inc()
