"""Slack's request signing, verified as Slack specifies it. Pure.

Slack signs each HTTP request it sends with the app's signing secret: ``X-Slack-Signature`` is
``v0=`` and the hex HMAC-SHA256 of ``v0:<X-Slack-Request-Timestamp>:<raw body>``. A request is
taken only when the signature matches (compared in constant time) and its timestamp is within
``MAX_AGE`` of our clock, either way; the replay of a request seen before is refused by the
caller, which remembers each accepted signature for as long (``digest``).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta

MAX_AGE = timedelta(minutes=5)


class SignatureRefused(Exception):
    """The request is not Slack's, or not fresh; the message says which check failed."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Slack-Signature`` Slack sends with ``body`` at ``timestamp``."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp: str, signature: str, body: bytes, now: datetime) -> None:
    """:raises SignatureRefused: unless ``signature`` is Slack's for ``body`` at a
    ``timestamp`` within ``MAX_AGE`` of ``now``."""
    if not timestamp or not signature:
        raise SignatureRefused("missing X-Slack-Request-Timestamp or X-Slack-Signature")
    if not timestamp.isdigit() or len(timestamp) > 12:
        raise SignatureRefused("X-Slack-Request-Timestamp is not a Unix time")
    age = abs(now.timestamp() - int(timestamp))
    if age > MAX_AGE.total_seconds():
        raise SignatureRefused(f"request timestamp is {age:.0f} s away from now (at most 300)")
    if not hmac.compare_digest(sign(secret, timestamp, body).encode(), signature.encode()):
        raise SignatureRefused("signature does not match the signing secret")


def digest(signature: str) -> str:
    """What is remembered of an accepted request to refuse its replay."""
    return hashlib.sha256(signature.encode()).hexdigest()
