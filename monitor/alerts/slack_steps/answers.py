"""An answer to an alert: the reply in the alert's thread saying who answered what, then the
edit of the alert's message that replaces its buttons."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from monitor.alerts.buttons import answered_text, group_with_buttons, ref, settled_blocks
from monitor.alerts.messages import alert_text, group_text, resolved_text, series_name
from monitor.alerts.notification import Notification, event_key
from monitor.alerts.slack import SlackChannel, SlackRef
from monitor.alerts.slack_steps.step import Step
from monitor.answers.model import Feedback
from monitor.records.outbox import FollowUp, OutboxEntry
from monitor.store import StateStore


@dataclass(frozen=True)
class AnswerPosts:
    """Builds an ``answer`` entry's reply and the ``answer_update`` edit; the edit reads the
    answers and resolutions in ``store`` when it runs."""

    store: StateStore
    slack: SlackChannel

    def reply(self, entry: OutboxEntry) -> Step:
        """The reply in the alert's thread saying who answered what; then the edit of the
        alert that replaces its buttons."""
        data = json.loads(entry.payload)
        thread = SlackRef.parse(data["thread"])
        feedback = Feedback.from_json(data["feedback"])
        opened = Notification.from_json(data["opened"])
        text = answered_text(feedback, opened)

        def send(marker: str | None) -> SlackRef:
            return self.slack.post(thread.channel, text, thread=thread, marker=marker)

        def find(marker: str, oldest: datetime) -> SlackRef | None:
            return self.slack.find_message(thread.channel, marker, oldest, thread=thread)

        def edit(_: SlackRef) -> list[FollowUp]:
            key = entry.key.removesuffix("/answer") + "/answer_update"
            return [FollowUp(key, "answer_update", entry.payload)]

        return Step([entry], f"answer to {series_name(opened)}", send, find, edit)

    def edit(self, entry: OutboxEntry) -> Step:
        """The alert's message as it stands now: without buttons where answered, resolved if
        it resolved (read at the time of the edit, so the last edit is always the whole truth)."""
        data = json.loads(entry.payload)
        thread = SlackRef.parse(data["thread"])
        opened = Notification.from_json(data["opened"])

        def send(_: str | None) -> SlackRef:
            if thread.grouped:
                notes = self.store.outbox.opened_posted_as(str(thread))
                answers = {
                    a.ref: a
                    for check in {n.check for n in notes}
                    for a in self.store.answers.of_episodes(
                        check, [(n.segment, n.episode) for n in notes if n.check == check]
                    )
                }
                resolutions = (
                    (n, event_key(n.check, n.segment, n.episode, "resolved")) for n in notes
                )
                ended = {
                    ref(n): r
                    for n, key in resolutions
                    if (r := self.store.outbox.notification(key, "slack")) is not None
                }
                blocks = group_with_buttons(notes, answers, ended)
                self.slack.update(thread, group_text(notes), blocks)
                return thread
            key = event_key(opened.check, opened.segment, opened.episode, "resolved")
            resolved = self.store.outbox.notification(key, "slack")
            answered = self.store.answers.get(ref(opened))
            text = resolved_text(opened) if resolved is not None else alert_text(opened, slack=True)
            self.slack.update(thread, text, settled_blocks(opened, resolved, answered))
            return thread

        return Step([entry], f"edit of the answered alert {series_name(opened)}", send, None)
