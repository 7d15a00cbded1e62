"""Three daemons on one PostgreSQL state database, as a user runs them (subprocesses, real
sockets, a Slack server, signals): they divide the checks, page once, answer for each other and
carry on when one dies. The fault benchmark (``python -m benchmarks.replicas``) measures the
same under more faults; this says what a user sees."""

from __future__ import annotations

import json
import re
import shutil
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.config import parse_config
from monitor.demo import INCIDENTS
from tests.conftest import demo_document, free_port, write_config
from tests.daemon_process import DaemonProcess
from tests.postgres_server import postgres_dsn, postgres_server  # noqa: F401 - fixtures
from tests.slack_server import SlackServer

pytestmark = pytest.mark.slow

TOKEN = "replica-test-token"
OWNED = re.compile(r"^kpimon_replica_owned_checks (\S+)$", re.M)
SERIES = re.compile(r'^kpimon_anomaly\{check="([^"]*)",segment="([^"]*)"', re.M)

# segments of one check that open together are one message (the total and Germany)
MESSAGES = len({check for check, _ in INCIDENTS})


def owned(daemon: DaemonProcess) -> int:
    found = OWNED.search(daemon.metrics())
    return int(float(found.group(1))) if found else -1


def exported(daemon: DaemonProcess) -> set[tuple[str, str]]:
    return set(SERIES.findall(daemon.metrics()))


def post(daemon: DaemonProcess, path: str, body: object | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{daemon.port}{path}", method="POST",
        data=json.dumps(body).encode() if body is not None else b"",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError(f"not within {timeout}s: {what}")


@pytest.fixture
def cluster(
    tmp_path: Path, live_demo_warehouse: Path, slack: SlackServer, postgres_dsn: str  # noqa: F811
) -> Iterator[tuple[list[DaemonProcess], SlackServer]]:
    shutil.copy(live_demo_warehouse, tmp_path / "demo.duckdb")
    document = demo_document(
        tmp_path, token="${SLACK_BOT_TOKEN}", api_url=slack.url, channel="#data-alerts"
    )
    document["state"] = {"url": postgres_dsn, "replicas": 3, "lease_ttl": "3s"}
    document["defaults"].update(post_deploy_window="20s", post_deploy_interval="2s")
    config = write_config(tmp_path / "kpi.yaml", document)
    env = {"SLACK_BOT_TOKEN": slack.token, "KPIMON_API_TOKEN": TOKEN}
    daemons = [
        DaemonProcess(["run", "-c", str(config)], free_port(), env, log=tmp_path / f"r{i}.log")
        for i in range(3)
    ]
    try:
        for daemon in daemons:
            daemon.wait_ready()
        yield daemons, slack
    finally:
        for daemon in daemons:
            daemon.stop(signal.SIGKILL if daemon.process.poll() is None else signal.SIGTERM)
        for daemon in daemons:
            assert "Traceback" not in daemon.output(), daemon.output()


def test_three_replicas_divide_the_checks_page_once_and_survive_a_sigkill(
    cluster: tuple[list[DaemonProcess], SlackServer],
) -> None:
    daemons, slack = cluster
    checks = 7
    wait(lambda: sum(owned(d) for d in daemons) == checks and all(owned(d) > 0 for d in daemons),
         120, "every check held by one replica")  # fmt: skip
    # every replica answers for every check, whoever runs it
    firing = daemons[0].wait_firing(timeout=90)
    assert firing == INCIDENTS
    assert {c["name"] for c in daemons[1].wait_all_ran(60)} == {
        c.name for c in parse_config(demo_document(Path("/x")), "x").checks
    }
    messages = slack.wait_for(MESSAGES, timeout=60)
    # each series is exported by exactly one replica
    wait(lambda: len(set.union(*map(exported, daemons))) == sum(len(exported(d)) for d in daemons)
         and set.union(*map(exported, daemons)) >= INCIDENTS, 30, "one exporter per series")  # fmt: skip

    victim = max(daemons, key=owned)
    victim.stop(signal.SIGKILL)
    survivors = [d for d in daemons if d is not victim]
    started = time.monotonic()
    wait(lambda: sum(owned(d) for d in survivors) == checks, 20, "the survivors took over")
    assert time.monotonic() - started < 3 + 3  # the TTL and a renewal
    # the survivors export the incidents at once (from the stored verdicts) and send nothing again
    wait(lambda: set.union(*map(exported, survivors)) >= INCIDENTS, 30, "incidents exported")
    time.sleep(5)
    assert len(slack.messages()) == len(messages) == MESSAGES


def test_writes_reach_the_check_through_whichever_replica_receives_them(
    cluster: tuple[list[DaemonProcess], SlackServer],
) -> None:
    daemons, slack = cluster
    daemons[0].wait_firing(timeout=90)
    slack.wait_for(MESSAGES, timeout=60)
    check = sorted(INCIDENTS)[0][0]
    holder = next(d for d in daemons if (check, sorted(INCIDENTS)[0][1]) in exported(d))
    other = next(d for d in daemons if d is not holder)
    # a run asked of a replica that does not hold the check is run by the one that does
    before = next(c for c in holder.checks() if c["name"] == check)["last_run"]["started"]
    assert post(other, f"/api/v1/checks/{check}/run")[0] == 202
    wait(lambda: next(c for c in other.checks() if c["name"] == check)["last_run"]["started"]
         != before, 20, "the holder ran it")  # fmt: skip
    # a rebaseline there is saved and followed by the holder: the alert resolves in Slack
    status, answer = post(other, f"/api/v1/checks/{check}/rebaseline", {})
    assert (status, answer["resolved"]) == (202, None)
    slack.wait_for_text("baseline restarted", timeout=20)
    # a deployment recorded on one replica is watched by all and decided once, even when the
    # replica running its checks dies in the middle of the window
    status, _ = post(other, "/api/v1/deployments",
                     {"id": "d1", "environment": "prod", "models": ["fct_orders"]})  # fmt: skip
    assert status == 201
    time.sleep(5)
    watching = next(d for d in daemons if ("revenue", "DE") in exported(d))  # fct_orders' check
    watching.stop(signal.SIGKILL)
    survivor = next(d for d in daemons if d is not watching)
    wait(lambda: json.loads(survivor.get("/api/v1/deployments/d1")[1])["status"] == "passed",
         60, "the deployment passed")  # fmt: skip
    def reports() -> int:
        # by its text: an alert's buttons carry hex digests, which may hold "d1" too
        return len([m for m in slack.messages() if m["text"].startswith("Deployment d1 ")])

    wait(lambda: reports() >= 1, 30, "the deployment's report in Slack")
    time.sleep(3)
    assert reports() == 1
