"""dbt artifacts: the manifest diff picks exactly the changed models and their tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor.dbt import (
    ArtifactError,
    changed_nodes,
    compact_manifest,
    ran_nodes,
    relation_key,
    same_table,
)

FIXTURES = Path(__file__).parent / "fixtures" / "dbt"


def load(name: str) -> object:
    return json.loads((FIXTURES / name).read_text())


def test_the_diff_picks_new_and_changed_models_only() -> None:
    v1, v2 = compact_manifest(load("manifest_v1.json")), compact_manifest(load("manifest_v2.json"))
    assert "test.shop.not_null_fct_orders_id" not in v1  # tests build no table
    assert sorted(v1) == [
        "model.shop.dim_customers",
        "model.shop.fct_orders",
        "model.shop.signups",
        "model.shop.stg_orders",
        "seed.shop.country_codes",
    ]
    changed = changed_nodes({k: v.checksum for k, v in v1.items()}, v2, ran=None)
    assert sorted(n.name for n in changed.values()) == ["fct_orders", "fct_refunds"]
    assert changed["model.shop.fct_orders"].relation == '"warehouse"."analytics"."fct_orders"'


def test_without_an_earlier_manifest_the_models_that_ran_count() -> None:
    v2 = compact_manifest(load("manifest_v2.json"))
    ran = ran_nodes(load("run_results_v2.json"))
    assert ran == {
        "model.shop.stg_orders",
        "model.shop.fct_orders",
        "model.shop.fct_refunds",
        "test.shop.not_null_fct_orders_id",
    }
    assert sorted(n.name for n in changed_nodes(None, v2, ran).values()) == [
        "fct_orders",
        "fct_refunds",
        "stg_orders",
    ]
    assert len(changed_nodes(None, v2, None)) == len(v2)


def test_relations_match_check_tables_whatever_the_quoting() -> None:
    assert relation_key('"Warehouse"."Analytics"."FCT_ORDERS"') == "warehouse.analytics.fct_orders"
    assert same_table("analytics.fct_orders", "`warehouse`.`analytics`.`fct_orders`")
    assert same_table("fct_orders", '"warehouse"."analytics"."fct_orders"')
    assert not same_table("staging.fct_orders", '"warehouse"."analytics"."fct_orders"')
    assert not same_table("x.analytics.fct_orders", "analytics.fct_orders")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"nodes": []}, "no 'nodes' mapping"),
        ([], "no 'nodes' mapping"),
        (
            {"nodes": {"model.a.b": {"resource_type": "model", "name": "b"}}},
            "model.a.b has no name or checksum",
        ),
    ],
)
def test_something_that_is_not_a_manifest_is_refused(document: object, message: str) -> None:
    with pytest.raises(ArtifactError, match=message):
        compact_manifest(document)
    with pytest.raises(ArtifactError, match="no 'results' list"):
        ran_nodes(document)
