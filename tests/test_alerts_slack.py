"""Slack alerts through slack-sdk against a local Web API server: what the on-call person sees."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from monitor.alerts.dispatch import Dispatcher
from monitor.alerts.notification import Notification
from monitor.alerts.slack import SlackChannel
from monitor.alerts.state import AlertState
from monitor.config import parse_config
from monitor.deployments import Deployment
from monitor.exporter import Metrics
from monitor.store import StateStore
from tests.conftest import Clock, demo_document
from tests.notifications import SINCE, revenue_alert
from tests.slack_server import SlackServer


def note(kind: str = "opened", episode: int = 1, **change: object) -> Notification:
    return revenue_alert(kind, episode=episode, **change)


@pytest.fixture
def clock() -> Clock:
    return Clock()


Setup = tuple[Dispatcher, StateStore, Metrics]


@pytest.fixture
def setup(tmp_path: Path, slack: SlackServer, clock: Clock) -> Setup:
    document = demo_document(tmp_path, token=slack.token, api_url=slack.url, channel="#data-alerts", group_wait="0s")
    document["checks"][0]["channel"] = "#revenue"
    config = parse_config(document)
    assert config.slack is not None
    store = StateStore(tmp_path / "state.db")
    metrics = Metrics()
    return Dispatcher(config, store, metrics, SlackChannel(config.slack), None, clock), store, metrics


def queue(store: StateStore, *notes: Notification) -> None:
    for n in notes:
        store.record(n.check, n.segment, AlertState(), [n], ["slack"])


def test_an_alert_says_what_moved_by_how_much_since_when_and_who_owns_it(
    setup: Setup, slack: SlackServer
) -> None:
    dispatcher, store, metrics = setup
    queue(store, note())
    assert dispatcher.deliver_pending() == 1
    [message] = slack.messages()
    assert message["channel"] == "#revenue"
    assert message["text"] == (
        "CRITICAL: revenue [DE] is 92% below expected (-7.3 robust SD): 120 vs 1,500 expected "
        "(band 900 to 2,400), since 2026-11-26 11:00 UTC. Owner @revenue-oncall."
    )
    fields = {
        f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in message["blocks"][2]["fields"]
    }
    assert fields == {
        "*Value*": "120",
        "*Expected*": "1,500",
        "*Normal band*": "900 to 2,400",
        "*Deviation*": "92% below expected (-7.3 robust SD)",
        "*Since*": "2026-11-26 11:00 UTC",
        "*Severity*": "critical",
        "*Owner*": "@revenue-oncall",
        "*Team*": "revenue",
    }
    assert message["blocks"][0]["text"]["text"] == "revenue [DE] moved unexpectedly"
    assert (
        metrics.registry.get_sample_value(
            "kpimon_alerts_sent_total", {"channel": "slack", "outcome": "ok"}
        )
        == 1
    )
    assert store.outbox.pending("slack") == []


def test_a_resolution_goes_to_the_thread_and_marks_the_alert_resolved(
    setup: Setup, slack: SlackServer
) -> None:
    dispatcher, store, _ = setup
    queue(store, note())
    dispatcher.deliver_pending()
    queue(store, note("resolved", value=1450.0, score=-0.2))
    dispatcher.deliver_pending()
    _, reply = slack.messages()
    parent_ts = slack.calls[0]
    assert (
        reply["thread_ts"] == next(c for c in slack.calls if c.method == "chat.update").args["ts"]
    )
    assert reply["channel"] == "C0REVENUE"
    assert reply["text"].startswith(
        "Resolved: revenue [DE] is back within its band (1,450, expected 1,500); the deviation lasted 3h"
    )
    [update] = slack.messages("chat.update")
    assert update["channel"] == "C0REVENUE"
    assert ":white_check_mark: *Resolved* after 3h" in update["blocks"][0]["text"]["text"]
    assert parent_ts.method == "chat.postMessage"


def test_rate_limits_are_retried_at_once_and_server_errors_after_a_look_in_the_channel(
    setup: Setup, slack: SlackServer, clock: Clock
) -> None:
    dispatcher, store, _ = setup
    slack.fail_next(1, status=429, retry_after=1)  # refused unread: slack-sdk tries again
    queue(store, note())
    assert dispatcher.deliver_pending() == 1
    assert len(slack.messages()) == 2

    slack.fail_next(1, status=503)  # Slack may have taken it: not repeated blindly
    queue(store, note(episode=2))
    assert dispatcher.deliver_pending() == 0
    clock.advance(10)
    assert dispatcher.deliver_pending() == 1
    assert [c.method for c in slack.calls][2:] == [
        "chat.postMessage", "conversations.history", "chat.postMessage",
    ]  # the channel's id is known from the first alert
    assert len(slack.posted()) == 2 and store.outbox.pending("slack") == []


def test_an_outage_keeps_notifications_until_slack_answers_again(setup: Setup, slack: SlackServer, clock: Clock) -> None:
    dispatcher, store, metrics = setup
    slack.fail_next(100, status=500)
    queue(store, note(), note(episode=2, segment="FR", check="orders_rows", team="platform"))
    assert dispatcher.deliver_pending() == 0
    assert [e.notification.segment for e in store.outbox.pending("slack")] == ["DE", "FR"]
    assert len(slack.messages()) == 1, "the round stops at the first failure: Slack is down"
    assert metrics.registry.get_sample_value("kpimon_alerts_sent_total", {"channel": "slack", "outcome": "error"}) == 1
    slack.clear_failures()
    clock.advance(10)
    assert dispatcher.deliver_pending() == 2
    texts = [m.text for m in slack.posted()]
    assert sum("revenue [DE]" in t for t in texts) == 1 and sum("orders_rows [FR]" in t for t in texts) == 1
    assert store.outbox.pending("slack") == []
    assert dispatcher.deliver_pending() == 0


def test_alerts_of_one_team_opening_together_are_one_message(setup: Setup, slack: SlackServer) -> None:
    dispatcher, store, _ = setup
    queue(store, note(), note(segment="FR", episode=1), note(segment="GB", episode=1))
    assert dispatcher.deliver_pending() == 3
    [message] = slack.messages()
    assert message["text"].startswith("3 series of team revenue moved unexpectedly:")
    assert message["blocks"][0]["text"]["text"] == "3 series of team revenue moved unexpectedly:"
    # a resolution of one of them goes to the shared thread, without marking the group resolved
    queue(store, note("resolved", segment="FR", value=1450.0, score=-0.2))
    dispatcher.deliver_pending()
    reply = slack.messages()[-1]
    assert reply["thread_ts"] and reply["text"].startswith("Resolved: revenue [FR]")
    assert slack.messages("chat.update") == []


def test_a_storm_becomes_one_summary(tmp_path: Path, slack: SlackServer) -> None:
    document = demo_document(tmp_path, token=slack.token, api_url=slack.url, group_wait="0s", max_messages=2)
    config = parse_config(document)
    assert config.slack is not None
    store = StateStore(tmp_path / "state.db")
    dispatcher = Dispatcher(config, store, Metrics(), SlackChannel(config.slack), None, lambda: datetime.now(UTC))
    teams = ["revenue", "growth", "platform", "finance"]
    queue(store, *[note(check=f"c{i}", team=t, segment="") for i, t in enumerate(teams)])
    assert dispatcher.deliver_pending() == 4
    [summary] = slack.messages()
    assert summary["text"].startswith("4 alerts opened at once; listed here instead of 4 messages:")
    assert all(f"c{i}" in summary["text"] for i in range(4))


def test_routes_send_by_team_and_severity(tmp_path: Path, slack: SlackServer) -> None:
    routes = [{"team": "growth", "channel": "#growth"}, {"severity": "critical", "channel": "#pager"}]
    config = parse_config(demo_document(tmp_path, token=slack.token, api_url=slack.url, group_wait="0s", routes=routes))
    assert config.slack is not None
    store = StateStore(tmp_path / "state.db")
    dispatcher = Dispatcher(config, store, Metrics(), SlackChannel(config.slack), None, lambda: datetime.now(UTC))
    queue(store, note(check="signups", team="growth", severity="critical", segment=""),
          note(check="orders_rows", team="platform", severity="critical", segment=""),
          note(check="orders_freshness", team="platform", severity="warning", segment="x"))
    dispatcher.deliver_pending()
    sent = {m["text"].split(" is ")[0]: m["channel"] for m in slack.messages()}
    assert sent == {"CRITICAL: signups": "#growth", "CRITICAL: orders_rows": "#pager",
                    "WARNING: orders_freshness [x]": "#data-alerts"}


def test_the_chart_goes_into_the_alert_thread(setup: Setup, slack: SlackServer) -> None:
    dispatcher, store, _ = setup
    history = [[f"2026-11-26T{h:02d}:00:00+00:00", 1500.0 if h < 11 else 120.0, 1500.0, 900.0, 2400.0, h >= 11]
               for h in range(24)]
    queue(store, note(history=history))
    assert dispatcher.deliver_pending() == 2  # the alert, then its chart
    [alert] = slack.messages()
    [upload] = slack.uploads()
    assert upload.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"{upload.channel}:{upload.thread_ts}" == store.outbox.remote_id(note().key, "slack")
    assert upload.channel == "C0REVENUE" and alert["channel"] == "#revenue"
    assert upload.title.startswith("revenue [DE]")


def test_a_wrong_token_is_reported_without_the_token(
    tmp_path: Path, slack: SlackServer, caplog: pytest.LogCaptureFixture
) -> None:
    config = parse_config(demo_document(tmp_path, token="xoxb-WRONG-canary", api_url=slack.url, group_wait="0s"))
    store = StateStore(tmp_path / "state.db")
    assert config.slack is not None
    dispatcher = Dispatcher(config, store, Metrics(), SlackChannel(config.slack), None, lambda: datetime.now(UTC))
    queue(store, note())
    assert dispatcher.deliver_pending() == 0
    logged = caplog.text + " ".join(str(getattr(r, "fields", "")) for r in caplog.records)
    assert "Slack chat_postMessage: invalid_auth" in logged
    assert "xoxb-WRONG-canary" not in logged
    assert store.outbox.pending("slack")[0].attempts == 1


def test_freshness_alerts_speak_in_durations() -> None:
    from monitor.alerts.messages import alert_text

    text = alert_text(
        note(
            check="events_freshness",
            segment="",
            value=18_300.0,
            expected=900.0,
            lower=0.0,
            upper=1800.0,
            score=40.0,
            unit="seconds",
        )
    )
    assert text.startswith(
        "CRITICAL: events_freshness is 1933% above expected (+40.0 robust SD): 5h05m vs 15m expected (band 0m to 30m)"
    )


HOSTILE = "<!channel> <https://evil.example|Sign in again> & more"


def mrkdwn_of(message: dict[str, Any]) -> list[str]:
    """Every piece of a posted message Slack reads as mrkdwn: the text and the blocks' mrkdwn."""
    found = [message["text"]]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(message.get("blocks") or [])
    return found


def slack_markup(text: str) -> list[str]:
    """What Slack would turn into a mention, a channel or a link."""
    import re

    return re.findall(r"<([^>]*)>", text)


def test_values_from_the_warehouse_config_and_api_never_mention_or_link_in_slack(
    tmp_path: Path, slack: SlackServer
) -> None:
    config = parse_config(demo_document(tmp_path, token=slack.token, api_url=slack.url, group_wait="0s", max_messages=2))
    assert config.slack is not None
    store = StateStore(tmp_path / "state.db")
    dispatcher = Dispatcher(config, store, Metrics(), SlackChannel(config.slack), None, lambda: datetime.now(UTC))
    # Notification fields of several types, as revenue_alert takes them
    hostile: dict[str, Any] = dict(
        segment=HOSTILE,  # a warehouse value
        team="growth <!here>",  # config
        owner="<!subteam^S0123ABC> <!channel>",  # config: a user group may be paged, nothing else
        cause=f"deployment {HOSTILE} (https://ci.example.com/r?a=1&b=<2>)",  # from an API call
        links={"dashboard": "https://grafana.example.com/d?var-segment=x|<!channel>"},
    )
    queue(store, note(check="signups", **hostile))
    dispatcher.deliver_pending()  # an alert
    queue(store, note("resolved", check="signups", **hostile))
    dispatcher.deliver_pending()  # its resolution, and the edit of the alert
    queue(store, note(check="orders_rows", team="platform", segment=HOSTILE),
          note(check="events_freshness", team="platform", segment=HOSTILE + "2"), note(**hostile))
    dispatcher.deliver_pending()  # a group, and an alert
    queue(store, *[note(check=c, team=c, segment=HOSTILE) for c in ("a", "b", "c")])
    dispatcher.deliver_pending()  # a storm: three teams over max_messages, one summary
    deployment = Deployment(
        id=f"d1{HOSTILE}"[:60], environment="staging", received_at=SINCE, models=[], checks=[],
        url="https://ci.example.com/run?id=1|<!channel>>", status="failed", reason=HOSTILE,
    )  # fmt: skip
    store.outbox.enqueue("deployment/d1/failed", "deployment", deployment.to_json(), ["slack"])
    dispatcher.deliver_pending()

    posted = slack.messages() + slack.messages("chat.update")
    assert len(posted) == 7
    links = []
    for message in posted:
        for text in mrkdwn_of(message):
            for token in slack_markup(text):
                assert token == "!subteam^S0123ABC" or token.startswith("https://"), (token, text)
                links.append(token)
            assert "&lt;!channel&gt; &lt;https://evil.example|Sign in again&gt; &amp; more" in text or HOSTILE not in text
    assert all("evil" not in t for t in links)
    assert "https://ci.example.com/run?id=1%7C%3C!channel%3E%3E|change" in links
    summary = slack.messages()[-2]["text"]
    assert summary.startswith("3 alerts opened at once")
    assert "&lt;!channel&gt; &lt;https://evil.example|Sign in again&gt; &amp; more" in summary


def test_the_alert_in_slack_shows_data_as_written(setup: Setup, slack: SlackServer) -> None:
    dispatcher, store, _ = setup
    queue(store, note(segment=HOSTILE, owner="<!subteam^S0123ABC>", links={"runbook": "https://wiki.example.com/kpi?a=1&b=2"}))
    dispatcher.deliver_pending()
    [message] = slack.messages()
    assert message["blocks"][0] == {
        "type": "header",  # plain_text: Slack shows it as written
        "text": {"type": "plain_text", "text": f"revenue [{HOSTILE}] moved unexpectedly"[:150]},
    }
    assert message["text"].startswith(
        "CRITICAL: revenue [&lt;!channel&gt; &lt;https://evil.example|Sign in again&gt; &amp; more] is 92% below"
    )
    assert message["text"].endswith("Owner <!subteam^S0123ABC>.")
    assert message["blocks"][3]["elements"][0]["text"].endswith(
        "<https://wiki.example.com/kpi?a=1&amp;b=2|Runbook>"
    )
    assert all(f.get("verbatim") for f in message["blocks"][2]["fields"])
