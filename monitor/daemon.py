"""The daemon's lifecycle: build every part from the config, start, reload, and stop cleanly.

Start order: state store, warehouses, HTTP server (so /healthz answers at once), scheduler.
Stop (SIGTERM/SIGINT): no new runs, running checks get a few seconds to finish and save their
state, warehouse statements still running are cancelled, then the server closes.
With the state in PostgreSQL the daemon is one of several replicas sharing the checks through
leases (monitor/leases.py): it starts with no check, runs those whose leases it takes, follows
the run requests, mutes, rebaselines and deployments received by the others, and hands its
leases back when it stops.
Reload (SIGHUP, ``POST /-/reload``, or a changed file with ``--watch-config``): the config file
and the dbt manifest are read again; a broken one is refused and logged and the daemon goes on
with the config it has. Otherwise the checks pause between runs while a new engine takes over
the unchanged checks' models and alert state (see ``monitor.reload``), removed checks resolve
their alerts with a note, and the scheduler, the dispatcher and the deployment watcher follow.
"""

from __future__ import annotations

import hashlib
import logging
import signal
import threading
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from types import FrameType

from monitor.alerts.alertmanager import AlertmanagerClient
from monitor.alerts.dispatch import Dispatcher
from monitor.alerts.slack import SlackChannel
from monitor.answers.model import ANSWERS
from monitor.answers.service import AnswerService
from monitor.answers.socket_mode import SocketModeTransport
from monitor.client import token_from_env
from monitor.config import Config, load_config
from monitor.engine import Engine
from monitor.errors import ConfigError, KpiMonitorError, StateStoreError
from monitor.exporter import Metrics
from monitor.grafana import GrafanaAnnotator
from monitor.leases import BEATS_PER_TTL, Coordinator
from monitor.listener import HttpServer
from monitor.model_cache import fingerprint
from monitor.records.outbox import OUTBOX_LEASE
from monitor.reload import ReloadBusy, ReloadPlan, plan_reload, restart_problems
from monitor.scheduler import CheckScheduler
from monitor.server import Api
from monitor.store import StateStore
from monitor.timeline import Timeline
from monitor.warehouse import Warehouse, open_warehouse, open_warehouses
from monitor.watcher import DeploymentWatcher

log = logging.getLogger("monitor.daemon")

SHUTDOWN_GRACE_SECONDS = 7.0
# how long a reload waits for the check runs in progress before it gives up (and is retried)
RELOAD_PAUSE_SECONDS = 60.0
RETIRED = "the check was removed from the configuration"
REDEFINED = "the check's query changed with a config reload"


def _slack(config: Config) -> SlackChannel | None:
    return SlackChannel(config.slack) if config.slack is not None and config.slack.token else None


def _alertmanager(config: Config) -> AlertmanagerClient | None:
    return AlertmanagerClient(config.alertmanager) if config.alertmanager else None


def _chart_buckets(config: Config) -> int:
    return config.slack.chart_buckets if config.slack is not None and config.slack.token else 0


class Daemon:
    def __init__(self, config: Config, *, host: str | None = None, port: int | None = None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.store = StateStore.open(config.state)
        self.shared = config.state.url is not None
        self.coordinator: Coordinator | None = None
        self.warehouses = open_warehouses(config)
        # the wall clock, unless it jumps ahead of the time elapsed (see monitor.timeline)
        self.clock = Timeline()
        self.dispatcher = Dispatcher(
            config,
            self.store,
            self.metrics,
            _slack(config),
            _alertmanager(config),
            clock=self.clock,
            may_send=self._housekeeper,
        )
        self.metrics.declare_channels(["log", *self.dispatcher.channels])
        # the watcher judges the engine's runs and rebaselines through the engine: the engine's
        # listeners look the watcher up when called, the watcher being built just below
        self.engine = Engine(
            config,
            self.warehouses,
            self.store,
            self.metrics,
            channels=self.dispatcher.channels,
            clock=self.clock,
            chart_buckets=_chart_buckets(config),
            shared=self.shared,
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
            housekeeper=self._housekeeper,
        )
        if self.shared:
            self.coordinator = Coordinator(
                self.store,
                [c.name for c in config.checks],
                config.state.lease_ttl.total_seconds(),
                self.metrics,
                acquired=self._acquired,
                lost=self._lost,
                idle=self.scheduler.idle,
            )
        else:
            self.metrics.owned_checks.set(len(config.checks))
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
        self._reload_lock = threading.Lock()
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
        if self.coordinator is not None:
            self.scheduler.every(
                self.config.state.lease_ttl.total_seconds() / BEATS_PER_TTL,
                self._follow,
                "follow the other replicas",
            )
            self.coordinator.start()
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

    # --- replicas -----------------------------------------------------------------------------

    def _housekeeper(self) -> bool:
        """Whether this process delivers the outbox (and prunes, re-sends, snapshots): a single
        daemon always, a replica while it holds the outbox's lease."""
        return self.coordinator is None or self.coordinator.holds(OUTBOX_LEASE)

    def _acquired(self, names: list[str]) -> None:
        for name in names:
            self.engine.take_over(name)
        self.scheduler.hold(names)

    def _lost(self, names: list[str]) -> None:
        self.scheduler.drop(names)
        for name in names:
            self.engine.let_go(name)

    def _follow(self) -> None:
        """What the other replicas received for the checks held here: runs asked for, mutes,
        rebaselines; and the deployments they recorded or decided."""
        assert self.coordinator is not None
        try:
            for name in self.store.runs.take_requests(self.coordinator.held()):
                self.scheduler.run_now(name)
            self.engine.refresh()
            for deployment in self.watcher.refresh():
                self.scheduler.watch(deployment)
        except StateStoreError as exc:
            log.warning(
                "cannot follow the other replicas; retried", extra={"fields": {"error": str(exc)}}
            )

    # --- reload -------------------------------------------------------------------------------

    def reload(self) -> ReloadPlan:
        """Read the config file (and its dbt manifest) again and apply it.

        Raises ConfigError when the new config is invalid or changes what needs a restart, and
        ``ReloadBusy`` when a check run did not end in time; either way the daemon goes on with
        the config it had, and the failure is logged and exported.
        """
        with self._reload_lock:
            try:
                config = load_config(self.config.source)
                problems = restart_problems(self.config, config)
                if problems:
                    raise ConfigError(config.source, problems)
                plan = self._apply(config)
            except Exception as exc:
                self.metrics.config_loaded(False)
                problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
                log.error(
                    "config reload refused; running on the previous config",
                    extra={"fields": {"config": self.config.source, "problems": problems}},
                )
                raise
            self.metrics.config_loaded(True)
            log.info("config reloaded", extra={"fields": {"config": config.source,
                                                          **plan.summary()}})  # fmt: skip
            return plan

    def _apply(self, config: Config) -> ReloadPlan:
        plan = plan_reload(self.config, config)
        warehouses, unused = self._warehouses_for(config)
        slack = self.dispatcher.slack if config.slack == self.config.slack else _slack(config)
        alertmanager = (
            self.dispatcher.alertmanager
            if config.alertmanager == self.config.alertmanager
            else _alertmanager(config)
        )
        channels = [n for n, sink in (("slack", slack), ("alertmanager", alertmanager)) if sink]
        # built before the pause (it reads the store); the checks it takes over bring their
        # own alert state from the running engine
        engine = Engine(
            config,
            warehouses,
            self.store,
            self.metrics,
            channels=channels,
            clock=self.engine.clock,
            chart_buckets=_chart_buckets(config),
            cause=self.watcher.cause,
            after_run=self.watcher.observe,
            shared=self.shared,
            # one book of recorded events: none recorded while the engines change hands is lost
            calendars=self.engine.calendars,
        )
        with self.scheduler.paused(RELOAD_PAUSE_SECONDS):
            for name in plan.removed:
                self.engine.retire(name, RETIRED)
            for name in plan.kept:
                engine.adopt(self.engine.release(name))
            for name in plan.changed:
                old, new = self.config.check(name), config.check(name)
                assert old is not None and new is not None
                if fingerprint(old) != fingerprint(new):
                    # other series now (another table, filter or split): what was open about
                    # the old ones ends here, and the new ones start afresh
                    self.engine.retire(name, REDEFINED)
                    memory = replace(self.engine.release(name), latest={}, last_run=None)
                else:
                    memory = self.engine.release(name)
                engine.adopt(memory.without_models())
            self.dispatcher.reconfigure(config, slack, alertmanager)
            if self.answers is not None and config.slack is not None and slack is not None:
                self.answers.reconfigure(config.slack, slack)
                self.metrics.declare_answers((c.name for c in config.checks), ANSWERS)
            self.metrics.declare_channels(["log", *channels])
            self.watcher.reconfigure(config, engine, channels)
            self.scheduler.reconfigure(config, engine, plan)
            self.api.engine = engine
            self.config, self.engine, self.warehouses = config, engine, warehouses
            if self.coordinator is not None:
                self.coordinator.reconfigure([c.name for c in config.checks])
            else:
                self.metrics.owned_checks.set(len(config.checks))
        for warehouse in unused:
            warehouse.close()
        return plan

    def _warehouses_for(self, config: Config) -> tuple[dict[str, Warehouse], list[Warehouse]]:
        """The new config's warehouses, keeping the open adapters whose settings did not
        change (their connections, and what they know of being up), and the ones no longer
        used."""
        before = self.config.all_warehouses()
        kept: dict[str, Warehouse] = {}
        for name, settings in config.all_warehouses().items():
            same = before.get(name) == settings
            kept[name] = self.warehouses[name] if same else open_warehouse(name, settings)
        unused = [w for name, w in self.warehouses.items() if kept.get(name) is not w]
        return kept, unused

    def _watched_files(self) -> bytes:
        """A digest of the config file and its dbt manifest, to see that one changed (a
        ConfigMap update replaces a symlink: the content is what counts)."""
        digest = hashlib.sha256()
        for path in (Path(self.config.source), self.config.manifest_path):
            try:
                digest.update(path.read_bytes() if path is not None else b"")
            except OSError as exc:
                digest.update(str(exc).encode())
        return digest.digest()

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
        if self.coordinator is not None:
            self.coordinator.stop()  # the other replicas take the checks over at once
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
        seen = self._watched_files()
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
                current = self._watched_files()
                if self._hangup or current != seen:
                    self._hangup = False
                    seen = current if self._try_reload() else seen
        finally:
            self.stop()

    def _try_reload(self) -> bool:
        """Reload; False only when it should be tried again (checks were busy). A refused file
        counts as seen: it is not retried until it changes."""
        try:
            self.reload()
        except ReloadBusy:
            return False
        except Exception:  # noqa: S110 - reload() logged it and exported the failure
            pass
        return True
