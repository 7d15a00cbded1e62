"""A resolution: the reply in the alert's thread (or a message of its own when the alert has
none), then the edit of the alert that says it resolved (or, for a grouped message with answer
buttons, the group's message rebuilt without this alert's buttons)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from monitor.alerts.buttons import ref, settled_blocks
from monitor.alerts.messages import alert_text, resolved_text, series_name
from monitor.alerts.notification import Notification, event_key
from monitor.alerts.routing import channel_for
from monitor.alerts.slack import SlackChannel, SlackRef
from monitor.alerts.slack_steps.step import Step
from monitor.config import Config, SlackConfig
from monitor.records.outbox import FollowUp, OutboxEntry
from monitor.store import StateStore


@dataclass(frozen=True)
class ResolutionPosts:
    """Builds a resolution's reply and the ``update`` edit that follows it, from the alert's
    outbox entry (its thread and notification). ``settings`` is ``config.slack``."""

    config: Config
    settings: SlackConfig
    store: StateStore
    slack: SlackChannel

    def reply(self, entry: OutboxEntry, note: Notification) -> Step | None:
        """The reply in the alert's thread (or a message of its own when the alert has none),
        then the edit of the alert; None while the alert itself waits for delivery."""
        opened_key = event_key(note.check, note.segment, note.episode, "opened")
        status = self.store.outbox.status(opened_key, "slack")
        if status == "pending":
            return None
        remote = self.store.outbox.remote_id(opened_key, "slack")
        thread = SlackRef.parse(remote) if remote else None
        opened = self.store.outbox.notification(opened_key, "slack")
        channel = channel_for(note, self.config)
        text = alert_text(note, slack=True)

        def send(marker: str | None) -> SlackRef:
            return self.slack.post(channel, text, thread=thread, marker=marker)

        def find(marker: str, oldest: datetime) -> SlackRef | None:
            return self.slack.find_message(channel, marker, oldest, thread=thread)

        def edit(_: SlackRef) -> list[FollowUp]:
            if thread is None or opened is None:
                return []
            if thread.grouped:
                if not self.settings.answers:
                    return []
                # the group's message loses this alert's buttons: rebuilt as it stands
                payload = {"thread": str(thread), "opened": opened.to_json()}
                return [FollowUp(f"{note.key}/update", "answer_update", json.dumps(payload))]
            payload = {
                "thread": str(thread), "opened": opened.to_json(), "resolved": note.to_json()
            }
            return [FollowUp(f"{note.key}/update", "update", json.dumps(payload))]

        return Step([entry], f"resolution {series_name(note)}", send, find, edit)

    def edit(self, entry: OutboxEntry) -> Step:
        """The alert's message, edited to say it resolved."""
        data = json.loads(entry.payload)
        thread = SlackRef.parse(data["thread"])
        opened = Notification.from_json(data["opened"])
        resolved = Notification.from_json(data["resolved"])

        def send(_: str | None) -> SlackRef:
            # an answer given meanwhile stays on the message (its own edit may have come first)
            answered = self.store.answers.get(ref(opened))
            blocks = settled_blocks(opened, resolved, answered)
            self.slack.update(thread, resolved_text(opened), blocks)
            return thread

        return Step([entry], f"edit of the alert {series_name(opened)}", send, None)
