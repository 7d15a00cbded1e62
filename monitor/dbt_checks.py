"""Checks declared in a dbt project, read from its compiled ``target/manifest.json``. Pure.

Two ways to declare one, next to the models they watch:

* ``meta: {kpi_monitor: {...}}`` on a model or on one of its columns (a mapping, or a list of
  them for several checks): any check field. ``table`` (the model's relation), ``models`` (the
  model) and ``owner`` (the model's ``meta.owner``, else its group's owner) are filled from the
  node when omitted, and so is ``name`` (``<model>_<kind>``; on a column
  ``<model>_<column>_<kind>``). On a column, a ``metric`` sums the column unless it says its
  ``expression``, and a ``row_count`` or ``freshness`` check counts by the column as its
  ``timestamp_column``.
* Simple metrics of the semantic layer (MetricFlow ``metrics`` on ``semantic_models``) tagged
  ``meta: {kpi_monitor: {...}}`` (or every simple metric, with ``semantic_metrics: all``): a
  ``metric`` check of the measure's aggregation on the semantic model's table, counted by its
  time dimension, at its grain (hour, else day), with the metric's and measure's filters, and
  split by the semantic model's dimensions the meta names in ``dimensions``.

The result is plain check documents with where each came from; the config validates them like
the checks written in its own YAML.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from monitor.dbt import ArtifactError

SemanticMetrics = Literal["tagged", "all"]

META_KEY = "kpi_monitor"
_QUOTES = re.compile(r'[`"\[\]]')
_NOT_NAME = re.compile(r"[^a-z0-9_]+")
# MetricFlow's filter templates: {{ Dimension('order__country') }}, {{ TimeDimension('...',
# 'day') }}, {{ Entity('customer') }}
_TEMPLATE = re.compile(
    r"\{\{\s*(Dimension|TimeDimension|Entity)\(\s*['\"]([^'\"]+)['\"][^)]*\)\s*\}\}"
)
_AGGREGATES = {
    "sum": "sum({})",
    "count": "count({})",
    "count_distinct": "count(DISTINCT {})",
    "average": "avg({})",
    "min": "min({})",
    "max": "max({})",
    "sum_boolean": "sum(CASE WHEN {} THEN 1 ELSE 0 END)",
}


@dataclass(frozen=True)
class DeclaredCheck:
    """One check declared in dbt: its fields, and where it was declared."""

    document: dict[str, Any]
    origin: str
    """For people: ``dbt model fct_orders (models/schema.yml)``."""


class DeclarationError(ArtifactError):
    """A check declared in dbt cannot be turned into a check; ``origin`` says where it is."""

    def __init__(self, origin: str, problem: str) -> None:
        super().__init__(f"{origin}: {problem}")
        self.origin = origin
        self.problem = problem


def declared_checks(
    manifest: Any, semantic_metrics: SemanticMetrics = "tagged"
) -> tuple[list[DeclaredCheck], list[DeclarationError]]:
    """Every check a parsed manifest declares, and the declarations that are not checks."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("nodes"), dict):
        raise ArtifactError("not a dbt manifest: no 'nodes' mapping")
    checks: list[DeclaredCheck] = []
    problems: list[DeclarationError] = []
    groups = manifest.get("groups") if isinstance(manifest.get("groups"), dict) else {}
    for uid, node in manifest["nodes"].items():
        if isinstance(node, dict) and node.get("resource_type") == "model":
            _collect(uid, _model_checks(node, groups or {}), checks, problems)
    models = {
        uid: node
        for uid, node in manifest["nodes"].items()
        if isinstance(node, dict) and node.get("resource_type") == "model"
    }
    semantic = manifest.get("semantic_models")
    by_measure: dict[str, dict[str, Any]] = {}
    for semantic_model in (semantic or {}).values() if isinstance(semantic, dict) else []:
        if not isinstance(semantic_model, dict):
            continue
        for measure in _list(semantic_model.get("measures")):
            if isinstance(measure, dict) and isinstance(measure.get("name"), str):
                by_measure[measure["name"]] = semantic_model
    metrics = manifest.get("metrics")
    for uid, metric in (metrics or {}).items() if isinstance(metrics, dict) else []:
        if isinstance(metric, dict):
            found = _metric_checks(metric, by_measure, models, groups or {}, semantic_metrics)
            _collect(uid, found, checks, problems)
    return checks, problems


def _collect(
    uid: str,
    found: Iterator[DeclaredCheck],
    checks: list[DeclaredCheck],
    problems: list[DeclarationError],
) -> None:
    try:
        checks.extend(found)
    except DeclarationError as exc:
        problems.append(exc)
    except (AttributeError, TypeError, KeyError, StopIteration):
        # a field of another type than dbt writes: say which node, not a traceback
        problems.append(DeclarationError(f"dbt {uid}", "is not what dbt writes in a manifest"))


def _meta(node: Mapping[str, Any]) -> dict[str, Any]:
    """A node's (or column's) meta; dbt 1.10 moved it under ``config`` and keeps both."""
    merged: dict[str, Any] = {}
    for meta in (node.get("meta"), (node.get("config") or {}).get("meta")):
        if isinstance(meta, dict):
            merged.update(meta)
    return merged


def _declarations(meta: Mapping[str, Any], origin: str) -> list[dict[str, Any]]:
    value = meta.get(META_KEY)
    if value is None:
        return []
    if value is True:
        return [{}]
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, dict) for item in items):
        raise DeclarationError(
            origin, f"meta.{META_KEY} must be a mapping of check fields, or a list of them"
        )
    return [dict(item) for item in items]


def _origin(kind: str, node: Mapping[str, Any], extra: str = "") -> str:
    path = node.get("patch_path") or node.get("original_file_path") or "?"
    path = str(path).split("://", 1)[-1]  # patch_path is "project://models/schema.yml"
    return f"dbt {kind} {node.get('name', '?')}{extra} ({path})"


def _table(relation: object, parts: tuple[object, ...]) -> str | None:
    """A relation as the dotted name a check's ``table`` takes (quotes dropped, case kept)."""
    if isinstance(relation, str) and relation.strip():
        return _QUOTES.sub("", relation).strip()
    named = [str(p) for p in parts if isinstance(p, str) and p]
    return ".".join(named) if named else None


def _node_table(node: Mapping[str, Any]) -> str | None:
    alias = node.get("alias") or node.get("name")
    return _table(node.get("relation_name"), (node.get("database"), node.get("schema"), alias))


def _owner(node: Mapping[str, Any], groups: Mapping[str, Any]) -> str | None:
    owner = _meta(node).get("owner")
    if isinstance(owner, str) and owner:
        return owner
    group = groups.get(f"group.{node.get('package_name')}.{node.get('group')}")
    if isinstance(group, dict) and isinstance(group.get("owner"), dict):
        found = group["owner"].get("name") or group["owner"].get("email")
        return str(found) if found else None
    return None


def check_name(*parts: str) -> str:
    """A valid check name from dbt names: lowercase, ``[a-z0-9_]``."""
    return _NOT_NAME.sub("_", "_".join(parts).lower()).strip("_")


def _model_checks(node: dict[str, Any], groups: Mapping[str, Any]) -> Iterator[DeclaredCheck]:
    model = str(node.get("name", ""))
    table = _node_table(node)
    filled: dict[str, Any] = {"models": [model]}
    owner = _owner(node, groups)
    if owner:
        filled["owner"] = owner
    origin = _origin("model", node)
    for fields in _declarations(_meta(node), origin):
        if table is None and "table" not in fields:
            raise DeclarationError(origin, "the model builds no table (ephemeral?): give table")
        document = {"table": table, **filled, **fields}
        document.setdefault("name", check_name(model, str(fields.get("kind", "check"))))
        yield DeclaredCheck(document, origin)
    columns = node.get("columns") if isinstance(node.get("columns"), dict) else {}
    for column_name, column in (columns or {}).items():
        if not isinstance(column, dict):
            continue
        origin = _origin("model", node, f" column {column_name}")
        for fields in _declarations(_meta(column), origin):
            kind = str(fields.get("kind", "metric"))
            document = {"table": table, "kind": kind, **filled, **fields}
            if kind == "metric":
                document.setdefault("expression", f"sum({column_name})")
            elif kind in ("row_count", "freshness"):
                document.setdefault("timestamp_column", column_name)
            document.setdefault("name", check_name(model, column_name, kind))
            yield DeclaredCheck(document, origin)


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _by_name(items: object) -> dict[str, dict[str, Any]]:
    return {str(i.get("name")): i for i in _list(items) if isinstance(i, dict)}


def _metric_checks(
    metric: dict[str, Any],
    by_measure: Mapping[str, dict[str, Any]],
    models: Mapping[str, dict[str, Any]],
    groups: Mapping[str, Any],
    semantic_metrics: SemanticMetrics,
) -> Iterator[DeclaredCheck]:
    origin = _origin("metric", metric)
    declarations = _declarations(_meta(metric), origin)
    if not declarations:
        if semantic_metrics != "all" or metric.get("type") != "simple":
            return
        declarations = [{}]
    if metric.get("type") != "simple":
        raise DeclarationError(
            origin, f"a {metric.get('type')} metric: only simple metrics can be checks yet"
        )
    measure_ref = (metric.get("type_params") or {}).get("measure") or {}
    measure_name = measure_ref.get("name") if isinstance(measure_ref, dict) else measure_ref
    semantic_model = by_measure.get(str(measure_name))
    if semantic_model is None:
        raise DeclarationError(origin, f"its measure {measure_name!r} is in no semantic model")
    measure = next(m for m in semantic_model["measures"] if m.get("name") == measure_name)
    dimensions = _by_name(semantic_model.get("dimensions"))
    entities = _by_name(semantic_model.get("entities"))
    aggregate = _AGGREGATES.get(str(measure.get("agg")))
    if aggregate is None:
        raise DeclarationError(
            origin, f"its measure aggregates by {measure.get('agg')!r}, which checks cannot yet"
        )
    time_name = measure.get("agg_time_dimension") or (semantic_model.get("defaults") or {}).get(
        "agg_time_dimension"
    )
    time_dimension = dimensions.get(str(time_name))
    if time_dimension is None:
        raise DeclarationError(origin, f"no time dimension {time_name!r} in its semantic model")
    granularity = (time_dimension.get("type_params") or {}).get("time_granularity")
    grain = "hour" if str(metric.get("time_granularity") or granularity) == "hour" else "day"

    def column(item: Mapping[str, Any]) -> str:
        return str(item.get("expr") or item.get("name"))

    def resolve(match: re.Match[str]) -> str:
        kind, reference = match.group(1), match.group(2).split("__")[-1]
        found = (entities if kind == "Entity" else dimensions).get(reference)
        if found is None:
            raise DeclarationError(origin, f"its filter names an unknown {kind} {reference!r}")
        return column(found)

    filters = []
    measure_filter = measure_ref.get("filter") if isinstance(measure_ref, dict) else None
    for holder in (metric.get("filter"), measure_filter):
        for where in _list(holder.get("where_filters") if isinstance(holder, dict) else None):
            if isinstance(where, dict) and where.get("where_sql_template"):
                filters.append(_TEMPLATE.sub(resolve, str(where["where_sql_template"])).strip())
    relation = semantic_model.get("node_relation") or {}
    table = _table(
        relation.get("relation_name"),
        (relation.get("database"), relation.get("schema_name"), relation.get("alias")),
    )
    model_nodes = [
        models[uid]
        for uid in _list((semantic_model.get("depends_on") or {}).get("nodes"))
        if uid in models
    ]
    filled: dict[str, Any] = {
        "kind": "metric",
        "table": table,
        "timestamp_column": column(time_dimension),
        "expression": aggregate.format(column(measure)),
        "grain": grain,
        "models": [str(n.get("name")) for n in model_nodes],
    }
    if filters:
        filled["where"] = " AND ".join(f"({f})" for f in filters)
    owner = _owner(metric, groups) or next(
        (o for o in (_owner(n, groups) for n in model_nodes) if o), None
    )
    if owner:
        filled["owner"] = owner
    for fields in declarations:
        named = fields.get("dimensions", [])
        unknown = [d for d in _list(named) if d not in dimensions]
        if unknown:
            known = ", ".join(sorted(n for n, d in dimensions.items() if d.get("type") != "time"))
            raise DeclarationError(
                origin, f"dimensions {unknown} are not in its semantic model (it has: {known})"
            )
        document = {**filled, **fields}
        if named:
            document["dimensions"] = [column(dimensions[d]) for d in _list(named)]
        document.setdefault("name", check_name(str(metric.get("name", ""))))
        yield DeclaredCheck(document, origin)
