"""Charts as inline SVG, drawn on the server: no script, no external file, nothing a strict
Content-Security-Policy refuses. Pure: plain data in, escaped markup out.

Colours follow the Slack alert chart (monitor/alerts/charts.py): only anomalies are red.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

from markupsafe import Markup, escape

from monitor.alerts.charts import compact_number, duration_label
from monitor.alerts.messages import number, when
from monitor.buckets import to_utc
from monitor.history import Point
from monitor.pages.model import Marker, SeriesChart, Span

WIDTH, HEIGHT = 900, 230
LEFT, RIGHT, TOP, BOTTOM = 58, 24, 10, 26
SPARK_WIDTH, SPARK_HEIGHT = 120, 24
X_TICKS = 8  # at most
Y_TICKS = 4  # about


def sparkline(values: Sequence[float], *, firing: bool, label: str) -> Markup:
    """A small line of the newest buckets; empty markup without at least two finite values."""
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2:
        return Markup("")
    low, high = min(finite), max(finite)
    span = (high - low) or 1.0
    step = (SPARK_WIDTH - 2) / (len(values) - 1)
    points = " ".join(
        f"{1 + i * step:.1f},{SPARK_HEIGHT - 2 - (v - low) / span * (SPARK_HEIGHT - 4):.1f}"
        for i, v in enumerate(values)
        if math.isfinite(v)
    )
    css = "spark firing" if firing else "spark"
    # every piece of text in it went through escape(); the rest are numbers this module wrote
    return Markup(  # noqa: S704
        f'<svg class="{css}" viewBox="0 0 {SPARK_WIDTH} {SPARK_HEIGHT}" width="{SPARK_WIDTH}"'
        f' height="{SPARK_HEIGHT}" role="img" aria-label="{escape(label)}">'
        f"<title>{escape(label)}</title>"
        f'<polyline class="value" points="{points}"/></svg>'
    )


class _Scale:
    """Data to SVG coordinates for one chart, over round value ticks."""

    def __init__(self, points: Sequence[Point], unit: str, until: float) -> None:
        self.start = points[0].bucket.timestamp()
        self.end = max(points[-1].bucket.timestamp(), until)
        ys = [
            y
            for p in points
            for y in (p.value, p.expected, p.lower, p.upper)
            if y is not None and math.isfinite(y)
        ]
        low, high = (min(ys), max(ys)) if ys else (0.0, 1.0)
        if low >= 0 and (unit == "seconds" or low < 0.25 * high):
            low = 0.0  # a count or an age reads best from zero
        if high == low:
            high = low + (abs(low) * 0.1 or 1.0)
        self.step = _round_step((high - low) / Y_TICKS)
        self.low = math.floor(low / self.step) * self.step
        self.high = math.ceil(high / self.step) * self.step

    def x(self, moment: float) -> float:
        width = WIDTH - LEFT - RIGHT
        if self.end == self.start:
            return LEFT + width / 2
        return LEFT + (moment - self.start) / (self.end - self.start) * width

    def y(self, value: float) -> float:
        height = HEIGHT - TOP - BOTTOM
        return TOP + (self.high - value) / (self.high - self.low) * height

    def clip(self, moment: datetime | None) -> float:
        """The x of a moment, held inside the plot (an open episode runs to the end)."""
        at = self.end if moment is None else to_utc(moment).timestamp()
        return self.x(min(max(at, self.start), self.end))

    def y_ticks(self) -> list[float]:
        count = round((self.high - self.low) / self.step)
        return [self.low + i * self.step for i in range(count + 1)]

    def x_ticks(self) -> tuple[list[float], str]:
        """Round instants (whole hours, UTC midnights, weeks) and their label format."""
        span = self.end - self.start
        step = next((s for s in _TIME_STEPS if span / s <= X_TICKS), _TIME_STEPS[-1])
        first = math.ceil(self.start / step) * step
        ticks = [first + i * step for i in range(int((self.end - first) // step) + 1)]
        return ticks, "%b %d" if step >= 86_400 else "%b %d %H:%M"


_TIME_STEPS = [h * 3600.0 for h in (1, 2, 3, 6, 12, 24, 48, 168, 336, 672)]


def _round_step(raw: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at least ``raw``."""
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1.0, 2.0, 5.0, 10.0) if m * power >= raw)


def _runs(points: Sequence[Point], has: str) -> list[list[Point]]:
    """Stretches of consecutive points where ``has`` (a field) is a finite number."""
    runs: list[list[Point]] = []
    current: list[Point] = []
    for p in points:
        y = getattr(p, has)
        if y is not None and math.isfinite(y):
            current.append(p)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def chart(
    series: SeriesChart,
    *,
    title: str,
    markers: Sequence[Marker] = (),
    calendar: Sequence[Span] = (),
) -> Markup:
    """One series over its window: the normal band, the expected line, the value with a vertex
    per bucket, anomalous buckets as red dots, alert episodes and calendar spans shaded,
    deployments as vertical lines linking to their page."""
    points = series.points
    if not points:
        return Markup('<p class="empty">No history yet: the check has not read this series.</p>')
    # a deployment newer than the newest complete bucket still shows, at the right
    newest = max((to_utc(m.at).timestamp() for m in markers), default=0.0)
    s = _Scale(points, series.unit, newest)
    fmt = duration_label if series.unit == "seconds" else compact_number
    parts: list[str] = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
        f' aria-label="{escape(title)}" data-buckets="{len(points)}">',
        f"<title>{escape(title)}</title>",
    ]
    for span in [*series.spans, *calendar]:
        x0, x1 = s.clip(span.start), s.clip(span.end)
        parts.append(
            f'<rect class="span {span.kind}" x="{x0:.1f}" y="{TOP}" width="{max(x1 - x0, 2):.1f}"'
            f' height="{HEIGHT - TOP - BOTTOM}"><title>{escape(_span_label(span))}</title></rect>'
        )
    for value in s.y_ticks():
        y = s.y(value)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(fmt(value))}</text>"
        )
    ticks, label = s.x_ticks()
    for moment in ticks:
        parts.append(
            f'<text class="tick" x="{s.x(moment):.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
            f"{datetime.fromtimestamp(moment, UTC):{label}}</text>"
        )
    for run in _runs(points, "lower"):
        upper = [(s.x(p.bucket.timestamp()), s.y(p.upper)) for p in run if p.upper is not None]
        lower = [(s.x(p.bucket.timestamp()), s.y(p.lower)) for p in reversed(run)
                 if p.lower is not None]  # fmt: skip
        parts.append(f'<polygon class="band" points="{_coords(upper + lower)}"/>')
    for run in _runs(points, "expected"):
        line = [(s.x(p.bucket.timestamp()), s.y(p.expected)) for p in run if p.expected is not None]
        parts.append(f'<polyline class="expected" points="{_coords(line)}"/>')
    for run in _runs(points, "value"):
        line = [(s.x(p.bucket.timestamp()), s.y(p.value)) for p in run]
        parts.append(f'<polyline class="value" points="{_coords(line)}"/>')
    for p in points:
        if p.anomalous and math.isfinite(p.value):
            tip = f"{when(p.bucket)}: {number(p.value, series.unit)}"
            if p.expected is not None:
                tip += f", expected {number(p.expected, series.unit)}"
            parts.append(
                f'<circle class="anomaly" cx="{s.x(p.bucket.timestamp()):.1f}"'
                f' cy="{s.y(p.value):.1f}" r="3.5"><title>{escape(tip)}</title></circle>'
            )
    for marker in markers:
        at = to_utc(marker.at).timestamp()
        if not s.start <= at <= s.end:
            continue
        x = s.x(at)
        parts.append(
            f'<a class="marker" href="{escape(marker.href)}"><line x1="{x:.1f}" x2="{x:.1f}"'
            f' y1="{TOP}" y2="{HEIGHT - BOTTOM}"/><title>{escape(marker.label)}, '
            f"{escape(when(marker.at))}</title></a>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - text escaped where it was added


def _coords(points: Sequence[tuple[float, float]]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in points)


def _span_label(span: Span) -> str:
    end = when(span.end) if span.end else "still open"
    return f"{span.label}: {when(span.start)} to {end}"
