"""The daemon's lifecycle: build every part from the config, start, and stop cleanly.

Start order: state store, warehouses, HTTP server (so /healthz answers at once), scheduler.
Stop (SIGTERM/SIGINT): no new runs, running checks get a few seconds to finish and save their
state, warehouse statements still running are cancelled, then the server closes.
The daemon composes the two jobs around that lifecycle: with the state in PostgreSQL it is one
of several replicas sharing the checks through leases (``coordination.ReplicaCoordination``);
SIGHUP, ``POST /-/reload`` or a changed file with ``--watch-config`` reload the config
(``reloading.Reloader``).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import timedelta
from types import FrameType

from monitor.alerts.dispatch import Dispatcher
from monitor.answers.model import ANSWERS
from monitor.answers.service import AnswerService
from monitor.answers.socket_mode import SocketModeTransport
from monitor.assembly import alertmanager_client, build_engine, slack_channel
from monitor.client import token_from_env
from monitor.config import Config
from monitor.coordination import ReplicaCoordination
from monitor.errors import KpiMonitorError, StateStoreError
from monitor.exporter import Metrics
from monitor.grafana import GrafanaAnnotator
from monitor.listener import HttpServer
from monitor.reload import ReloadPlan
from monitor.reloading import Reloader
from monitor.scheduler import CheckScheduler
from monitor.server import Api
from monitor.store import StateStore
from monitor.timeline import Timeline
from monitor.warehouse import open_warehouses
from monitor.watcher import DeploymentWatcher

log = logging.getLogger("monitor.daemon")

SHUTDOWN_GRACE_SECONDS = 7.0


class Daemon:
    """Owns the daemon's lifecycle: builds every part from the config, starts them in order,
    serves until a signal, and stops them in order; replica coordination and reloads are
    composed (``replicas``, ``reloader``)."""

    def __init__(self, config: Config, *, host: str | None = None, port: int | None = None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.store = StateStore.open(config.state)
        self.shared = config.state.url is not None
        self.warehouses = open_warehouses(config)
        # the wall clock, unless it jumps ahead of the time elapsed (see monitor.timeline)
        self.clock = Timeline()
        # the housekeeper is asked at each send, once the replica coordination is built below
        self.dispatcher = Dispatcher(
            config,
            self.store,
            self.metrics,
            slack_channel(config),
            alertmanager_client(config),
            clock=self.clock,
            may_send=lambda: self.replicas.housekeeper(),
        )
        self.metrics.declare_channels(["log", *self.dispatcher.channels])
        # the watcher judges the engine's runs and rebaselines through the engine: the engine's
        # listeners look the watcher up when called, the watcher being built just below
        self.engine = build_engine(
            config,
            self.warehouses,
            self.store,
            self.metrics,
            channels=self.dispatcher.channels,
            clock=self.clock,
            cause=lambda check, since, now: self.watcher.cause(check, since, now),
            after_run=lambda result: self.watcher.observe(result),
        )
        annotator = GrafanaAnnotator(config.grafana) if config.grafana else None
        self.watcher = DeploymentWatcher(
            config,
            self.store,
            self.engine,
            self.metrics,
            channels=self.dispatcher.channels,
            clock=self.engine.clock,
            annotate=annotator,
        )
        self.scheduler = CheckScheduler(
            config,
            self.engine,
            self.dispatcher,
            self.watcher,
            shared=self.shared,
            housekeeper=lambda: self.replicas.housekeeper(),
        )
        self.replicas = ReplicaCoordination(
            config, self.store, self.metrics, self.scheduler, self.watcher, lambda: self.engine
        )
        self.reloader = Reloader(self)
        self.api = Api(
            self.engine,
            self.metrics,
            ready=self.problems,
            run_now=self.scheduler.run_now,
            token=token_from_env(),
            deployments=self.watcher,
            watch=self.scheduler.watch,
            reload=self.reload,
            annotate=annotator.event if annotator is not None else None,
        )
        self.answers, self.socket_mode = self._answers(config)
        self.api.answers = self.answers
        if self.answers is not None:
            self.metrics.declare_answers((c.name for c in config.checks), ANSWERS)
        try:
            self.http = HttpServer(
                self.api,
                host or config.server.host,
                port if port is not None else config.server.port,
                config.server,
            )
        except KpiMonitorError:
            self._close_warehouses()
            self.store.close()
            raise
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._hangup = False
        self.metrics.config_loaded(True)

    def _answers(
        self, config: Config
    ) -> tuple[AnswerService | None, SocketModeTransport | None]:
        """Answers to alerts from Slack, when a bot token and a transport are configured."""
        slack = config.slack
        if slack is None or not slack.answers or self.dispatcher.slack is None:
            return None, None
        service = AnswerService(
            slack,
            self.dispatcher.slack,
            lambda: self.engine,
            self.store,
            self.metrics,
            clock=self.clock,
            deliver=self.scheduler.deliver_soon,
        )
        transport = None
        if slack.app_token is not None:
            token = slack.app_token.get_secret_value()
            transport = SocketModeTransport(token, slack.api_url, service)
        return service, transport

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
        if self.answers is not None:
            self.answers.start()
        if self.socket_mode is not None:
            self.socket_mode.start()
        self.replicas.start()
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

    def reload(self) -> ReloadPlan:
        """Read the config file (and its dbt manifest) again and apply it: see
        ``Reloader.reload`` (what it raises, what it leaves as it was)."""
        return self.reloader.reload()

    # --- stop ---------------------------------------------------------------------------------

    def stop(self) -> None:
        log.info("stopping")
        if self.socket_mode is not None:
            self.socket_mode.stop()
        finished = self.scheduler.shutdown(timeout=SHUTDOWN_GRACE_SECONDS)
        if self.answers is not None:
            self.answers.stop()
        self._close_warehouses()
        if not finished:
            self.scheduler.wait_idle(timeout=2.0)  # their runs end as errors, state saved
        self.replicas.stop()  # the other replicas take the checks over at once
        self.http.stop()
        self.store.close()
        log.info("stopped")

    def _close_warehouses(self) -> None:
        """Close every warehouse, cancelling the statements still running. Each close waits up
        to a few seconds for its statements to stop: side by side, that wait is paid once."""
        closers = [
            threading.Thread(target=warehouse.close, name=f"close-{name}")
            for name, warehouse in self.warehouses.items()
        ]
        for closer in closers:
            closer.start()
        for closer in closers:
            closer.join()

    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self._stop.set()
        self._wake.set()

    def request_reload(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self._hangup = True
        self._wake.set()

    def run_forever(self, watch_config: timedelta | None = None) -> None:
        """Start, serve until SIGTERM or SIGINT, then stop. SIGHUP reloads the config; with
        ``watch_config``, so does a change of the config file or the dbt manifest, looked for
        at that interval."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)
        self.start()
        seen = self.reloader.watched_files()
        next_look = time.monotonic()
        try:
            while not self._stop.is_set():
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                due = watch_config is not None and time.monotonic() >= next_look
                if not (self._hangup or due) or self._stop.is_set():
                    continue
                if watch_config is not None:
                    next_look = time.monotonic() + watch_config.total_seconds()
                current = self.reloader.watched_files()
                if self._hangup or current != seen:
                    self._hangup = False
                    seen = current if self.reloader.attempt() else seen
        finally:
            self.stop()
