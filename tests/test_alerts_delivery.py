"""Delivery through the outbox when Slack refuses, fails halfway or answers late, against the
local Slack Web API server: what reaches the channel, and what the outbox records.

What is proven here: a refusal of one message never holds up another; transient failures back
off and end; each step of a delivery (the alert, its chart, the resolution reply, the edit of
the alert) is recorded on its own and never repeated once Slack accepted it, also when Slack's
answer was lost (a timeout, a store that could not record it): the message is looked up by its
marker in the channel before it is posted again. A kill between Slack's answer and the record is
covered by the daemon test in test_faults.py.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from monitor import statedb
from monitor.alerts.dispatch import Dispatcher
from monitor.alerts.notification import Notification
from monitor.alerts.slack import SlackChannel
from monitor.alerts.state import AlertState
from monitor.config import parse_config
from monitor.deployments import Deployment
from monitor.exporter import Metrics
from monitor.store import StateStore
from tests.conftest import Clock, demo_document
from tests.slack_server import ALL_SCOPES, SlackServer

SINCE = datetime(2026, 11, 26, 11, 0, tzinfo=UTC)
T0 = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)


def note(kind: str = "opened", segment: str = "DE", **change: Any) -> Notification:
    fields: dict[str, Any] = dict(
        kind=kind, check="revenue", segment=segment, episode=1, since=SINCE,
        bucket=SINCE + timedelta(hours=3) if kind == "resolved" else SINCE,
        value=1450.0 if kind == "resolved" else 120.0, expected=1500.0, lower=900.0,
        upper=2400.0, score=-0.2 if kind == "resolved" else -7.3, severity="critical",
        owner="@revenue-oncall", team="revenue",
    )  # fmt: skip
    fields.update(change)
    return Notification(**fields)


def chart_history() -> list[list[object]]:
    return [
        [f"2026-11-26T{h:02d}:00:00+00:00", 1500.0 if h < 11 else 120.0, 1500.0, 900.0, 2400.0, h >= 11]
        for h in range(24)
    ]


class Setup:
    def __init__(self, tmp_path: Path, slack: SlackServer, **slack_config: Any) -> None:
        fields = {"token": slack.token, "api_url": slack.url, "channel": "#data-alerts",
                  "group_wait": "0s", **slack_config}  # fmt: skip
        document = demo_document(tmp_path, **fields)
        document["checks"][0]["channel"] = "#revenue"  # revenue
        self.config = parse_config(document)
        assert self.config.slack is not None
        self.store = StateStore(tmp_path / "state.db")
        self.metrics = Metrics()
        self.clock = Clock()
        self.channel = SlackChannel(self.config.slack)
        self.dispatcher = Dispatcher(
            self.config, self.store, self.metrics, self.channel, None, self.clock
        )

    def queue(self, *notes: Notification) -> None:
        for n in notes:
            self.store.record(n.check, n.segment, AlertState(), [n], ["slack"])

    def deliver(self, after: float = 0.0) -> int:
        self.clock.advance(after)
        return self.dispatcher.deliver_pending()

    def sent(self, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "kpimon_alerts_sent_total", {"channel": "slack", "outcome": outcome}
        )
        return value or 0.0

    def outbox(self, key: str) -> tuple[str, int, str | None]:
        rows = sqlite3.connect(self.store.path).execute(
            "SELECT status, attempts, last_error FROM outbox WHERE notification_key = ?", (key,)
        ).fetchall()
        assert len(rows) == 1, rows
        row: tuple[str, int, str | None] = rows[0]  # sqlite3 rows are untyped
        return row


# === a refusal stays with its message =========================================================


@pytest.mark.parametrize(
    ("fault", "error"),
    [("archive", "is_archived"), ("delete", "channel_not_found"), ("leave", "not_in_channel")],
)
def test_a_message_slack_always_refuses_is_recorded_failed_and_the_others_still_go(
    tmp_path: Path, slack: SlackServer, fault: str, error: str
) -> None:
    setup = Setup(tmp_path, slack)
    getattr(slack, fault)("#revenue")
    refused = note()
    other = note(check="signups", segment="", team="growth")
    setup.queue(refused, other)

    assert setup.deliver() == 1
    [posted] = slack.posted()
    assert posted.text.startswith("CRITICAL: signups is")
    assert setup.outbox(refused.key) == ("failed", 1, f"Slack chat_postMessage: {error}")
    assert setup.sent("error") == 1 and setup.sent("ok") == 1
    # a refusal is final: later rounds neither retry it nor stop at it
    setup.queue(note(check="orders_rows", segment="", team="platform"))
    assert setup.deliver(after=3600) == 1
    assert sum(m["channel"] == "#revenue" for m in slack.messages()) == 1
    assert setup.store.outbox.pending("slack") == []


def test_a_token_without_files_write_loses_the_charts_but_never_the_alerts_or_resolutions(
    tmp_path: Path, slack: SlackServer
) -> None:
    slack.scopes = set(ALL_SCOPES) - {"files:write"}
    setup = Setup(tmp_path, slack)
    setup.queue(note(history=chart_history()), note(segment="FR", team="finance", history=chart_history()))
    setup.deliver()
    setup.queue(note("resolved"))
    setup.deliver()

    alert_de, alert_fr, reply = slack.posted("#revenue")
    assert reply.thread_ts == alert_de.ts and reply.text.startswith("Resolved: revenue [DE]")
    assert alert_de.edited, "the alert says it resolved"
    assert alert_fr.text.startswith("CRITICAL: revenue [FR]")
    assert setup.outbox(note().key + "/chart") == ("failed", 1, "Slack files_getUploadURLExternal: missing_scope (needs files:write)")
    assert slack.uploads() == []


def test_a_dollar_sign_in_a_segment_is_drawn_as_text_and_holds_up_nothing(
    tmp_path: Path, slack: SlackServer
) -> None:
    setup = Setup(tmp_path, slack)
    segment = "$a_$ off"  # as mathtext, matplotlib would raise ValueError
    setup.queue(note(segment=segment, history=chart_history()))
    setup.deliver()
    setup.store.outbox.enqueue("deployment/d1/passed", "deployment", deployment_json(), ["slack"])
    setup.deliver()

    [upload] = slack.uploads()
    assert upload.title.startswith(f"revenue [{segment}]")
    assert slack.posted("#data-alerts")[-1].text.startswith("Deployment d1 to staging")


def deployment_json(url: str | None = None) -> str:
    return Deployment(
        id="d1", environment="staging", received_at=T0, models=["fct_orders"], checks=[],
        commit="abc123", url=url, status="passed", finished_at=T0, reason="no deviation",
    ).to_json()  # fmt: skip


def test_nothing_a_message_raises_stalls_the_outbox(tmp_path: Path, slack: SlackServer) -> None:
    setup = Setup(tmp_path, slack)
    setup.store.outbox.enqueue("revenue/DE/1/opened/chart", "chart", "{not json", ["slack"])
    setup.queue(note(check="signups", segment="", team="growth"))

    assert setup.deliver() == 1
    assert slack.posted()[0].text.startswith("CRITICAL: signups")
    status, attempts, error = setup.outbox("revenue/DE/1/opened/chart")
    assert (status, attempts) == ("failed", 1)
    assert error is not None and error.startswith("internal error: JSONDecodeError")


# === transient failures: backoff, then an end =================================================


def test_transient_failures_back_off_and_end_after_max_attempts(tmp_path: Path, slack: SlackServer) -> None:
    setup = Setup(tmp_path, slack, max_attempts=3)
    slack.fail_next(100, status=503, method="chat.postMessage")
    setup.queue(note())

    attempts = []
    for after in [0, 5, 5, 15, 10, 10, 10, 3600]:
        setup.deliver(after=after)
        attempts.append(len(slack.messages()))
    # slack-sdk does not repeat a post Slack answered 5xx (it may have taken it); the outbox
    # tries at 0 s, after 10 s of backoff (the round at 10 s), after 20 s more (the round at
    # 35 s), and gives up at the third attempt
    assert attempts == [1, 1, 2, 2, 3, 3, 3, 3]
    assert setup.outbox(note().key) == ("failed", 3, "gave up after 3 attempts: Slack chat_postMessage: internal_error (HTTP 503)")
    assert setup.sent("error") == 3


def test_a_refused_token_keeps_every_message_for_later(tmp_path: Path, slack: SlackServer) -> None:
    setup = Setup(tmp_path, slack)
    good = slack.token
    slack.token = "xoxb-rotated"
    setup.queue(note(), note(check="signups", segment="", team="growth"))
    assert setup.deliver() == 0
    assert len(slack.messages()) == 1, "the round stops at the first: the token is wrong for all"
    slack.token = good
    assert setup.deliver(after=10) == 2
    assert len(slack.posted()) == 2


def test_an_answer_that_is_not_slacks_own_refuses_no_message_for_good(tmp_path: Path, slack: SlackServer) -> None:
    # a proxy's 404 page (here: the server's upload path) says nothing about the message
    setup = Setup(tmp_path, slack, api_url=f"http://127.0.0.1:{slack.port}/upload/v1/")
    setup.queue(note())
    assert setup.deliver() == 0
    [entry] = setup.store.outbox.pending("slack")
    assert (entry.attempts, entry.last_error) == (1, "Slack chat_postMessage: HTTP 404, not an answer from Slack")


# === steps of a delivery =====================================================================


def test_a_failed_chat_update_never_posts_the_resolution_twice(tmp_path: Path, slack: SlackServer) -> None:
    setup = Setup(tmp_path, slack)
    setup.queue(note())
    setup.deliver()
    setup.queue(note("resolved"))
    slack.fail_next(3, status=500, method="chat.update")  # the first try and slack-sdk's retries

    setup.deliver()
    setup.deliver(after=10)
    setup.deliver(after=60)

    alert, reply = slack.posted("#revenue")
    assert reply.thread_ts == alert.ts
    assert alert.edited and alert.text.startswith("Resolved: CRITICAL: revenue [DE]")
    assert len(slack.messages("chat.update")) == 4
    assert setup.outbox(note("resolved").key) == ("sent", 1, None)
    assert setup.outbox(note("resolved").key + "/update")[0:2] == ("sent", 2)


def test_charts_of_grouped_alerts_go_into_the_group_thread(tmp_path: Path, slack: SlackServer) -> None:
    setup = Setup(tmp_path, slack)
    setup.queue(*[note(segment=s, history=chart_history()) for s in ("DE", "FR", "GB")])
    assert setup.deliver() == 6  # one message for three alerts, then their three charts

    [group, *charts] = slack.posted("#revenue")
    assert group.text.startswith("3 series of team revenue moved unexpectedly")
    assert [c.thread_ts for c in charts] == [group.ts] * 3
    assert sorted(u.title.split(" ")[1] for u in slack.uploads()) == ["[DE]", "[FR]", "[GB]"]
    assert all(u.thread_ts == group.ts for u in slack.uploads())


def test_a_resolution_waits_for_its_alert_and_then_goes_into_its_thread(tmp_path: Path, slack: SlackServer) -> None:
    setup = Setup(tmp_path, slack)
    slack.fail_next(1, status=503, method="chat.postMessage")
    setup.queue(note())
    setup.deliver()
    setup.queue(note("resolved"))
    assert setup.deliver() == 0, "the alert is backing off; its resolution waits for it"
    assert setup.deliver(after=10) == 3  # the alert, then the resolution reply and the edit
    alert, reply = slack.posted("#revenue")
    assert reply.thread_ts == alert.ts and alert.edited


def test_a_resolved_alert_of_a_group_loses_its_buttons_and_the_others_keep_theirs(
    tmp_path: Path, slack: SlackServer
) -> None:
    setup = Setup(tmp_path, slack, signing_secret="s")  # alerts can be answered
    setup.queue(note(segment="DE"), note(segment="FR"))
    assert setup.deliver() == 2  # two alerts, one message
    setup.queue(note("resolved", segment="DE"))
    assert setup.deliver() == 2  # the reply in the group's thread, then the group's edit
    group, reply = slack.posted("#revenue")
    assert reply.thread_ts == group.ts and group.edited
    kinds = [b["type"] for b in group.blocks or []]
    assert kinds == ["header", "section", "context", "section", "actions"]
    assert "Resolved after 3h" in json.dumps(group.blocks)
    assert group.blocks is not None
    assert group.blocks[4]["elements"][0]["value"].startswith("revenue:1:")


def test_without_answers_alerts_carry_no_buttons_and_a_group_is_not_edited(
    tmp_path: Path, slack: SlackServer
) -> None:
    setup = Setup(tmp_path, slack)
    setup.queue(note(segment="DE"), note(segment="FR"))
    setup.deliver()
    setup.queue(note("resolved", segment="DE"))
    assert setup.deliver() == 1
    group, _ = slack.posted("#revenue")
    assert not group.edited and "actions" not in json.dumps(group.blocks)


def test_a_reload_routes_the_messages_still_queued_by_the_new_config(
    tmp_path: Path, slack: SlackServer
) -> None:
    setup = Setup(tmp_path, slack)
    setup.queue(note(segment="DE"))
    document = demo_document(tmp_path, token=slack.token, api_url=slack.url,
                             channel="#data-alerts", group_wait="0s")  # fmt: skip
    document["checks"][0]["channel"] = "#revenue-war-room"  # revenue moved to another channel
    reloaded = parse_config(document)
    assert reloaded.slack is not None
    setup.dispatcher.reconfigure(reloaded, SlackChannel(reloaded.slack), None)
    assert setup.deliver() == 1
    assert slack.posted("#revenue") == []
    [alert] = slack.posted("#revenue-war-room")
    assert alert.text.startswith("CRITICAL: revenue [DE]")


# === exactly once when Slack's answer is lost ===============================================


def test_a_post_slack_accepted_but_answered_after_the_timeout_is_not_posted_again(
    tmp_path: Path, slack: SlackServer
) -> None:
    setup = Setup(tmp_path, slack, timeout=5)
    slack.delay_next(7.0)  # Slack takes the message at once and answers in 7 s
    setup.queue(note())

    assert setup.deliver() == 0
    assert len(slack.posted()) == 1, "Slack has the message"
    assert setup.deliver(after=10) == 1
    [message] = slack.posted()
    assert len(slack.messages()) == 1, "posted once"
    assert setup.store.outbox.remote_id(note().key, "slack") == f"C0REVENUE:{message.ts}"
    assert [c.method for c in slack.calls][-2:] == ["conversations.list", "conversations.history"]


def lock_the_store_on(slack: SlackServer, store_path: Path, method: str) -> threading.Event:
    """While Slack carries out the first ``method`` call, another connection takes the state
    store's write lock, so recording what Slack answered fails; released by the event."""
    release, armed = threading.Event(), threading.Event()

    def hook(call: Any) -> None:
        if call.method != method or release.is_set() or armed.is_set():
            return
        armed.set()
        holder = sqlite3.connect(store_path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN EXCLUSIVE")

        def hold() -> None:
            release.wait(30)
            holder.execute("ROLLBACK")
            holder.close()

        threading.Thread(target=hold, daemon=True).start()

    slack.on_call = hook
    return release


@pytest.mark.parametrize("step", ["alert", "resolution", "chart", "deployment"])
def test_a_step_slack_accepted_but_the_store_could_not_record_is_found_not_repeated(
    tmp_path: Path, slack: SlackServer, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    monkeypatch.setattr(statedb, "BUSY_TIMEOUT_SECONDS", 0.3)
    setup = Setup(tmp_path, slack)
    if step == "resolution":
        setup.queue(note())
        setup.deliver()
    method = "files.completeUploadExternal" if step == "chart" else "chat.postMessage"
    release = lock_the_store_on(slack, tmp_path / "state.db", method)
    if step in ("alert", "chart"):
        setup.queue(note(history=chart_history() if step == "chart" else []))
    elif step == "resolution":
        setup.queue(note("resolved"))
    else:
        setup.store.outbox.enqueue("deployment/d1/passed", "deployment", deployment_json(), ["slack"])
    calls = len(slack.messages(method))

    setup.deliver()  # Slack takes it; recording that fails on the lock
    release.set()
    assert len([e for e in setup.store.outbox.pending("slack") if e.in_doubt]) == 1, "not recorded"
    setup.deliver(after=10)
    setup.deliver(after=60)

    assert len(slack.messages(method)) == calls + 1, f"{method} once"
    kinds = {"alert": 1, "resolution": 2, "chart": 2, "deployment": 1}
    assert len(slack.posted()) == kinds[step]
    assert setup.store.outbox.pending("slack") == []


def test_without_history_access_an_uncertain_post_is_sent_again_and_says_so(
    tmp_path: Path, slack: SlackServer, caplog: pytest.LogCaptureFixture
) -> None:
    slack.scopes = {"chat:write", "files:write"}
    setup = Setup(tmp_path, slack)
    slack.fail_next(1, status=500, method="chat.postMessage", after_processing=True)
    setup.queue(note())

    setup.deliver()
    setup.deliver(after=10)

    assert len(slack.posted()) == 2, "at least once: Slack's history could not be read"
    logged = " ".join(str(getattr(r, "fields", "")) + r.getMessage() for r in caplog.records)
    assert "cannot tell whether Slack took an earlier attempt" in logged
    assert "missing_scope" in logged
