"""The chart posted in an alert's thread: recent buckets against the expected band, as PNG.

Drawn with matplotlib's object API on the Agg canvas, never through pyplot, so no global figure
state is shared with other threads or leaks between alerts.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import Formatter, Locator, MaxNLocator

from monitor.calendar.days import Span

if TYPE_CHECKING:
    from monitor.detection import Verdict

WIDTH_PX = 900
HEIGHT_PX = 400
BESIDE_PX = 220  # the panel of the segments that explain a total's incident
_DPI = 100

COLUMNS = ("bucket", "value", "expected", "lower", "upper", "anomalous")

# Only anomalies are red, so "is anything red" is a fair question for a reader and for a test.
_OBSERVED = "#1f3b73"
_EXPECTED = "#6b7280"
_BAND = "#9cc3e6"
_ANOMALY = "#d7191c"
# the calendar's spans, faint behind the data: holidays green, events amber, exclusions grey
SPAN_COLOURS = {"holiday": "#16a34a", "event": "#d97706", "exclusion": "#6b7280"}
SPANS_NAMED = 12  # more spans than this are drawn without their names (two years of holidays)
_BESIDE = ("#7b3294", "#008837", "#e08214")  # never red: red is for anomalies only

# Matplotlib's font cache and Agg renderer are not safe to use from two threads at once; charts
# are rendered by the dispatcher's threads, so they take turns (a render takes a few ms).
RENDER_LOCK = threading.Lock()

_DURATION_UNITS = ((86_400.0, "d"), (3_600.0, "h"), (60.0, "m"), (1.0, "s"))


def history_frame(verdicts: Iterable[Verdict]) -> pd.DataFrame:
    """The chart's input from a series' verdicts, oldest first (``None`` bands become NaN).

    A few days of buckets show the daily cycle (72 hourly), a few weeks the weekly one (42 daily).
    """
    rows = [(v.bucket, v.value, v.expected, v.lower, v.upper, v.anomalous) for v in verdicts]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def render_chart(
    history: pd.DataFrame,
    *,
    title: str,
    unit: str = "",
    spans: Sequence[Span] = (),
    beside: Mapping[str, pd.Series[float]] | None = None,
) -> bytes:
    """PNG (900x400) of ``history``: the observed values, the expected line, the normal band
    and the anomalous buckets as red dots.

    ``history`` has one row per bucket (the caller picks how many, e.g. the last 72 hours) with
    the columns ``bucket`` (tz-aware, UTC), ``value``, ``expected``, ``lower``, ``upper`` and
    ``anomalous``. ``expected``/``lower``/``upper`` are NaN where no baseline exists yet; those
    buckets show the observed value only. ``unit="seconds"`` labels the value axis in durations.
    ``spans``: the holidays, events and exclusion windows to shade behind the data.
    ``beside``: the segments that explain a total's incident (name -> values by bucket), drawn
    in a panel below it on the same time axis (the picture is then ``BESIDE_PX`` taller).
    """
    missing = [c for c in COLUMNS if c not in history.columns]
    if missing:
        raise ValueError(f"chart history lacks columns: {', '.join(missing)}")
    if history.empty:
        raise ValueError("chart history has no buckets")
    frame = history.sort_values("bucket")
    # Matplotlib draws naive datetime64 fastest and without timezone surprises; the axis says UTC.
    x = pd.to_datetime(frame["bucket"], utc=True).dt.tz_convert(None).to_numpy()
    value = _floats(frame["value"])
    expected = _floats(frame["expected"])
    lower = _floats(frame["lower"])
    upper = _floats(frame["upper"])
    anomalous = frame["anomalous"].fillna(False).astype(bool).to_numpy()

    lines = {
        name: (
            pd.to_datetime(series.index, utc=True).tz_convert(None).to_numpy(),
            np.asarray(series, dtype=np.float64),
        )
        for name, series in list((beside or {}).items())[: len(_BESIDE)]
        if len(series)
    }
    with RENDER_LOCK:
        return _draw(
            x, value, expected, lower, upper, anomalous, title=title, unit=unit, spans=spans,
            beside=lines,
        )


def _floats(column: pd.Series[Any]) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.asarray(pd.to_numeric(column, errors="coerce"), dtype=np.float64)


def _draw(
    x: np.ndarray[Any, Any],
    value: np.ndarray[Any, np.dtype[np.float64]],
    expected: np.ndarray[Any, np.dtype[np.float64]],
    lower: np.ndarray[Any, np.dtype[np.float64]],
    upper: np.ndarray[Any, np.dtype[np.float64]],
    anomalous: np.ndarray[Any, np.dtype[np.bool_]],
    *,
    title: str,
    unit: str,
    spans: Sequence[Span],
    beside: Mapping[str, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]],
) -> bytes:
    height = HEIGHT_PX + (BESIDE_PX if beside else 0)
    fig = Figure(figsize=(WIDTH_PX / _DPI, height / _DPI), dpi=_DPI, facecolor="white")
    FigureCanvasAgg(fig)
    # Fixed margins instead of a layout engine: same picture, a fraction of the time.
    low = BESIDE_PX / height if beside else 0.0
    ax = fig.add_axes((0.085, low + 0.14 * HEIGHT_PX / height, 0.895, 0.70 * HEIGHT_PX / height))
    if beside:
        _draw_beside(fig, beside, low, height, unit)

    draw_spans(ax, spans, lambda t: t.tz_convert(None).to_datetime64(), (x[0], x[-1]))
    band = np.isfinite(lower) & np.isfinite(upper)
    if band.any():
        ax.fill_between(
            x, lower, upper, where=band, color=_BAND, alpha=0.45, linewidth=0,
            label="normal band", interpolate=False, step=None,
        )  # fmt: skip
    if np.isfinite(expected).any():
        ax.plot(x, expected, color=_EXPECTED, linestyle="--", linewidth=1.3, label="expected")
    # Markers keep a lone bucket (or one between gaps) visible; a dense series reads as a line.
    marker = "o" if len(x) <= 48 else None
    ax.plot(
        x, value, color=_OBSERVED, linewidth=1.8, marker=marker, markersize=3.5, label="observed"
    )
    if anomalous.any():
        ax.scatter(
            x[anomalous], value[anomalous], s=42, color=_ANOMALY, zorder=5,
            edgecolors="white", linewidths=0.6, label="anomalous",
        )  # fmt: skip

    # The title carries data (a segment value): plain text, never mathtext ("$5 off" is not a
    # formula, and an odd number of "$" would make matplotlib raise).
    fig.text(
        0.012, 0.955, title, fontsize=13, fontweight="bold", ha="left", va="top", parse_math=False
    )
    ax.legend(
        loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=4, frameon=False, fontsize=9,
        borderaxespad=0.3, handlelength=1.8,
    )  # fmt: skip

    # matplotlib's stubs leave these two constructors unannotated
    locator = mdates.AutoDateLocator(minticks=4, maxticks=9)  # type: ignore[no-untyped-call]
    formatter = mdates.ConciseDateFormatter(locator)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(formatter)
    ax.set_xlabel("time (UTC)", fontsize=9, color="#374151")
    if len(x) == 1:
        # One bucket: centre it in a window of a day instead of matplotlib's arbitrary range.
        centre = x[0]
        ax.set_xlim(centre - np.timedelta64(12, "h"), centre + np.timedelta64(12, "h"))

    finish_axes(ax, [value, expected, lower, upper], unit, labelsize=9)

    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=_DPI, facecolor="white")
    return out.getvalue()


def draw_spans(
    ax: Any,
    spans: Sequence[Span],
    to_x: Callable[[pd.Timestamp], Any],
    shown: tuple[Any, Any],
) -> None:
    """Shade each span (clipped to the ``shown`` range of x), labelled by its kind in the
    legend and by its name at its start while there are few."""
    first, last = shown
    named = len(spans) <= SPANS_NAMED
    for span in spans:
        start, end = max(to_x(span.start), first), min(to_x(span.end), last)
        if start >= end:
            continue
        colour = SPAN_COLOURS[span.kind]
        ax.axvspan(start, end, color=colour, alpha=0.15, linewidth=0, label=span.kind)
        if named:
            # data from the config or the API: plain text, never mathtext
            ax.annotate(span.name, (start, 0.02), xycoords=("data", "axes fraction"), fontsize=7,
                        color=colour, rotation=90, va="bottom", ha="left",
                        parse_math=False)  # fmt: skip


def _draw_beside(
    fig: Figure,
    beside: Mapping[str, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]],
    low: float,
    height: int,
    unit: str,
) -> None:
    """The segments that explain the incident, one line each, under the total."""
    ax = fig.add_axes((0.085, 0.22 * BESIDE_PX / height, 0.895, low - 0.36 * BESIDE_PX / height))
    for (name, (x, values)), color in zip(beside.items(), _BESIDE, strict=False):
        ax.plot(x, values, color=color, linewidth=1.5, label=name)
    ax.legend(
        loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=len(beside), frameon=False,
        fontsize=9, borderaxespad=0.3, handlelength=1.8,
    )  # fmt: skip
    ax.set_title(
        "segments that explain it", loc="left", fontsize=10, color="#374151", parse_math=False
    )
    locator = mdates.AutoDateLocator(minticks=4, maxticks=9)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    values = np.concatenate([v for _, v in beside.values()])
    none = np.full(len(values), np.nan)  # no band here: the scale is the segments' own
    finish_axes(ax, [values, none, none, none], unit, labelsize=9)


def value_limits(
    value: np.ndarray[Any, Any],
    expected: np.ndarray[Any, Any],
    lower: np.ndarray[Any, Any],
    upper: np.ndarray[Any, Any],
) -> tuple[float, float] | None:
    """The value axis' range: the observed and expected values, and the band only as far as it
    stays near them. A band can be far wider than the data (while a model warms up, or on
    a spike-prone series): scaled to it, the values would be a flat line and an incident
    invisible, so the band is clipped by the axes instead."""
    core = np.concatenate([s[np.isfinite(s)] for s in (value, expected)])
    if not core.size:
        return None
    low, high = float(core.min()), float(core.max())
    # the band is shown as far out as the data's own range, or half its size
    reach = max(high - low, 0.5 * max(abs(low), abs(high)), 1e-9)
    edges = np.concatenate([s[np.isfinite(s)] for s in (lower, upper)])
    near = edges[(edges >= low - reach) & (edges <= high + reach)]
    if near.size:
        low, high = min(low, float(near.min())), max(high, float(near.max()))
    pad = (high - low) * 0.08 or max(abs(high) * 0.1, 1.0)
    # Non-negative data (counts, money, ages) keeps a floor at zero rather than below it.
    bottom = max(low - pad, 0.0) if low >= 0 else low - pad
    return bottom, high + pad


def finish_axes(
    ax: Any, series: Sequence[np.ndarray[Any, Any]], unit: str, *, labelsize: int
) -> None:
    """The house style of a chart's axes: the value axis (``value_axis``), light horizontal
    grid lines behind the data, no top or right frame."""
    value_axis(ax, series, unit)
    ax.grid(True, axis="y", color="#e5e7eb", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=labelsize, colors="#374151")


def value_axis(ax: Any, series: Sequence[np.ndarray[Any, Any]], unit: str) -> None:
    """Scale (see ``value_limits``) and label the value axis of ``ax``: compact numbers, or
    durations for ``unit="seconds"``."""
    limits = value_limits(*series)
    if limits is not None:
        ax.set_ylim(*limits)
    if unit == "seconds":
        ax.yaxis.set_major_locator(_DurationLocator())
        ax.yaxis.set_major_formatter(_DurationFormatter())
        ax.set_ylabel("age", fontsize=9, color="#374151")
    else:
        ax.yaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
        ax.yaxis.set_major_formatter(_CompactFormatter())
        if unit:
            ax.set_ylabel(unit, fontsize=9, color="#374151", parse_math=False)


class _CompactFormatter(Formatter):
    """1,500 -> "1.5k", 2,400,000 -> "2.4M": tick labels stay short on any scale."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return compact_number(x)


def compact_number(x: float) -> str:
    for size, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= size:
            return f"{x / size:.3g}{suffix}"
    if x == 0:
        return "0"
    return f"{x:.3g}"


class _DurationLocator(Locator):
    """Ticks at round durations (15m, 1h, 6h, 2d) rather than at round numbers of seconds."""

    def __call__(self) -> Sequence[float]:
        assert self.axis is not None
        low, high = self.axis.get_view_interval()
        return self.tick_values(low, high)

    def tick_values(self, vmin: float, vmax: float) -> Sequence[float]:
        low, high = min(vmin, vmax), max(vmin, vmax)
        span = high - low
        if span <= 0 or not math.isfinite(span):
            return [low]
        scale = next((s for s, _ in _DURATION_UNITS if span >= 2 * s), 1.0)
        steps: list[float] = [1, 2, 3, 6, 10] if scale == 3_600.0 else [1, 2, 5, 10]
        if scale in (60.0, 1.0):
            steps = [1, 1.5, 3, 5, 10]  # 15, 30, 50 minutes or seconds
        ticks = MaxNLocator(nbins=6, steps=steps).tick_values(low / scale, high / scale)
        return [float(t) * scale for t in ticks]


class _DurationFormatter(Formatter):
    def __call__(self, x: float, pos: int | None = None) -> str:
        return duration_label(x)


def duration_label(seconds: float) -> str:
    """Seconds as the largest two units: 90 -> "1m30s", 5400 -> "1h30m", 0 -> "0"."""
    if seconds == 0 or not math.isfinite(seconds):
        return "0"
    sign = "-" if seconds < 0 else ""
    rest = round(abs(seconds))
    parts: list[str] = []
    for size, suffix in _DURATION_UNITS:
        count, rest = divmod(rest, int(size))
        if count or parts:
            parts.append(f"{count}{suffix}" if count else "")
        if len(parts) == 2:
            break
    return sign + "".join(parts) if parts else f"{abs(seconds):.2g}s"
