"""The daemon as a user runs it: a subprocess, real sockets, signals and restarts."""

from __future__ import annotations

import json
import re
import shutil
import signal
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.alerts.notification import Notification
from monitor.alerts.state import AlertState
from monitor.demo import INCIDENTS
from monitor.store import StateStore
from tests.conftest import demo_document, free_port, slack_daemon_config, write_config
from tests.daemon_process import DaemonProcess
from tests.slack_server import SlackServer

pytestmark = pytest.mark.slow

ANOMALY = re.compile(r'^kpimon_anomaly\{check="([^"]*)",segment="([^"]*)",[^}]*\} (\S+)$', re.M)


def anomaly_samples(text: str) -> dict[tuple[str, str], float]:
    return {(c, s): float(v) for c, s, v in ANOMALY.findall(text)}


def test_demo_shows_exactly_the_incidents_within_a_minute_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    port = free_port()
    daemon = DaemonProcess(
        ["demo", "--dir", str(tmp_path / "demo")], port, log=tmp_path / "daemon.log"
    )
    try:
        daemon.wait_ready(timeout=30)
        deadline = time.monotonic() + 60
        samples: dict[tuple[str, str], float] = {}
        while time.monotonic() < deadline:
            samples = anomaly_samples(daemon.metrics())
            if {k for k, v in samples.items() if v == 1} == INCIDENTS and len(samples) >= 10:
                break
            time.sleep(0.5)
        assert {k for k, v in samples.items() if v == 1} == INCIDENTS
        assert {k for k, v in samples.items() if v == 0} >= {
            ("revenue", "US"),
            ("orders_rows", ""),
            ("orders_freshness", ""),
        }
    finally:
        code, took = daemon.stop(signal.SIGTERM)
    assert code == 0, daemon.output()
    assert took < 10
    lines = [json.loads(line) for line in daemon.output().splitlines() if line.startswith("{")]
    assert [entry["msg"] for entry in lines][-1] == "stopped"
    opened = {(e["check"], e["segment"]) for e in lines if e["msg"] == "alert opened"}
    assert opened == INCIDENTS
    assert "Traceback" not in daemon.output()


def test_a_restart_while_firing_sends_no_second_message(
    tmp_path: Path, live_demo_warehouse: Path, slack: SlackServer
) -> None:
    config = slack_daemon_config(tmp_path, live_demo_warehouse, slack)
    env = {"SLACK_BOT_TOKEN": slack.token}
    port = free_port()
    first = DaemonProcess(["run", "-c", str(config)], port, env, log=tmp_path / "first.log")
    try:
        first.wait_ready()
        # Germany and revenue's total open together: one message for the two
        messages = slack.wait_for(len(INCIDENTS) - 1, timeout=60)
        deadline = time.monotonic() + 30
        while len(slack.uploads()) < len(INCIDENTS) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        assert first.stop()[0] == 0
    # each alert has its chart in its alert's thread (for freshness: the data age over time);
    # revenue's total and Germany share one thread
    charts = {u.title.split(" 20")[0]: (u.channel, u.thread_ts) for u in slack.uploads()}
    assert sorted(charts) == ["events_freshness", "revenue", "revenue [DE]", "signups"]
    assert charts["revenue"] == charts["revenue [DE]"]
    assert len(set(charts.values())) == 3 and all(u.content.startswith(b"\x89PNG") for u in slack.uploads())
    posted = sorted(m["text"].splitlines()[0].split(" is ")[0] for m in messages)
    assert posted == ["2 series of team revenue moved unexpectedly:", "CRITICAL: events_freshness", "WARNING: signups"]
    assert all(m["channel"] == "#data-alerts" and m["blocks"] for m in messages)

    second = DaemonProcess(["run", "-c", str(config)], port, env, log=tmp_path / "second.log")
    try:
        second.wait_ready()
        assert second.wait_firing() == INCIDENTS
        time.sleep(1.0)  # the outbox is flushed right after each run; give a late send a chance
    finally:
        assert second.stop()[0] == 0
    assert len(slack.messages()) == len(INCIDENTS) - 1


def test_the_daemon_prunes_its_state_store_by_the_configured_retention_from_the_start(
    tmp_path: Path, live_demo_warehouse: Path
) -> None:
    shutil.copy(live_demo_warehouse, tmp_path / "demo.duckdb")
    document = demo_document(tmp_path)
    document["state"]["retention"] = {"notifications": "7d", "deployments": "14d"}
    state = Path(document["state"]["path"])
    store = StateStore(state)  # what a daemon running for months left behind
    store.outbox.enqueue("deployment/d-old/passed", "deployment", "{}", ["slack"])
    store.outbox.enqueue("deployment/d-new/passed", "deployment", "{}", ["slack"])
    for entry in store.outbox.pending("slack"):
        store.outbox.mark_delivered([entry.id])
    store.deployments.record("d-old", "prod", "passed", datetime.now(UTC) - timedelta(days=15), "{}")
    store.deployments.record("d-new", "prod", "passed", datetime.now(UTC) - timedelta(days=13), "{}")
    old = datetime(2025, 6, 2, tzinfo=UTC)  # an episode long over, of a segment long gone
    episode = Notification("opened", "revenue", "XX", 1, old, old, 1.0, 10.0, 8.0, 12.0, -5.0, "")
    store.record("revenue", "XX", AlertState(episode=1, last_bucket=old), [episode], [])
    store.close()
    with sqlite3.connect(state) as db:
        eight_days_ago = (datetime.now(UTC) - timedelta(days=8)).isoformat()
        db.execute(
            "UPDATE outbox SET created_at = ? WHERE notification_key LIKE '%d-old%'",
            (eight_days_ago,),
        )
        db.execute("UPDATE alert_events SET created_at = ?", (old.isoformat(),))
        db.execute("UPDATE series_state SET updated_at = ?", (old.isoformat(),))
    config = write_config(tmp_path / "kpi.yaml", document)
    daemon = DaemonProcess(["run", "-c", str(config)], free_port(), log=tmp_path / "daemon.log")
    try:
        daemon.wait_ready()
        deadline = time.monotonic() + 30
        while "state store pruned" not in daemon.output() and time.monotonic() < deadline:
            time.sleep(0.2)
        pruned = [json.loads(line) for line in daemon.output().splitlines() if "pruned" in line]
        assert pruned == [
            {**pruned[0], "notifications": 1, "deployments": 1, "manifests": 0,
             "alert_events": 1, "series_states": 1}
        ], daemon.output()
    finally:
        assert daemon.stop()[0] == 0
    with sqlite3.connect(state) as db:
        assert db.execute("SELECT notification_key FROM outbox").fetchall() == [
            ("deployment/d-new/passed",)
        ]
        assert db.execute("SELECT id FROM deployments").fetchall() == [("d-new",)]
