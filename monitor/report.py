"""The table ``kpi-monitor check`` prints: one line per series. Pure formatting."""

from __future__ import annotations

from monitor.alerts.messages import number
from monitor.engine import Engine, RunResult


def render_table(results: list[RunResult], engine: Engine) -> str:
    rows = [("CHECK", "SEGMENT", "BUCKET (UTC)", "VALUE", "EXPECTED", "BAND", "SCORE", "STATUS")]
    for result in results:
        check = engine.config.check(result.check)
        unit = "seconds" if check is not None and check.kind == "freshness" else ""
        if result.outcome == "error":
            rows.append((result.check, "", "", "", "", "", "", f"ERROR: {result.error}"))
            continue
        if not result.series:
            rows.append((result.check, "", "", "", "", "", "", "no data"))
            continue
        for status in result.series:
            v = status.verdict
            band = "" if v.lower is None else f"{number(v.lower, unit)} .. {number(v.upper, unit)}"
            label = {"firing": "ANOMALY", "pending": "deviating"}.get(status.state.status, "ok")
            if v.expected is None:
                label = "learning"
            rows.append(
                (
                    result.check,
                    status.segment,
                    v.bucket.strftime("%Y-%m-%d %H:%M"),
                    number(v.value, unit),
                    number(v.expected, unit),
                    band,
                    f"{v.score:+.1f}",
                    label,
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
