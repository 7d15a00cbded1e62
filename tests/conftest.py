"""Shared fixtures: demo warehouses in temp dirs, an engine factory, a local Slack server,
daemon helpers."""

from __future__ import annotations

import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor import demo
from monitor.config import CheckConfig, Config, parse_config
from monitor.engine import Engine
from monitor.exporter import Metrics
from monitor.server import Api
from monitor.store import StateStore
from monitor.warehouse import Warehouse, open_warehouses
from monitor.watcher import DeploymentWatcher
from tests.slack_server import SlackServer

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "config" / "demo.yaml"
# a fixed "now" for tests that judge the demo with an injected clock: a Thursday afternoon
DEMO_NOW = datetime(2026, 11, 26, 15, 20, tzinfo=UTC)


class Clock:
    """Real time (which the state store stamps queued messages with) plus the time a test
    skipped, e.g. over a delivery's backoff."""

    def __init__(self) -> None:
        self.skipped = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.skipped

    def advance(self, seconds: float) -> None:
        self.skipped += timedelta(seconds=seconds)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def query_in_thread(
    warehouse: Warehouse, sql: str, timeout: float | None = None
) -> tuple[threading.Thread, list[Any]]:
    """Run ``warehouse.query(sql)`` on a thread; the list gets its frame or its exception."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(warehouse.query(sql, {}, timeout=timeout))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def demo_document(directory: Path, **slack: Any) -> dict[str, Any]:
    """The demo config as a dict, pointed at ``directory``; Slack enabled when given."""
    document: dict[str, Any] = yaml.safe_load(DEMO_CONFIG.read_text())
    document["warehouse"]["path"] = str(directory / "demo.duckdb")
    document["state"]["path"] = str(directory / "kpimon-state.db")
    if slack:
        document["slack"] = slack
    else:
        document.pop("slack")
    return document


def one_check(base: dict[str, object], **fields: object) -> CheckConfig:
    """The check ``base`` describes with ``fields`` laid over it, parsed as the only check of a
    config whose DuckDB warehouse is never opened."""
    document = {"warehouse": {"kind": "duckdb", "path": "x"}, "checks": [{**base, **fields}]}
    return parse_config(document).checks[0]


def bare_api(engine: Engine, token: str | None) -> Api:
    """The daemon's HTTP API over ``engine`` alone: always ready, no scheduler behind "run
    now" or a recorded deployment, no alert channels."""
    watcher = DeploymentWatcher(
        engine.config, engine.store, engine, engine.metrics, channels=[], clock=engine.clock
    )
    return Api(
        engine,
        engine.metrics,
        ready=lambda: [],
        run_now=lambda name: None,
        token=token,
        deployments=watcher,
        watch=lambda deployment: None,
    )


def write_config(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def slack_daemon_config(
    directory: Path, warehouse: Path, slack: SlackServer, **slack_fields: Any
) -> Path:
    """``warehouse`` copied into ``directory`` and a config file alerting to ``slack`` in
    #data-alerts, its token read from $SLACK_BOT_TOKEN (set it to ``slack.token``)."""
    shutil.copy(warehouse, directory / "demo.duckdb")
    document = demo_document(
        directory, token="${SLACK_BOT_TOKEN}", api_url=slack.url, channel="#data-alerts",
        **slack_fields,
    )  # fmt: skip
    return write_config(directory / "kpi.yaml", document)


@pytest.fixture(scope="session")
def demo_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo warehouse built for DEMO_NOW (read-only: copy it to change it)."""
    directory = tmp_path_factory.mktemp("demo-fixed")
    demo.build(directory / "demo.duckdb", now=DEMO_NOW)
    return directory / "demo.duckdb"


@pytest.fixture(scope="session")
def live_demo_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo warehouse built for the real clock, for the daemon as a subprocess."""
    directory = tmp_path_factory.mktemp("demo-live")
    demo.build(directory / "demo.duckdb")
    return directory / "demo.duckdb"


@pytest.fixture
def demo_dir(tmp_path: Path, demo_warehouse: Path) -> Path:
    shutil.copy(demo_warehouse, tmp_path / "demo.duckdb")
    return tmp_path


@pytest.fixture
def demo_config(demo_dir: Path) -> Config:
    return parse_config(demo_document(demo_dir), "demo.yaml")


class EngineFactory:
    """Builds engines as most tests want them; each keyword overrides one part.

    ``config``: the demo's (the ``demo_config`` fixture, on a copy of the demo warehouse) unless
    given; ``warehouses``: the config's, opened; ``store``: a StateStore, or a path to open one
    at (a new in-memory one by default: pass the same path to engines that share state);
    ``metrics``: a fresh registry (an engine's is ``engine.metrics``); ``clock``: a fixed one at
    ``now`` (DEMO_NOW) unless given; ``channels``: Slack's (alerts are queued in the store's
    outbox for it); any other keyword goes to :class:`Engine` as it is. What the factory opened
    is closed when the test ends; what it was given is the test's to close.
    """

    def __init__(self, request: pytest.FixtureRequest, opened: ExitStack) -> None:
        self._request = request
        self._opened = opened

    def __call__(
        self,
        *,
        config: Config | None = None,
        warehouses: dict[str, Warehouse] | None = None,
        store: StateStore | Path | str = ":memory:",
        metrics: Metrics | None = None,
        now: datetime = DEMO_NOW,
        clock: Callable[[], datetime] | None = None,
        channels: list[str] | None = None,
        **engine: Any,
    ) -> Engine:
        if config is None:
            config = self._request.getfixturevalue("demo_config")
            assert isinstance(config, Config)
        if warehouses is None:
            warehouses = open_warehouses(config)
            for warehouse in warehouses.values():
                self._opened.enter_context(warehouse)
        if not isinstance(store, StateStore):
            store = self._opened.enter_context(StateStore(store))
        return Engine(
            config,
            warehouses,
            store,
            metrics if metrics is not None else Metrics(),
            channels=channels if channels is not None else ["slack"],
            clock=clock if clock is not None else (lambda: now),
            **engine,
        )


@pytest.fixture
def make_engine(request: pytest.FixtureRequest) -> Iterator[EngineFactory]:
    """An :class:`EngineFactory` for the test."""
    with ExitStack() as opened:
        yield EngineFactory(request, opened)


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    server = SlackServer().start()
    yield server
    server.stop()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KPIMON_API_TOKEN", "KPIMON_API_TOKEN_FILE", "KPIMON_CONFIG", "SLACK_BOT_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"
