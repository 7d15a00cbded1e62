"""End to end on loopback: a real Prometheus (Debian package `prometheus`) scrapes
`kpi-monitor demo` run as a subprocess and evaluates the shipped alert rules.

- every PromQL expression of the Grafana dashboard (variables set as Grafana would) and of the
  alert rules is evaluated through Prometheus' HTTP API: it must parse, dashboard queries must
  return data, and each selector of the rules must match series the daemon exports;
- KPIAnomaly fires for exactly the check/segment pairs the demo's incidents make anomalous,
  with their severity and team labels, and no other alert fires;
- `promtool check metrics` finds no problem in the daemon's /metrics.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.demo import INCIDENTS
from tests import k8s_tools as kt
from tests.slack_server import SIGNING_SECRET, SlackServer, signed_request

pytestmark = pytest.mark.slow

API_TOKEN = "e2e-test-token"
DEPLOYMENT = {
    "id": "e2e-deploy-1",
    "environment": "staging",
    "models": ["fct_orders"],
    "commit": "0123456789abcdef",
    "url": "http://127.0.0.1/ci/builds/1",
}
STARTUP_TIMEOUT = 120.0  # the demo writes 8 weeks of history before the daemon starts
ANOMALY_TIMEOUT = 90.0  # "within a minute" of the daemon's start, plus scrape and evaluation


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read()


def wait_until(what: str, predicate: Callable[[], Any], timeout: float, proc: Process) -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        proc.assert_running()
        try:
            result = predicate()
            if result:
                return result
        except (OSError, ValueError, KeyError) as error:
            last_error = error
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error})")


@dataclass
class Process:
    name: str
    args: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    cwd: Path = kt.REPO_ROOT
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        handle = self.log.open("wb")
        self.popen = subprocess.Popen(
            self.args, stdout=handle, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd
        )
        handle.close()
        return self

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def assert_running(self) -> None:
        assert self.popen is not None
        if self.popen.poll() is not None:
            pytest.fail(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=5)


@dataclass
class Stack:
    daemon: Process
    prometheus: Process
    daemon_url: str
    prometheus_url: str
    deployment_status: int = 0
    deployment_body: bytes = b""

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; fails the test on a PromQL error."""
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, body = http("GET", url)
        payload = json.loads(body)
        assert status == 200 and payload["status"] == "success", f"{expr!r}: {payload}"
        result: list[dict[str, Any]] = payload["data"]["result"]
        if payload["data"]["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return result

    def label_values(self, label: str, selector: str) -> list[str]:
        url = f"{self.prometheus_url}/api/v1/label/{label}/values?" + urllib.parse.urlencode(
            {"match[]": selector}
        )
        status, body = http("GET", url)
        payload = json.loads(body)
        assert status == 200 and payload["status"] == "success", f"{selector!r}: {payload}"
        values: list[str] = payload["data"]
        return values

    def alerts(self) -> list[dict[str, Any]]:
        status, body = http("GET", f"{self.prometheus_url}/api/v1/alerts")
        assert status == 200
        alerts: list[dict[str, Any]] = json.loads(body)["data"]["alerts"]
        return alerts


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus_bin = kt.require_binary("prometheus", "PROMETHEUS")
    kt.require_binary("promtool", "PROMTOOL")
    work = tmp_path_factory.mktemp("prometheus-e2e")
    daemon_port, prometheus_port = free_port(), free_port()
    daemon_url = f"http://127.0.0.1:{daemon_port}"
    prometheus_url = f"http://127.0.0.1:{prometheus_port}"

    env = {k: v for k, v in os.environ.items() if not k.startswith(("KPIMON_", "SLACK_"))}
    env.update({"KPIMON_API_TOKEN": API_TOKEN, "KPIMON_LOG_FORMAT": "json"})
    # alerts go to a local Slack, whose buttons are clicked: the answer panels have data
    slack = SlackServer().start()
    env.update({"SLACK_BOT_TOKEN": slack.token, "SLACK_API_URL": slack.url,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET})  # fmt: skip
    daemon = Process(
        "kpi-monitor demo",
        [
            *kt.daemon_command(),
            "demo",
            "--port",
            str(daemon_port),
            "--host",
            "127.0.0.1",
            "--dir",
            str(work / "demo"),
        ],
        work / "daemon.log",
        env=env,
    )
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(kt.RULES_FILE)],
        "scrape_configs": [
            {"job_name": kt.JOB, "static_configs": [{"targets": [f"127.0.0.1:{daemon_port}"]}]}
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus = Process(
        "prometheus",
        [
            prometheus_bin,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ],
        work / "prometheus.log",
        cwd=work,
    )
    try:
        daemon.start()
        prometheus.start()
        wait_until(
            "Prometheus /-/ready",
            lambda: http("GET", f"{prometheus_url}/-/ready")[0] == 200,
            30,
            prometheus,
        )
        wait_until(
            "the daemon's /readyz",
            lambda: http("GET", f"{daemon_url}/readyz")[0] == 200,
            STARTUP_TIMEOUT,
            daemon,
        )
        s = Stack(daemon, prometheus, daemon_url, prometheus_url)
        s.deployment_status, s.deployment_body = http(
            "POST",
            f"{daemon_url}/api/v1/deployments",
            DEPLOYMENT,
            {"Authorization": f"Bearer {API_TOKEN}"},
        )
        # every demo incident, not the first one: revenue (segments and total) takes longest
        wait_until(
            "KPIAnomaly firing in Prometheus for every demo incident",
            lambda: {
                (a["labels"]["check"], a["labels"].get("segment", ""))
                for a in s.alerts()
                if a["labels"]["alertname"] == "KPIAnomaly" and a["state"] == "firing"
            } >= INCIDENTS,
            ANOMALY_TIMEOUT,
            daemon,
        )
        alert = wait_until(
            "an alert with buttons in Slack",
            lambda: next((m for m in slack.posted() if m.blocks and any(
                b.get("type") == "actions" for b in m.blocks)), None),
            ANOMALY_TIMEOUT,
            daemon,
        )
        status, _, _ = signed_request(
            f"{daemon_url}/slack/interactivity", slack.click(alert, "acknowledge")
        )
        assert status == 200
        wait_until(
            "the answer scraped by Prometheus",
            lambda: s.query(f'kpimon_alert_precision{{job="{kt.JOB}"}}'),
            30,
            daemon,
        )
        # enough samples for increase()/rate() over the substituted intervals
        wait_until(
            "a few scrapes",
            lambda: s.query(f'count_over_time(up{{job="{kt.JOB}"}}[1m]) >= 5'),
            30,
            prometheus,
        )
        yield s
    finally:
        prometheus.stop()
        daemon.stop()
        slack.stop()


# ---- the daemon's endpoints the chart relies on -------------------------------------------------


def test_probe_endpoints(stack: Stack) -> None:
    assert http("GET", f"{stack.daemon_url}/healthz")[0] == 200
    assert http("GET", f"{stack.daemon_url}/readyz")[0] == 200


def test_promtool_check_metrics(stack: Stack) -> None:
    promtool = kt.require_binary("promtool", "PROMTOOL")
    status, body = http("GET", f"{stack.daemon_url}/metrics")
    assert status == 200
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=60
    )
    problems = (result.stdout + result.stderr).decode().strip()
    assert result.returncode == 0 and not problems, problems


def test_exported_metrics_are_the_contract(stack: Stack) -> None:
    names = set(stack.label_values("__name__", f'{{job="{kt.JOB}",__name__=~"kpimon_.*"}}'))
    created = {
        n for n in names if n.endswith("_created")
    }  # prometheus_client's counter birth times
    assert names - created <= set(kt.CONTRACT_METRICS), (
        f"not in the contract: {names - created - set(kt.CONTRACT_METRICS)}"
    )
    for metric, labels in kt.CONTRACT_METRICS.items():
        series = stack.query(f'{metric}{{job="{kt.JOB}"}}')
        for item in series:
            exported = set(item["metric"]) - {"__name__"} - kt.TARGET_LABELS
            assert exported <= labels, f"{metric}: unexpected labels {exported - labels}"


# ---- alerts -------------------------------------------------------------------------------------


def test_kpi_anomaly_fires_for_the_demo_incidents(stack: Stack) -> None:
    anomalous = {
        (s["metric"]["check"], s["metric"].get("segment", "")): s["metric"]
        for s in stack.query(f'kpimon_anomaly{{job="{kt.JOB}"}} == 1')
    }
    assert anomalous, "the demo's incidents should make some check/segment anomalous"
    firing = {
        (a["labels"]["check"], a["labels"].get("segment", "")): a["labels"]
        for a in stack.alerts()
        if a["labels"]["alertname"] == "KPIAnomaly" and a["state"] == "firing"
    }
    # an alert may open or resolve between the two calls; the sets must agree once stable
    deadline = time.monotonic() + 10
    while set(firing) != set(anomalous) and time.monotonic() < deadline:
        time.sleep(1)
        anomalous = {
            (s["metric"]["check"], s["metric"].get("segment", "")): s["metric"]
            for s in stack.query(f'kpimon_anomaly{{job="{kt.JOB}"}} == 1')
        }
        firing = {
            (a["labels"]["check"], a["labels"].get("segment", "")): a["labels"]
            for a in stack.alerts()
            if a["labels"]["alertname"] == "KPIAnomaly" and a["state"] == "firing"
        }
    assert set(firing) == set(anomalous)
    for key, labels in firing.items():
        series = anomalous[key]
        assert labels["severity"] == (series.get("severity") or "warning")
        assert labels.get("team", "") == series.get("team", "")
        assert labels["job"] == kt.JOB


def test_no_health_alert_fires_on_a_healthy_demo(stack: Stack) -> None:
    firing = {a["labels"]["alertname"] for a in stack.alerts() if a["state"] == "firing"}
    assert firing <= {"KPIAnomaly"}, firing


@pytest.mark.parametrize("rule", kt.load_rules(), ids=lambda rule: rule["alert"])
def test_rule_expressions_evaluate(stack: Stack, rule: dict[str, Any]) -> None:
    """Each rule parses in Prometheus, and each of its selectors matches exported series."""
    stack.query(rule["expr"])
    for metric, matchers in kt.selectors(rule["expr"]):
        selector = metric + "{" + ",".join(f'{k}{op}"{v}"' for k, (op, v) in matchers.items()) + "}"
        assert stack.query(selector), (
            f"{rule['alert']}: {selector} matches no series: the daemon should export it "
            "(declare counters at 0, as for checks and channels)"
        )


# ---- the dashboard ------------------------------------------------------------------------------


def dashboard_variables(stack: Stack) -> dict[str, str]:
    """Values Grafana would use: the single job, All namespaces and segments, and a check with
    a band (expected values)."""
    checks = sorted(
        {s["metric"]["check"] for s in stack.query(f'kpimon_expected{{job="{kt.JOB}"}}')}
    )
    assert checks
    return {
        "datasource": "prometheus",
        "job": kt.JOB,
        "namespace": ".*",
        "check": checks[0],
        "segment": ".*",
    }


def test_dashboard_variables_have_values(stack: Stack) -> None:
    variables = dashboard_variables(stack)
    for name, selector, label in kt.dashboard_variable_queries(kt.load_dashboard()):
        values = stack.label_values(label, kt.substitute_variables(selector, variables))
        if name == "namespace":
            continue  # no namespace label outside Kubernetes: Grafana offers All (.*) alone
        if name == "segment":
            # the demo's `revenue` check has segments; a check without any offers All alone
            values = stack.label_values(
                label, kt.substitute_variables(selector, {**variables, "check": "revenue"})
            )
        assert values, f"variable {name}: label_values({selector}, {label}) is empty"


@pytest.mark.parametrize(
    ("where", "expr"),
    kt.dashboard_queries(kt.load_dashboard()),
    ids=[where for where, _ in kt.dashboard_queries(kt.load_dashboard())],
)
def test_dashboard_query_returns_data(stack: Stack, where: str, expr: str) -> None:
    if "deployment" in expr:
        assert stack.deployment_status == 201, (
            f"POST /api/v1/deployments answered {stack.deployment_status}: "
            f"{stack.deployment_body[:300]!r}"
        )
    concrete = kt.substitute_variables(expr, dashboard_variables(stack))
    assert stack.query(concrete), f"{where}: no data for {concrete}"
