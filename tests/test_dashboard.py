"""The Grafana dashboard (helm/kpi-monitor/files/kpi-monitor-dashboard.json), offline: structure,
the panels the issue asks for, the metrics contract, and PromQL syntax through promtool."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import k8s_tools as kt

DASHBOARD = kt.load_dashboard()
PANELS = kt.dashboard_panels(DASHBOARD)
QUERIES = kt.dashboard_queries(DASHBOARD)
VARIABLES = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Values for the dashboard's variables when an expression must be concrete (syntax check).
SAMPLE_VARIABLES = {
    "datasource": "prometheus",
    "job": ".*",
    "namespace": ".*",
    "check": "revenue",
    "segment": ".*",
}


def test_dashboard_identity() -> None:
    assert DASHBOARD["uid"] == "kpi-monitor"
    assert DASHBOARD["title"] == "KPI monitor"
    assert DASHBOARD["schemaVersion"] >= 36
    assert "__inputs" not in DASHBOARD, "must load through the Grafana sidecar and by import alike"
    assert "id" not in DASHBOARD or DASHBOARD["id"] is None


def test_datasource_is_a_variable_everywhere() -> None:
    assert VARIABLES["datasource"]["type"] == "datasource"
    assert VARIABLES["datasource"]["query"] == "prometheus"
    for panel in PANELS:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
    for name, variable in VARIABLES.items():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, name
    for annotation in DASHBOARD["annotations"]["list"]:
        if annotation.get("expr"):
            assert annotation["datasource"] == DATASOURCE


def test_layout() -> None:
    ids = [panel["id"] for panel in PANELS]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], str] = {}
    for panel in PANELS:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]
        assert panel.get("description"), f"panel {panel['title']!r} has no description"
        refs = [target["refId"] for target in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), panel["title"]


def exprs_of(predicate: Any) -> list[str]:
    return [expr for _, expr in QUERIES if predicate(expr)]


def test_check_and_segment_selectors() -> None:
    assert {"datasource", "job", "namespace", "check", "segment"} <= set(VARIABLES)
    assert VARIABLES["segment"]["multi"] and VARIABLES["segment"]["includeAll"]
    assert VARIABLES["segment"]["allValue"] == ".*"  # also matches checks without segments
    variable_queries = {
        name: (selector, label)
        for name, selector, label in kt.dashboard_variable_queries(DASHBOARD)
    }
    assert variable_queries["check"][1] == "check"
    assert variable_queries["segment"][1] == "segment"
    assert 'check="$check"' in variable_queries["segment"][0]


def test_value_with_expected_line_and_band() -> None:
    (band,) = [p for p in PANELS if {"kpimon_value", "kpimon_upper_bound"} <= panel_metrics(p)]
    assert panel_metrics(band) == {
        "kpimon_value",
        "kpimon_expected",
        "kpimon_lower_bound",
        "kpimon_upper_bound",
    }
    assert band["repeat"] == "segment"
    for target in band["targets"]:
        assert 'check="$check"' in target["expr"] and 'segment=~"$segment"' in target["expr"]
    overrides = {o["matcher"]["options"]: o["properties"] for o in band["fieldConfig"]["overrides"]}
    fill = {p["id"]: p["value"] for p in overrides["upper"]}
    assert fill["custom.fillBelowTo"] == "lower"
    legends = {t["legendFormat"] for t in band["targets"]}
    assert legends == {"value", "expected", "lower", "upper"}


def panel_metrics(panel: dict[str, Any]) -> set[str]:
    return {
        metric for target in panel.get("targets", []) for metric, _ in kt.selectors(target["expr"])
    }


@pytest.mark.parametrize(
    ("what", "metric"),
    [
        ("anomaly score", "kpimon_anomaly_score"),
        ("anomalous now", "kpimon_anomaly"),
        ("freshness", "kpimon_data_age_seconds"),
        ("run outcomes", "kpimon_check_runs_total"),
        ("durations", "kpimon_check_duration_seconds_bucket"),
        ("last success", "kpimon_check_last_success_timestamp_seconds"),
        ("warehouse", "kpimon_warehouse_up"),
        ("notifications", "kpimon_alerts_sent_total"),
        ("deployments", "kpimon_deployments_total"),
        ("verdicts", "kpimon_deployment_verdicts_total"),
        ("alert precision", "kpimon_alert_precision"),
        ("answers from Slack", "kpimon_alert_feedback_total"),
    ],
)
def test_required_panels(what: str, metric: str) -> None:
    assert any(metric in panel_metrics(p) for p in PANELS), f"no panel shows {what} ({metric})"


def test_table_of_anomalous_checks() -> None:
    tables = [p for p in PANELS if p["type"] == "table" and "kpimon_anomaly" in panel_metrics(p)]
    assert tables
    target = tables[0]["targets"][0]
    assert target["instant"] is True and target["format"] == "table"
    assert "== 1" in target["expr"]


def test_errors_and_durations() -> None:
    assert exprs_of(lambda e: 'outcome="error"' in e and "kpimon_check_runs_total" in e)
    assert exprs_of(
        lambda e: (
            e.startswith("histogram_quantile(") and "kpimon_check_duration_seconds_bucket" in e
        )
    )


def test_deployments_are_annotations() -> None:
    (annotation,) = [a for a in DASHBOARD["annotations"]["list"] if a.get("expr")]
    assert "kpimon_last_deployment_timestamp_seconds" in annotation["expr"]
    assert annotation["expr"].rstrip().endswith("* 1000")  # Grafana wants milliseconds
    assert annotation["useValueForTime"] is True
    assert annotation["enable"] is True


@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[where for where, _ in QUERIES])
def test_queries_follow_the_contract(where: str, expr: str) -> None:
    found = kt.selectors(expr)
    assert found, f"{where}: no kpimon_ metric in {expr!r}"
    for metric, matchers in found:
        assert metric in kt.CONTRACT_METRICS, f"{where}: unknown metric {metric}"
        allowed = kt.TARGET_LABELS | kt.CONTRACT_METRICS[metric]
        assert set(matchers) <= allowed, f"{where}: {metric} labels {set(matchers) - allowed}"
        assert matchers.get("job") == ("=~", "$job"), f"{where}: {metric} not filtered by $job"
        assert matchers.get("namespace") == ("=~", "$namespace"), (
            f"{where}: {metric} not filtered by $namespace"
        )
    for name in re.findall(r"\$\{?(\w+)", expr):
        assert name in VARIABLES or name in kt.GRAFANA_BUILTINS, f"{where}: undefined ${name}"


def test_every_query_parses(tmp_path: Path) -> None:
    """promtool parses each expression (variables replaced), as recording rules of a rule file."""
    promtool = kt.require_binary("promtool", "PROMTOOL")
    expressions = [kt.substitute_variables(expr, SAMPLE_VARIABLES) for _, expr in QUERIES]
    expressions += [
        f"count by ({label}) ({kt.substitute_variables(selector, SAMPLE_VARIABLES)})"
        for _, selector, label in kt.dashboard_variable_queries(DASHBOARD)
    ]
    rules = [
        {"record": f"kpimon_dashboard:query_{i}", "expr": expr}
        for i, expr in enumerate(expressions)
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
