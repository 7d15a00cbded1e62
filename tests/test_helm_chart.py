"""The Helm chart, rendered offline by Helm's own engine (helm-python-sdk) and validated.

Every rendered object is checked with kubernetes-validate in strict mode (unknown fields fail)
against the oldest and the newest Kubernetes version the chart supports; ServiceMonitor and
PrometheusRule against strict subsets of the prometheus-operator CRD schemas (tests/schemas/).
The values schema must refuse unknown keys and wrong types.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.config import StateConfig
from tests import k8s_tools as kt

KUBE_VERSIONS = (
    "1.25.0",
    "1.37.0",
)  # Chart.yaml kubeVersion >=1.25; the newest kubernetes-validate knows
NAMESPACE = "kpi-monitor"
RELEASE = "kpimon"
FULLNAME = f"{RELEASE}-kpi-monitor"

# Every optional object on, and the chart-made Secret: together with the example files this
# renders each template at least once.
EVERYTHING: dict[str, Any] = {
    "commonLabels": {"cost-center": "data"},
    "image": {"digest": "sha256:" + "a" * 64},
    "imagePullSecrets": [{"name": "regcred"}],
    "serviceAccount": {"annotations": {"iam.example.com/role": "kpimon"}},
    "secrets": {"env": {"SLACK_BOT_TOKEN": "xoxb-test", "KPIMON_API_TOKEN": "s3cret"}},
    "extraEnv": [{"name": "TZ", "value": "UTC"}],
    "extraEnvFrom": [{"configMapRef": {"name": "more-env"}}],
    "state": {
        "persistence": {
            "storageClassName": "fast",
            "annotations": {"helm.sh/resource-policy": "keep"},
        }
    },
    "service": {"annotations": {"example.com/scrape": "false"}},
    "podAnnotations": {"example.com/owner": "data"},
    "podLabels": {"tier": "monitoring"},
    "priorityClassName": "high",
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "data", "effect": "NoSchedule"}
    ],
    "serviceMonitor": {
        "enabled": True,
        "additionalLabels": {"release": "kube-prometheus-stack"},
        "relabelings": [
            {
                "action": "replace",
                "sourceLabels": ["__meta_kubernetes_pod_node_name"],
                "targetLabel": "node",
            }
        ],
        "metricRelabelings": [
            {"action": "drop", "sourceLabels": ["__name__"], "regex": "python_gc_.*"}
        ],
    },
    "prometheusRule": {
        "enabled": True,
        "additionalLabels": {"release": "kube-prometheus-stack"},
        "checkStaleSeconds": 7200,
        "disabledAlerts": ["KPIDeploymentFailed"],
        "additionalRuleLabels": {"cluster": "prod-eu"},
    },
    "grafanaDashboard": {
        "enabled": True,
        "namespace": "grafana",
        "additionalLabels": {"release": "kube-prometheus-stack"},
        "folder": "KPIs",
    },
    "networkPolicy": {
        "enabled": True,
        "ingressFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ],
        "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"port": 53, "protocol": "UDP"}]}],
    },
    "podDisruptionBudget": {"enabled": True, "minAvailable": 1},
}
POSTGRESQL: dict[str, Any] = {
    "state": {"backend": "postgresql"},
    "secrets": {"existingSecret": "kpimon-secrets"},
    "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1},
    "helmTest": {"enabled": False},
}

CASES: dict[str, dict[str, Any]] = {
    "default": {},
    "staging": kt.load_values_file(kt.EXAMPLES_DIR / "values-staging.yaml"),
    "production": kt.load_values_file(kt.EXAMPLES_DIR / "values-production.yaml"),
    "everything": EVERYTHING,
    "postgresql": POSTGRESQL,
}


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return kt.manifests(kt.render_chart(values, name=RELEASE, namespace=NAMESPACE))


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, (
        f"expected one {kind} {name or ''}, got {[o['metadata']['name'] for o in found]}"
    )
    return found[0]


def daemon(objects: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return container


def crd_schema(kind: str) -> dict[str, Any]:
    path = kt.SCHEMAS_DIR / f"{kind.lower()}-monitoring-v1.json"
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


# ---- lint and validation -----------------------------------------------------------------------


@pytest.mark.parametrize("case", ["default", "staging", "production"])
def test_helm_lint_strict_is_clean(case: str) -> None:
    helm = kt.require_module("helm_python", "helm-python-sdk")
    report = helm.lint(str(kt.CHART_DIR), CASES[case], strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_objects_validate_strictly(case: str) -> None:
    kv = kt.require_module("kubernetes_validate", "kubernetes-validate")
    jsonschema = kt.require_module("jsonschema")
    objects = render(CASES[case])
    assert objects
    for obj in objects:
        data = kt.strip_template(obj)
        where = f"{obj['__template']} ({obj['kind']} {obj['metadata']['name']})"
        if data["apiVersion"].startswith("monitoring.coreos.com/"):
            schema = crd_schema(data["kind"])
            errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=str)
            assert not errors, f"{where}: " + "; ".join(
                f"{list(e.path)}: {e.message}" for e in errors
            )
            continue
        for version in KUBE_VERSIONS:
            try:
                kv.validate(data, version, strict=True)
            except kv.ValidationError as error:
                pytest.fail(
                    f"{where} invalid for Kubernetes {version}: {list(error.path)}: {error.message}"
                )
            except kv.SchemaNotFoundError as error:  # an unknown kind must not pass unchecked
                pytest.fail(f"{where}: {error.message}")


def test_strict_validation_catches_a_typo() -> None:
    """The validators used above do refuse a misspelt field (proves --strict is in effect)."""
    kv = kt.require_module("kubernetes_validate", "kubernetes-validate")
    jsonschema = kt.require_module("jsonschema")
    objects = render(EVERYTHING)
    deployment = copy.deepcopy(kt.strip_template(one(objects, "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, KUBE_VERSIONS[-1], strict=True)
    for kind in ("ServiceMonitor", "PrometheusRule"):
        obj = copy.deepcopy(kt.strip_template(one(objects, kind)))
        obj["spec"]["selectr" if kind == "ServiceMonitor" else "grups"] = {}
        assert list(jsonschema.Draft202012Validator(crd_schema(kind)).iter_errors(obj))


# ---- values schema -----------------------------------------------------------------------------

BAD_VALUES: dict[str, dict[str, Any]] = {
    "unknown top-level key": {"replicas": 2},
    "several replicas on SQLite state": {"replicaCount": 2},
    "no replica": {"state": {"backend": "postgresql"}, "replicaCount": 0},
    "bad lease TTL": {"state": {"backend": "postgresql", "leaseTTL": "half a minute"}},
    "unknown nested key": {"serviceMonitor": {"enabeld": True}},
    "unknown key in state": {"state": {"persistance": {"size": "1Gi"}}},
    "port as string": {"containerPort": "9108"},
    "boolean as string": {"prometheusRule": {"enabled": "yes"}},
    "list instead of map": {"podAnnotations": ["a"]},
    "bad state backend": {"state": {"backend": "mysql"}},
    "bad image digest": {"image": {"digest": "latest"}},
    "bad pull policy": {"image": {"pullPolicy": "Sometimes"}},
    "bad duration": {"serviceMonitor": {"interval": "30 seconds"}},
    "bad retention": {"state": {"retention": {"notifications": "a month"}}},
    "unknown alert disabled": {"prometheusRule": {"disabledAlerts": ["KPIAnomalyy"]}},
    "state given in config": {
        "config": {"state": {"path": "/tmp/x.db"}, "checks": [{"name": "a"}]}
    },
    "unknown config section": {"config": {"chekcs": []}},
    "bad check name": {"config": {"checks": [{"name": "Revenue-EU"}]}},
    "no checks": {"config": {"checks": []}},
    "bad warehouse kind": {"config": {"warehouse": {"kind": "snowflake"}}},
    "secret env value not a string": {"secrets": {"env": {"KPIMON_API_TOKEN": 123}}},
    "bad env var name": {"secrets": {"env": {"slack-token": "x"}}},
    "bad config reload interval": {"configReload": {"interval": "often"}},
    "dbt without a manifest": {"config": {"dbt": {"semantic_metrics": "all"}}},
    "unknown dbt field": {"config": {"dbt": {"manifest": "m.json", "project": "shop"}}},
}


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_schema_refuses_bad_values(name: str) -> None:
    helm = kt.require_module("helm_python", "helm-python-sdk")
    with pytest.raises(helm.HelmValuesError):
        kt.render_chart(BAD_VALUES[name])


def test_both_secret_sources_are_refused() -> None:
    helm = kt.require_module("helm_python", "helm-python-sdk")
    with pytest.raises(helm.HelmError, match="either existingSecret or env"):
        kt.render_chart({"secrets": {"existingSecret": "s", "env": {"A": "b"}}})


def _schema_objects(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        if "properties" in node:
            found.append((path or "/", node))
        for key, value in node.items():
            found.extend(_schema_objects(value, f"{path}/{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(_schema_objects(value, f"{path}/{i}"))
    return found


def test_schema_closes_every_object_and_covers_every_value() -> None:
    schema = json.loads((kt.CHART_DIR / "values.schema.json").read_text())
    # Deliberately open: a warehouse's and a check's own fields are validated by the daemon
    # (`kpi-monitor validate`), which knows them all.
    open_on_purpose = {
        "/properties/config/properties/warehouse/oneOf/0",
        "/properties/config/properties/warehouses/additionalProperties",
        "/properties/config/properties/checks/items",
    }
    for path, node in _schema_objects(schema):
        # conditions between values (allOf: if/then) restrict the objects above, define none
        if path in open_on_purpose or path.startswith("/allOf/"):
            continue
        assert node.get("additionalProperties") is False, (
            f"schema object {path} accepts unknown keys"
        )

    defaults = yaml.safe_load((kt.CHART_DIR / "values.yaml").read_text())

    def walk(values: dict[str, Any], node: dict[str, Any], path: str) -> None:
        for key, value in values.items():
            assert key in node.get("properties", {}), (
                f"values.yaml key {path}{key} missing from the schema"
            )
            child = node["properties"][key]
            if isinstance(value, dict) and "properties" in child and key != "config":
                walk(value, child, f"{path}{key}.")

    walk(defaults, schema, "")


def test_every_value_is_documented() -> None:
    """Each leaf key of values.yaml has a comment line right above it.

    Section headers (a key whose value is a block) need none; free-form Kubernetes objects and
    the sample daemon config are documented at their top.
    """
    free_form = ("config", "podSecurityContext", "securityContext", "resources", "probes")
    lines = (kt.CHART_DIR / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    undocumented = []
    for i, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][\w.-]*):(.*)$", line)
        if not match:
            continue
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3).strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key])
        stack.append((indent, key))
        if rest == "" or (stack[0][1] in free_form and len(stack) > 1):
            continue
        if not lines[i - 1].strip().startswith("#"):
            undocumented.append(path)
    assert not undocumented, f"values without a comment: {undocumented}"


def test_config_schema_matches_the_daemon_config() -> None:
    """The chart's `config` sections are exactly the daemon's top-level config fields."""
    try:
        from monitor.config import Config
    except ImportError:
        pytest.skip("monitor.config.Config is not importable")
    schema = json.loads((kt.CHART_DIR / "values.schema.json").read_text())
    chart_sections = set(schema["properties"]["config"]["properties"])
    daemon_sections = {name for name, field in Config.model_fields.items() if not field.exclude}
    assert chart_sections == daemon_sections, (
        "update helm/kpi-monitor/values.schema.json properties.config to the daemon's Config fields"
    )


# ---- the objects -------------------------------------------------------------------------------

STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)


@pytest.mark.parametrize("case", sorted(CASES))
def test_standard_labels_and_namespace(case: str) -> None:
    for obj in render(CASES[case]):
        labels = obj["metadata"].get("labels", {})
        for label in STANDARD_LABELS:
            assert label in labels, f"{obj['kind']} {obj['metadata']['name']} lacks {label}"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert obj["metadata"]["namespace"] in (NAMESPACE, "grafana")


def assert_restricted(pod: dict[str, Any]) -> None:
    """The restricted Pod Security Standard, field by field."""
    security = pod.get("securityContext", {})
    assert security.get("runAsNonRoot") is True
    assert security.get("seccompProfile", {}).get("type") == "RuntimeDefault"
    for container in pod["containers"]:
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["capabilities"]["drop"] == ["ALL"]
        assert "add" not in ctx["capabilities"]
        assert ctx.get("privileged", False) is False
        assert ctx.get("runAsUser", security.get("runAsUser", 0)) != 0
    assert pod.get("hostNetwork", False) is False and pod.get("hostPID", False) is False


@pytest.mark.parametrize("case", sorted(CASES))
def test_deployment_runs_one_restricted_daemon(case: str) -> None:
    objects = render(CASES[case])
    deployment = one(objects, "Deployment")
    spec = deployment["spec"]
    # SQLite state: Recreate; PostgreSQL state: the replicas' leases let a pod roll over
    shared = "lease_ttl" in one(objects, "ConfigMap", FULLNAME)["data"]["config.yaml"]
    assert spec["replicas"] == (2 if case == "production" else 1)
    assert spec["strategy"]["type"] == ("RollingUpdate" if shared else "Recreate")
    pod = spec["template"]["spec"]
    assert_restricted(pod)
    assert pod["automountServiceAccountToken"] is False
    container = daemon(objects)
    assert container["args"] == ["--port", "9108", "--watch-config", "10s"]
    assert container["ports"] == [{"name": "http", "containerPort": 9108, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KPIMON_CONFIG"] == "/etc/kpi-monitor/config.yaml"
    assert env["KPIMON_LOG_FORMAT"] == "json"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert mounts["/etc/kpi-monitor"]["readOnly"] is True
    assert set(mounts) <= {"/tmp", "/etc/kpi-monitor", "/var/lib/kpi-monitor", "/etc/kpi-monitor-dbt"}
    annotations = spec["template"]["metadata"]["annotations"]
    assert "checksum/config" not in annotations  # a config change is reloaded, not rolled
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/secret"])


RETENTION = {"notifications": "30d", "deployments": "90d", "alert_history": "90d", "segments": "7d"}


def test_sqlite_state_on_a_claim() -> None:
    objects = render()
    claim = one(objects, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    mounts = {m["name"]: m["mountPath"] for m in daemon(objects)["volumeMounts"]}
    assert mounts["state"] == "/var/lib/kpi-monitor"
    config = yaml.safe_load(one(objects, "ConfigMap")["data"]["config.yaml"])
    assert config["state"] == {
        "path": "/var/lib/kpi-monitor/state.db",
        "retention": RETENTION,
    }
    assert pod["securityContext"]["fsGroup"] == 10001  # the volume is writable by the daemon


def test_existing_claim_is_used_not_created() -> None:
    objects = render({"state": {"persistence": {"existingClaim": "my-claim"}}})
    assert not by_kind(objects, "PersistentVolumeClaim")
    volumes = {
        v["name"]: v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == "my-claim"


def test_postgresql_state_has_no_volume() -> None:
    objects = render(POSTGRESQL)
    assert not by_kind(objects, "PersistentVolumeClaim")
    config = yaml.safe_load(one(objects, "ConfigMap")["data"]["config.yaml"])
    assert config["state"] == {
        "url": "${KPIMON_STATE_URL}",
        "replicas": 1,
        "lease_ttl": "30s",
        "retention": RETENTION,
    }
    assert "/var/lib/kpi-monitor" not in {m["mountPath"] for m in daemon(objects)["volumeMounts"]}


def test_several_replicas_share_postgresql_state_and_roll_one_at_a_time() -> None:
    objects = render(kt.deep_merge(POSTGRESQL, {"replicaCount": 3, "state": {"leaseTTL": "20s"}}))
    deployment = one(objects, "Deployment")["spec"]
    assert deployment["replicas"] == 3
    assert deployment["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}
    }
    config = yaml.safe_load(one(objects, "ConfigMap")["data"]["config.yaml"])
    state = StateConfig.model_validate({**config["state"], "url": "postgresql://k@db/kpi"})
    assert (state.replicas, state.lease_ttl) == (3, timedelta(seconds=20))


def test_sqlite_state_stays_one_replica_recreated() -> None:
    deployment = one(render(), "Deployment")["spec"]
    assert (deployment["replicas"], deployment["strategy"]) == (1, {"type": "Recreate"})
    helm = kt.require_module("helm_python", "helm-python-sdk")
    with pytest.raises(helm.HelmValuesError, match="replicaCount"):
        kt.render_chart({"replicaCount": 2})


def test_state_retention_reaches_the_daemons_config() -> None:
    retention = {"notifications": "7d", "deployments": "365d", "alert_history": "400d", "segments": "2d"}
    objects = render({"state": {"retention": retention}})
    config = yaml.safe_load(one(objects, "ConfigMap")["data"]["config.yaml"])
    assert config["state"]["retention"] == retention
    assert StateConfig.model_validate(config["state"]).retention.deployments == timedelta(days=365)


def test_a_config_change_is_reloaded_by_the_running_pod_not_rolled() -> None:
    base = render()
    config = yaml.safe_load(one(base, "ConfigMap")["data"]["config.yaml"])
    defaults = yaml.safe_load((kt.CHART_DIR / "values.yaml").read_text())["config"]
    assert {k: v for k, v in config.items() if k != "state"} == defaults
    changed = render({"config": {"defaults": {"schedule": "15m"}}})
    assert one(base, "ConfigMap") != one(changed, "ConfigMap")
    # the pod template is the same: no new ReplicaSet, the daemon picks up the mounted file
    assert one(base, "Deployment")["spec"]["template"] == one(changed, "Deployment")["spec"]["template"]
    pod = one(base, "Deployment")["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if "configMap" in v and v["name"] == "config"]
    assert all("subPath" not in m for m in daemon(base)["volumeMounts"])  # subPath never updates
    assert volume["configMap"]["name"] == one(base, "ConfigMap")["metadata"]["name"]


def test_without_config_reload_a_config_change_rolls_the_pod() -> None:
    off = {"configReload": {"enabled": False, "interval": "10s"}}
    base = render(off)
    changed = render({**off, "config": {"defaults": {"schedule": "15m"}}})
    assert daemon(base)["args"] == ["--port", "9108"]

    def checksum(objects: list[dict[str, Any]]) -> str:
        annotations = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/config"])

    assert checksum(base) != checksum(changed)
    unchanged = render({**off, "service": {"annotations": {"a": "b"}}})
    assert checksum(base) == checksum(unchanged)


def test_a_dbt_manifest_config_map_is_mounted_for_checks_declared_in_dbt() -> None:
    objects = render({"dbtManifest": {"configMap": "shop-dbt-manifest"},
                      "config": {"dbt": {"manifest": "/etc/kpi-monitor-dbt/manifest.json"}}})
    mounts = {m["mountPath"]: m for m in daemon(objects)["volumeMounts"]}
    assert mounts["/etc/kpi-monitor-dbt"]["readOnly"] is True
    volumes = {v["name"]: v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts["/etc/kpi-monitor-dbt"]["name"]]["configMap"] == {
        "name": "shop-dbt-manifest", "items": [{"key": "manifest.json", "path": "manifest.json"}]}
    config = yaml.safe_load(one(objects, "ConfigMap")["data"]["config.yaml"])
    assert config["dbt"] == {"manifest": "/etc/kpi-monitor-dbt/manifest.json"}


def test_existing_config_map() -> None:
    objects = render({"existingConfigMap": "my-config"})
    assert not by_kind(objects, "ConfigMap")
    volumes = {
        v["name"]: v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes["config"]["configMap"]["name"] == "my-config"


def test_secrets() -> None:
    made = render({"secrets": {"env": {"SLACK_BOT_TOKEN": "xoxb-1", "KPIMON_API_TOKEN": "t"}}})
    secret = one(made, "Secret")
    assert secret["stringData"] == {"SLACK_BOT_TOKEN": "xoxb-1", "KPIMON_API_TOKEN": "t"}
    assert daemon(made)["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    secret_checksum = one(made, "Deployment")["spec"]["template"]["metadata"]["annotations"][
        "checksum/secret"
    ]
    other = render({"secrets": {"env": {"SLACK_BOT_TOKEN": "xoxb-2", "KPIMON_API_TOKEN": "t"}}})
    assert (
        one(other, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/secret"]
        != secret_checksum
    )

    existing = render({"secrets": {"existingSecret": "kpimon-secrets"}})
    assert not by_kind(existing, "Secret")
    assert daemon(existing)["envFrom"] == [{"secretRef": {"name": "kpimon-secrets"}}]
    assert "envFrom" not in daemon(render())


def test_service_selects_the_pod() -> None:
    objects = render()
    service = one(objects, "Service")
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 9108, "targetPort": "http", "protocol": "TCP"}
    ]


def test_service_monitor() -> None:
    objects = render(EVERYTHING)
    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = one(objects, "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert {"action": "replace", "targetLabel": "job", "replacement": kt.JOB} in endpoint[
        "relabelings"
    ]
    assert endpoint["metricRelabelings"] == EVERYTHING["serviceMonitor"]["metricRelabelings"]
    assert not by_kind(render(), "ServiceMonitor")


def rendered_rules(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    rule = one(render(values), "PrometheusRule")
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}


def test_prometheus_rule_is_the_rules_file_for_this_release() -> None:
    source = {r["alert"]: r for r in kt.load_rules()}
    rules = rendered_rules(
        {"prometheusRule": {"enabled": True, "additionalLabels": {"release": "kps"}}}
    )
    assert set(rules) == set(source) == set(kt.ALERT_NAMES)
    for name, rule in rules.items():
        expected = source[name]["expr"].replace(
            'job="kpi-monitor"', f'job="kpi-monitor",namespace="{NAMESPACE}"'
        )
        assert rule["expr"] == expected
        assert rule.get("for") == source[name].get("for")
        assert rule.get("labels") == source[name].get("labels")
        assert rule["annotations"] == source[name]["annotations"]
        for metric, matchers in kt.selectors(rule["expr"]):
            assert matchers.get("namespace") == ("=", NAMESPACE), (
                f"{name}: {metric} not scoped to the release"
            )


def test_prometheus_rule_options() -> None:
    rules = rendered_rules(EVERYTHING)
    assert "KPIDeploymentFailed" not in rules
    assert (
        "> 7200" in rules["KPICheckStale"]["expr"] and "3600" not in rules["KPICheckStale"]["expr"]
    )
    for rule in rules.values():
        assert rule["labels"]["cluster"] == "prod-eu"
    assert rules["KPIMonitorDown"]["labels"]["severity"] == "critical"
    assert "severity" not in rules["KPIAnomaly"]["labels"]  # comes from the series


@pytest.mark.parametrize("case", ["staging", "production", "everything"])
def test_rendered_rules_pass_promtool(case: str, tmp_path: Path) -> None:
    promtool = kt.require_binary("promtool", "PROMTOOL")
    rule = one(render(CASES[case]), "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_dashboard_config_map() -> None:
    objects = render(EVERYTHING)
    config_map = one(objects, "ConfigMap", f"{FULLNAME}-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "grafana"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "KPIs"}
    (key,) = config_map["data"]
    assert json.loads(config_map["data"][key]) == kt.load_dashboard()


def test_network_policy_and_disruption_budget() -> None:
    objects = render(EVERYTHING)
    policy = one(objects, "NetworkPolicy")
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    test_pod = one(objects, "Pod")
    allowed_test_pod = [
        p for p in ingress["from"] if "podSelector" in p and "namespaceSelector" not in p
    ]
    assert (
        allowed_test_pod
        and allowed_test_pod[0]["podSelector"]["matchLabels"].items()
        <= test_pod["metadata"]["labels"].items()
    )
    budget = one(objects, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    assert one(render(POSTGRESQL), "PodDisruptionBudget")["spec"] == {
        "maxUnavailable": 1,
        "selector": {
            "matchLabels": {
                "app.kubernetes.io/name": "kpi-monitor",
                "app.kubernetes.io/instance": RELEASE,
            }
        },
    }
    defaults = render()
    assert not by_kind(defaults, "PodDisruptionBudget")


def test_a_network_policy_keeps_other_pods_off_the_port_by_default() -> None:
    objects = render()
    policy = one(objects, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    test_pod = one(objects, "Pod")["metadata"]["labels"]
    assert ingress["from"] == [
        {"podSelector": {}},  # the release's namespace
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        },
        {
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/instance": test_pod["app.kubernetes.io/instance"],
                    "app.kubernetes.io/component": test_pod["app.kubernetes.io/component"],
                }
            }
        },
    ]
    opened = one(render({"networkPolicy": {"ingressFrom": []}}), "NetworkPolicy")
    assert "from" not in opened["spec"]["ingress"][0], "an empty list lets any pod connect"
    assert not by_kind(render({"networkPolicy": {"enabled": False}}), "NetworkPolicy")


def test_helm_test_pod_checks_readyz() -> None:
    objects = render()
    pod = one(objects, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    assert_restricted(pod["spec"])
    script = " ".join(pod["spec"]["containers"][0]["command"])
    assert f"http://{FULLNAME}.{NAMESPACE}.svc:9108/readyz" in script
    assert pod["spec"]["containers"][0]["image"] == daemon(objects)["image"]
    assert not by_kind(render(POSTGRESQL), "Pod")


def test_image_reference() -> None:
    chart = yaml.safe_load((kt.CHART_DIR / "Chart.yaml").read_text())
    assert daemon(render())["image"] == f"kpi-monitor:{chart['appVersion']}"
    assert daemon(render({"image": {"tag": "1.2.3"}}))["image"] == "kpi-monitor:1.2.3"
    assert daemon(render(EVERYTHING))["image"] == "kpi-monitor@sha256:" + "a" * 64


@pytest.mark.parametrize("case", sorted(CASES))
def test_notes_render(case: str) -> None:
    notes = kt.render_chart(CASES[case], name=RELEASE, namespace=NAMESPACE)[
        "kpi-monitor/templates/NOTES.txt"
    ]
    assert f"kubectl -n {NAMESPACE} rollout status deployment/{FULLNAME}" in notes
    assert f"helm test {RELEASE}" in notes


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_config_is_accepted_by_the_daemon(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMap's config.yaml loads with the daemon's own validation (`kpi-monitor
    validate`), its ${VAR}s set as the Secret would."""
    config = kt.require_module("monitor.config", "kpi-monitor (this repository)")
    text = one(render(CASES[case]), "ConfigMap", FULLNAME)["data"]["config.yaml"]
    for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text):
        value = (
            "postgresql://kpimon:pw@127.0.0.1:5432/kpimon" if name == "KPIMON_STATE_URL" else "x"
        )
        monkeypatch.setenv(name, value)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    loaded = config.load_config(path)
    assert loaded.checks


def test_packaged_chart_ships_rules_and_dashboard_only(tmp_path: Path) -> None:
    helm = kt.require_module("helm_python", "helm-python-sdk")
    archive = helm.package(str(kt.CHART_DIR), destination=str(tmp_path))
    with helm.Chart.load(archive) as chart:
        names = {f["name"] for f in chart.files}
        assert chart.schema is not None
    assert {"files/kpi-monitor-rules.yaml", "files/kpi-monitor-dashboard.json"} <= names
    assert not any(name.endswith(".test.yaml") for name in names)
