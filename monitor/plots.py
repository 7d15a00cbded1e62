"""The picture ``kpi-monitor backtest --plot`` draws: what would have alerted, and when. Pure.

One panel per series (the segments that alerted, or the one asked for), stacked: the observed
values, the expected line and the band (clipped by the axes where it is far wider than the data,
as while a model warms up), anomalous buckets in red, each alert episode shaded from its first
anomalous bucket to its resolution, the calendar's holidays, events and exclusion windows shaded
faintly in their own colours, and deployments as labelled vertical lines. Times are shown in
the check's business time zone, which the axis names.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from monitor.alerts.charts import RENDER_LOCK, draw_spans, finish_axes
from monitor.backtest import Episode
from monitor.calendar.days import Span

WIDTH_PX = 1200
PANEL_PX = 260
HEAD_PX = 70
MAX_PANELS = 6
_DPI = 100

_OBSERVED = "#1f3b73"
_EXPECTED = "#6b7280"
_BAND = "#9cc3e6"
_ANOMALY = "#d7191c"
_EPISODE = "#f4a6a6"
_DEPLOYMENT = "#7c3aed"


@dataclass(frozen=True)
class Panel:
    """One series of a backtest: its replayed buckets (``Replay.buckets``) and episodes."""

    label: str
    buckets: pd.DataFrame
    episodes: list[Episode] = field(default_factory=list)


@dataclass(frozen=True)
class Mark:
    """A moment to mark on every panel, e.g. a deployment."""

    at: pd.Timestamp
    label: str


def render_backtest(
    panels: Sequence[Panel],
    *,
    title: str,
    timezone: str = "UTC",
    unit: str = "",
    marks: Sequence[Mark] = (),
    spans: Sequence[Span] = (),
) -> bytes:
    """PNG of up to ``MAX_PANELS`` panels (the caller orders them, most telling first), with
    the calendar's holidays, events and exclusion windows shaded (``spans``)."""
    if not panels:
        raise ValueError("nothing to draw: no series")
    shown = list(panels)[:MAX_PANELS]
    height = HEAD_PX + PANEL_PX * len(shown)
    with RENDER_LOCK:
        fig = Figure(figsize=(WIDTH_PX / _DPI, height / _DPI), dpi=_DPI, facecolor="white")
        FigureCanvasAgg(fig)
        more = len(panels) - len(shown)
        heading = title + (f"  (+{more} more series not shown)" if more > 0 else "")
        fig.text(0.01, 1 - 12 / height, heading, fontsize=13, fontweight="bold", va="top")
        top = 1 - HEAD_PX / height
        step = PANEL_PX / height
        for i, panel in enumerate(shown):
            bottom = top - (i + 1) * step
            ax = fig.add_axes((0.06, bottom + 0.16 * step, 0.92, 0.72 * step))
            _panel(ax, panel, timezone, unit, marks, spans, legend=i == 0)
        out = io.BytesIO()
        fig.savefig(out, format="png", dpi=_DPI, facecolor="white")
        return out.getvalue()


def _local(moments: Any, timezone: str) -> np.ndarray[Any, Any]:
    """Instants as naive wall-clock times in ``timezone`` (what matplotlib draws plainly)."""
    stamps = pd.to_datetime(pd.Series(moments), utc=True).dt.tz_convert(timezone)
    return stamps.dt.tz_localize(None).to_numpy()


def _floats(column: pd.Series[Any]) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.asarray(pd.to_numeric(column, errors="coerce"), dtype=np.float64)


def _panel(
    ax: Any,
    panel: Panel,
    timezone: str,
    unit: str,
    marks: Sequence[Mark],
    spans: Sequence[Span],
    *,
    legend: bool,
) -> None:
    frame = panel.buckets.sort_values("bucket")
    x = _local(frame["bucket"], timezone)
    value, expected = _floats(frame["value"]), _floats(frame["expected"])
    lower, upper = _floats(frame["lower"]), _floats(frame["upper"])
    anomalous = frame["anomalous"].fillna(False).astype(bool).to_numpy()
    end = x[-1] if len(x) else None
    if len(x):
        draw_spans(ax, spans, lambda t: _local([t], timezone)[0], (x[0], end))
    for episode in panel.episodes:
        since = _local([episode.since], timezone)[0]
        until = _local([episode.resolved], timezone)[0] if episode.resolved is not None else end
        ax.axvspan(since, until, color=_EPISODE, alpha=0.35, linewidth=0, label="alert episode")
    band = np.isfinite(lower) & np.isfinite(upper)
    if band.any():
        ax.fill_between(x, lower, upper, where=band, color=_BAND, alpha=0.45, linewidth=0,
                        label="normal band")  # fmt: skip
    if np.isfinite(expected).any():
        ax.plot(x, expected, color=_EXPECTED, linestyle="--", linewidth=1.0, label="expected")
    ax.plot(x, value, color=_OBSERVED, linewidth=1.2, label="observed")
    if anomalous.any():
        ax.scatter(x[anomalous], value[anomalous], s=14, color=_ANOMALY, zorder=5,
                   label="anomalous")  # fmt: skip
    for mark in marks:
        at = _local([mark.at], timezone)[0]
        ax.axvline(at, color=_DEPLOYMENT, linestyle=":", linewidth=1.4, label="deployment")
        ax.annotate(mark.label, (at, 1.0), xycoords=("data", "axes fraction"), fontsize=8,
                    color=_DEPLOYMENT, rotation=90, va="top", ha="right")  # fmt: skip
    alerts = len(panel.episodes)
    ax.set_title(
        f"{panel.label}: {alerts} alert{'s' if alerts != 1 else ''}",
        loc="left", fontsize=10, color="#111827",
    )  # fmt: skip
    if legend:
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))  # one entry per kind
        ax.legend(unique.values(), unique.keys(), loc="lower right", bbox_to_anchor=(1.0, 1.0),
                  ncols=len(unique), frameon=False, fontsize=8)  # fmt: skip
    locator = mdates.AutoDateLocator(minticks=5, maxticks=12)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    if len(x):
        ax.set_xlim(x[0], x[-1])
    ax.set_xlabel(f"time ({timezone})", fontsize=8, color="#374151")
    finish_axes(ax, [value, expected, lower, upper], unit, labelsize=8)
