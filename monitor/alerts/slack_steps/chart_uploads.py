"""An alert's chart, drawn from the history its notification carries and uploaded to the
alert's thread. A chart that cannot be drawn is refused for good: it never holds up its alert."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import pandas as pd

from monitor.alerts.charts import render_chart
from monitor.alerts.messages import series_name
from monitor.alerts.notification import Notification
from monitor.alerts.slack import DeliveryError, SlackChannel, SlackRef
from monitor.alerts.slack_steps.step import Step
from monitor.calendar.days import Kind, Span
from monitor.records.outbox import OutboxEntry


@dataclass(frozen=True)
class ChartUploads:
    """Builds the upload of a ``chart`` entry; an upload in doubt is found by its title."""

    slack: SlackChannel

    def upload(self, entry: OutboxEntry) -> Step:
        data = json.loads(entry.payload)
        thread = SlackRef.parse(data["thread"])
        note = Notification.from_json(data["notification"])
        title = f"{series_name(note)} {note.since:%Y-%m-%d %H:%M}"

        def send(_: str | None) -> SlackRef:
            try:
                png = render_chart(
                    _history(note), title=series_name(note), unit=note.unit, spans=_spans(note),
                    beside=_beside(note),
                )
            except Exception as exc:
                raise DeliveryError(
                    f"chart could not be drawn: {type(exc).__name__}: {exc}", permanent=True
                ) from None
            self.slack.upload_chart(thread, png, title)
            return thread

        def find(_: str, oldest: datetime) -> SlackRef | None:
            return thread if self.slack.find_file(thread, title, oldest) else None

        return Step([entry], f"chart of {series_name(note)}", send, find)


def _spans(note: Notification) -> list[Span]:
    return [
        Span(cast(Kind, kind), name, pd.Timestamp(start), pd.Timestamp(end))
        for kind, name, start, end in note.calendar
    ]


def _beside(note: Notification) -> dict[str, pd.Series[float]]:
    """The segments drawn under a total's chart, as values by bucket."""
    return {
        name: pd.Series(
            [float(v) for _, v in rows],
            index=pd.to_datetime([b for b, _ in rows], utc=True),
            dtype=float,
        )
        for name, rows in note.beside.items()
    }


def _history(note: Notification) -> pd.DataFrame:
    columns = ["bucket", "value", "expected", "lower", "upper", "anomalous"]
    frame = pd.DataFrame(note.history, columns=columns)
    frame["bucket"] = pd.to_datetime(frame["bucket"], utc=True)
    return frame
