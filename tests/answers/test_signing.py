"""Slack's request signing: what slack-sdk's own verifier (an independent implementation of
Slack's rule) signs verifies; anything else is refused with the check that failed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from slack_sdk.signature import SignatureVerifier

from monitor.answers.signing import SignatureRefused, digest, sign, verify

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TIMESTAMP = "1531420618"
BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlf"
    b"ACWilgddXb6cgKV1Nk&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)


def _slack_sdk_signature(timestamp: str, body: bytes) -> str:
    signature = SignatureVerifier(SECRET).generate_signature(timestamp=timestamp, body=body)
    # slack-sdk types it Optional: it answers None only when the timestamp or body is None
    assert signature is not None
    return signature


SIGNATURE = _slack_sdk_signature(TIMESTAMP, BODY)
AT = datetime.fromtimestamp(int(TIMESTAMP) + 10, UTC)


def test_a_request_signed_as_slack_sdk_signs_it_verifies() -> None:
    assert SIGNATURE is not None and SIGNATURE.startswith("v0=")
    assert sign(SECRET, TIMESTAMP, BODY) == SIGNATURE
    verify(SECRET, TIMESTAMP, SIGNATURE, BODY, AT)


@pytest.mark.parametrize(
    ("secret", "timestamp", "signature", "body", "problem"),
    [
        ("another", TIMESTAMP, SIGNATURE, BODY, "does not match"),
        (SECRET, TIMESTAMP, SIGNATURE, BODY + b"&x=1", "does not match"),
        (SECRET, TIMESTAMP, SIGNATURE.upper(), BODY, "does not match"),
        (SECRET, TIMESTAMP, "", BODY, "missing"),
        (SECRET, "", SIGNATURE, BODY, "missing"),
        (SECRET, "1531420618.5", SIGNATURE, BODY, "not a Unix time"),
        (SECRET, "-1531420618", SIGNATURE, BODY, "not a Unix time"),
        (SECRET, "9" * 40, SIGNATURE, BODY, "not a Unix time"),
    ],
)
def test_anything_else_is_refused_saying_why(
    secret: str, timestamp: str, signature: str, body: bytes, problem: str
) -> None:
    with pytest.raises(SignatureRefused, match=problem):
        verify(secret, timestamp, signature, body, AT)


@pytest.mark.parametrize("seconds", [-301, 301, 10**6])
def test_a_request_more_than_five_minutes_from_our_clock_is_refused(seconds: int) -> None:
    at = datetime.fromtimestamp(int(TIMESTAMP) + seconds, UTC)
    with pytest.raises(SignatureRefused, match="away from now"):
        verify(SECRET, TIMESTAMP, SIGNATURE, BODY, at)


def test_five_minutes_exactly_is_still_fresh() -> None:
    verify(SECRET, TIMESTAMP, SIGNATURE, BODY, datetime.fromtimestamp(int(TIMESTAMP) + 300, UTC))


def test_what_is_remembered_of_a_request_is_a_digest_of_its_signature() -> None:
    assert digest(SIGNATURE) == digest(SIGNATURE) != digest(SIGNATURE[:-1] + "4")
    assert SIGNATURE not in digest(SIGNATURE)
