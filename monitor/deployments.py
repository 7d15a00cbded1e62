"""Deployments: what a change touched, how its watch ends, and what it is blamed for. Pure.

A deployment names the models (or tables) it changed. Checks that depend on them are watched for
their ``post_deploy_window``; the deployment fails as soon as one of their series (a total or a
segment) breaks from its expected level in the sequential test of the buckets after it
(:mod:`monitor.sequential`), or one of them opens an alert whose deviation began after the
deployment (checks declared in ``expect_change`` excepted), or when it removed a column a check
uses; it passes when every window ended quietly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from monitor.config import CheckConfig, Config
from monitor.dbt import ManifestNode, relation_key, same_table
from monitor.detection import Verdict
from monitor.sequential import Evidence

Status = Literal["watching", "passed", "failed"]


@dataclass(frozen=True)
class WatchedCheck:
    name: str
    until: datetime
    intended: bool = False


@dataclass(frozen=True)
class Deviation:
    check: str
    segment: str
    value: float
    expected: float | None
    score: float
    since: datetime
    intended: bool = False
    explanation: str = ""  # the drill-down of the check's incident: which segments moved


@dataclass(frozen=True)
class SchemaChange:
    table: str
    removed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    retyped: list[tuple[str, str, str]] = field(default_factory=list)  # column, before, after
    broken_checks: list[str] = field(default_factory=list)  # checks that use a removed column


@dataclass(frozen=True)
class Deployment:
    id: str
    environment: str
    received_at: datetime
    models: list[str]
    checks: list[WatchedCheck]
    commit: str | None = None
    url: str | None = None
    ran: list[str] = field(default_factory=list)
    status: Status = "watching"
    finished_at: datetime | None = None
    reason: str = ""
    deviations: list[Deviation] = field(default_factory=list)
    schema_changes: list[SchemaChange] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    """The sequential test of each watched series since the deployment."""

    @property
    def watch_until(self) -> datetime:
        return max((c.until for c in self.checks), default=self.received_at)

    def watched(self, check: str) -> WatchedCheck | None:
        return next((c for c in self.checks if c.name == check), None)

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=_iso, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Deployment:
        data = json.loads(text)
        data["received_at"] = datetime.fromisoformat(data["received_at"])
        if data["finished_at"]:
            data["finished_at"] = datetime.fromisoformat(data["finished_at"])
        data["checks"] = [
            WatchedCheck(c["name"], datetime.fromisoformat(c["until"]), c["intended"])
            for c in data["checks"]
        ]
        data["deviations"] = [
            Deviation(**{**d, "since": datetime.fromisoformat(d["since"])})
            for d in data["deviations"]
        ]
        data["schema_changes"] = [
            SchemaChange(**{**s, "retyped": [tuple(r) for r in s["retyped"]]})
            for s in data["schema_changes"]
        ]
        # deployments recorded before the sequential test have no evidence
        data["evidence"] = [
            Evidence(**{**e, "last": datetime.fromisoformat(e["last"]) if e["last"] else None})
            for e in data.get("evidence", [])
        ]
        return cls(**data)


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def affected_checks(config: Config, models: list[str], relations: list[str]) -> list[CheckConfig]:
    """Checks whose ``models`` name a changed model or whose table is a changed relation (or
    model name), as :func:`monitor.dbt.same_table` decides.

    In time linear in the changed names, not checks x names: the checks are indexed by model
    name and by the last part of their table, which a relation must end with to be it.
    """
    by_model: dict[str, set[str]] = {}
    by_table: dict[str, list[tuple[list[str], str]]] = {}
    for check in config.checks:
        for model in check.models:
            by_model.setdefault(model.lower(), set()).add(check.name)
        if check.table is not None:
            wanted = relation_key(check.table).split(".")
            by_table.setdefault(wanted[-1], []).append((wanted, check.name))
    touched: set[str] = set()
    for model in models:
        touched |= by_model.get(model.lower(), set())
    for name in [*relations, *models]:
        parts = relation_key(name).split(".")
        for wanted, checked in by_table.get(parts[-1], []):
            if len(wanted) <= len(parts) and parts[-len(wanted) :] == wanted:
                touched.add(checked)
    return [c for c in config.checks if c.name in touched]


def start(
    config: Config,
    *,
    id: str,
    environment: str,
    received_at: datetime,
    models: list[str],
    relations: list[str],
    expect_change: list[str],
    commit: str | None = None,
    url: str | None = None,
    ran: list[str] | None = None,
) -> Deployment:
    """A new deployment watching every affected check (and every intended one)."""
    affected = {c.name: c for c in affected_checks(config, models, relations)}
    for name in expect_change:
        check = config.check(name)
        if check is not None:
            affected.setdefault(name, check)
    watched = [
        WatchedCheck(c.name, received_at + c.post_deploy_window, c.name in expect_change)
        for c in affected.values()
    ]
    deployment = Deployment(
        id=id,
        environment=environment,
        received_at=received_at,
        models=models,
        checks=watched,
        commit=commit,
        url=url,
        ran=ran or [],
    )
    if not watched:
        return replace(
            deployment,
            status="passed",
            finished_at=received_at,
            reason="no check depends on the changed models",
        )
    return deployment


def record_deviation(deployment: Deployment, deviation: Deviation, now: datetime) -> Deployment:
    """An alert opened on a watched check: fail the deployment unless the change was intended."""
    if deployment.status != "watching":
        return deployment
    deployment = replace(deployment, deviations=[*deployment.deviations, deviation])
    if deviation.intended:
        return deployment
    where = f"{deviation.check} [{deviation.segment}]" if deviation.segment else deviation.check
    explained = f" ({deviation.explanation})" if deviation.explanation else ""
    return replace(
        deployment,
        status="failed",
        finished_at=now,
        reason=f"{where} deviated after the deployment{explained}",
    )


def record_evidence(
    deployment: Deployment,
    check: CheckConfig,
    verdicts: Mapping[str, list[Verdict]],
    lag: timedelta,
    now: datetime,
) -> Deployment:
    """A watched check's new verdicts through the sequential test (:mod:`monitor.sequential`):
    each series counts the buckets judged after the deployment (:func:`onset_after`); the
    deployment fails when one breaks, naming every series of the check that broke, the
    largest move first. An intended change is not tested (its baseline restarted)."""
    watched = deployment.watched(check.name)
    if deployment.status != "watching" or watched is None or watched.intended:
        return deployment
    evidence = {(e.check, e.segment): e for e in deployment.evidence}
    for segment, judged in verdicts.items():
        test = evidence.get((check.name, segment), Evidence(check.name, segment))
        for verdict in judged:
            if onset_after(deployment, verdict.bucket.to_pydatetime(), lag):
                test = test.add(verdict, check.direction)
        if test.buckets:
            evidence[(check.name, segment)] = test
    updated = replace(deployment, evidence=list(evidence.values()))
    broken = sorted(
        (e for e in updated.evidence if e.check == check.name and e.broken),
        key=lambda e: -abs(e.actual - e.expected),
    )
    if not broken:
        return updated
    return replace(
        updated,
        status="failed",
        finished_at=now,
        reason="broke from the expected level after the deployment: "
        + "; ".join(e.describe() for e in broken[:5]),
    )


def record_schema(deployment: Deployment, changes: list[SchemaChange], now: datetime) -> Deployment:
    deployment = replace(deployment, schema_changes=changes)
    broken = sorted({c for change in changes for c in change.broken_checks})
    if broken and deployment.status != "failed":
        return replace(
            deployment,
            status="failed",
            finished_at=now,
            reason=f"removed a column that {', '.join(broken)} uses",
        )
    return deployment


def finish_if_due(deployment: Deployment, now: datetime) -> Deployment:
    """Pass a deployment whose every window ended without a deviation."""
    if deployment.status == "watching" and now >= deployment.watch_until:
        return replace(
            deployment, status="passed", finished_at=now, reason="no deviation in the window"
        )
    return deployment


def onset_after(deployment: Deployment, since: datetime, lag: timedelta) -> bool:
    """Could the deployment have caused a deviation whose first anomalous bucket starts at
    ``since``? Yes when that bucket was judged after the deployment: ``lag`` is how long after
    its start a bucket is judged (its length plus ``settle``). A rebuilt model changes rows of
    buckets not judged yet, even ones that began before the deployment; a deviation judged
    before it (an incident already under way) is not the deployment's.
    """
    return since + lag > deployment.received_at


def likely_cause(
    deployments: list[Deployment], check: str, since: datetime, lag: timedelta, now: datetime
) -> Deployment | None:
    """The deployment to name as the likely cause of an alert opening now.

    Candidates could have caused the deviation (:func:`onset_after`) and still had a window
    open now; one that touched this check wins over one that did not, then the most recent.
    """
    candidates = [
        d
        for d in deployments
        if onset_after(d, since, lag) and d.received_at <= now <= d.watch_until + lag
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda d: (d.watched(check) is not None, d.received_at))


def describe_cause(deployment: Deployment, since: datetime) -> str:
    minutes = max(0, int((since - deployment.received_at).total_seconds() // 60))
    parts = [f"deployment {deployment.id} to {deployment.environment}"]
    if deployment.commit:
        parts.append(f"commit {deployment.commit[:12]}")
    text = ", ".join(parts) + f", {minutes} min before the deviation began"
    return f"{text} ({deployment.url})" if deployment.url else text


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def columns_used(check: CheckConfig) -> set[str]:
    """Column names a check's SQL mentions (lower case); identifiers that are not columns are
    harmless here: they only matter when a column of that name was removed."""
    used = {c.lower() for c in [check.timestamp_column or "", *check.dimensions] if c}
    for text in (check.expression, check.where, check.sql):
        if text:
            used |= {w.lower() for w in _WORD.findall(text)}
    return used


def schema_change(
    table: str, before: dict[str, str], after: dict[str, str], checks: list[CheckConfig]
) -> SchemaChange | None:
    """What changed in one table's columns; None when nothing did."""
    b = {k.lower(): v for k, v in before.items()}
    a = {k.lower(): v for k, v in after.items()}
    removed = sorted(set(b) - set(a))
    added = sorted(set(a) - set(b))
    retyped = sorted((c, b[c], a[c]) for c in set(a) & set(b) if b[c].lower() != a[c].lower())
    if not (removed or added or retyped):
        return None
    broken = sorted(c.name for c in checks if reads(c, table) and columns_used(c) & set(removed))
    return SchemaChange(table, removed, added, retyped, broken)


def reads(check: CheckConfig, table: str) -> bool:
    """Does the check read ``table``: its ``table``, or for sql checks, a mention in the SQL."""
    if check.table is not None:
        return same_table(check.table, table)
    return check.sql is not None and table.lower() in check.sql.lower()


def summary(deployment: Deployment) -> dict[str, Any]:
    """The JSON answer of GET /api/v1/deployments/{id}."""
    return {
        "id": deployment.id,
        "environment": deployment.environment,
        "status": deployment.status,
        "reason": deployment.reason,
        "commit": deployment.commit,
        "url": deployment.url,
        "received_at": deployment.received_at.isoformat(),
        "watch_until": deployment.watch_until.isoformat(),
        "finished_at": deployment.finished_at.isoformat() if deployment.finished_at else None,
        "models": deployment.models,
        "ran": deployment.ran,
        "checks": [
            {"name": c.name, "until": c.until.isoformat(), "intended": c.intended}
            for c in deployment.checks
        ],
        "deviations": [{**asdict(d), "since": d.since.isoformat()} for d in deployment.deviations],
        "schema_changes": [asdict(s) for s in deployment.schema_changes],
        "tests": [
            {
                "check": e.check,
                "segment": e.segment,
                "buckets": e.buckets,
                "evidence_up": round(e.up, 3),
                "evidence_down": round(e.down, 3),
                "change": e.change,
                "broken": e.broken,
            }
            for e in deployment.evidence
        ],
    }


class DeploymentRequest(BaseModel):
    """The body of POST /api/v1/deployments (what ``kpi-monitor deployment record`` sends)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")
    environment: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    models: list[Annotated[str, Field(min_length=1, max_length=512)]] = Field(
        default_factory=list, max_length=10_000
    )
    commit: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._/-]{1,128}$")
    url: str | None = Field(default=None, pattern=r"^https?://\S{1,2000}$")
    expect_change: list[str] = Field(default_factory=list, max_length=1000)
    manifest: dict[str, ManifestNode] | None = Field(default=None, max_length=100_000)
    ran: list[str] | None = Field(default=None, max_length=100_000)
