"""The answer buttons of an alert message, and what replaces them once answered. Pure.

Every alert (alone or in a group of up to ``MAX_ANSWERABLE``) carries one ``actions`` block of
buttons: Acknowledge, Expected change, False alarm, Mute 1 day, Mute 1 week. A button's value
names the alert (check, episode and a digest of the segment: see ``AlertRef.value``), never the
segment itself, which comes from the warehouse and may be long. Once the alert is answered or
resolved, an edit of the message (``chat.update``) replaces its buttons with who answered what.
"""

from __future__ import annotations

import hashlib
from typing import Any

from monitor.alerts import mrkdwn
from monitor.alerts.messages import (
    alert_blocks,
    alert_text,
    duration,
    group_title,
    resolved_blocks,
    when,
)
from monitor.alerts.notification import Notification
from monitor.answers.model import ACTION_PREFIX, ANSWERS, DONE, LABELS, AlertRef, Feedback

# Slack takes 50 blocks a message: a header, then a section and an actions block per alert
MAX_ANSWERABLE = 20
_STYLES = {"acknowledge": "primary", "false_alarm": "danger"}


def ref(note: Notification) -> AlertRef:
    return AlertRef(note.check, note.segment, note.episode)


def answer_buttons(note: Notification) -> dict[str, Any]:
    """The actions block of one alert."""
    value = ref(note).value()
    buttons = []
    for answer in ANSWERS:
        button: dict[str, Any] = {
            "type": "button",
            "text": {"type": "plain_text", "text": LABELS[answer]},
            "action_id": f"{ACTION_PREFIX}{answer}",
            "value": value,
        }
        if answer in _STYLES:
            button["style"] = _STYLES[answer]
        buttons.append(button)
    # unique within a message (Slack refuses a repeated block_id): the alert's own digest
    block = "kpimon_answers_" + hashlib.sha256(value.encode()).hexdigest()[:20]
    return {"type": "actions", "block_id": block, "elements": buttons}


def answered_line(feedback: Feedback) -> dict[str, Any]:
    """The context block that says who answered what, and when."""
    who = f"<@{feedback.user_id}>" if _is_user_id(feedback.user_id) else mrkdwn.escape(
        feedback.user_name
    )
    text = f":speech_balloon: {DONE[feedback.answer]} by {who} at {when(feedback.answered_at)}"
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text, "verbatim": True}]}


def answered_text(feedback: Feedback, note: Notification) -> str:
    """The reply in the alert's thread."""
    who = f"<@{feedback.user_id}>" if _is_user_id(feedback.user_id) else mrkdwn.escape(
        feedback.user_name
    )
    return (
        f"{DONE[feedback.answer]} by {who} at {when(feedback.answered_at)}: "
        f"{alert_text(note, slack=True)}"
    )


def alert_with_buttons(note: Notification) -> list[dict[str, Any]]:
    return [*alert_blocks(note), answer_buttons(note)]


def group_with_buttons(
    notes: list[Notification],
    answers: dict[AlertRef, Feedback] | None = None,
    resolved: dict[AlertRef, Notification] | None = None,
) -> list[dict[str, Any]]:
    """A group's message: each alert with its buttons, or who answered it, or that it
    resolved."""
    answers, resolved = answers or {}, resolved or {}
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": group_title(notes)[:150]}}
    ]
    for note in notes[:MAX_ANSWERABLE]:
        text = f"• {alert_text(note, slack=True)}"[:3000]
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text,
                                                   "verbatim": True}})  # fmt: skip
        answered, ended = answers.get(ref(note)), resolved.get(ref(note))
        if answered is not None:
            blocks.append(answered_line(answered))
        elif ended is not None:
            lasted = duration(ended.bucket - ended.since)
            line = f":white_check_mark: Resolved after {lasted}"
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": line}]})
        else:
            blocks.append(answer_buttons(note))
    return blocks


def settled_blocks(
    opened: Notification, resolved: Notification | None, feedback: Feedback | None
) -> list[dict[str, Any]]:
    """What replaces a single alert once resolved or answered: no buttons any more, and who
    answered what."""
    blocks = alert_blocks(opened) if resolved is None else resolved_blocks(opened, resolved)
    return [*blocks, answered_line(feedback)] if feedback is not None else blocks


def _is_user_id(text: str) -> bool:
    return text[:1] in ("U", "W") and text[1:].isalnum() and text.isupper() and len(text) <= 32
