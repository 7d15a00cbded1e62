"""Opened alerts: each alone, grouped with alerts of the same team or table that opened within
``slack.group_wait``, or listed in one summary when a channel would get more than
``slack.max_messages`` messages; then, in the message's thread, the charts of its alerts."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from monitor.alerts.buttons import MAX_ANSWERABLE, alert_with_buttons, group_with_buttons
from monitor.alerts.messages import (
    alert_blocks,
    alert_text,
    group_blocks,
    group_text,
    series_name,
    summary_text,
)
from monitor.alerts.notification import Notification
from monitor.alerts.routing import channel_for, group_key
from monitor.alerts.slack import SlackChannel, SlackRef
from monitor.alerts.slack_steps.step import Planned, Step
from monitor.config import Config, SlackConfig
from monitor.records.outbox import FollowUp, OutboxEntry

CHARTS_PER_GROUP = 5

Member = tuple[OutboxEntry, Notification]


@dataclass(frozen=True)
class AlertPosts:
    """Groups the opened alerts of a round into messages and builds each message's post.
    ``settings`` is ``config.slack``."""

    config: Config
    settings: SlackConfig
    slack: SlackChannel

    def plan(self, found: list[Member], now: datetime) -> list[Planned]:
        """Alerts in doubt are retried as the message they were; the others, once past
        ``group_wait``, are grouped per channel and team (or table), and a channel about to get
        more than ``max_messages`` messages gets one summary."""
        steps: list[Planned] = []
        doubtful: dict[str, list[Member]] = defaultdict(list)
        groups: dict[tuple[str, str], list[Member]] = defaultdict(list)
        cutoff = now - self.settings.group_wait
        for entry, note in found:
            if entry.in_doubt is not None:
                doubtful[entry.in_doubt].append((entry, note))
            elif entry.created_at <= cutoff:
                groups[group_key(note, channel_for(note, self.config))].append((entry, note))
        for members in doubtful.values():
            channel = channel_for(members[0][1], self.config)
            steps.append(self._message(members, channel, summary=False))
        by_channel: dict[str, list[list[Member]]] = defaultdict(list)
        for (channel, _), members in groups.items():
            by_channel[channel].append(members)
        for channel, channel_groups in by_channel.items():
            if len(channel_groups) > self.settings.max_messages:
                everyone = [m for g in channel_groups for m in g]
                steps.append(self._message(everyone, channel, summary=True, groups=channel_groups))
            else:
                steps += [self._message(m, channel, summary=False) for m in channel_groups]
        return steps

    def _message(
        self,
        members: list[Member],
        channel: str,
        *,
        summary: bool,
        groups: list[list[Member]] | None = None,
    ) -> Planned:
        entries = [e for e, _ in members]
        notes = [n for _, n in members]

        def build() -> Step:
            blocks: list[dict[str, Any]] | None
            if summary:
                text, blocks = summary_text([[n for _, n in g] for g in groups or []]), None
            elif len(notes) == 1:
                text, blocks = alert_text(notes[0], slack=True), alert_blocks(notes[0])
                if self.settings.answers:
                    blocks = alert_with_buttons(notes[0])
            else:
                text, blocks = group_text(notes), group_blocks(notes)
                if self.settings.answers and len(notes) <= MAX_ANSWERABLE:
                    blocks = group_with_buttons(notes)
            grouped = len(notes) > 1

            def send(marker: str | None) -> SlackRef:
                posted = self.slack.post(channel, text, blocks, marker=marker)
                return replace(posted, grouped=grouped)

            def find(marker: str, oldest: datetime) -> SlackRef | None:
                posted = self.slack.find_message(channel, marker, oldest)
                return None if posted is None else replace(posted, grouped=grouped)

            def charts(thread: SlackRef) -> list[FollowUp]:
                charted = [n for n in notes if n.history][:CHARTS_PER_GROUP]
                return [
                    FollowUp(
                        f"{n.key}/chart",
                        "chart",
                        json.dumps({"thread": str(thread), "notification": n.to_json()}),
                    )
                    for n in charted
                ]

            what = "alert " + ", ".join(series_name(n) for n in notes)
            return Step(entries, what, send, find, charts)

        return entries, build
