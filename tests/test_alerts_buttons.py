"""The answer buttons on alert messages and what replaces them: Block Kit Slack accepts (unique
block ids, short values), data shown as text, never as markup."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from monitor.alerts.buttons import (
    MAX_ANSWERABLE,
    alert_with_buttons,
    answer_buttons,
    answered_line,
    answered_text,
    group_with_buttons,
    ref,
    settled_blocks,
)
from monitor.alerts.notification import Notification
from monitor.answers.model import AlertRef, Feedback

T = datetime(2026, 12, 6, 9, tzinfo=UTC)
NOTE = Notification("opened", "revenue", "<!channel> DE", 2, T, T, 1.0, 10.0, 8.0, 12.0, -5.0,
                    "critical")  # fmt: skip


def test_every_alert_has_the_five_answers_as_buttons_naming_the_alert() -> None:
    block = alert_with_buttons(NOTE)[-1]
    assert block["type"] == "actions"
    labels = [e["text"]["text"] for e in block["elements"]]
    assert labels == ["Acknowledge", "Expected change", "False alarm", "Mute 1 day", "Mute 1 week"]
    values = {e["value"] for e in block["elements"]}
    assert values == {AlertRef("revenue", NOTE.segment, 2).value()}
    assert "<!channel>" not in json.dumps(block), "the segment travels as a digest"


def test_a_group_has_buttons_per_alert_with_block_ids_unique_in_the_message() -> None:
    notes = [replace(NOTE, segment=f"S{i}") for i in range(MAX_ANSWERABLE)]
    blocks = group_with_buttons(notes)
    ids = [b["block_id"] for b in blocks if b["type"] == "actions"]
    assert len(ids) == len(set(ids)) == MAX_ANSWERABLE
    assert len(blocks) <= 50, "Slack's limit"


def test_an_answered_alert_of_a_group_shows_who_answered_instead_of_its_buttons() -> None:
    other = replace(NOTE, segment="FR")
    answer = Feedback(ref(NOTE), "acknowledge", "U0ANA", "ana", T, T)
    blocks = group_with_buttons([NOTE, other], {ref(NOTE): answer})
    assert [b["type"] for b in blocks] == ["header", "section", "context", "section", "actions"]
    assert "Acknowledged by <@U0ANA> at 2026-12-06 09:00 UTC" in json.dumps(blocks)


def test_a_settled_alert_has_no_buttons_and_says_resolved_and_who_answered() -> None:
    resolved = replace(NOTE, kind="resolved", bucket=T + timedelta(hours=3))
    answer = Feedback(ref(NOTE), "false_alarm", "U0ANA", "ana", T, T)
    blocks = settled_blocks(NOTE, resolved, answer)
    assert not [b for b in blocks if b["type"] == "actions"]
    text = json.dumps(blocks)
    assert "Resolved" in text and "Marked as a false alarm by <@U0ANA>" in text


def test_a_user_name_that_is_no_user_id_is_shown_as_text() -> None:
    answer = Feedback(ref(NOTE), "mute_day", "<!here>", "<!here> bob", T, T)
    assert "&lt;!here&gt; bob" in answered_line(answer)["elements"][0]["text"]
    assert "&lt;!channel&gt;" in answered_text(answer, NOTE)


def test_button_values_stay_short_whatever_the_segment() -> None:
    long = replace(NOTE, segment="x" * 10_000)
    assert all(len(e["value"]) <= 2000 for e in answer_buttons(long)["elements"])
