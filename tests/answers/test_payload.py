"""Interactivity payloads read strictly: our buttons' clicks come out, other interactions are
ignored, and anything malformed is refused naming the field."""

from __future__ import annotations

import copy
import json
import re
from typing import Any
from urllib.parse import urlencode

import pytest

from monitor.answers.payload import MalformedPayload, clicks, from_form, loads

VALUE = "revenue:3:0123456789abcdef"
PAYLOAD: dict[str, Any] = {
    "type": "block_actions",
    "user": {"id": "U1", "username": "ana"},
    "container": {"type": "message", "message_ts": "1.2", "channel_id": "C1"},
    "channel": {"id": "C1", "name": "data-alerts"},
    "response_url": "https://hooks.slack.com/actions/T/1/x",
    "actions": [
        {"action_id": "something_else", "value": "x"},
        {"action_id": "kpimon_answer:false_alarm", "value": VALUE},
    ],
}


def test_a_click_on_our_button_is_read_and_other_buttons_are_left_alone() -> None:
    [click] = clicks(PAYLOAD)
    assert (click.answer, click.alert.check, click.alert.episode) == ("false_alarm", "revenue", 3)
    assert (click.user_id, click.user_name, click.channel_id, click.message_ts) == (
        "U1", "ana", "C1", "1.2"
    )  # fmt: skip
    assert click.response_url == "https://hooks.slack.com/actions/T/1/x"


@pytest.mark.parametrize("kind", ["view_submission", "shortcut", "message_action", None])
def test_interactions_that_are_not_block_actions_are_ignored(kind: str | None) -> None:
    assert clicks({"type": kind}) == []


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        (("user",), None, "user: expected an object"),
        (("user", "id"), "", "user.id: expected a non-empty string"),
        (("user", "id"), 7, "user.id"),
        (("container",), "x", "container: expected an object"),
        (("container", "message_ts"), None, "container.message_ts"),
        (("channel", "id"), ["C1"], "channel.id"),
        (("actions",), {}, "actions: expected a list"),
        (("actions", 1), "click", "actions[1]: expected an object"),
        (("actions", 1, "action_id"), "kpimon_answer:drop_table", "unknown answer"),
        (("actions", 1, "value"), "revenue", "not an alert reference"),
        (("actions", 1, "value"), "x" * 3000, "actions[1].value"),
        (("response_url",), 5, "response_url"),
    ],
)
def test_a_malformed_field_is_refused_by_name(path: tuple[Any, ...], value: Any, problem: str) -> None:
    payload = copy.deepcopy(PAYLOAD)
    target = payload
    for key in path[:-1]:
        target = target[key]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    with pytest.raises(MalformedPayload, match=re.escape(problem)):
        clicks(payload)


def test_the_channel_comes_from_the_container_when_slack_leaves_it_out() -> None:
    payload = {k: v for k, v in PAYLOAD.items() if k != "channel"}
    assert clicks(payload)[0].channel_id == "C1"


def test_a_form_body_carries_the_payload_as_json() -> None:
    assert from_form(urlencode({"payload": json.dumps(PAYLOAD)}).encode()) == PAYLOAD


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"", "no payload field"),
        (b"payload=1&payload=2", "no payload field"),
        (b"\xff", "not a form"),
        (b"a=1&" * 30, "not a form"),
        (b"payload=" + b"%5B" * 100_000, "not JSON"),
    ],
)
def test_a_body_that_is_no_interactivity_form_is_refused(body: bytes, problem: str) -> None:
    with pytest.raises(MalformedPayload, match=problem):
        from_form(body)


def test_a_payload_must_be_an_object() -> None:
    with pytest.raises(MalformedPayload, match="not a JSON object"):
        loads("[1]")
