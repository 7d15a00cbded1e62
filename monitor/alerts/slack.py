"""Slack delivery through slack-sdk: post, edit, upload a chart into a thread, and look up
whether an earlier post landed.

A call either succeeds, or raises ``DeliveryError`` saying whether trying again can help
(``permanent``) and whether Slack may have carried it out anyway (``in_doubt``: the answer was
lost to a timeout or a dropped connection, or Slack answered 5xx). slack-sdk retries only what
Slack surely did not carry out (429 rate limits, connections that never opened) on the calls that
create something (a message, a shared file); calls that can be repeated safely (an edit, a
lookup, an upload URL) are also retried on 5xx and dropped connections.

Slack has no idempotency key for ``chat.postMessage``. Instead every post carries a marker in its
message metadata, and ``find_message`` reads the channel's history (or the thread's replies) for
it, so the caller can tell whether an attempt in doubt landed before posting again. That needs
the ``channels:history`` (``groups:history`` in private channels) scope, and ``channels:read``
(``groups:read``) to turn a channel name into its id.
"""

from __future__ import annotations

import math
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from http.client import HTTPException
from typing import Any
from urllib.error import URLError
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.webhook import WebhookClient

from monitor.config import SlackConfig

MARKER_EVENT = "kpimon_notification"  # the metadata event type of our posts
LOOKUP_PAGES = 10  # pages read for a marker (200 messages) or a channel name (1,000 channels)

# Errors that say Slack, the network or the token is unwell, not this message: the message is
# tried again later. Any other refusal (is_archived, channel_not_found, not_in_channel,
# missing_scope, invalid_blocks, msg_too_long, ...) is final for the message.
_PASSING = frozenset(
    {
        "ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable",
        "request_timeout", "team_added_to_org", "invalid_auth", "not_authed", "account_inactive",
        "token_revoked", "token_expired", "org_login_required", "two_factor_setup_required",
    }
)  # fmt: skip


_ERROR_NAME = re.compile(r"[a-z0-9_]+")


class DeliveryError(Exception):
    """Slack did not accept a call.

    ``permanent``: trying the same message again cannot help. ``in_doubt``: Slack may have
    carried the call out (its answer was lost or was a 5xx).
    """

    def __init__(self, message: str, *, permanent: bool = False, in_doubt: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.in_doubt = in_doubt


@dataclass(frozen=True)
class SlackRef:
    """Where a message is: its channel id and ``ts``; ``grouped`` when it lists several alerts
    (its thread takes their charts and resolutions, it is never edited as one alert's).

    Stored as ``C123:1700000001.000001`` with ``:group`` appended when grouped.
    """

    channel: str
    ts: str
    grouped: bool = False

    @classmethod
    def parse(cls, text: str) -> SlackRef:
        channel, ts, *flags = text.split(":")
        return cls(channel, ts, grouped="group" in flags)

    def __str__(self) -> str:
        return f"{self.channel}:{self.ts}" + (":group" if self.grouped else "")


class _UnsentRetryHandler(ConnectionErrorRetryHandler):
    """Retries a connection that failed before the request left (refused, no route, DNS):
    urllib raises those as URLError; a reset or a timeout after sending is left alone."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is None and isinstance(error, URLError)


class SlackChannel:
    """Posts alerts with ``chat.postMessage``, edits them with ``chat.update``, uploads charts
    into their threads and looks posts up by marker."""

    name = "slack"

    def __init__(self, config: SlackConfig) -> None:
        assert config.token is not None
        self.timeout = config.timeout
        token = config.token.get_secret_value()
        base_url = config.api_url.rstrip("/") + "/"
        self.api_url = base_url
        timeout = math.ceil(config.timeout)  # slack-sdk takes whole seconds; 0 would not wait
        rate_limits = RateLimitErrorRetryHandler(max_retry_count=2)
        # for calls that create something: never repeat one Slack may have carried out
        self._once = WebClient(
            token=token,
            base_url=base_url,
            timeout=timeout,
            retry_handlers=[_UnsentRetryHandler(max_retry_count=2), rate_limits],
        )
        self._safe = WebClient(
            token=token,
            base_url=base_url,
            timeout=timeout,
            retry_handlers=[
                ConnectionErrorRetryHandler(max_retry_count=2),
                rate_limits,
                ServerErrorRetryHandler(max_retry_count=2),
            ],
        )
        self._channel_ids: dict[str, str] = {}

    # --- posting -------------------------------------------------------------------------------

    def post(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        *,
        thread: SlackRef | None = None,
        marker: str | None = None,
    ) -> SlackRef:
        """Post a message into ``channel`` (or into ``thread``'s thread), carrying ``marker``
        for :meth:`find_message`; return where it is."""
        kwargs: dict[str, object] = {
            "channel": thread.channel if thread else channel,
            "text": text,
            "unfurl_links": False,
            "link_names": False,
        }
        if blocks:
            kwargs["blocks"] = blocks
        if thread is not None:
            kwargs["thread_ts"] = thread.ts
        if marker is not None:
            kwargs["metadata"] = {"event_type": MARKER_EVENT, "event_payload": {"marker": marker}}
        response = self._call(self._once, "chat_postMessage", **kwargs)
        posted = SlackRef(str(response["channel"]), str(response["ts"]))
        if thread is None:
            self._channel_ids[channel] = posted.channel
        return posted

    def update(self, message: SlackRef, text: str, blocks: list[dict[str, Any]]) -> None:
        """Replace a message's text and blocks (the same edit twice is harmless)."""
        self._call(
            self._safe, "chat_update", channel=message.channel, ts=message.ts, text=text,
            blocks=blocks,
        )  # fmt: skip

    def upload_chart(self, thread: SlackRef, png: bytes, title: str) -> None:
        """Upload a chart into ``thread``'s thread.

        Slack's external upload, as slack-sdk's ``files_upload_v2`` does it, taken apart so that
        only its last step, which shares the file, is treated as not repeatable:
        files.getUploadURLExternal, a POST of the bytes to the URL it returns, and
        files.completeUploadExternal. Needs the ``files:write`` scope besides ``chat:write``.
        """
        filename = "".join(c if c.isalnum() or c in "-_." else "-" for c in title)[:80] or "chart"
        target = self._call(
            self._safe, "files_getUploadURLExternal", filename=f"{filename}.png", length=len(png)
        )
        self._upload(str(target["upload_url"]), png)
        self._call(
            self._once,
            "files_completeUploadExternal",
            files=[{"id": target["file_id"], "title": title}],
            channel_id=thread.channel,
            thread_ts=thread.ts,
        )

    def _upload(self, url: str, content: bytes) -> None:
        method = "Slack files_upload_v2"
        request = urllib.request.Request(url, data=content, method="POST")  # noqa: S310 - Slack's URL
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                response.read()
        except urllib.error.HTTPError as exc:
            # never the URL in a message: it is a pre-signed credential
            with exc:
                raise DeliveryError(f"{method}: upload answered {exc.code}") from None
        except (OSError, HTTPException) as exc:
            raise DeliveryError(f"{method}: upload failed: {type(exc).__name__}") from None

    def post_ephemeral(
        self, channel: str, user: str, text: str, response_url: str | None = None
    ) -> None:
        """A message only ``user`` sees, in ``channel`` (an answer refused, and why): through
        the click's ``response_url`` when it is Slack's (it reaches a user who is not a member
        of the channel, which ``chat.postEphemeral`` cannot), else ``chat.postEphemeral``."""
        if response_url is not None and self._is_slack_url(response_url):
            try:
                answer = WebhookClient(response_url, timeout=math.ceil(self.timeout)).send(
                    text=text, response_type="ephemeral", replace_original=False
                )
            except (OSError, HTTPException, SlackClientError) as exc:
                raise DeliveryError(f"Slack response_url: {type(exc).__name__}") from None
            if answer.status_code != 200:
                raise DeliveryError(f"Slack response_url: HTTP {answer.status_code}")
            return
        self._call(self._safe, "chat_postEphemeral", channel=channel, user=user, text=text)

    def _is_slack_url(self, url: str) -> bool:
        """Slack's own hooks, or the host of the configured API (a proxy, a test server): a
        payload's URL is never used to reach anything else."""
        parts, api = urlsplit(url), urlsplit(self.api_url)
        return (parts.scheme, parts.netloc) in (
            ("https", "hooks.slack.com"), (api.scheme, api.netloc)
        )  # fmt: skip

    # --- looking up ----------------------------------------------------------------------------

    def is_member(self, channel: str, user: str) -> bool:
        """Whether ``user`` is a member of ``channel`` (``channels:read``, ``groups:read``;
        read page by page up to 2,000 members, past which it raises DeliveryError)."""
        return any(
            user in page.get("members", [])
            for page in self._pages("conversations_members", channel=self.channel_id(channel))
        )

    def group_members(self, group: str) -> set[str]:
        """The user ids of a user group's members (``usergroups:read``)."""
        answer = self._call(self._safe, "usergroups_users_list", usergroup=group)
        return {str(user) for user in answer.get("users", [])}

    def find_message(
        self, channel: str, marker: str, oldest: datetime, thread: SlackRef | None = None
    ) -> SlackRef | None:
        """The message carrying ``marker`` posted since ``oldest`` into ``channel`` (a name or
        an id) or into ``thread``'s thread; None when there is none."""
        if thread is not None:
            pages = self._pages("conversations_replies", channel=thread.channel, ts=thread.ts,
                                oldest=oldest, include_all_metadata=True)  # fmt: skip
            where = thread.channel
        else:
            where = self.channel_id(channel)
            pages = self._pages("conversations_history", channel=where, oldest=oldest,
                                include_all_metadata=True)  # fmt: skip
        for page in pages:
            for message in page.get("messages", []):
                payload = (message.get("metadata") or {}).get("event_payload") or {}
                if payload.get("marker") == marker:
                    return SlackRef(where, str(message["ts"]))
        return None

    def find_file(self, thread: SlackRef, title: str, oldest: datetime) -> bool:
        """Whether a file titled ``title`` was shared into ``thread``'s thread since ``oldest``."""
        pages = self._pages("conversations_replies", channel=thread.channel, ts=thread.ts,
                            oldest=oldest)  # fmt: skip
        return any(
            f.get("title") == title
            for page in pages
            for message in page.get("messages", [])
            for f in message.get("files", [])
        )

    def channel_id(self, channel: str) -> str:
        """The id of a channel given by name (``#data-alerts``) or id, from the posts so far or
        conversations.list."""
        if not channel.startswith("#"):
            return channel
        if channel not in self._channel_ids:
            for page in self._pages("conversations_list", types="public_channel,private_channel",
                                    exclude_archived=True, limit=1000):  # fmt: skip
                for found in page.get("channels", []):
                    self._channel_ids.setdefault(f"#{found['name']}", str(found["id"]))
        if channel not in self._channel_ids:
            raise DeliveryError(f"Slack conversations_list: no channel {channel}", permanent=True)
        return self._channel_ids[channel]

    def _pages(
        self, method: str, oldest: datetime | None = None, limit: int = 200, **kwargs: object
    ) -> Iterator[dict[str, Any]]:
        if oldest is not None:
            kwargs["oldest"] = f"{oldest.timestamp():.6f}"
        cursor = None
        for _ in range(LOOKUP_PAGES):
            page = self._call(self._safe, method, limit=limit, cursor=cursor, **kwargs)
            yield page
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return
        # more than we are willing to read: the answer stays unknown however often we ask
        raise DeliveryError(f"Slack {method}: more than {LOOKUP_PAGES} pages", permanent=True)

    # --- errors --------------------------------------------------------------------------------

    def _call(self, client: WebClient, method: str, **kwargs: object) -> dict[str, Any]:
        creates = client is self._once
        try:
            response = getattr(client, method)(**kwargs)
        except SlackApiError as exc:
            status = exc.response.status_code
            data = exc.response.data if isinstance(exc.response.data, dict) else {}
            # Slack names its errors in snake case; slack-sdk puts a sentence there when the
            # answer was not Slack's JSON (a proxy's error page)
            named = data.get("error")
            if not isinstance(named, str) or not _ERROR_NAME.fullmatch(named):
                named = None
            error = named or f"HTTP {status}, not an answer from Slack"
            if data.get("needed"):  # missing_scope says which
                error += f" (needs {data['needed']})"
            if status >= 500:
                raise DeliveryError(
                    f"Slack {method}: {error} (HTTP {status})", in_doubt=creates
                ) from None
            # An answer without Slack's own error (a proxy's 403 or 404 page) says nothing
            # about the message: only an error Slack names can refuse it for good.
            if status == 429 or not named or named in _PASSING:
                raise DeliveryError(f"Slack {method}: {error}") from None
            raise DeliveryError(f"Slack {method}: {error}", permanent=True) from None
        except URLError as exc:
            # urllib wraps failures before the request was sent: Slack cannot have it
            reason = exc.reason
            detail = getattr(reason, "strerror", None) or type(reason).__name__
            raise DeliveryError(f"Slack {method}: {type(reason).__name__}: {detail}") from None
        except (OSError, HTTPException) as exc:
            # sent, but the answer never came (a timeout, a dropped connection)
            detail = getattr(exc, "strerror", None) or "no answer"
            raise DeliveryError(
                f"Slack {method}: {type(exc).__name__}: {detail}", in_doubt=creates
            ) from None
        except SlackClientError as exc:
            raise DeliveryError(f"Slack {method}: {type(exc).__name__}") from None
        return dict(response.data) if isinstance(response.data, dict) else {}
