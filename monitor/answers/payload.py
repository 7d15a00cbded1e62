"""An interactivity payload from Slack, read strictly. Pure.

Both transports deliver the same JSON: the ``payload`` form field of a signed HTTP request, or
the ``payload`` of a Socket Mode ``interactive`` envelope. Only ``block_actions`` on our own
buttons are answers; any other interaction is not ours and is ignored. Anything malformed is
refused with what is wrong (``MalformedPayload``), never half-read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs

from monitor.answers.model import ACTION_PREFIX, ANSWERS, AnswerKind, ButtonValue

MAX_PAYLOAD_BYTES = 64 * 1024


class MalformedPayload(ValueError):
    """Not an interactivity payload we can read; the message names the field."""


@dataclass(frozen=True)
class Click:
    """One click on one of our buttons."""

    answer: AnswerKind
    alert: ButtonValue
    user_id: str
    user_name: str
    channel_id: str
    message_ts: str
    response_url: str | None = None  # where to answer the user alone (Slack's, checked on use)


def from_form(body: bytes) -> dict[str, Any]:
    """The JSON of a form-encoded HTTP request's ``payload`` field."""
    try:
        fields = parse_qs(body.decode("utf-8"), strict_parsing=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise MalformedPayload("body is not a form (application/x-www-form-urlencoded)") from None
    values = fields.get("payload")
    if not values or len(values) != 1:
        raise MalformedPayload("no payload field")
    return loads(values[0])


def loads(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise MalformedPayload("payload is not JSON") from None
    if not isinstance(data, dict):
        raise MalformedPayload("payload is not a JSON object")
    return cast(dict[str, Any], data)


def clicks(payload: dict[str, Any]) -> list[Click]:
    """Our buttons clicked in ``payload`` (none for an interaction that is not ours).

    :raises MalformedPayload: for a ``block_actions`` payload without the fields Slack sends.
    """
    if payload.get("type") != "block_actions":
        return []
    actions = payload.get("actions")
    if not isinstance(actions, list):
        raise MalformedPayload("actions: expected a list")
    user = _object(payload, "user")
    user_id = _text(user, "user.id", "id")
    user_name = str(user.get("username") or user.get("name") or user_id)[:100]
    container = _object(payload, "container")
    channel = payload.get("channel")
    channel_id = (
        _text(channel, "channel.id", "id")
        if isinstance(channel, dict)
        else _text(container, "container.channel_id", "channel_id")
    )
    message_ts = _text(container, "container.message_ts", "message_ts")
    response_url = payload.get("response_url")
    if response_url is not None and not isinstance(response_url, str):
        raise MalformedPayload("response_url: expected a string")
    found = []
    for i, action in enumerate(actions):
        if not isinstance(action, dict):
            raise MalformedPayload(f"actions[{i}]: expected an object")
        action_id = str(action.get("action_id", ""))
        if not action_id.startswith(ACTION_PREFIX):
            continue
        answer = action_id.removeprefix(ACTION_PREFIX)
        if answer not in ANSWERS:
            raise MalformedPayload(f"actions[{i}].action_id: unknown answer {answer[:40]!r}")
        value = _text(action, f"actions[{i}].value", "value")
        try:
            alert = ButtonValue.parse(value)
        except ValueError as exc:
            raise MalformedPayload(f"actions[{i}].value: {exc}") from None
        found.append(
            Click(answer, alert, user_id, user_name, channel_id, message_ts, response_url)
        )
    return found


def _object(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise MalformedPayload(f"{key}: expected an object")
    return cast(dict[str, Any], value)


def _text(data: dict[str, Any], where: str, key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value or len(value) > 2000:
        raise MalformedPayload(f"{where}: expected a non-empty string")
    return value
