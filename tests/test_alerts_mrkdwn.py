"""Text from data made safe for Slack's mrkdwn: nothing a warehouse, a config or an API caller
writes becomes a mention, a link or an entity."""

from __future__ import annotations

import pytest

from monitor.alerts.mrkdwn import escape, link, owner


def test_escape_replaces_exactly_slacks_three_characters() -> None:
    assert escape("<!channel> <https://evil|Sign in again> & co") == (
        "&lt;!channel&gt; &lt;https://evil|Sign in again&gt; &amp; co"
    )
    assert escape("*bold* _it_ `code` ~x~ #general @here") == "*bold* _it_ `code` ~x~ #general @here"
    assert escape("&amp;") == "&amp;amp;", "an entity written by the data is shown as written"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://ci.example.com/runs/42", "<https://ci.example.com/runs/42|change>"),
        ("https://ci.example.com/r?a=1&b=2", "<https://ci.example.com/r?a=1&amp;b=2|change>"),
        # a "|" would start a label of the caller's choosing, ">" end the link, "<" start one
        ("https://ci.example.com/r|Sign in again", "<https://ci.example.com/r%7CSign%20in%20again|change>"),
        ("https://ci.example.com/<!channel>", "<https://ci.example.com/%3C!channel%3E|change>"),
        ("https://ci.example.com/a%20b", "<https://ci.example.com/a%20b|change>"),
    ],
)
def test_a_link_keeps_its_url_and_our_label(url: str, expected: str) -> None:
    assert link(url, "change") == expected


@pytest.mark.parametrize("url", ["javascript:alert(1)", "slack://open", "<!here>", "http://"])
def test_what_is_not_an_http_url_is_shown_as_text(url: str) -> None:
    assert "<" not in link(url, "change")


def test_an_owner_may_mention_a_user_or_a_user_group_and_nothing_else() -> None:
    assert owner("@revenue-oncall") == "@revenue-oncall"
    assert owner("<!subteam^S0123ABC> <@U024BE7LH>") == "<!subteam^S0123ABC> <@U024BE7LH>"
    assert owner("<!channel> <!here> <https://evil|x>") == (
        "&lt;!channel&gt; &lt;!here&gt; &lt;https://evil|x&gt;"
    )
    assert owner("<!subteam^S0123ABC|oncall>") == "&lt;!subteam^S0123ABC|oncall&gt;"
