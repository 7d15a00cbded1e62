"""Config: the demo and example files validate; bad input is refused precisely."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from monitor.config import DuckDBWarehouseConfig, json_schema, load_config, parse_config
from monitor.errors import ConfigError
from tests.conftest import REPO

BASE = {"warehouse": {"kind": "duckdb", "path": "w.duckdb"}}
METRIC = {
    "name": "revenue",
    "kind": "metric",
    "table": "analytics.fct_orders",
    "timestamp_column": "order_ts",
    "expression": "sum(amount)",
}


def problems(document: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(document, "bad.yaml")
    assert info.value.source == "bad.yaml"
    return info.value.problems


def test_shipped_configs_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    demo = load_config(REPO / "config" / "demo.yaml")
    assert [c.name for c in demo.checks][:2] == ["revenue", "average_order_value"]
    assert demo.slack is not None and demo.slack.token is None
    for name in ("DATABRICKS_HOST", "DATABRICKS_HTTP_PATH", "DATABRICKS_TOKEN", "SLACK_BOT_TOKEN"):
        monkeypatch.setenv(name, f"value-of-{name.lower()}")
    example = load_config(REPO / "config" / "databricks.example.yaml")
    assert {w.kind for w in example.all_warehouses().values()} == {"databricks"}


def test_defaults_apply_where_a_check_is_silent() -> None:
    config = parse_config(
        {
            **BASE,
            "defaults": {"grain": "day", "timezone": "Europe/Berlin"},
            "checks": [METRIC, {**METRIC, "name": "hourly", "grain": "hour"}],
        }
    )
    assert [(c.grain, c.timezone) for c in config.checks] == [
        ("day", "Europe/Berlin"),
        ("hour", "Europe/Berlin"),
    ]


def test_durations_and_derived_fields() -> None:
    config = parse_config({**BASE, "checks": [{**METRIC, "lookback": "4w", "settle": "30m"}]})
    check = config.checks[0]
    assert check.effective_lookback == timedelta(weeks=4)
    assert check.settle == timedelta(minutes=30)
    assert check.effective_alert_after == 2
    assert check.fills_zero


def test_environment_variables_are_interpolated(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WAREHOUSE_FILE", "/data/prod.duckdb")
    secret = tmp_path / "slack-token"
    secret.write_text("xoxb-from-file\n")
    config = parse_config(
        {
            "warehouse": {"kind": "duckdb", "path": "${WAREHOUSE_FILE}"},
            "slack": {"token": f"${{file:{secret}}}", "channel": "${CHANNEL:-#fallback}"},
            "checks": [METRIC],
        }
    )
    warehouse = config.all_warehouses()["default"]
    assert isinstance(warehouse, DuckDBWarehouseConfig) and warehouse.path == "/data/prod.duckdb"
    assert config.slack is not None and config.slack.channel == "#fallback"
    assert config.slack.token is not None
    assert config.slack.token.get_secret_value() == "xoxb-from-file"
    assert "xoxb" not in repr(config)


def test_missing_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    found = problems(
        {"warehouse": {"kind": "postgres", "dsn": "${NOT_SET_ANYWHERE}"}, "checks": [METRIC]}
    )
    assert found == ["warehouse.dsn: environment variable NOT_SET_ANYWHERE is not set"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"grain": "minute"}, "checks[1].grain: Input should be 'hour' or 'day' (got 'minute')"),
        ({"timezone": "Mars/Base"}, "checks[1].timezone: unknown time zone 'Mars/Base'"),
        ({"schedule": "often"}, "checks[1].schedule: 'often' is not a duration"),
        ({"schedule": "61 * * * *"}, "checks[1].schedule: '61 * * * *' is not a valid cron"),
        (
            {"table": "orders; drop table x"},
            "checks[1].table: 'orders; drop table x' is not a plain identifier",
        ),
        ({"name": "Revenue Total"}, "checks[1].name: String should match pattern"),
        ({"colour": "red"}, "checks[1].colour: unknown field"),
        ({"expression": None}, "checks[1]: a metric check needs expression"),
        ({"sensitivity": -1}, "checks[1].sensitivity: Input should be greater than 0"),
        ({"quiet_factor": 0.5}, "checks[1].quiet_factor: Input should be greater than or equal to 1"),
    ],
)
def test_a_bad_field_is_refused_with_its_path(change: dict[str, object], expected: str) -> None:
    found = problems({**BASE, "checks": [METRIC, {**METRIC, "name": "second", **change}]})
    assert len(found) == 1
    assert found[0].startswith(expected), found


def test_duplicate_names_and_unknown_warehouses() -> None:
    assert problems({**BASE, "checks": [METRIC, METRIC]}) == [
        "checks[1].name: two checks are named 'revenue'; names must be unique"
    ]
    found = problems(
        {
            "warehouses": {"lake": BASE["warehouse"]},
            "checks": [{**METRIC, "warehouse": "lakehouse"}],
        }
    )
    assert "names warehouse 'lakehouse'; known warehouses: lake" in found[0]


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("checks:\n  - name: a\n   kind: metric\n")
    with pytest.raises(ConfigError) as info:
        load_config(broken)
    assert info.value.problems[0].startswith("line 3, column 4: not valid YAML")


def test_bad_defaults_key() -> None:
    assert problems({**BASE, "defaults": {"name": "x", "grian": "day"}, "checks": [METRIC]}) == [
        "defaults.name: not a check field that can have a default",
        "defaults.grian: not a check field that can have a default; did you mean 'grain'?",
    ]


def test_a_bad_default_value_is_reported_once_at_defaults_not_once_per_check() -> None:
    many = [{**METRIC, "name": f"check_{i}"} for i in range(5)]
    assert problems({**BASE, "defaults": {"grain": "minute", "sensitivity": -1}, "checks": many}) == [
        "defaults.grain: Input should be 'hour' or 'day' (got 'minute')",
        "defaults.sensitivity: Input should be greater than 0 (got -1)",
    ]


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({**BASE, "checks": [{**METRIC, "sensitivty": 3}]},
         "checks[0].sensitivty: unknown field; did you mean 'sensitivity'?"),
        ({**BASE, "slack": {"chanel": "#x"}, "checks": [METRIC]},
         "slack.chanel: unknown field; did you mean 'channel'?"),
        ({**BASE, "slack": {"routes": [{"channel": "#x", "teem": "a"}]}, "checks": [METRIC]},
         "slack.routes[0].teem: unknown field; did you mean 'team'?"),
        ({"warehouse": {"kind": "postgres", "dns": "host=db"}, "checks": [METRIC]},
         "warehouse.dns: unknown field; did you mean 'dsn'?"),
        ({"warehouses": {"lake": {"kind": "databricks", "shema": "x"}}, "checks": [{**METRIC, "warehouse": "lake"}]},
         "warehouses.lake.shema: unknown field; did you mean 'schema'?"),
        ({**BASE, "sever": {"port": 1}, "checks": [METRIC]}, "sever: unknown field; did you mean 'server'?"),
        ({**BASE, "checks": [{**METRIC, "colour": "red"}]},
         "checks[0].colour: unknown field (check the spelling; the README lists every field)"),
    ],
)
def test_an_unknown_field_suggests_the_nearest_valid_name(document: dict[str, object], expected: str) -> None:
    assert expected in problems(document)


def test_postgresql_is_an_alias_of_postgres() -> None:
    config = parse_config(
        {"warehouse": {"kind": "postgresql", "dsn": "postgresql://kpi@db/analytics"}, "checks": [METRIC]}
    )
    assert config.all_warehouses()["default"].kind == "postgres"


def test_an_unknown_warehouse_kind_lists_the_kinds() -> None:
    assert problems({"warehouse": {"kind": "snowflake"}, "checks": [METRIC]}) == [
        "warehouse.kind: unknown warehouse kind 'snowflake': use duckdb, postgres (or postgresql) or databricks"
    ]
    assert problems({"warehouse": {"kind": "duckbd", "path": "x"}, "checks": [METRIC]}) == [
        "warehouse.kind: unknown warehouse kind 'duckbd': use duckdb, postgres (or postgresql) or databricks; did you mean 'duckdb'?"
    ]


def test_a_check_naming_a_warehouse_that_is_not_the_single_one_is_refused() -> None:
    assert problems({**BASE, "checks": [{**METRIC, "warehouse": "lake"}]}) == [
        "checks[0].warehouse: names warehouse 'lake', but only one (default) is configured"
    ]


def test_min_and_max_are_checked_for_sense() -> None:
    assert problems({**BASE, "checks": [{**METRIC, "min": 10, "max": 1}]}) == [
        "checks[0]: min (10) is above max (1)"
    ]
    freshness = {"name": "fresh", "kind": "freshness", "table": "t", "timestamp_column": "ts", "max": 5}
    assert problems({**BASE, "checks": [freshness]}) == [
        "checks[0]: a freshness check takes no min or max: give max_age"
    ]


def test_the_postgres_example_validates_with_each_dsn_form(monkeypatch: pytest.MonkeyPatch) -> None:
    for dsn in (
        "postgresql://kpi_monitor@db.internal:5432/analytics?sslmode=verify-full",
        "host=db.internal port=5432 dbname=analytics user=kpi_monitor sslmode=verify-full",
    ):
        monkeypatch.setenv("KPIMON_PG_DSN", dsn)
        config = load_config(REPO / "config" / "postgres.example.yaml")
        [warehouse] = config.all_warehouses().values()
        assert warehouse.kind == "postgres"
        assert warehouse.dsn.get_secret_value() == dsn


def test_committed_json_schema_is_current() -> None:
    committed = json.loads((REPO / "config" / "kpi-monitor.schema.json").read_text())
    assert committed == json_schema(), "run `make schema` and commit config/kpi-monitor.schema.json"


WAREHOUSE_MODELS = ("DuckDBWarehouseConfig", "PostgresWarehouseConfig", "DatabricksWarehouseConfig")


def test_every_warehouse_field_is_described_in_the_schema_and_the_readme() -> None:
    """Issue 14, item 26: connection_uri and tls_trusted_ca_file were documented nowhere."""
    definitions = json_schema()["$defs"]
    readme = (REPO / "README.md").read_text()
    for model in WAREHOUSE_MODELS:
        fields = {k: v for k, v in definitions[model]["properties"].items() if k != "kind"}
        assert [k for k, v in fields.items() if not v.get("description")] == [], model
        assert [k for k in fields if f"`{k}`" not in readme] == [], model


@pytest.mark.parametrize(
    ("slack", "expected"),
    [
        ({"app_token": "xoxb-bot-token"}, "slack.app_token: an app-level token starts with xapp-"),
        ({"answer_groups": ["@oncall"]}, "slack.answer_groups[0]: expected a Slack user group id"),
    ],
)
def test_answer_settings_are_checked(slack: dict[str, object], expected: str) -> None:
    found = problems({**BASE, "slack": {"token": "xoxb-1", **slack}, "checks": [METRIC]})
    assert len(found) == 1 and found[0].startswith(expected), found
    assert "xoxb-bot-token" not in found[0], "a token is never repeated in an error"


def test_answers_need_a_bot_token_and_a_transport() -> None:
    def slack(**fields: object) -> bool:
        config = parse_config({**BASE, "slack": fields, "checks": [METRIC]})
        assert config.slack is not None
        return config.slack.answers

    assert not slack(token="xoxb-1")
    assert not slack(signing_secret="s", app_token="")
    assert slack(token="xoxb-1", signing_secret="s")
    assert slack(token="xoxb-1", app_token="xapp-1-x")


def test_several_replicas_are_refused_on_sqlite_state_with_what_to_do() -> None:
    found = problems({**BASE, "state": {"path": "s.db", "replicas": 3}, "checks": [METRIC]})
    assert found == [
        "state.replicas: more than one replica needs the state in PostgreSQL (state.url); a"
        " SQLite state file has a single writer, so run one replica on it (got 3)"
    ]
    shared = {"url": "postgresql://kpi@db/kpi", "replicas": 3, "lease_ttl": "20s"}
    config = parse_config({**BASE, "state": shared, "checks": [METRIC]}, "ok.yaml")
    assert (config.state.replicas, config.state.lease_ttl.total_seconds()) == (3, 20)
    found = problems({**BASE, "state": {**shared, "lease_ttl": "1s"}, "checks": [METRIC]})
    assert found == ["state.lease_ttl: must be between 3s and 10m (got '1s')"]
