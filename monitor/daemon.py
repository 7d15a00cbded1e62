"""The daemon's lifecycle: build every part from the config, start, and stop cleanly.

Start order: state store, warehouses, HTTP server (so /healthz answers at once), scheduler.
Stop (SIGTERM/SIGINT): no new runs, running checks get a few seconds to finish and save their
state, warehouse statements still running are cancelled, then the server closes.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime
from types import FrameType

from monitor.alerts.alertmanager import AlertmanagerClient
from monitor.alerts.dispatch import Dispatcher
from monitor.alerts.slack import SlackChannel
from monitor.client import token_from_env
from monitor.config import Config
from monitor.engine import Engine
from monitor.errors import StateStoreError
from monitor.exporter import Metrics
from monitor.grafana import GrafanaAnnotator
from monitor.listener import HttpServer
from monitor.scheduler import CheckScheduler
from monitor.server import Api
from monitor.store import StateStore
from monitor.warehouse import open_warehouses
from monitor.watcher import DeploymentWatcher

log = logging.getLogger("monitor.daemon")

SHUTDOWN_GRACE_SECONDS = 7.0


def _now() -> datetime:
    return datetime.now(UTC)


class Daemon:
    def __init__(self, config: Config, *, host: str | None = None, port: int | None = None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.store = StateStore.open(config.state)
        self.warehouses = open_warehouses(config)
        slack = (
            SlackChannel(config.slack) if config.slack is not None and config.slack.token else None
        )
        alertmanager = AlertmanagerClient(config.alertmanager) if config.alertmanager else None
        self.dispatcher = Dispatcher(
            config, self.store, self.metrics, slack, alertmanager, clock=_now
        )
        self.metrics.declare_channels(["log", *self.dispatcher.channels])
        self.engine = Engine(
            config,
            self.warehouses,
            self.store,
            self.metrics,
            channels=self.dispatcher.channels,
            chart_buckets=config.slack.chart_buckets if slack and config.slack else 0,
        )
        self.watcher = DeploymentWatcher(
            config,
            self.store,
            self.engine,
            self.metrics,
            channels=self.dispatcher.channels,
            clock=self.engine.clock,
            annotate=GrafanaAnnotator(config.grafana) if config.grafana else None,
        )
        self.engine.cause = self.watcher.cause
        self.engine.after_run = self.watcher.observe
        self.scheduler = CheckScheduler(config, self.engine, self.dispatcher, self.watcher)
        self.api = Api(
            self.engine,
            self.metrics,
            ready=self.problems,
            run_now=self.scheduler.run_now,
            token=token_from_env(),
            deployments=self.watcher,
            watch=self.scheduler.watch,
        )
        self.http = HttpServer(
            self.api,
            host or config.server.host,
            port if port is not None else config.server.port,
            config.server,
        )
        self._stop = threading.Event()

    @property
    def port(self) -> int:
        return self.http.port

    def problems(self) -> list[str]:
        """Why the daemon is not ready (empty when it is): /readyz."""
        problems = []
        if not self.scheduler.running:
            problems.append("scheduler is not running")
        try:
            self.store.ping()
        except StateStoreError as exc:
            problems.append(str(exc))
        return problems

    def start(self) -> None:
        self.http.start()
        self.scheduler.start()
        log.info(
            "kpi-monitor started",
            extra={
                "fields": {
                    "port": self.port,
                    "checks": len(self.config.checks),
                    "config": self.config.source,
                }
            },
        )

    def stop(self) -> None:
        log.info("stopping")
        finished = self.scheduler.shutdown(timeout=SHUTDOWN_GRACE_SECONDS)
        for warehouse in self.warehouses.values():
            warehouse.close()  # and cancels the statements still running
        if not finished:
            self.scheduler.wait_idle(timeout=2.0)  # their runs end as errors, state saved
        self.http.stop()
        self.store.close()
        log.info("stopped")

    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self._stop.set()

    def run_forever(self) -> None:
        """Start, serve until SIGTERM or SIGINT, then stop."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self.start()
        try:
            while not self._stop.wait(timeout=1.0):
                pass
        finally:
            self.stop()
