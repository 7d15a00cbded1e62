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
from monitor.alerts.slack import DeliveryError, SlackChannel
from monitor.config import SlackConfig
from tests.slack_server import SlackServer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def channel(slack: SlackServer, token: str | None = None) -> SlackChannel:
    return SlackChannel(
        SlackConfig(token=SecretStr(token or slack.token), api_url=slack.url, channel="#revenue", timeout=5)
    )


def alert() -> Notification:
    since = datetime(2026, 11, 26, 11, 0, tzinfo=UTC)
    return Notification(
        kind="opened",
        check="revenue",
        segment="DE",
        episode=1,
        since=since,
        bucket=since,
        value=120.0,
        expected=1500.0,
        lower=900.0,
        upper=2400.0,
        score=-7.3,
        severity="critical",
        owner="@revenue-oncall",
        team="revenue",
    )


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
    parent_ts = thread.split(":", 1)[1]
    assert upload.thread_ts == parent_ts
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
    slack.fail_next(1, status=200, error="missing_scope")

    with pytest.raises(DeliveryError, match=r"^Slack files_upload_v2: missing_scope$"):
        sink.upload_chart(thread, chart, "revenue [DE]")
    assert slack.uploads() == []


def test_a_wrong_token_is_reported_without_the_token(slack: SlackServer, chart: bytes) -> None:
    sink = channel(slack, token="xoxb-WRONG-canary")
    with pytest.raises(DeliveryError) as caught:
        sink.upload_chart("C0REVENUE:1700000001.000001", chart, "revenue [DE]")
    assert str(caught.value) == "Slack files_upload_v2: invalid_auth"
    assert "canary" not in str(caught.value)
    assert slack.uploads() == []
