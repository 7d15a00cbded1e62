"""The alert's chart in its Slack thread: slack-sdk's files_upload_v2 against the local server."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from pydantic import SecretStr

from monitor.alerts.charts import render_chart
from monitor.alerts.messages import alert_blocks, alert_text
from monitor.alerts.notification import Notification
from monitor.alerts.slack import DeliveryError, SlackChannel, SlackRef
from monitor.config import SlackConfig
from tests.notifications import revenue_alert
from tests.slack_server import SlackServer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def channel(slack: SlackServer, token: str | None = None) -> SlackChannel:
    return SlackChannel(
        SlackConfig(token=SecretStr(token or slack.token), api_url=slack.url, channel="#revenue", timeout=5)
    )


def alert() -> Notification:
    return revenue_alert()


@pytest.fixture(scope="module")
def chart() -> bytes:
    buckets = pd.date_range("2026-11-23 12:00", periods=72, freq="h", tz="UTC")
    expected = np.full(72, 1500.0)
    value = expected.copy()
    value[-4:] = 120.0
    return render_chart(
        pd.DataFrame(
            {
                "bucket": buckets,
                "value": value,
                "expected": expected,
                "lower": expected * 0.6,
                "upper": expected * 1.6,
                "anomalous": [False] * 68 + [True] * 4,
            }
        ),
        title="revenue [DE]",
    )


def test_the_chart_lands_in_the_alerts_thread(slack: SlackServer, chart: bytes) -> None:
    sink = channel(slack)
    thread = sink.post("#revenue", alert_text(alert()), alert_blocks(alert()))
    [message] = slack.messages()

    sink.upload_chart(thread, chart, "revenue [DE]: last 72 hours")

    [upload] = slack.uploads()
    assert upload.content == chart and upload.content.startswith(PNG_MAGIC)
    assert upload.channel == "C0REVENUE"  # the channel id the alert was posted to
    assert upload.thread_ts == thread.ts == slack.posted()[0].ts
    assert upload.title == "revenue [DE]: last 72 hours"
    assert upload.filename.endswith(".png")
    assert message["channel"] == "#revenue"
    # the three steps of files_upload_v2, and nothing posted to the channel itself
    assert [c.method for c in slack.calls] == [
        "chat.postMessage",
        "files.getUploadURLExternal",
        "files.completeUploadExternal",
    ]
    [url_request] = slack.messages("files.getUploadURLExternal")
    assert int(url_request["length"]) == len(chart)


def test_a_rate_limited_upload_is_retried_by_slack_sdk(slack: SlackServer, chart: bytes) -> None:
    sink = channel(slack)
    thread = sink.post("#data-alerts", alert_text(alert()), alert_blocks(alert()))
    slack.fail_next(1, status=429, retry_after=1)

    sink.upload_chart(thread, chart, "revenue [DE]")

    assert len(slack.messages("files.getUploadURLExternal")) == 2
    [upload] = slack.uploads()
    assert upload.content == chart


def test_a_refused_upload_is_a_delivery_error_without_the_upload_url(
    slack: SlackServer, chart: bytes
) -> None:
    sink = channel(slack)
    thread = sink.post("#data-alerts", alert_text(alert()), alert_blocks(alert()))
    slack.fail_next_uploads(1, status=503)

    with pytest.raises(DeliveryError) as caught:
        sink.upload_chart(thread, chart, "revenue [DE]")

    assert str(caught.value) == "Slack files_upload_v2: upload answered 503"
    assert "/upload/" not in str(caught.value)
    assert slack.uploads() == []
    assert slack.messages("files.completeUploadExternal") == []


def test_a_token_without_files_write_says_so(slack: SlackServer, chart: bytes) -> None:
    sink = channel(slack)
    thread = sink.post("#data-alerts", alert_text(alert()), alert_blocks(alert()))
    slack.scopes.discard("files:write")

    with pytest.raises(DeliveryError, match=r"^Slack files_getUploadURLExternal: missing_scope \(needs files:write\)$") as caught:
        sink.upload_chart(thread, chart, "revenue [DE]")
    assert caught.value.permanent, "no retry gives the token a scope"
    assert slack.uploads() == []


def test_a_wrong_token_is_reported_without_the_token(slack: SlackServer, chart: bytes) -> None:
    sink = channel(slack, token="xoxb-WRONG-canary")
    with pytest.raises(DeliveryError) as caught:
        sink.upload_chart(SlackRef.parse("C0REVENUE:1700000001.000001"), chart, "revenue [DE]")
    assert str(caught.value) == "Slack files_getUploadURLExternal: invalid_auth"
    assert "canary" not in str(caught.value)
    assert not caught.value.permanent, "a token can be rotated back; the chart waits"
    assert slack.uploads() == []


def test_only_the_step_that_shares_the_file_is_never_repeated_blindly(slack: SlackServer, chart: bytes) -> None:
    sink = channel(slack)
    thread = sink.post("#data-alerts", alert_text(alert()), alert_blocks(alert()))
    slack.fail_next(1, status=500, method="files.getUploadURLExternal")  # safe: slack-sdk retries
    slack.fail_next(1, status=500, method="files.completeUploadExternal", after_processing=True)

    with pytest.raises(DeliveryError) as caught:
        sink.upload_chart(thread, chart, "revenue [DE]")

    assert caught.value.in_doubt and not caught.value.permanent
    assert len(slack.messages("files.getUploadURLExternal")) == 2
    assert len(slack.messages("files.completeUploadExternal")) == 1
    assert sink.find_file(thread, "revenue [DE]", datetime(2026, 1, 1, tzinfo=UTC))
    assert not sink.find_file(thread, "revenue [FR]", datetime(2026, 1, 1, tzinfo=UTC))
