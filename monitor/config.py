"""The configuration file: YAML, validated once at start by pydantic models.

``${VAR}`` anywhere in a string value is replaced by the environment variable VAR (``${VAR:-x}``
falls back to x) and ``${file:/path}`` by the contents of a mounted secret file; a missing one is
an error naming it.
``defaults`` holds check fields applied where a check leaves them out.
"""

from __future__ import annotations

import os
import re
import zoneinfo
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from monitor.dialects import Grain, is_plain_identifier
from monitor.durations import is_cron, parse_duration, seconds
from monitor.errors import ConfigError

CheckKind = Literal["metric", "row_count", "freshness", "sql"]
Direction = Literal["both", "up", "down"]
Severity = Literal["info", "warning", "critical"]

GRAIN_SECONDS: dict[str, int] = {"hour": 3600, "day": 86400}
DEFAULT_PORT = 9108


def _duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return seconds(value.total_seconds(), value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return seconds(float(value))
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError("expected a duration such as 30s, 5m, 6h, 7d or 8w")


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than zero")
    return value


def _schedule(value: str) -> str:
    if is_cron(value):
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a valid cron expression: {exc}") from None
    else:
        _positive(parse_duration(value))
    return value


def _identifier(value: str) -> str:
    if not is_plain_identifier(value):
        raise ValueError(
            f"{value!r} is not a plain identifier (letters, digits, _ and dots between parts)"
        )
    return value


def _timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin"
        ) from None
    return value


Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\s*\d+(\.\d+)?\s*[smhdw]\s*$",
            "examples": ["5m", "6h", "8w"],
        }
    ),
]
PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
Identifier = Annotated[str, AfterValidator(_identifier)]
TimeZone = Annotated[str, AfterValidator(_timezone)]
Schedule = Annotated[str, AfterValidator(_schedule)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DuckDBWarehouseConfig(_Model):
    """An embedded DuckDB file, opened read-only."""

    kind: Literal["duckdb"]
    path: str
    statement_timeout: float = 300.0
    # seconds the file stays open after the last query: a writer in another process cannot
    # take the file while it is open, but reopening costs tens of milliseconds a query
    keep_open: float = Field(default=1.0, ge=0, le=3600)


class PostgresWarehouseConfig(_Model):
    """A PostgreSQL database reached through psycopg 3."""

    kind: Literal["postgres"]
    dsn: SecretStr
    statement_timeout: float = 300.0
    pool_size: int = Field(default=4, ge=1, le=64)


class DatabricksWarehouseConfig(_Model):
    """A Databricks SQL warehouse; unset connection fields fall back to DATABRICKS_* variables."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    kind: Literal["databricks"]
    server_hostname: str | None = None
    http_path: str | None = None
    access_token: SecretStr | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    catalog: str | None = None
    schema_: str | None = Field(default=None, alias="schema")
    statement_timeout: float = 300.0
    retries: int = Field(default=3, ge=0, le=10)
    connection_uri: str | None = None
    tls_trusted_ca_file: str | None = None


WarehouseConfig = Annotated[
    DuckDBWarehouseConfig | PostgresWarehouseConfig | DatabricksWarehouseConfig,
    Field(discriminator="kind"),
]


class StateConfig(_Model):
    """Where alert state, episodes and the notification outbox are kept: a SQLite file
    (``path``), or a PostgreSQL database (``url: postgresql://...``), which then wins."""

    path: str = "kpimon-state.db"
    url: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("postgresql://", "postgres://")
        ):
            raise ValueError("must be a postgresql:// URL")
        return value


class SlackRoute(_Model):
    """Alerts of this team and/or severity go to ``channel`` (first matching route wins)."""

    team: str | None = None
    severity: Severity | None = None
    channel: str


class SlackConfig(_Model):
    """Slack Web API delivery; without a token alerts go to the log only."""

    token: SecretStr | None = None
    channel: str = "#data-alerts"
    routes: list[SlackRoute] = Field(default_factory=list)
    api_url: str = "https://slack.com/api/"
    timeout: float = Field(default=10.0, gt=0)
    group_wait: Duration = timedelta(seconds=10)
    max_messages: int = Field(default=8, ge=1, le=100)
    chart_buckets: int = Field(default=72, ge=0, le=1000)
    # attempts at a message Slack cannot take for a passing reason (5xx, timeouts, rate limits,
    # a refused token) before it is recorded as failed; see monitor/alerts/retry.py
    max_attempts: int = Field(default=30, ge=1, le=1000)

    @field_validator("token", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        # `token: ${SLACK_BOT_TOKEN:-}` leaves Slack off when the variable is unset
        return None if value == "" else value


class AlertmanagerConfig(_Model):
    """Alertmanager v2 API delivery for on-call routing; every replica is listed and posted to."""

    urls: list[str] = Field(min_length=1)
    environment: str = "production"
    resend_interval: PositiveDuration = timedelta(minutes=1)
    timeout: float = Field(default=5.0, gt=0)
    # attempts at an alert a replica does not accept before it is given up for that replica
    max_attempts: int = Field(default=30, ge=1, le=1000)


class LinksConfig(_Model):
    """Link templates in alerts; ``{check}`` and ``{segment}`` are filled in (URL-encoded)."""

    dashboard: str | None = None
    runbook: str | None = None


class GrafanaConfig(_Model):
    """Deployment annotations through Grafana's HTTP API."""

    url: str
    token: SecretStr
    dashboard_uid: str | None = None
    timeout: float = Field(default=5.0, gt=0)


class ServerConfig(_Model):
    host: str = "0.0.0.0"  # noqa: S104 - a service in a pod listens on every interface
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)
    threads: int = Field(default=8, ge=1, le=64)


class SchedulerConfig(_Model):
    max_workers: int = Field(default=8, ge=1, le=256)
    misfire_grace: PositiveDuration = timedelta(minutes=5)


class CheckConfig(_Model):
    """One thing to watch; see the README for every field."""

    name: str = Field(pattern=r"^[a-z0-9_]+$", max_length=100)
    kind: CheckKind
    warehouse: str | None = None
    table: Identifier | None = None
    timestamp_column: Identifier | None = None
    expression: str | None = None
    where: str | None = None
    dimensions: list[Identifier] = Field(default_factory=list, max_length=4)
    max_segments: int = Field(default=20, ge=1, le=500)
    sql: str | None = None
    grain: Grain = "hour"
    timezone: TimeZone = "UTC"
    schedule: Schedule = "5m"
    lookback: PositiveDuration | None = None
    settle: Duration = timedelta(minutes=10)
    refetch_buckets: int = Field(default=3, ge=0, le=1000)
    sensitivity: float | None = Field(default=None, gt=0, le=100)
    direction: Direction = "both"
    min_relative_change: float = Field(default=0.05, ge=0, le=10)
    quiet_factor: float = Field(default=2.0, ge=1, le=100)
    alert_after: int | None = Field(default=None, ge=1, le=100)
    resolve_after: int = Field(default=2, ge=1, le=100)
    fill_missing: Literal["zero", "none"] | None = None
    max_age: PositiveDuration | None = None
    owner: str | None = None
    severity: Severity = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    models: list[str] = Field(default_factory=list)
    channel: str | None = None
    mute_until: datetime | None = None
    post_deploy_window: PositiveDuration = timedelta(hours=6)
    post_deploy_interval: PositiveDuration = timedelta(minutes=5)

    @model_validator(mode="after")
    def _fields_for_kind(self) -> CheckConfig:
        needs: dict[str, tuple[str, ...]] = {
            "metric": ("table", "timestamp_column", "expression"),
            "row_count": ("table", "timestamp_column"),
            "freshness": ("table", "timestamp_column"),
            "sql": ("sql",),
        }
        missing = [f for f in needs[self.kind] if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a {self.kind} check needs {', '.join(missing)}")
        if self.kind in ("freshness", "sql") and self.dimensions:
            raise ValueError(f"a {self.kind} check takes no dimensions")
        if self.kind == "sql" and self.sql is not None and ":since" not in self.sql:
            raise ValueError("the sql must filter on :since so each run reads only the lookback")
        return self

    @property
    def bucket_seconds(self) -> int:
        return GRAIN_SECONDS[self.grain]

    @property
    def effective_lookback(self) -> timedelta:
        if self.lookback is not None:
            return self.lookback
        return timedelta(weeks=8) if self.grain == "hour" else timedelta(weeks=26)

    @property
    def effective_alert_after(self) -> int:
        if self.alert_after is not None:
            return self.alert_after
        return 2 if self.grain == "hour" else 1

    @property
    def fills_zero(self) -> bool:
        if self.fill_missing is not None:
            return self.fill_missing == "zero"
        return self.kind in ("metric", "row_count")

    @property
    def team(self) -> str:
        return self.labels.get("team", "")


class Config(_Model):
    """The whole validated configuration."""

    warehouse: WarehouseConfig | None = None
    warehouses: dict[str, WarehouseConfig] = Field(default_factory=dict)
    state: StateConfig = StateConfig()
    slack: SlackConfig | None = None
    alertmanager: AlertmanagerConfig | None = None
    links: LinksConfig = LinksConfig()
    grafana: GrafanaConfig | None = None
    server: ServerConfig = ServerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    defaults: dict[str, Any] = Field(default_factory=dict)
    checks: list[CheckConfig] = Field(min_length=1)
    _source: str = PrivateAttr(default="<memory>")
    _expanded: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def source(self) -> str:
        """The file this config was read from, for messages."""
        return self._source

    def conceal(self, text: str) -> str:
        """``text`` with every value that came from the environment or a secret file shown as
        the ``${...}`` that brought it, and every secret of the config masked: for showing a
        check's config or SQL to anyone who can reach the daemon."""
        secrets = dict(self._expanded)
        secrets.update((value, "********") for value in self._secret_values())
        # longest first, so a value inside another is not replaced before it; a value of one
        # or two characters is no secret, and replacing it would garble the text
        for value in sorted((v for v in secrets if len(v) >= 3), key=len, reverse=True):
            text = text.replace(value, secrets[value])
        return text

    def _secret_values(self) -> list[str]:
        sections: list[BaseModel | None] = [
            self.state,
            self.slack,
            self.grafana,
            *self.all_warehouses().values(),
        ]
        found = [
            value.get_secret_value()
            for section in sections
            if section is not None
            for value in vars(section).values()
            if isinstance(value, SecretStr)
        ]
        # the password of a DSN or URL on its own, wherever else it was written
        return found + [p for p in (urlsplit(v).password for v in found if "://" in v) if p]

    @model_validator(mode="after")
    def _references(self) -> Config:
        problems = reference_problems(self)
        if problems:
            raise _ReferenceProblems(problems)
        return self

    def all_warehouses(
        self,
    ) -> dict[str, DuckDBWarehouseConfig | PostgresWarehouseConfig | DatabricksWarehouseConfig]:
        if self.warehouse is not None:
            return {"default": self.warehouse}
        return dict(self.warehouses)

    def warehouse_of(self, check: CheckConfig) -> str:
        return check.warehouse or "default"

    def check(self, name: str) -> CheckConfig | None:
        return next((c for c in self.checks if c.name == name), None)


# --- loading -------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{([^}]*)\}")


def _interpolate(node: Any, path: str, problems: list[str], expanded: dict[str, str]) -> Any:
    """``node`` with every ${...} replaced; ``expanded`` gets each value that came from the
    environment or a file, with the reference it replaced (what a page shows instead)."""
    if isinstance(node, dict):
        return {
            k: _interpolate(v, _join(path, str(k)), problems, expanded) for k, v in node.items()
        }
    if isinstance(node, list):
        return [_interpolate(v, f"{path}[{i}]", problems, expanded) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def replace(match: re.Match[str]) -> str:
        ref = match.group(1).strip()
        if ref.startswith("file:"):
            secret_path = Path(ref[5:])
            try:
                value = secret_path.read_text().strip()
                expanded[value] = match.group(0)
                return value
            except OSError as exc:
                problems.append(f"{path}: cannot read secret file {secret_path}: {exc.strerror}")
                return ""
        name, has_default, default = ref.partition(":-")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            problems.append(f"{path}: ${{{ref}}} is not a variable name")
            return ""
        if name in os.environ:
            expanded[os.environ[name]] = match.group(0)
            return os.environ[name]
        if has_default:
            return default
        problems.append(f"{path}: environment variable {name} is not set")
        return ""

    return _VAR.sub(replace, node)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("duckdb", "postgres", "databricks", "function-after", "function-before"):
            # pydantic's discriminator and validator tags are not part of the user's document
            continue
        else:
            out = _join(out, part)
    return out


_SECRET_FIELDS = {"token", "dsn", "url", "access_token", "client_secret", "password"}


def _describe(error: Mapping[str, Any]) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field (check the spelling; the README lists every field)"
    elif error["type"] == "missing":
        message = "required field is missing"
    value = error.get("input")
    secret = bool(_SECRET_FIELDS & {str(part) for part in error["loc"]})
    if secret:
        # a secret's own validator may quote it: say what is wrong, never what was given
        message = message.split(" (got ")[0].split(": '")[0]
    elif error["type"] not in ("missing", "extra_forbidden") and isinstance(
        value, str | int | float
    ):
        message += f" (got {value!r})"
    return message


class _ReferenceProblems(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def reference_problems(config: Config) -> list[str]:
    """What no single field shows: warehouses, unique names, references between sections."""
    problems = []
    if config.warehouse is not None and config.warehouses:
        problems.append("warehouses: give either warehouse or warehouses, not both")
    if config.warehouse is None and not config.warehouses:
        problems.append("warehouse: no warehouse configured: add a warehouse section")
    seen: set[str] = set()
    for i, check in enumerate(config.checks):
        if check.name in seen:
            problems.append(
                f"checks[{i}].name: two checks are named {check.name!r}; names must be unique"
            )
        seen.add(check.name)
        if config.warehouses and check.warehouse not in config.warehouses:
            known = ", ".join(sorted(config.warehouses))
            problems.append(
                f"checks[{i}].warehouse: names warehouse {check.warehouse!r}; "
                f"known warehouses: {known}"
            )
    return problems


def parse_config(document: Any, source: str = "<memory>") -> Config:
    """Validate an already parsed YAML document; raise ConfigError with every problem found."""
    if not isinstance(document, dict):
        raise ConfigError(source, ["the file must be a YAML mapping with a checks list"])
    problems: list[str] = []
    expanded: dict[str, str] = {}
    try:
        document = _interpolate(document, "", problems, expanded)
    except RecursionError:
        raise ConfigError(source, ["a YAML alias refers to itself; expand it"]) from None
    if problems:
        raise ConfigError(source, problems)
    defaults = document.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(source, ["defaults: must be a mapping of check fields"])
    for key in defaults:
        if key not in CheckConfig.model_fields or key in ("name", "kind"):
            problems.append(f"defaults.{key}: not a check field that can have a default")
    if problems:
        raise ConfigError(source, problems)
    checks = document.get("checks")
    if isinstance(checks, list):
        document["checks"] = [{**defaults, **c} if isinstance(c, dict) else c for c in checks]
    try:
        config = Config.model_validate(document)
    except ValidationError as exc:
        found = []
        for error in exc.errors():
            cause = error.get("ctx", {}).get("error")
            if isinstance(cause, _ReferenceProblems):
                found.extend(cause.problems)  # they name their own field paths
            else:
                found.append(f"{_location(error['loc']) or '(top level)'}: {_describe(error)}")
        raise ConfigError(source, found) from None
    config._source = source
    config._expanded = expanded
    return config


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a configuration file."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(source, [f"cannot read the file: {exc.strerror}"]) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [f"{where}not valid YAML: {problem}"]) from None
    return parse_config(document, source)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the config file, for editors (config/kpi-monitor.schema.json)."""
    schema = Config.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "kpi-monitor configuration"
    return schema
