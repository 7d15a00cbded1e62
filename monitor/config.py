"""The configuration file: YAML, validated once at start by pydantic models.

``${VAR}`` anywhere in a string value is replaced by the environment variable VAR (``${VAR:-x}``
falls back to x) and ``${file:/path}`` by the contents of a mounted secret file; a missing one is
an error naming it.
``defaults`` holds check fields applied where a check leaves them out.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
import zoneinfo
from collections.abc import Mapping, Sequence
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
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from monitor.calendar.config import CalendarConfig, ExclusionConfig, OnHoliday, When
from monitor.config_errors import Wording, did_you_mean, join, nearest
from monitor.dbt import ArtifactError
from monitor.dbt_checks import DeclaredCheck, declared_checks
from monitor.detection.spec import Direction
from monitor.dialects import Grain, is_plain_identifier
from monitor.durations import is_cron, parse_duration, seconds
from monitor.errors import ConfigError

CheckKind = Literal["metric", "row_count", "freshness", "sql"]
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
    path: str = Field(description="the DuckDB file, opened read-only while a query runs")
    statement_timeout: float = Field(
        default=300.0, gt=0, description="seconds a query may run before it is interrupted"
    )
    # a writer in another process cannot take the file while it is open, but reopening costs
    # tens of milliseconds a query
    keep_open: float = Field(
        default=1.0,
        ge=0,
        le=3600,
        description="seconds the file stays open after the last query, for the next one",
    )


class PostgresWarehouseConfig(_Model):
    """A PostgreSQL database reached through psycopg 3 (``kind: postgresql`` is the same)."""

    kind: Literal["postgres", "postgresql"]
    dsn: SecretStr = Field(
        description="libpq connection string or postgresql:// URL (the password never appears "
        "in messages)"
    )
    statement_timeout: float = Field(
        default=300.0, gt=0, description="seconds a query may run; the server cancels it after"
    )
    pool_size: int = Field(default=4, ge=1, le=64, description="connections kept open at most")

    @field_validator("kind")
    @classmethod
    def _one_name(cls, value: str) -> Literal["postgres"]:
        # the state URL says postgresql://, so users write it here too
        return "postgres"


def split_server_hostname(value: str) -> tuple[str, int | None]:
    """A Databricks server hostname as ``(host, port)``.

    Takes what the warehouse's connection details show (``adb-1.2.azuredatabricks.net``), with
    an optional port (``host:8443``) or as a URL (``https://host[:port]/``).
    """
    text = value.strip()
    parts = urllib.parse.urlsplit(text if "//" in text else f"//{text}")
    if parts.scheme not in ("", "https"):
        raise ValueError(f"{value!r}: Databricks is reached over https only")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ValueError(f"{value!r}: give the host (and port) only; the path goes in http_path")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{value!r}: the port is not a number from 1 to 65535") from None
    if not parts.hostname or port == 0:
        raise ValueError(f"{value!r} is not a host name, host:port or https://host URL")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return host, port


def _server_hostname(value: str | None) -> str | None:
    if value:
        split_server_hostname(value)
    return value or None


def _connection_uri(value: str | None) -> str | None:
    if not value:
        return None
    parts = urllib.parse.urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s):// URL with a host")
    try:
        parts.port  # noqa: B018 - raises for a bad port
    except ValueError:
        raise ValueError(f"{value!r}: the port is not a number from 1 to 65535") from None
    return value.strip()


def _readable_file(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        with open(value, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {value}: {exc.strerror}") from None
    return value


class DatabricksWarehouseConfig(_Model):
    """A Databricks SQL warehouse; unset connection fields fall back to DATABRICKS_* variables."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    kind: Literal["databricks"]
    server_hostname: Annotated[str | None, AfterValidator(_server_hostname)] = Field(
        default=None,
        description="the warehouse's Server hostname, with an optional port (host:8443) "
        "(default: DATABRICKS_HOST)",
    )
    http_path: str | None = Field(
        default=None,
        description="the warehouse's HTTP path, /sql/1.0/warehouses/<id> "
        "(default: DATABRICKS_HTTP_PATH)",
    )
    access_token: SecretStr | None = Field(
        default=None, description="a personal access token (default: DATABRICKS_TOKEN)"
    )
    client_id: str | None = Field(
        default=None,
        description="a service principal's OAuth client id, with client_secret, instead of a "
        "token (default: DATABRICKS_CLIENT_ID)",
    )
    client_secret: SecretStr | None = Field(
        default=None,
        description="the service principal's OAuth secret (default: DATABRICKS_CLIENT_SECRET)",
    )
    catalog: str | None = Field(default=None, description="initial catalog of each session")
    schema_: str | None = Field(
        default=None, alias="schema", description="initial schema of each session"
    )
    statement_timeout: float = Field(
        default=300.0,
        gt=0,
        description="seconds a query may take, retries and waits included; the warehouse "
        "cancels the statement after (STATEMENT_TIMEOUT)",
    )
    retries: int = Field(
        default=3,
        ge=0,
        le=10,
        description="retries of a query after a network error or HTTP 429/5xx, within the "
        "statement timeout",
    )
    connection_uri: Annotated[str | None, AfterValidator(_connection_uri)] = Field(
        default=None,
        description="the full URL of the warehouse's HTTP path, instead of server_hostname and "
        "http_path: an https:// (or http://) endpoint such as a proxy in front of the warehouse",
    )
    tls_trusted_ca_file: Annotated[str | None, AfterValidator(_readable_file)] = Field(
        default=None,
        description="a PEM file of the certificate authorities to trust instead of the "
        "system's (a private CA, a TLS-inspecting proxy)",
    )


# one configured warehouse, whatever its kind (the adapter is chosen by the class)
AnyWarehouseConfig = DuckDBWarehouseConfig | PostgresWarehouseConfig | DatabricksWarehouseConfig
# ... as read from the file: ``kind`` says which
WarehouseConfig = Annotated[AnyWarehouseConfig, Field(discriminator="kind")]


class RetentionConfig(_Model):
    """How long the state store keeps what is done with, so it stops growing: delivered
    notifications, finished deployments, and the dbt manifest of an environment not deployed
    to since; the alert history; and how long a segment without rows is still tracked."""

    notifications: PositiveDuration = timedelta(days=30)
    deployments: PositiveDuration = timedelta(days=90)
    alert_history: PositiveDuration = Field(
        default=timedelta(days=90),
        description="episodes whose events are all older than this (and than the longest "
        "check lookback, which the pages draw) leave the alert history, unless still firing",
    )
    segments: PositiveDuration = Field(
        default=timedelta(days=7),
        description="a segment with no row for this long before the check's newest row is no "
        "longer tracked (checked at the daily re-rank): its alert resolves, its model and "
        "metric series go",
    )


class StateConfig(_Model):
    """Where alert state, episodes and the notification outbox are kept: a SQLite file
    (``path``), or a PostgreSQL database (``url: postgresql://...``), which then wins."""

    path: str = "kpimon-state.db"
    url: SecretStr | None = None
    retention: RetentionConfig = RetentionConfig()
    # replicas sharing the checks (the Helm chart's replicaCount): more than one needs ``url``
    replicas: int = Field(default=1, ge=1, le=100)
    # how long a replica's lease on its share of the checks outlives its last renewal (see
    # monitor/leases.py); it is renewed six times per TTL
    lease_ttl: Duration = timedelta(seconds=30)

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("postgresql://", "postgres://")
        ):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("replicas")
    @classmethod
    def _shared_state(cls, value: int, info: ValidationInfo) -> int:
        if value > 1 and info.data.get("url") is None:
            raise ValueError(
                "more than one replica needs the state in PostgreSQL (state.url); a SQLite"
                " state file has a single writer, so run one replica on it"
            )
        return value

    @field_validator("lease_ttl")
    @classmethod
    def _lease_ttl(cls, value: timedelta) -> timedelta:
        if not 3 <= value.total_seconds() <= 600:
            raise ValueError("must be between 3s and 10m")
        return value


class SlackRoute(_Model):
    """Alerts of this team and/or severity go to ``channel`` (first matching route wins)."""

    team: str | None = None
    severity: Severity | None = None
    channel: str


def _user_group(value: str) -> str:
    if not re.fullmatch(r"S[A-Z0-9]{2,30}", value):
        raise ValueError(
            "expected a Slack user group id such as S0123ABCD (the group's page: Copy group ID)"
        )
    return value


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
    # answers to alerts (buttons): Socket Mode with an app-level token, and/or Slack's signed
    # HTTP requests to POST /slack/interactivity; see monitor/answers/
    app_token: SecretStr | None = None
    signing_secret: SecretStr | None = None
    # Slack user group ids (S...) whose members may answer any alert, beside the members of
    # the alert's channel
    answer_groups: list[Annotated[str, AfterValidator(_user_group)]] = Field(
        default_factory=list
    )

    @field_validator("token", "app_token", "signing_secret", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        # `token: ${SLACK_BOT_TOKEN:-}` leaves Slack off when the variable is unset
        return None if value == "" else value

    @field_validator("app_token")
    @classmethod
    def _app_level(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xapp-"):
            raise ValueError(
                "an app-level token starts with xapp- (Basic Information > App-Level Tokens,"
                " scope connections:write); a bot token (xoxb-) goes in slack.token"
            )
        return value

    @property
    def answers(self) -> bool:
        """Whether alerts carry answer buttons: a bot token and a transport for the clicks."""
        return self.token is not None and (
            self.app_token is not None or self.signing_secret is not None
        )


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
    """The HTTP listener. Slow or idle clients cannot hold it: each request must arrive (and
    its answer be taken) within ``request_timeout``, an idle connection closes after
    ``idle_timeout``, and at ``connection_limit`` the connection that waited longest on its
    client is closed to let a new one in."""

    host: str = "0.0.0.0"  # noqa: S104 - a service in a pod listens on every interface
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)
    threads: int = Field(default=8, ge=1, le=64)
    request_timeout: float = Field(default=30.0, gt=0, le=3600)
    idle_timeout: float = Field(default=60.0, gt=0, le=3600)
    connection_limit: int = Field(default=100, ge=10, le=10_000)


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
    # sql checks: the warehouse stops after one row more, and more than this is that check's
    # error (an unaggregated query once read 5 million rows into 1 GB)
    max_rows: int = Field(default=200_000, ge=1, le=10_000_000)
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
    min: float | None = None
    max: float | None = None
    owner: str | None = None
    severity: Severity = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    models: list[str] = Field(default_factory=list)
    channel: str | None = None
    mute_until: datetime | None = None
    calendar: CalendarConfig | None = None
    exclude: list[ExclusionConfig] = Field(default_factory=list, max_length=1000)
    learn_from: When | None = None
    on_holiday: OnHoliday = "compare"
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
        if self.kind == "freshness" and (self.min is not None or self.max is not None):
            raise ValueError("a freshness check takes no min or max: give max_age")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is above max ({self.max:g})")
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
        # daily: two years and more, so the date of the year can be learned (detection.dates)
        return timedelta(weeks=8) if self.grain == "hour" else timedelta(weeks=110)

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


class DbtConfig(_Model):
    """Checks declared in a dbt project, next to its models (README: Checks in dbt)."""

    manifest: str
    """The project's compiled ``target/manifest.json``; a relative path is read from the config
    file's directory."""
    semantic_metrics: Literal["tagged", "all"] = "tagged"
    """Which simple metrics of the semantic layer become checks: those whose meta has
    ``kpi_monitor``, or all of them."""


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
    dbt: DbtConfig | None = None
    checks: list[CheckConfig] = Field(default_factory=list)
    _source: str = PrivateAttr(default="<memory>")
    _expanded: dict[str, str] = PrivateAttr(default_factory=dict)
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)
    _manifest: Path | None = PrivateAttr(default=None)

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

    @property
    def manifest_path(self) -> Path | None:
        """The dbt manifest the checks were read from, if any (resolved)."""
        return self._manifest

    def origin(self, name: str) -> str:
        """Where a check is declared: the config file and its index, or the dbt node and file."""
        return self._origins.get(name, self._source)

    @model_validator(mode="after")
    def _references(self) -> Config:
        problems = reference_problems(self)
        if problems:
            raise _ReferenceProblems(problems)
        return self

    def all_warehouses(self) -> dict[str, AnyWarehouseConfig]:
        if self.warehouse is not None:
            return {"default": self.warehouse}
        return dict(self.warehouses)

    def warehouse_of(self, check: CheckConfig) -> str:
        return check.warehouse or "default"

    def check(self, name: str) -> CheckConfig | None:
        return next((c for c in self.checks if c.name == name), None)

    def checks_named(self, names: Sequence[str]) -> list[CheckConfig]:
        """The checks of these names; an unknown one is a ConfigError listing the names."""
        known = [c.name for c in self.checks]
        problems = []
        for name in (n for n in names if self.check(n) is None):
            close = nearest(name, known)
            hint = f" (did you mean {close!r}?)" if close else ""
            problems.append(f"no check named {name!r}{hint}; the checks are: {', '.join(known)}")
        if problems:
            raise ConfigError(self.source, problems)
        return [c for n in names for c in [self.check(n)] if c is not None]


_WORDING = Wording(
    Config,
    {
        "duckdb": DuckDBWarehouseConfig,
        "postgres": PostgresWarehouseConfig,
        "postgresql": PostgresWarehouseConfig,
        "databricks": DatabricksWarehouseConfig,
    },
    tag_field="kind",
    tag_name="warehouse kind",
    tag_choices="duckdb, postgres (or postgresql) or databricks",
)


# --- loading -------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{([^}]*)\}")


def _interpolate(node: Any, path: str, problems: list[str], expanded: dict[str, str]) -> Any:
    """``node`` with every ${...} replaced; ``expanded`` gets each value that came from the
    environment or a file, with the reference it replaced (what a page shows instead)."""
    if isinstance(node, dict):
        return {
            k: _interpolate(v, join(path, str(k)), problems, expanded) for k, v in node.items()
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


def default_problems(defaults: Mapping[str, Any]) -> list[str]:
    """What is wrong in ``defaults``, each said once at ``defaults.<field>`` (not once for every
    check it would be copied into)."""
    settable = [n for n in CheckConfig.model_fields if n not in ("name", "kind")]
    problems = [
        f"defaults.{key}: not a check field that can have a default"
        + did_you_mean(str(key), settable)
        for key in defaults
        if key not in settable
    ]
    if problems:
        return problems
    # the values, on a check that needs nothing else (what a kind needs is each check's matter)
    probe = {"name": "defaults", "kind": "sql", "sql": "select :since", **defaults}
    try:
        CheckConfig.model_validate(probe)
    except ValidationError as exc:
        return [
            _WORDING.problem(error, "defaults")
            for error in exc.errors()
            if error["loc"] and error["loc"][0] in defaults
        ]
    return []


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
    if not config.checks:
        problems.append("checks: no checks: list them here, or declare them in dbt (dbt.manifest)")
    seen: set[str] = set()
    for i, check in enumerate(config.checks):
        if check.name in seen:
            problems.append(
                f"checks[{i}].name: two checks are named {check.name!r}; names must be unique"
            )
        seen.add(check.name)
        if config.warehouse is not None and check.warehouse not in (None, "default"):
            problems.append(
                f"checks[{i}].warehouse: names warehouse {check.warehouse!r}, but only one "
                "(default) is configured"
            )
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
    document = _interpolate(document, "", problems, expanded)
    if problems:
        raise ConfigError(source, problems)
    defaults = document.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(source, ["defaults: must be a mapping of check fields"])
    problems = default_problems(defaults)
    if problems:
        raise ConfigError(source, problems)
    checks = document.get("checks")
    written = [
        {**defaults, **c} if isinstance(c, dict) else c
        for c in (checks if isinstance(checks, list) else [])
    ]
    if isinstance(checks, list):
        document["checks"] = written
    manifest, declared = _dbt_checks(document.get("dbt"), source)
    problems = _declared_problems(declared, written, defaults)
    if problems:
        raise ConfigError(source, problems)
    if declared:
        document["checks"] = [*written, *({**defaults, **d.document} for d in declared)]
    try:
        config = Config.model_validate(document)
    except ValidationError as exc:
        found = []
        for error in exc.errors():
            cause = error.get("ctx", {}).get("error")
            if isinstance(cause, _ReferenceProblems):
                found.extend(cause.problems)  # they name their own field paths
            else:
                found.append(_WORDING.problem(error))
        # a check from dbt is named by its node, not by where it landed in the list
        origins = {f"checks[{len(written) + i}]": d.origin for i, d in enumerate(declared)}
        raise ConfigError(source, [_renamed(p, origins) for p in found]) from None
    config._source = source
    config._expanded = expanded
    config._manifest = manifest
    config._origins = {
        **{c.name: f"{source}, checks[{i}]" for i, c in enumerate(config.checks[: len(written)])},
        **{c.name: d.origin for c, d in zip(config.checks[len(written) :], declared, strict=True)},
    }
    return config


def _renamed(problem: str, origins: Mapping[str, str]) -> str:
    head, dot, rest = problem.partition(".")
    head, colon, tail = (head, "", "") if dot else problem.partition(":")
    origin = origins.get(head)
    if origin is None:
        return problem
    return f"{origin}: meta.kpi_monitor.{rest}" if dot else f"{origin}{colon}{tail}"


def _dbt_checks(section: object, source: str) -> tuple[Path | None, list[DeclaredCheck]]:
    """The checks declared in the dbt manifest that ``dbt:`` names (none without one)."""
    if section is None:
        return None, []
    try:
        dbt = DbtConfig.model_validate(section)
    except ValidationError as exc:
        problems = [_WORDING.problem({**e, "loc": ("dbt", *e["loc"])}) for e in exc.errors()]
        raise ConfigError(source, problems) from None
    path = Path(dbt.manifest)
    if not path.is_absolute() and source != "<memory>":
        path = Path(source).parent / path
    try:
        manifest = json.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError(source, [f"dbt.manifest: cannot read {path}: {exc.strerror}"]) from None
    except ValueError as exc:
        raise ConfigError(source, [f"dbt.manifest: {path} is not JSON: {exc}"]) from None
    except RecursionError:
        # the decoder recurses once per nesting level; a manifest is a few levels deep
        raise ConfigError(source, [f"dbt.manifest: {path}: JSON nested too deeply"]) from None
    try:
        declared, refused = declared_checks(manifest, dbt.semantic_metrics)
    except ArtifactError as exc:
        raise ConfigError(source, [f"dbt.manifest: {path}: {exc}"]) from None
    if refused:
        raise ConfigError(source, [str(exc) for exc in refused])
    return path, declared


def _declared_problems(
    declared: list[DeclaredCheck], written: list[Any], defaults: Mapping[str, Any]
) -> list[str]:
    """Checks from dbt that clash by name with another, or are not valid checks."""
    seen = {
        c["name"]: f"checks[{i}]"
        for i, c in enumerate(written)
        if isinstance(c, dict) and isinstance(c.get("name"), str)
    }
    problems = []
    for check in declared:
        name = check.document.get("name")
        if isinstance(name, str) and name in seen:
            problems.append(
                f"{check.origin}: meta.kpi_monitor.name: a check named {name!r} is also "
                f"declared at {seen[name]}; names must be unique"
            )
        if isinstance(name, str):
            seen[name] = check.origin
        try:
            CheckConfig.model_validate({**defaults, **check.document})
        except ValidationError as exc:
            problems.extend(
                f"{check.origin}: {_WORDING.problem(e, 'meta.kpi_monitor')}" for e in exc.errors()
            )
    return problems


# Aliases may multiply the values of a document by this much, or bring it to this many values,
# whichever is more: a config that repeats a block of defaults in every check stays far below.
ALIAS_GROWTH = 10
ALIAS_FLOOR = 10_000


class _AliasProblem(ValueError):
    def __init__(self, node: yaml.Node, problem: str) -> None:
        super().__init__(problem)
        self.line = node.start_mark.line + 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _refuse_alias_bombs(root: yaml.Node) -> None:
    """Refuse aliases that refer to the value holding them, or expand the document out of
    proportion (an alias bomb), as the safe loaders of other YAML libraries do.

    PyYAML shares an aliased node, so loading stays cheap; but interpolating and validating the
    document visit it once per alias: 500 bytes of nested aliases took minutes and gigabytes. The
    expanded size is counted on the shared nodes (each once, depth-first, without recursion).
    """
    size: dict[int, int] = {}
    finished: list[yaml.Node] = []
    path: set[int] = set()  # the nodes being counted: the current one and its ancestors
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            path.discard(id(node))
            size[id(node)] = 1 + sum(size[id(child)] for child in _children(node))
            finished.append(node)
            continue
        if id(node) in size:
            continue  # another alias of a value already counted
        path.add(id(node))
        stack.append((node, True))
        for child in _children(node):
            if id(child) in path:
                raise _AliasProblem(child, "a YAML alias refers to a value that contains it")
            stack.append((child, False))
    limit = max(ALIAS_FLOOR, ALIAS_GROWTH * len(size))
    # children finish before their parents: the first value over the limit is the innermost
    for node in finished:
        if size[id(node)] > limit:
            raise _AliasProblem(
                node,
                f"YAML aliases expand this value to {size[id(node)]:,} values, more than "
                f"{limit:,} (the document has {len(size):,}): refused as an alias bomb; "
                "write the repeated parts out, or use defaults",
            )


class _SafeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses alias bombs and self-referencing aliases."""

    def construct_document(self, node: yaml.Node) -> Any:
        _refuse_alias_bombs(node)
        return super().construct_document(node)


def _load_yaml(text: str) -> Any:
    loader = _SafeLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a configuration file."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(source, [f"cannot read the file: {exc.strerror}"]) from None
    try:
        document = _load_yaml(text)
    except _AliasProblem as exc:
        raise ConfigError(source, [f"line {exc.line}: {exc}"]) from None
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
