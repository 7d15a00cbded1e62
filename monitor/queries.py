"""SQL for each check kind, built from config and a dialect. Pure: no connection, no I/O.

Identifiers from config are quoted by the dialect; values (the lookback start, the time zone)
are bound parameters. ``expression``, ``where`` and ``sql`` are SQL written by the operator in
the config file and are used as written.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from monitor.buckets import bucket_start, last_complete, next_bucket
from monitor.config import CheckConfig
from monitor.dialects import Dialect

OTHER_SEGMENT = "__other__"
NULL_SEGMENT = "(null)"
EMPTY_SEGMENT = "(empty)"
TOTAL_SEGMENT = ""  # a check's total: all its segments together, as a check without dimensions
NOT_RANKED = frozenset({OTHER_SEGMENT, TOTAL_SEGMENT})  # rows that are no segment of their own
SEGMENT_SEPARATOR = "|"
FRESHNESS_HISTORY_LIMIT = 5000

_SINCE = re.compile(r"(?<![:\w]):since\b")


@dataclass(frozen=True)
class Query:
    """SQL text and the parameters bound to it."""

    sql: str
    params: dict[str, object] = field(default_factory=dict)


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def _filters(check: CheckConfig, dialect: Dialect, bounded: bool = False) -> str:
    assert check.timestamp_column is not None
    column = dialect.quote(check.timestamp_column)
    clause = f"{column} >= {dialect.param('since')}"
    if bounded:
        clause += f" AND {column} < {dialect.param('until')}"
    if check.where:
        clause += f" AND ({check.where})"
    return clause


def _segment(check: CheckConfig, dialect: Dialect) -> str:
    parts = [
        f"coalesce({dialect.text(dialect.quote(d))}, '{NULL_SEGMENT}')" for d in check.dimensions
    ]
    if len(parts) == 1:
        # segment '' is the total: an empty value of the one dimension is named, not merged in
        return f"coalesce(nullif({parts[0]}, ''), '{EMPTY_SEGMENT}')"
    return f" || '{SEGMENT_SEPARATOR}' || ".join(parts)


def batch_key(check: CheckConfig, warehouse: str) -> tuple[object, ...] | None:
    """Checks with equal keys read the same rows the same way: one query answers them all.
    None for checks that cannot share a query (sql and freshness)."""
    if check.kind not in ("metric", "row_count"):
        return None
    return (
        warehouse,
        check.table,
        check.timestamp_column,
        check.where,
        tuple(check.dimensions),
        check.max_segments,
        check.grain,
        check.timezone,
        check.settle,
        check.lookback,
        check.refetch_buckets,
    )


def batch_column(index: int) -> str:
    return f"value_{index}"


def series_query(
    check: CheckConfig,
    dialect: Dialect,
    since: datetime,
    segments: Sequence[str] | None = None,
    until: datetime | None = None,
    batch: Sequence[CheckConfig] = (),
    seen: datetime | None = None,
) -> Query:
    """Rows of (bucket, segment, value) from ``since`` on, for metric, row_count and sql checks
    (an sql check's own query, limited to ``max_rows`` + 1 rows).

    ``bucket`` is the naive UTC start of the business-time bucket; ``segment`` is '' without
    dimensions, else the dimension values joined by '|' with all but the ``max_segments``
    largest (by rows since ``since``) folded into ``__other__``, and '' for the total of every
    segment (an empty value of a single dimension is ``(empty)``). An incremental query passes
    the ``segments`` chosen by the last full query instead, so folding stays the same.
    ``until`` (generated queries only) skips rows of buckets not complete yet. With ``batch``
    (checks of one :func:`batch_key`), the value of ``batch[i]`` is column ``value_i``. With
    ``seen``, segments with a row since then rank before those without (see monitor.segments).
    """
    params: dict[str, object] = {"since": _naive_utc(since)}
    if check.kind == "sql":
        assert check.sql is not None
        sql = _SINCE.sub(dialect.param("since"), check.sql.strip().rstrip(";"))
        # one row past max_rows tells a result that is too big (normalise refuses it) from one
        # that just fits, and the warehouse stops there instead of sending millions of rows
        return Query(
            f"SELECT * FROM (\n{sql}\n) AS kpimon_sql LIMIT {int(check.max_rows) + 1}", params
        )
    if check.kind not in ("metric", "row_count"):
        raise ValueError(f"{check.kind} checks have no series query")
    assert check.table is not None and check.timestamp_column is not None
    params["tz"] = check.timezone
    if until is not None:
        params["until"] = _naive_utc(until)
    table = dialect.quote(check.table)
    bucket = dialect.bucket(dialect.quote(check.timestamp_column), check.grain, dialect.param("tz"))
    value = (
        ",\n  ".join(f"{_aggregate(c)} AS {batch_column(i)}" for i, c in enumerate(batch))
        if batch
        else f"{_aggregate(check)} AS value"
    )
    where = _filters(check, dialect, bounded=until is not None)
    if not check.dimensions:
        return Query(
            f"SELECT {bucket} AS bucket, '' AS segment, {value}\n"
            f"FROM {table}\nWHERE {where}\nGROUP BY 1",
            params,
        )
    segment = _segment(check, dialect)
    top = ""
    if segments is not None:
        names = [f"s{i}" for i in range(len(segments))]
        params.update(zip(names, segments, strict=True))
        keep = f"{segment} IN ({', '.join(dialect.param(n) for n in names)})" if names else "FALSE"
    else:
        rank = "count(*) DESC, 1"
        if seen is not None:
            params["seen"] = _naive_utc(seen)
            column = dialect.quote(check.timestamp_column)
            rank = f"CASE WHEN max({column}) >= {dialect.param('seen')} THEN 0 ELSE 1 END, {rank}"
        top = (
            "WITH top_segments AS (\n"
            f"  SELECT {segment} AS segment FROM {table}\n"
            f"  WHERE {where}\n"
            f"  GROUP BY 1 ORDER BY {rank} LIMIT {int(check.max_segments)}\n"
            ")\n"
        )
        keep = f"{segment} IN (SELECT segment FROM top_segments)"
    # one pass over the rows gives each segment and the total (GROUPING SETS): the total is
    # the check's own aggregate over all rows, right for a count distinct or an average too
    sql = (
        f"{top}SELECT kpimon_bucket AS bucket,\n"
        f"  CASE WHEN GROUPING(kpimon_segment) = 1 THEN '{TOTAL_SEGMENT}'"
        " ELSE kpimon_segment END AS segment,\n"
        f"  {value}\n"
        f"FROM (\n  SELECT {bucket} AS kpimon_bucket,\n"
        f"    CASE WHEN {keep} THEN {segment} ELSE '{OTHER_SEGMENT}' END AS kpimon_segment,\n"
        f"    *\n  FROM {table}\n  WHERE {where}\n) AS kpimon_rows\n"
        "GROUP BY GROUPING SETS ((kpimon_bucket, kpimon_segment), (kpimon_bucket))"
    )
    return Query(sql, params)


def _aggregate(check: CheckConfig) -> str:
    return check.expression if check.kind == "metric" and check.expression else "count(*)"


def freshness_query(
    check: CheckConfig,
    dialect: Dialect,
    since: datetime,
    until: datetime | None = None,
    limit: int | None = FRESHNESS_HISTORY_LIMIT,
) -> Query:
    """When rows arrived since ``since``: per minute that has rows, its newest row's own
    timestamp (naive UTC), newest first; the newest ``limit`` of them (None: all, for a
    backtest). A load is counted once a minute, and the newest is exact to its row.

    With ``until`` (now), rows stamped in the future (a skewed clock) prove nothing.
    """
    assert check.timestamp_column is not None and check.table is not None
    ts = dialect.utc_time(dialect.quote(check.timestamp_column))
    params: dict[str, object] = {"since": _naive_utc(since)}
    if until is not None:
        params["until"] = _naive_utc(until)
    return Query(
        f"SELECT max({ts}) AS loaded\nFROM {dialect.quote(check.table)}\n"
        f"WHERE {_filters(check, dialect, bounded=until is not None)}\n"
        f"GROUP BY {dialect.trunc('minute', ts)}\nORDER BY 1 DESC"
        + (f"\nLIMIT {int(limit)}" if limit is not None else ""),
        params,
    )


def newest_row_query(check: CheckConfig, dialect: Dialect, until: datetime | None = None) -> Query:
    """The newest timestamp in the whole table, when nothing arrived within the lookback."""
    assert check.timestamp_column is not None and check.table is not None
    column = dialect.quote(check.timestamp_column)
    conditions = [f"{column} < {dialect.param('until')}"] if until is not None else []
    if check.where:
        conditions.append(f"({check.where})")
    where = f"\nWHERE {' AND '.join(conditions)}" if conditions else ""
    params: dict[str, object] = {"until": _naive_utc(until)} if until is not None else {}
    newest = f"max({dialect.utc_time(column)})"
    return Query(f"SELECT {newest} AS loaded\nFROM {dialect.quote(check.table)}{where}", params)


def cold_query(check: CheckConfig, dialect: Dialect, now: datetime) -> Query:
    """The query of a check's first run: its whole lookback, up to the newest complete bucket
    (freshness: the load minutes over the lookback)."""
    if check.kind == "freshness":
        return freshness_query(check, dialect, now - check.effective_lookback, now)
    newest = last_complete(now, check.grain, check.timezone, check.settle)
    until = next_bucket(newest, check.grain, check.timezone)
    since = bucket_start(now - check.effective_lookback, check.grain, check.timezone)
    return series_query(check, dialect, since, until=until)


def probe_query(check: CheckConfig, dialect: Dialect, now: datetime) -> Query:
    """The check's first query made to return no rows (``validate --connect``)."""
    query = cold_query(check, dialect, now)
    return Query(dialect.no_rows(query.sql), query.params)


def columns_query(table: str, dialect: Dialect) -> Query:
    """Column names and types of a table from information_schema (DuckDB, PostgreSQL and
    Databricks Unity Catalog all have it); names compared case-insensitively."""
    parts = table.split(".")
    names = ("table_catalog", "table_schema", "table_name")[-len(parts) :]
    params: dict[str, object] = {f"p{i}": part.lower() for i, part in enumerate(parts)}
    where = " AND ".join(
        f"lower({name}) = {dialect.param(f'p{i}')}" for i, name in enumerate(names)
    )
    return Query(
        f"SELECT column_name, data_type\nFROM {dialect.information_schema}.columns\n"
        f"WHERE {where}\nORDER BY ordinal_position",
        params,
    )
