"""Checks declared in dbt: read from the example project's compiled manifest (made by `dbt parse`
on examples/dbt-shop), merged with the YAML's checks, validated and reported by their node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from monitor.cli import main
from monitor.config import load_config, parse_config
from monitor.dbt_checks import check_name, declared_checks
from monitor.errors import ConfigError
from tests.conftest import REPO, write_config

EXAMPLE = REPO / "examples" / "dbt-shop"
MANIFEST = EXAMPLE / "target" / "manifest.json"
WAREHOUSE = {"kind": "duckdb", "path": "demo.duckdb"}


def manifest() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(MANIFEST.read_text())
    return document


def checks_by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found, refused = declared_checks(document)
    assert refused == []
    return {c.document["name"]: c.document for c in found}


def test_the_example_manifest_declares_a_model_a_column_and_a_metric_check() -> None:
    found, refused = declared_checks(manifest())
    assert refused == []
    assert {c.document["name"]: c.origin for c in found} == {
        "orders_loaded": "dbt model fct_orders (models/marts/fct_orders.yml)",
        "order_amount": "dbt model fct_orders column amount (models/marts/fct_orders.yml)",
        "completed_orders": "dbt metric completed_orders (models/marts/semantic_models.yml)",
    }


def test_a_model_check_takes_table_models_and_owner_from_the_node() -> None:
    check = checks_by_name(manifest())["orders_loaded"]
    assert check == {
        "table": "demo.analytics.fct_orders",
        "models": ["fct_orders"],
        "owner": "@revenue-oncall",
        "name": "orders_loaded",
        "kind": "row_count",
        "timestamp_column": "loaded_at",
        "min": 1,
        "labels": {"team": "platform"},
    }


def test_a_column_check_sums_its_column() -> None:
    check = checks_by_name(manifest())["order_amount"]
    assert check["kind"] == "metric"
    assert check["expression"] == "sum(amount)"
    assert check["timestamp_column"] == "order_ts"
    assert check["dimensions"] == ["country"]


def test_a_semantic_layer_metric_becomes_a_metric_check_of_its_measure() -> None:
    check = checks_by_name(manifest())["completed_orders"]
    assert {k: check[k] for k in ("kind", "table", "timestamp_column", "expression", "grain")} == {
        "kind": "metric",
        "table": "demo.analytics.fct_orders",
        "timestamp_column": "order_ts",  # the time dimension's expr
        "expression": "count(order_id)",  # the measure's agg and expr
        "grain": "hour",  # the time dimension's granularity
    }
    assert check["where"] == "(status = 'completed')"  # {{ Dimension('order__status') }} resolved
    assert check["dimensions"] == ["country"]
    assert check["models"] == ["fct_orders"]
    assert check["owner"] == "@revenue-oncall"  # from the model under the semantic model


def test_untagged_metrics_are_checks_only_when_all_are_asked_for() -> None:
    assert "gross_revenue" not in checks_by_name(manifest())
    found, _ = declared_checks(manifest(), "all")
    [gross] = [c.document for c in found if c.document["name"] == "gross_revenue"]
    assert gross["expression"] == "sum(amount)"


def test_several_checks_on_one_node_and_names_made_from_the_node() -> None:
    document = manifest()
    node = document["nodes"]["model.shop.fct_orders"]
    node["config"]["meta"]["kpi_monitor"] = [
        {"kind": "row_count", "timestamp_column": "loaded_at"},
        {"kind": "freshness", "timestamp_column": "loaded_at"},
    ]
    node["meta"] = {}
    node["columns"]["order_ts"]["config"]["meta"] = {"kpi_monitor": {"kind": "freshness"}}
    found = checks_by_name(document)
    assert {"fct_orders_row_count", "fct_orders_freshness", "fct_orders_order_ts_freshness"} <= set(found)
    assert found["fct_orders_order_ts_freshness"]["timestamp_column"] == "order_ts"
    assert check_name("Fct-Orders", "Amount EUR", "metric") == "fct_orders_amount_eur_metric"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda m: m["metrics"]["metric.shop.completed_orders"]["type_params"]["measure"].update(name="nope"),
         "dbt metric completed_orders (models/marts/semantic_models.yml): its measure 'nope' is in no semantic model"),
        (lambda m: m["metrics"]["metric.shop.completed_orders"]["config"]["meta"]["kpi_monitor"].update(dimensions=["planet"]),
         "dbt metric completed_orders (models/marts/semantic_models.yml): dimensions ['planet'] are not in its semantic model (it has: country, status)"),
        (lambda m: m["metrics"]["metric.shop.completed_orders"]["filter"]["where_filters"][0].update(
            where_sql_template="{{ Dimension('order__colour') }} = 'red'"),
         "dbt metric completed_orders (models/marts/semantic_models.yml): its filter names an unknown Dimension 'colour'"),
        (lambda m: m["metrics"]["metric.shop.completed_orders"].update(type="ratio"),
         "dbt metric completed_orders (models/marts/semantic_models.yml): a ratio metric: only simple metrics can be checks yet"),
        (lambda m: m["nodes"]["model.shop.fct_orders"]["config"]["meta"].update(kpi_monitor="row_count"),
         "dbt model fct_orders (models/marts/fct_orders.yml): meta.kpi_monitor must be a mapping of check fields, or a list of them"),
    ],
)
def test_a_declaration_that_is_no_check_is_refused_with_its_node_and_file(change: Any, problem: str) -> None:
    document = manifest()
    for node in document["nodes"].values():
        node.pop("meta", None)  # only config.meta, so one edit is what dbt would have written
    for metric in document["metrics"].values():
        metric.pop("meta", None)
    change(document)
    _, refused = declared_checks(document)
    assert [str(e) for e in refused] == [problem]


def test_the_config_reads_the_manifest_relative_to_itself_and_applies_defaults(tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "manifest.json").write_text(MANIFEST.read_text())
    config_file = write_config(
        tmp_path / "kpi.yaml",
        {
            "warehouse": WAREHOUSE,
            "dbt": {"manifest": "target/manifest.json"},
            "defaults": {"timezone": "Europe/Berlin", "owner": "@data"},
            "checks": [{"name": "signups", "kind": "row_count", "table": "analytics.signups",
                        "timestamp_column": "signup_ts"}],
        },
    )
    config = load_config(config_file)
    assert [c.name for c in config.checks] == ["signups", "orders_loaded", "order_amount", "completed_orders"]
    assert {c.timezone for c in config.checks} == {"Europe/Berlin"}
    orders_loaded, signups = config.check("orders_loaded"), config.check("signups")
    assert orders_loaded is not None and signups is not None
    assert orders_loaded.owner == "@revenue-oncall"  # the node's wins
    assert signups.owner == "@data"
    assert config.origin("signups") == f"{config_file}, checks[0]"
    assert config.origin("completed_orders") == "dbt metric completed_orders (models/marts/semantic_models.yml)"
    assert config.manifest_path == tmp_path / "target" / "manifest.json"


def test_a_manifest_may_hold_every_check(tmp_path: Path) -> None:
    config = parse_config({"warehouse": WAREHOUSE, "dbt": {"manifest": str(MANIFEST)}})
    assert len(config.checks) == 3


def problems(document: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(document, "kpi.yaml")
    return info.value.problems


def test_a_bad_field_in_dbt_meta_is_reported_at_its_node(tmp_path: Path) -> None:
    document = manifest()
    document["nodes"]["model.shop.fct_orders"]["config"]["meta"]["kpi_monitor"]["grain"] = "minute"
    document["nodes"]["model.shop.fct_orders"]["meta"]["kpi_monitor"]["grain"] = "minute"
    broken = tmp_path / "manifest.json"
    broken.write_text(json.dumps(document))
    assert problems({"warehouse": WAREHOUSE, "dbt": {"manifest": str(broken)}}) == [
        "dbt model fct_orders (models/marts/fct_orders.yml): meta.kpi_monitor.grain: "
        "Input should be 'hour' or 'day' (got 'minute')"
    ]


def test_a_dbt_check_named_like_a_yaml_check_is_refused() -> None:
    yaml_check = {"name": "order_amount", "kind": "row_count", "table": "t", "timestamp_column": "ts"}
    assert problems({"warehouse": WAREHOUSE, "dbt": {"manifest": str(MANIFEST)}, "checks": [yaml_check]}) == [
        "dbt model fct_orders column amount (models/marts/fct_orders.yml): meta.kpi_monitor.name: "
        "a check named 'order_amount' is also declared at checks[0]; names must be unique"
    ]


def test_a_missing_or_broken_manifest_is_named(tmp_path: Path) -> None:
    assert problems({"warehouse": WAREHOUSE, "dbt": {"manifest": str(tmp_path / "nope.json")}}) == [
        f"dbt.manifest: cannot read {tmp_path / 'nope.json'}: No such file or directory"
    ]
    (tmp_path / "run_results.json").write_text(json.dumps({"results": []}))
    assert problems({"warehouse": WAREHOUSE, "dbt": {"manifest": str(tmp_path / "run_results.json")}}) == [
        f"dbt.manifest: {tmp_path / 'run_results.json'}: not a dbt manifest: no 'nodes' mapping"
    ]
    (tmp_path / "deep.json").write_text("[" * 60_000)
    assert problems({"warehouse": WAREHOUSE, "dbt": {"manifest": str(tmp_path / "deep.json")}}) == [
        f"dbt.manifest: {tmp_path / 'deep.json'}: JSON nested too deeply"
    ]
    assert problems({"warehouse": WAREHOUSE, "dbt": {"manifets": "x"}}) == [
        "dbt.manifest: required field is missing",
        "dbt.manifets: unknown field; did you mean 'manifest'?",
    ]


def test_validate_prints_where_each_check_came_from(
    tmp_path: Path, demo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = write_config(
        tmp_path / "kpi.yaml",
        {
            "warehouse": {"kind": "duckdb", "path": str(demo_dir / "demo.duckdb")},
            "dbt": {"manifest": str(MANIFEST)},
            "checks": [{"name": "signups", "kind": "row_count", "table": "analytics.signups",
                        "timestamp_column": "signup_ts"}],
        },
    )
    assert main(["validate", "-c", str(config_file), "--connect"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{config_file}: valid, 4 checks",
        f"  signups (row_count): {config_file}, checks[0]",
        "  orders_loaded (row_count): dbt model fct_orders (models/marts/fct_orders.yml)",
        "  order_amount (metric): dbt model fct_orders column amount (models/marts/fct_orders.yml)",
        "  completed_orders (metric): dbt metric completed_orders (models/marts/semantic_models.yml)",
        "warehouse default (duckdb): ok",
        "check signups: ok",
        "check orders_loaded: ok",
        "check order_amount: ok",
        "check completed_orders: ok",
    ]


def test_the_example_project_runs_against_the_demo_warehouse(
    demo_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The example's own config on the demo warehouse (built for the real clock would take the
    live fixture; the fixed one is enough to see the dbt checks query real tables)."""
    monkeypatch.setenv("KPIMON_DEMO_DIR", str(demo_dir))
    config = load_config(EXAMPLE / "kpi-monitor.yaml")
    assert [c.name for c in config.checks] == ["orders_loaded", "order_amount", "completed_orders"]
    assert main(["validate", "-c", str(EXAMPLE / "kpi-monitor.yaml"), "--connect"]) == 0
    assert "check completed_orders: ok" in capsys.readouterr().out


def test_the_committed_manifest_is_a_real_dbt_manifest() -> None:
    document = manifest()
    assert document["metadata"]["dbt_schema_version"].startswith("https://schemas.getdbt.com/dbt/manifest/v")
    assert set(document["semantic_models"]) == {"semantic_model.shop.orders"}


@pytest.mark.parametrize("path", [
    ("nodes", "model.shop.fct_orders", "columns"),
    ("nodes", "model.shop.fct_orders", "config"),
    ("semantic_models", "semantic_model.shop.orders", "dimensions"),
    ("semantic_models", "semantic_model.shop.orders"),
    ("metrics", "metric.shop.completed_orders", "type_params"),
    ("metrics", "metric.shop.completed_orders", "filter"),
])
@pytest.mark.parametrize("odd", [7, "text", [1, 2], None])
def test_a_manifest_field_of_another_type_is_refused_by_node_never_a_traceback(
    path: tuple[str, ...], odd: object
) -> None:
    document = manifest()
    holder = document
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = odd
    found, refused = declared_checks(document)  # raises nothing
    assert {c.document["name"] for c in found} <= {"orders_loaded", "order_amount", "completed_orders"}
    assert all(str(e).startswith("dbt ") for e in refused)
