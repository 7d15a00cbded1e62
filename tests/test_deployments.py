"""Which checks a deployment touches: the indexed match agrees with the rule it implements."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.config import Config, parse_config
from monitor.dbt import same_table
from monitor.deployments import affected_checks

PARTS = st.sampled_from(["warehouse", "analytics", "Analytics", "staging", "fct_orders", "orders"])
QUOTES = st.sampled_from(["{}", '"{}"', "`{}`", "[{}]"])


@st.composite
def dotted(draw: st.DrawFn, quoted: bool) -> str:
    parts = draw(st.lists(PARTS, min_size=1, max_size=3))
    if quoted:
        parts = [draw(QUOTES).format(p) for p in parts]
    return ".".join(parts)


def config(tables: list[str | None], models: list[list[str]]) -> Config:
    checks = []
    for i, (table, used) in enumerate(zip(tables, models, strict=True)):
        check = {"name": f"c{i}", "kind": "sql", "sql": "select 1 where :since", "models": used}
        if table is not None:
            check = {"name": f"c{i}", "kind": "row_count", "table": table,
                     "timestamp_column": "ts", "models": used}  # fmt: skip
        checks.append(check)
    return parse_config({"warehouse": {"kind": "duckdb", "path": "w.duckdb"}, "checks": checks})


def by_definition(config: Config, models: list[str], relations: list[str]) -> list[str]:
    """The rule, check by check and name by name."""
    names = {m.lower() for m in models}
    return [
        c.name
        for c in config.checks
        if names & {m.lower() for m in c.models}
        or (c.table is not None and any(same_table(c.table, r) for r in [*relations, *models]))
    ]


@settings(max_examples=300, deadline=None)
@given(
    tables=st.lists(st.one_of(st.none(), dotted(quoted=False)), min_size=1, max_size=6),
    models=st.lists(st.lists(PARTS, max_size=2), min_size=6, max_size=6),
    changed=st.lists(PARTS, max_size=4),
    relations=st.lists(dotted(quoted=True), max_size=4),
)
def test_the_indexed_match_picks_exactly_the_checks_the_rule_picks(
    tables: list[str | None], models: list[list[str]], changed: list[str], relations: list[str]
) -> None:
    checks = config(tables, models[: len(tables)])
    found = [c.name for c in affected_checks(checks, changed, relations)]
    assert found == by_definition(checks, changed, relations)


def test_many_changed_names_are_matched_against_many_checks() -> None:
    checks = config([f"analytics.t{i}" for i in range(200)], [[f"m{i}"] for i in range(200)])
    changed = [f"n{j}" for j in range(100_000)] + ["m7"]
    relations = [f'"db"."analytics"."t{j}"' for j in range(1_000, 101_000)] + ['"db"."x"."t9"']
    assert [c.name for c in affected_checks(checks, changed, relations)] == ["c7"]
