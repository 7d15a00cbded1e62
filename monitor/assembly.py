"""What the daemon builds from a config, at start and again on a reload: the alert channels and
the engine."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from monitor.alerts.alertmanager import AlertmanagerClient
from monitor.alerts.slack import SlackChannel
from monitor.calendar.book import CalendarBook
from monitor.config import Config
from monitor.engine import Engine, RunResult
from monitor.exporter import Metrics
from monitor.notifying import Cause
from monitor.store import StateStore
from monitor.warehouse import Warehouse


def slack_channel(config: Config) -> SlackChannel | None:
    return SlackChannel(config.slack) if config.slack is not None and config.slack.token else None


def alertmanager_client(config: Config) -> AlertmanagerClient | None:
    return AlertmanagerClient(config.alertmanager) if config.alertmanager else None


def build_engine(
    config: Config,
    warehouses: dict[str, Warehouse],
    store: StateStore,
    metrics: Metrics,
    *,
    channels: list[str],
    clock: Callable[[], datetime],
    cause: Cause,
    after_run: Callable[[RunResult], None],
    calendars: CalendarBook | None = None,
) -> Engine:
    """The engine of a config: one of several replicas when the state is in PostgreSQL; it
    draws charts for Slack only (``calendars``: see ``Engine``)."""
    slack = config.slack
    return Engine(
        config,
        warehouses,
        store,
        metrics,
        channels=channels,
        clock=clock,
        chart_buckets=slack.chart_buckets if slack is not None and slack.token else 0,
        shared=config.state.url is not None,
        cause=cause,
        after_run=after_run,
        calendars=calendars,
    )
