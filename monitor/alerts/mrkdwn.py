"""Text from data made safe for Slack's mrkdwn. Pure.

Slack reads ``<...>`` in message text as a mention, a channel or a link (``<!channel>``,
``<https://x|Sign in>``) and ``&`` as the start of an entity. A segment value comes from the
warehouse, a deployment's id and link from an API call, a check's owner and team from the
config: none of them may ping a channel or show a link under a label of their choosing, so each
goes through ``escape`` (Slack's own rule: replace ``&``, ``<`` and ``>``, nothing else) or
``link``. ``plain_text`` objects (headers) are shown as written by Slack and need none of this.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

# A whole-word Slack mention of a user or a user group: the one markup an owner may carry, so
# an alert can page the people who own it (``owner: "<!subteam^S0123ABC>"``).
_MENTION = re.compile(r"^<(@[UW][A-Z0-9]{2,30}|!subteam\^S[A-Z0-9]{2,30})>$")


def escape(text: str) -> str:
    """``text`` shown as written: no mention, channel link, link or entity survives."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def link(url: str, label: str) -> str:
    """A link to ``url`` labelled ``label``; a URL that is not http(s) is shown as text.

    Characters that would end the link or start its label (``>``, ``|``, ``<``) and spaces are
    percent-encoded, which any web server reads the same way.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return escape(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return escape(url)
    safe = quote(url, safe="/:?#[]@!$&'()*+,;=%~-._")
    return f"<{escape(safe)}|{escape(label)}>"


def owner(text: str) -> str:
    """An owner as text, except whole words that are a user or user group mention."""
    return " ".join(
        word if _MENTION.match(word) else escape(word) for word in text.split(" ")
    )
