"""The alert rules (helm/kpi-monitor/files/kpi-monitor-rules.yaml): promtool check and unit tests,
and their agreement with the metrics contract and the chart."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from tests import k8s_tools as kt


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = kt.require_binary("promtool", "PROMTOOL")
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=120, cwd=kt.CHART_FILES
    )


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", kt.RULES_FILE.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(kt.ALERT_NAMES)} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", kt.RULES_TEST_FILE.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_unit_tested_both_ways() -> None:
    """Each alert has a case where it fires and one where it must stay silent."""
    tests = yaml.safe_load(kt.RULES_TEST_FILE.read_text())
    assert tests["rule_files"] == [kt.RULES_FILE.name]
    fires: set[str] = set()
    silent: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    assert fires == set(kt.ALERT_NAMES), f"never seen firing: {set(kt.ALERT_NAMES) - fires}"
    assert silent == set(kt.ALERT_NAMES), f"never seen silent: {set(kt.ALERT_NAMES) - silent}"


def test_alert_names_are_the_known_ones() -> None:
    rules = kt.load_rules()
    names = [rule["alert"] for rule in rules]
    assert names == list(kt.ALERT_NAMES)
    schema = json.loads((kt.CHART_DIR / "values.schema.json").read_text())
    disabled = schema["properties"]["prometheusRule"]["properties"]["disabledAlerts"]["items"]
    assert disabled["enum"] == list(kt.ALERT_NAMES)


@pytest.mark.parametrize("rule", kt.load_rules(), ids=lambda rule: rule["alert"])
def test_rule_shape(rule: dict[str, object]) -> None:
    annotations = rule["annotations"]
    assert isinstance(annotations, dict)
    assert annotations.get("summary") and annotations.get("description")
    labels = rule.get("labels") or {}
    assert isinstance(labels, dict)
    if rule["alert"] == "KPIAnomaly":
        # severity and team come from the check's series, for Alertmanager routing
        assert "severity" not in labels and "team" not in labels
        assert "kpimon_anomaly{" in str(rule["expr"])
    else:
        assert labels.get("severity") in {"critical", "warning", "info"}


@pytest.mark.parametrize("rule", kt.load_rules(), ids=lambda rule: rule["alert"])
def test_rule_selectors_follow_the_contract(rule: dict[str, object]) -> None:
    """Each selector names a contract metric (or up), uses its labels, and carries
    job="kpi-monitor", which the chart narrows to the release's job and namespace."""
    expr = str(rule["expr"])
    found = kt.selectors(expr)
    assert found, expr
    for metric, matchers in found:
        assert metric == "up" or metric in kt.CONTRACT_METRICS, f"unknown metric {metric}"
        allowed = kt.TARGET_LABELS | kt.CONTRACT_METRICS.get(metric, frozenset())
        assert set(matchers) <= allowed, f"{metric}: labels {set(matchers) - allowed}"
        assert matchers.get("job") == ("=", kt.JOB), f"{metric} lacks job={kt.JOB!r}"
    # grouping labels are contract or target labels too
    for group in re.findall(r"\bby\s*\(([^)]*)\)", expr):
        for label in (g.strip() for g in group.split(",")):
            assert label in kt.TARGET_LABELS or any(
                label in ls for ls in kt.CONTRACT_METRICS.values()
            )


def test_stale_threshold_is_replaceable() -> None:
    """templates/prometheusrule.yaml replaces "> 3600" in KPICheckStale only."""
    rules = {rule["alert"]: str(rule["expr"]) for rule in kt.load_rules()}
    assert rules["KPICheckStale"].count("> 3600") == 1
    assert all("3600" not in expr for name, expr in rules.items() if name != "KPICheckStale")
    template = (kt.CHART_DIR / "templates" / "prometheusrule.yaml").read_text()
    assert 'replace "> 3600"' in template
    assert 'replace "job=\\"kpi-monitor\\""' in template
