"""Slack delivery through slack-sdk: the alert as a message, its resolution in the thread."""

from __future__ import annotations

from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from monitor.alerts.messages import alert_text, resolved_blocks
from monitor.alerts.notification import Notification
from monitor.config import SlackConfig


class DeliveryError(Exception):
    """A channel did not accept a notification; it stays in the outbox for a later attempt."""


class SlackChannel:
    """Posts alerts with ``chat.postMessage``; a resolution goes into the alert's thread and
    the original message is edited to say it resolved."""

    name = "slack"

    def __init__(self, config: SlackConfig) -> None:
        assert config.token is not None
        self.default_channel = config.channel
        self.client = WebClient(
            token=config.token.get_secret_value(),
            base_url=config.api_url.rstrip("/") + "/",
            timeout=int(config.timeout),
            retry_handlers=[
                ConnectionErrorRetryHandler(max_retry_count=2),
                RateLimitErrorRetryHandler(max_retry_count=2),
                ServerErrorRetryHandler(max_retry_count=2),
            ],
        )

    def post(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        thread: str | None = None,
    ) -> str:
        """Post a message (into ``thread``'s thread when given); return ``channel_id:ts``."""
        kwargs: dict[str, object] = {"channel": channel, "text": text, "unfurl_links": False}
        if blocks:
            kwargs["blocks"] = blocks
        if thread is not None:
            channel_id, ts = thread.split(":")[:2]
            kwargs.update(channel=channel_id, thread_ts=ts)
        response = self._call("chat_postMessage", **kwargs)
        return f"{response['channel']}:{response['ts']}"

    def mark_resolved(self, thread: str, opened: Notification, resolved: Notification) -> None:
        """Edit the alert message to say it resolved and how long it lasted."""
        channel_id, ts = thread.split(":")[:2]
        self._call(
            "chat_update",
            channel=channel_id,
            ts=ts,
            text=f"Resolved: {alert_text(opened)}",
            blocks=resolved_blocks(opened, resolved),
        )

    def upload_chart(self, thread: str, png: bytes, title: str) -> None:
        """Upload a chart into the thread of ``thread`` (``channel_id:ts`` as ``post`` returns).

        ``files_upload_v2`` makes three requests: files.getUploadURLExternal, a POST of the bytes
        to the URL it returns, files.completeUploadExternal (which shares it in the thread).
        Needs the ``files:write`` scope besides ``chat:write``.
        """
        import urllib.error  # here, so this method stays one self-contained block

        channel_id, ts = thread.split(":", 1)
        filename = "".join(c if c.isalnum() or c in "-_." else "-" for c in title)[:80] or "chart"
        try:
            self._call(
                "files_upload_v2",
                channel=channel_id,
                thread_ts=ts,
                content=png,
                filename=f"{filename}.png",
                title=title,
            )
        except DeliveryError as exc:
            # The bytes go to the upload URL through plain urllib, outside slack-sdk's error
            # types: say which status it answered (never the URL, a pre-signed credential).
            if isinstance(exc.__context__, urllib.error.HTTPError):
                status = exc.__context__.code
                exc.__context__.close()  # slack-sdk leaves the refused response's socket open
                raise DeliveryError(f"Slack files_upload_v2: upload answered {status}") from None
            raise

    def _call(self, method: str, **kwargs: object) -> dict[str, object]:
        try:
            response = getattr(self.client, method)(**kwargs)
        except SlackApiError as exc:
            raise DeliveryError(f"Slack {method}: {exc.response.get('error', 'error')}") from None
        except SlackClientError as exc:
            raise DeliveryError(f"Slack {method}: {type(exc).__name__}") from None
        except OSError as exc:
            raise DeliveryError(f"Slack {method}: {type(exc).__name__}: {exc.strerror}") from None
        return dict(response.data) if isinstance(response.data, dict) else {}
