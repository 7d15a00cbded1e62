"""What ``kpi-monitor check`` prints: one line per series, or each check's SQL. Pure
formatting."""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from monitor.alerts.messages import number
from monitor.config import CheckConfig, Config
from monitor.dialects import dialect_for
from monitor.engine import Engine, RunResult
from monitor.queries import cold_query


def moment(when: datetime | pd.Timestamp, tz: str = "UTC") -> str:
    """A time to the minute with its zone: ``2026-11-26 14:00 UTC``, ``2026-11-26 09:00 EST``."""
    local = pd.Timestamp(when).tz_convert(tz)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"


def render_sql(config: Config, check: CheckConfig, now: datetime) -> str:
    """The query a check's first run sends (the whole lookback), with its bound parameters."""
    name = config.warehouse_of(check)
    kind = config.all_warehouses()[name].kind
    query = cold_query(check, dialect_for(kind), now)
    head = f"-- {check.name} ({check.kind}) on warehouse {name} ({kind}); parameters:"
    params = [f"--   {key} = {_literal(value)}" for key, value in query.params.items()]
    return "\n".join([head, *params, query.sql + ";"])


def _literal(value: object) -> str:
    if isinstance(value, datetime):  # bound as naive UTC
        return f"'{value:%Y-%m-%d %H:%M:%S}' (UTC)"
    return repr(value)


def render_table(results: list[RunResult], engine: Engine) -> str:
    rows = [("CHECK", "SEGMENT", "BUCKET", "LOCAL", "VALUE", "EXPECTED", "BAND", "SCORE", "STATUS")]
    for result in results:
        check = engine.config.check(result.check)
        unit = "seconds" if check is not None and check.kind == "freshness" else ""
        if result.outcome == "error":
            rows.append((result.check, "", "", "", "", "", "", "", f"ERROR: {result.error}"))
            continue
        if not result.series:
            rows.append((result.check, "", "", "", "", "", "", "", "no data"))
            continue
        tz = check.timezone if check is not None else "UTC"
        for status in result.series:
            v = status.verdict
            band = "" if v.lower is None else f"{number(v.lower, unit)} .. {number(v.upper, unit)}"
            label = {"firing": "ANOMALY", "pending": "deviating"}.get(status.state.status, "ok")
            if v.expected is None:
                label = "learning"
            rows.append(
                (
                    result.check,
                    "(total)" if check is not None and check.dimensions and not status.segment
                    else status.segment,
                    moment(v.bucket),
                    moment(v.bucket, tz),
                    number(v.value, unit),
                    number(v.expected, unit),
                    band,
                    f"{v.score:+.1f}",
                    label,
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    where = [
        f"{result.check}: {explained.text(result.check)}"
        for result in results
        if (explained := engine.explanation(result.check)) is not None
    ]
    return "\n".join([*lines, "", "Where did it move?", *where] if where else lines)
