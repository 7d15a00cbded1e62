"""Config reload without a restart: what carries on, what starts, what is retired, and a broken
file that changes nothing; on a running daemon (a subprocess) through POST /-/reload, SIGHUP and
a ConfigMap-style file swap."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from monitor.config import Config, parse_config
from monitor.reload import plan_reload, restart_problems
from monitor.warehouse import open_warehouses
from tests.conftest import DEMO_NOW, REPO, EngineFactory, demo_document, free_port, write_config
from tests.daemon_process import DaemonProcess
from tests.fake_warehouse import recorded
from tests.slack_server import SlackServer

TOKEN = "reload-token"


def config(**changes: Any) -> Config:
    document = demo_document(Path("/nowhere"))
    for name, fields in changes.items():
        document["checks"] = [
            {**c, **fields} if c["name"] == name else c for c in document["checks"]
        ]
    return parse_config(document)


def test_a_reload_plan_sorts_the_checks() -> None:
    old = config()
    document = demo_document(Path("/nowhere"))
    document["checks"] = [c for c in document["checks"] if c["name"] != "signups"]
    document["checks"][2]["sensitivity"] = 6  # orders_rows
    document["checks"].append({"name": "refunds", "kind": "row_count", "table": "analytics.fct_orders",
                               "timestamp_column": "order_ts", "where": "status = 'refunded'"})
    document["checks"].reverse()  # order does not matter
    plan = plan_reload(old, parse_config(document))
    assert sorted(plan.kept) == ["average_order_value", "daily_customers", "events_freshness",
                                 "orders_freshness", "revenue"]
    assert (plan.changed, plan.added, plan.removed) == (["orders_rows"], ["refunds"], ["signups"])
    assert plan.summary() == {"kept": 5, "changed": ["orders_rows"], "added": ["refunds"], "removed": ["signups"]}


def test_a_check_whose_warehouse_changed_is_changed() -> None:
    old = config()
    document = demo_document(Path("/elsewhere"))
    plan = plan_reload(old, parse_config(document))
    assert plan.kept == [] and len(plan.changed) == 7


def test_the_state_store_server_and_scheduler_need_a_restart() -> None:
    old = config()
    document = demo_document(Path("/nowhere"))
    document["server"] = {"port": 9300}
    document["state"]["path"] = "/elsewhere/state.db"
    assert restart_problems(old, parse_config(document)) == [
        "state: changed, but it needs a restart (the reload applies nothing)",
        "server: changed, but it needs a restart (the reload applies nothing)",
    ]
    assert restart_problems(old, config(revenue={"sensitivity": 5})) == []


def test_turning_answers_from_slack_on_or_changing_the_app_token_needs_a_restart() -> None:
    def slack(**fields: Any) -> Config:
        return parse_config(demo_document(Path("/nowhere"), token="xoxb-1", **fields))

    off, http = slack(), slack(signing_secret="s1")
    socket = slack(app_token="xapp-1-a")
    problem = ("slack.app_token, slack.signing_secret: answers from Slack turned on or off, or"
               " another app token: needs a restart (the reload applies nothing)")  # fmt: skip
    assert restart_problems(off, http) == restart_problems(http, socket) == [problem]
    assert restart_problems(socket, slack(app_token="xapp-1-b")) == [problem]
    # another signing secret, or other user groups, apply at once
    assert restart_problems(http, slack(signing_secret="s2", answer_groups=["S0X"])) == []


def test_the_state_stores_retention_changes_with_a_reload() -> None:
    old = config()
    document = demo_document(Path("/nowhere"))
    document["state"]["retention"] = {"notifications": "7d", "deployments": "365d"}
    assert restart_problems(old, parse_config(document)) == []


def test_a_check_handed_to_a_new_engine_goes_on_without_reading_its_history_again(
    demo_config: Config, make_engine: EngineFactory
) -> None:
    warehouse, reads = recorded(open_warehouses(demo_config)["default"])
    first = make_engine(warehouses={"default": warehouse})
    opened = first.run("revenue")
    [episode] = [s.state.episode for s in opened.series if s.segment == "DE" and s.state.firing]
    later = DEMO_NOW + pd.Timedelta(hours=1)
    second = make_engine(warehouses={"default": warehouse}, store=first.store, now=later)
    second.adopt(first.release("revenue"))
    # what the API shows carries over: the last run (kept without its verdicts), the drill-down
    assert second.last_run("revenue") == replace(opened, verdicts={})
    assert second.explanation("revenue") == first.explanation("revenue") is not None
    reads.calls.clear()
    result = second.run("revenue")
    [since] = [c.params.get("since") for c in reads.calls]
    assert isinstance(since, datetime), since
    assert pd.Timestamp(since) > pd.Timestamp(later.replace(tzinfo=None)) - pd.Timedelta(hours=6)
    assert result.notifications == []  # the open episode goes on, nothing is sent again
    de = next(s for s in result.series if s.segment == "DE")
    assert de.state.firing and de.state.episode == episode


# -- a running daemon --------------------------------------------------------------------------


def post_reload(daemon: DaemonProcess, token: str = TOKEN) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{daemon.port}/-/reload", method="POST",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=90) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def metric(daemon: DaemonProcess, name: str) -> float:
    for line in daemon.metrics().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def wait_until(condition: Any, timeout: float = 60, message: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out: {message}")


@pytest.mark.slow
def test_reload_keeps_starts_retires_and_refuses_a_broken_file(
    tmp_path: Path, live_demo_warehouse: Path, slack: SlackServer
) -> None:
    shutil.copy(live_demo_warehouse, tmp_path / "demo.duckdb")
    document = demo_document(tmp_path, token="${SLACK_BOT_TOKEN}", api_url=slack.url, group_wait="0s",
                             chart_buckets=0)
    config_file = write_config(tmp_path / "kpi.yaml", document)
    daemon = DaemonProcess(["run", "-c", str(config_file)], free_port(),
                           {"SLACK_BOT_TOKEN": slack.token, "KPIMON_API_TOKEN": TOKEN},
                           log=tmp_path / "daemon.log")
    try:
        daemon.wait_ready()
        assert daemon.wait_firing() == {("revenue", "DE"), ("revenue", ""), ("events_freshness", ""),
                                        ("signups", "")}
        slack.wait_for(3, timeout=60)  # revenue's total and Germany are one message
        first_run = {c["name"]: c["last_run"]["started"] for c in daemon.checks()}
        revenue = next(c for c in daemon.checks() if c["name"] == "revenue")
        opened = next(s for s in revenue["series"] if s["segment"] == "DE")["alert"]
        assert metric(daemon, "kpimon_config_last_reload_success") == 1
        loaded_at = metric(daemon, "kpimon_config_last_reload_timestamp_seconds")

        # changed (a setting), added, removed (signups, whose alert is open)
        document["checks"] = [c for c in document["checks"] if c["name"] != "signups"]
        next(c for c in document["checks"] if c["name"] == "orders_rows")["sensitivity"] = 6
        document["checks"].append({"name": "refunds", "kind": "row_count", "table": "analytics.fct_orders",
                                   "timestamp_column": "order_ts", "where": "status = 'refunded'"})
        write_config(config_file, document)
        assert post_reload(daemon, "wrong")[0] == 401
        status, answer = post_reload(daemon)
        assert status == 200, answer
        assert answer == {"status": "reloaded", "kept": 5, "changed": ["orders_rows"],
                          "added": ["refunds"], "removed": ["signups"]}
        checks = {c["name"]: c for c in daemon.checks()}
        assert "signups" not in checks
        # unchanged checks carried on: their last run and open alert, and no second message
        assert checks["revenue"]["last_run"]["started"] == first_run["revenue"]
        de = next(s for s in checks["revenue"]["series"] if s["segment"] == "DE")
        assert de["alert"] == opened and opened["status"] == "firing"
        assert checks["revenue"]["explanation"]["text"].startswith("DE -")  # where it moved, kept
        assert 'check="signups"' not in daemon.metrics()
        # the pages show the reloaded config too
        assert daemon.get("/checks/refunds")[0] == 200 and daemon.get("/checks/signups")[0] == 404
        # the removed check's open alert resolves, saying why, in its thread
        resolved = slack.wait_for_text("signups: the check was removed from the configuration")
        assert resolved["thread_ts"]
        wait_until(lambda: {c["name"]: c for c in daemon.checks()}["refunds"]["last_run"], message="refunds ran")
        assert metric(daemon, "kpimon_config_last_reload_timestamp_seconds") > loaded_at

        # a broken file: refused with the field, and the daemon goes on with what it has
        broken = json.loads(json.dumps(document))
        broken["checks"][0]["grain"] = "fortnight"
        write_config(config_file, broken)
        status, answer = post_reload(daemon)
        assert status == 422
        assert "checks[0].grain: Input should be 'hour' or 'day' (got 'fortnight')" in answer["error"]
        assert metric(daemon, "kpimon_config_last_reload_success") == 0
        assert {c["name"] for c in daemon.checks()} == set(checks)
        assert daemon.get("/readyz")[0] == 200
        log = [json.loads(line) for line in daemon.output().splitlines() if line.startswith("{")]
        [refused] = [e for e in log if e["msg"] == "config reload refused; running on the previous config"]
        assert refused["level"] == "error" and "fortnight" in str(refused["problems"])

        # a restart-only change is refused too
        moved = json.loads(json.dumps(document))
        moved["state"]["path"] = str(tmp_path / "elsewhere.db")
        write_config(config_file, moved)
        status, answer = post_reload(daemon)
        assert status == 422 and "state: changed, but it needs a restart" in answer["error"]

        # fixed again, by SIGHUP this time
        document["checks"] = [c for c in document["checks"] if c["name"] != "refunds"]
        write_config(config_file, document)
        daemon.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "refunds" not in {c["name"] for c in daemon.checks()}, message="SIGHUP reload")
        assert metric(daemon, "kpimon_config_last_reload_success") == 1
        alerts = [m["text"] for m in slack.messages()
                  if m["text"].startswith(("CRITICAL", "WARNING", "2 series"))]  # fmt: skip
        # one message each, never again after the reloads: revenue (its total and Germany), the
        # freshness and signups incidents; the added refunds check may see Germany's failed
        # payments (cancelled, so never refunded) from its first run, a dip of a small count that
        # is clear at busy hours only, and says so once at most
        named = Counter("revenue" if a.startswith("2 series") else a.split()[1] for a in alerts)
        assert named["revenue"] == named["events_freshness"] == named["signups"] == 1, alerts
        assert named["refunds"] <= 1, alerts
        assert set(named) <= {"revenue", "events_freshness", "signups", "refunds"}, alerts
    finally:
        code, _ = daemon.stop()
    assert code == 0, daemon.output()
    assert "Traceback" not in daemon.output()


def kubelet_configmap(directory: Path, files: dict[str, str], generation: int) -> None:
    """Write a ConfigMap volume the way the kubelet does: files in a timestamped directory,
    ``..data`` pointing at it, each key a symlink through ``..data``; an update swaps ``..data``."""
    target = directory / f"..2026_12_06_{generation:02d}"
    target.mkdir()
    for name, text in files.items():
        (target / name).write_text(text)
    link = directory / "..data_tmp"
    link.symlink_to(target.name)
    os.replace(link, directory / "..data")
    for name in files:
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")


@pytest.mark.slow
def test_a_configmap_update_is_reloaded_without_a_restart(tmp_path: Path, live_demo_warehouse: Path) -> None:
    """The config and the dbt manifest, each a ConfigMap volume as the chart mounts them."""
    shutil.copy(live_demo_warehouse, tmp_path / "demo.duckdb")
    manifest = json.loads((REPO / "examples" / "dbt-shop" / "target" / "manifest.json").read_text())
    document = demo_document(tmp_path)
    document["checks"] = document["checks"][:2]
    mounted, dbt = tmp_path / "etc-kpi-monitor", tmp_path / "etc-kpi-monitor-dbt"
    document["dbt"] = {"manifest": str(dbt / "manifest.json")}
    for directory, name, text in ((mounted, "config.yaml", yaml.safe_dump(document)),
                                  (dbt, "manifest.json", json.dumps(manifest))):
        directory.mkdir()
        kubelet_configmap(directory, {name: text}, 1)
    daemon = DaemonProcess(["run", "-c", str(mounted / "config.yaml"), "--watch-config", "1s"], free_port(),
                           log=tmp_path / "daemon.log")

    def names() -> list[str]:
        return [c["name"] for c in daemon.checks()]

    try:
        daemon.wait_ready()
        pid = daemon.process.pid
        assert names() == ["revenue", "average_order_value", "orders_loaded", "order_amount", "completed_orders"]
        document["checks"] = document["checks"][:1]
        kubelet_configmap(mounted, {"config.yaml": yaml.safe_dump(document)}, 2)
        wait_until(lambda: names() == ["revenue", "orders_loaded", "order_amount", "completed_orders"], 30,
                   "the config's update reloaded")
        for node in manifest["metrics"].values():  # the dbt CI drops the metric's check
            node["meta"], node["config"]["meta"] = {}, {}
        kubelet_configmap(dbt, {"manifest.json": json.dumps(manifest)}, 2)
        wait_until(lambda: names() == ["revenue", "orders_loaded", "order_amount"], 30, "the manifest's update reloaded")
        assert daemon.process.pid == pid and daemon.process.poll() is None
    finally:
        code, _ = daemon.stop()
    assert code == 0, daemon.output()
