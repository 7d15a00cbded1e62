"""A local Slack Web API server for tests: records every call slack-sdk makes and keeps the
channels' messages as members would see them.

It speaks the real wire protocol (HTTP POST to /api/<method>, bearer token, JSON or form body,
``{"ok": ...}`` answers, Slack's error names and the ``needed``/``provided`` fields of
``missing_scope``) for the methods the monitor uses:

- ``chat.postMessage`` (channel by name or id; ``thread_ts``; message ``metadata``) and
  ``chat.update``;
- ``conversations.history`` and ``conversations.replies`` (channel ids only, ``oldest``/``latest``/
  ``inclusive``, ``limit`` and ``cursor`` pages, newest first for history, ``metadata`` only
  with ``include_all_metadata``), ``conversations.list`` (names without ``#``, pages);
- file uploads by Slack's external flow, the one slack-sdk's ``files_upload_v2`` uses:
  ``files.getUploadURLExternal`` (filename, length) hands out an upload URL on this server and a
  file id, the client POSTs the raw bytes there (no token: the URL itself is the credential), and
  ``files.completeUploadExternal`` (``files`` JSON of id + title, ``channel_id``, ``thread_ts``)
  shares it: a message carrying the file appears in the channel or thread.

Channels: ``#data-alerts``, ``#revenue`` and ``#growth`` exist with fixed ids; any other name
is created on its first post, as if the bot had been invited there. ``archive``, ``leave`` and
``delete`` make a channel answer ``is_archived``, ``not_in_channel`` or ``channel_not_found``;
``scopes`` is what the token was granted.

Answers to alerts (interactivity), both transports:

- Socket Mode: ``apps.connections.open`` (an app-level ``xapp-`` token only) hands out a
  ``ws://`` URL on this server; a websocket there (RFC 6455, masked client frames, ping/pong)
  gets ``hello``, then each ``send_interactive`` envelope; the client's acknowledgements
  (``{"envelope_id": ...}``) are recorded in ``acks``; ``redeliver`` sends an envelope again as
  Slack does when it was not acknowledged, ``drop_sockets`` sends ``disconnect`` and closes;
- HTTP: ``post_interactive`` sends a payload to the daemon's request URL the way Slack does
  (form-encoded ``payload``, ``X-Slack-Request-Timestamp``, ``X-Slack-Signature`` with the
  signing secret), or forged, stale or replayed on demand (``signed_request``);
- who may answer: ``conversations.members`` (channel members, pages) and
  ``usergroups.users.list``; ``chat.postEphemeral`` and the payload's ``response_url``
  (``/actions/...`` on this server, recorded in ``responses``) for what only the user sees.

Faults: ``fail_next`` answers the next calls (of one method, or any) with 429 + Retry-After,
5xx or an API error, either refusing the call or after carrying it out (Slack accepted, the
answer says otherwise); ``delay_next`` carries a call out and answers it only after a delay, as a
slow Slack does; ``on_call`` runs a hook after a call is carried out and before it is answered.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import re
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode

CHANNEL_IDS = {"#data-alerts": "C0DATA", "#revenue": "C0REVENUE", "#growth": "C0GROWTH"}
ALL_SCOPES = frozenset(
    {"chat:write", "files:write", "channels:history", "groups:history", "channels:read", "groups:read",
     "usergroups:read"}
)
APP_TOKEN = "xapp-1-A0TEST-test-app-token"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
MEMBER = "U0MEMBER"  # a member of every channel
ONCALL = "U0ONCALL"  # in no channel, but in the user group ONCALL_GROUP
ONCALL_GROUP = "S0ONCALL"
STRANGER = "U0STRANGER"  # in no channel and no group
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TS = re.compile(r"^\d+\.\d+$")
Answer = tuple[int, dict[str, str], dict[str, Any]]


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    token: str


@dataclass
class Message:
    """A message in a channel, as Slack keeps it."""

    channel: str  # channel id
    ts: str
    text: str
    blocks: list[Any] | None = None
    thread_ts: str | None = None
    metadata: dict[str, Any] | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    edited: bool = False

    def json(self, with_metadata: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "message", "user": "U0BOT", "bot_id": "B0BOT", "ts": self.ts,
                               "text": self.text}
        if self.blocks:
            out["blocks"] = self.blocks
        if self.thread_ts:
            out["thread_ts"] = self.thread_ts
        if self.files:
            out["files"] = self.files
        if self.edited:
            out["edited"] = {"user": "U0BOT", "ts": self.ts}
        if with_metadata and self.metadata:
            out["metadata"] = self.metadata
        return out


@dataclass
class Channel:
    id: str
    name: str  # with its "#"
    archived: bool = False
    member: bool = True
    deleted: bool = False
    members: set[str] = field(default_factory=lambda: {"U0BOT", MEMBER})


@dataclass
class UploadedFile:
    """A file shared by files.completeUploadExternal, as the channel's members would see it."""

    file_id: str
    filename: str
    title: str
    content: bytes
    channel: str | None
    thread_ts: str | None
    initial_comment: str | None


@dataclass
class _PendingUpload:
    filename: str
    length: int
    content: bytes | None = None


@dataclass
class _Fault:
    method: str | None  # None: any method
    answer: Answer
    after_processing: bool


@dataclass
class SlackServer:
    token: str = "xoxb-test-token"
    port: int = 0
    scopes: set[str] = field(default_factory=lambda: set(ALL_SCOPES))
    calls: list[Call] = field(default_factory=list)
    failures: list[_Fault] = field(default_factory=list)
    upload_failures: list[int] = field(default_factory=list)
    delays: list[tuple[str, float]] = field(default_factory=list)
    on_call: Callable[[Call], None] | None = None
    channels: dict[str, Channel] = field(
        default_factory=lambda: {name: Channel(cid, name) for name, cid in CHANNEL_IDS.items()}
    )
    history: list[Message] = field(default_factory=list)
    _pending: dict[str, _PendingUpload] = field(default_factory=dict)
    _shared: list[UploadedFile] = field(default_factory=list)
    app_token: str = APP_TOKEN
    usergroups: dict[str, set[str]] = field(default_factory=lambda: {ONCALL_GROUP: {ONCALL}})
    acks: list[dict[str, Any]] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)  # posted to a response_url
    envelopes: dict[str, dict[str, Any]] = field(default_factory=dict)
    _sockets: list[_Socket] = field(default_factory=list)
    _ids: Any = field(default_factory=itertools.count)
    _ts: int = 0
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    # --- what a test sets up -----------------------------------------------------------------

    def fail_next(
        self,
        count: int,
        status: int = 500,
        retry_after: int | None = None,
        error: str | None = None,
        *,
        method: str | None = None,
        after_processing: bool = False,
    ) -> None:
        """Answer the next ``count`` calls (of ``method``, or any) with ``status`` (or ok=false
        ``error`` at 200); with ``after_processing`` the call is carried out all the same."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        body = {
            "ok": False,
            "error": error or ("ratelimited" if status == 429 else "internal_error"),
        }
        with self._lock:
            self.failures.extend([_Fault(method, (status, headers, body), after_processing)] * count)

    def clear_failures(self) -> None:
        with self._lock:
            self.failures.clear()

    def delay_next(self, seconds: float, method: str = "chat.postMessage", count: int = 1) -> None:
        """Carry out the next ``count`` calls of ``method`` at once but answer ``seconds`` later."""
        with self._lock:
            self.delays.extend([(method, seconds)] * count)

    def fail_next_uploads(self, count: int, status: int = 500) -> None:
        """Answer the next ``count`` POSTs to an upload URL with ``status``."""
        with self._lock:
            self.upload_failures.extend([status] * count)

    def archive(self, name: str) -> None:
        self._channel_named(name).archived = True

    def leave(self, name: str) -> None:
        self._channel_named(name).member = False

    def delete(self, name: str) -> None:
        self._channel_named(name).deleted = True

    # --- what a test looks at ----------------------------------------------------------------

    def uploads(self) -> list[UploadedFile]:
        """Files shared into channels (completed uploads), in order."""
        with self._lock:
            return list(self._shared)

    def messages(self, method: str = "chat.postMessage") -> list[dict[str, Any]]:
        """The arguments of every call of ``method`` (accepted or not), in order."""
        with self._lock:
            return [c.args for c in self.calls if c.method == method]

    def posted(self, channel: str | None = None) -> list[Message]:
        """Messages that exist in Slack (in ``channel``, by name or id, when given), in order;
        replies and file shares included."""
        with self._lock:
            wanted = None if channel is None else self._channel_named(channel).id
            return [m for m in self.history if wanted in (None, m.channel)]

    def wait_for(
        self, count: int, method: str = "chat.postMessage", timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """The calls of ``method`` once there are at least ``count`` of them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages(method)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"expected {count} {method} calls, got {len(self.messages(method))}")

    def wait_for_text(self, text: str, timeout: float = 30.0) -> dict[str, Any]:
        """The first message posted whose text contains ``text``, once there is one (other
        messages, such as alerts of unrelated checks, may come before or after it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.messages():
                if text in message.get("text", ""):
                    return message
            time.sleep(0.05)
        posted = [m.get("text", "")[:80] for m in self.messages()]
        raise AssertionError(f"no message containing {text!r} within {timeout:g} s: {posted}")

    # --- answers to alerts: what a test sends ------------------------------------------------

    def click(
        self,
        message: Message,
        answer: str,
        user: str = MEMBER,
        *,
        index: int = 0,
    ) -> dict[str, Any]:
        """The ``block_actions`` payload Slack sends when ``user`` clicks the ``answer`` button
        of the ``index``-th actions block of ``message``."""
        actions = [b for b in message.blocks or [] if b.get("type") == "actions"]
        button = next(e for e in actions[index]["elements"]
                      if e["action_id"] == f"kpimon_answer:{answer}")
        channel = next(c for c in self.channels.values() if c.id == message.channel)
        return {
            "type": "block_actions",
            "team": {"id": "T0TEST", "domain": "test"},
            "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": "T0TEST"},
            "api_app_id": "A0TEST",
            "token": "verification-token-not-used",
            "container": {"type": "message", "message_ts": message.ts, "channel_id": message.channel,
                          "is_ephemeral": False},
            "trigger_id": "1.2.3",
            "channel": {"id": message.channel, "name": channel.name.lstrip("#")},
            "message": message.json(with_metadata=False),
            "response_url": f"http://127.0.0.1:{self.port}/actions/T0TEST/{next(self._ids)}/hook",
            "actions": [{**button, "block_id": actions[index].get("block_id", ""),
                         "action_ts": f"{time.time():.6f}"}],
        }

    def send_interactive(self, payload: dict[str, Any], *, retry_attempt: int = 0,
                         envelope_id: str | None = None) -> str:
        """Send an ``interactive`` envelope to every open Socket Mode connection; its id."""
        envelope_id = envelope_id or f"env-{next(self._ids)}"
        envelope = {"envelope_id": envelope_id, "payload": payload, "type": "interactive",
                    "accepts_response_payload": False, "retry_attempt": retry_attempt,
                    "retry_reason": "timeout" if retry_attempt else ""}
        with self._lock:
            self.envelopes[envelope_id] = envelope
            sockets = list(self._sockets)
        if not sockets:
            raise AssertionError("no Socket Mode connection is open")
        for sock in sockets:
            sock.send_text(json.dumps(envelope))
        return envelope_id

    def redeliver(self, envelope_id: str) -> None:
        """Send an envelope again, as Slack does when it was not acknowledged in time."""
        envelope = self.envelopes[envelope_id]
        self.send_interactive(envelope["payload"], retry_attempt=envelope["retry_attempt"] + 1,
                              envelope_id=envelope_id)

    def wait_for_ack(self, envelope_id: str, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = [a for a in self.acks if a.get("envelope_id") == envelope_id]
            if found:
                return found[0]
            time.sleep(0.02)
        raise AssertionError(f"envelope {envelope_id} was not acknowledged within {timeout:g} s")

    def wait_for_socket(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if any(s.greeted for s in self._sockets):
                    return
            time.sleep(0.02)
        raise AssertionError("no Socket Mode connection within the timeout")

    def drop_sockets(self, reason: str = "refresh_requested") -> None:
        """Tell every connection to go (``disconnect``) and close it, as Slack does."""
        with self._lock:
            sockets, self._sockets = list(self._sockets), []
        for sock in sockets:
            sock.send_text(json.dumps({"type": "disconnect", "reason": reason}))
            sock.close()

    def wait_for_response(self, count: int = 1, timeout: float = 15.0) -> list[dict[str, Any]]:
        """What was posted to response URLs, once there are ``count`` of them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.responses) >= count:
                    return list(self.responses)
            time.sleep(0.02)
        raise AssertionError(f"expected {count} responses, got {len(self.responses)}")

    # --- the Web API -------------------------------------------------------------------------

    def _channel_named(self, name: str) -> Channel:
        with self._lock:
            found = self.channels.get(name) or next(
                (c for c in self.channels.values() if c.id == name), None
            )
            if found is None:
                found = self.channels[name] = Channel(f"C{len(self.channels):07d}X", name)
            return found

    def _resolve(self, given: object, *, by_name: bool) -> Channel | None:
        """The channel a call names; Slack takes names only where ``by_name``."""
        text = str(given or "")
        with self._lock:
            for channel in self.channels.values():
                if channel.id == text or (by_name and channel.name == text):
                    return None if channel.deleted else channel
            if by_name and text.startswith("#"):
                return self._channel_named(text)
        return None

    def _call(self, method: str, args: dict[str, Any], token: str) -> tuple[Answer, float]:
        call = Call(method, args, token)
        with self._lock:
            self.calls.append(call)
            if method == "apps.connections.open":
                # only an app-level token opens a connection; a bot token is the wrong type
                if token == self.token:
                    return _error("not_allowed_token_type"), 0.0
                if token != self.app_token:
                    return (200, {}, {"ok": False, "error": "invalid_auth"}), 0.0
            elif token != self.token:
                return (200, {}, {"ok": False, "error": "invalid_auth"}), 0.0
            fault = next(
                (f for f in self.failures if f.method in (None, method)), None
            )
            if fault is not None:
                self.failures.remove(fault)
                if not fault.after_processing:
                    return fault.answer, 0.0
            delay = next((d for d in self.delays if d[0] == method), None)
            if delay is not None:
                self.delays.remove(delay)
            answer = self._answer(method, args)
        if self.on_call is not None:
            self.on_call(call)
        return (fault.answer if fault is not None else answer), (delay[1] if delay else 0.0)

    def _answer(self, method: str, args: dict[str, Any]) -> Answer:
        handler = {
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "conversations.history": self._history,
            "conversations.replies": self._replies,
            "conversations.list": self._list,
            "files.getUploadURLExternal": self._get_upload_url,
            "files.completeUploadExternal": self._complete_upload,
            "auth.test": lambda _: _ok(user_id="U0BOT", team_id="T0TEST"),
            "apps.connections.open": lambda _: _ok(
                url=f"ws://127.0.0.1:{self.port}/link/?ticket=t{next(self._ids)}&app_id=A0TEST"
            ),
            "conversations.members": self._members,
            "usergroups.users.list": self._usergroup,
            "chat.postEphemeral": self._post_ephemeral,
        }.get(method)
        if handler is None:
            return _error("unknown_method")
        return handler(args)

    def _scope(self, *needed: str) -> Answer | None:
        if any(s in self.scopes for s in needed):
            return None
        return 200, {}, {"ok": False, "error": "missing_scope", "needed": ",".join(needed),
                         "provided": ",".join(sorted(self.scopes))}

    def _writable(self, channel: Channel | None) -> Answer | None:
        if channel is None:
            return _error("channel_not_found")
        if channel.archived:
            return _error("is_archived")
        if not channel.member:
            return _error("not_in_channel")
        return None

    def _next_ts(self) -> str:
        """Slack's message id: the time it took the message, unique in the channel."""
        self._ts = max(self._ts + 1, int(time.time() * 1_000_000))
        return f"{self._ts // 1_000_000}.{self._ts % 1_000_000:06d}"

    def _find(self, channel: Channel, ts: str) -> Message | None:
        return next((m for m in self.history if m.channel == channel.id and m.ts == ts), None)

    def _thread(self, channel: Channel, thread_ts: object) -> Answer | None:
        """Slack's answer to a ``thread_ts`` that names no message of ``channel``, else None."""
        if thread_ts in (None, ""):
            return None
        if not _TS.match(str(thread_ts)):
            return _error("invalid_thread_ts")
        if self._find(channel, str(thread_ts)) is None:
            return _error("thread_not_found")
        return None

    def _for_writing(self, given: object, *, by_name: bool) -> Channel | Answer:
        """The channel a chat.* call writes to, or Slack's refusal."""
        channel = self._resolve(given, by_name=by_name)
        refused = self._scope("chat:write") or self._writable(channel)
        if refused is not None:
            return refused
        assert channel is not None  # _writable refuses a missing one
        return channel

    def _post_message(self, args: dict[str, Any]) -> Answer:
        channel = self._for_writing(args.get("channel"), by_name=True)
        if not isinstance(channel, Channel):
            return channel
        refused = self._thread(channel, args.get("thread_ts"))
        if refused:
            return refused
        metadata = args.get("metadata")
        if isinstance(metadata, str):
            metadata = json.loads(metadata)
        if metadata is not None and not (
            isinstance(metadata, dict)
            and isinstance(metadata.get("event_type"), str)
            and isinstance(metadata.get("event_payload"), dict)
        ):
            return _error("invalid_metadata_format")
        if not args.get("text") and not args.get("blocks"):
            return _error("no_text")
        message = Message(
            channel=channel.id,
            ts=self._next_ts(),
            text=str(args.get("text") or ""),
            blocks=args.get("blocks"),
            thread_ts=args.get("thread_ts") or None,
            metadata=metadata,
        )
        self.history.append(message)
        return _ok(channel=channel.id, ts=message.ts, message=message.json(with_metadata=True))

    def _update(self, args: dict[str, Any]) -> Answer:
        channel = self._for_writing(args.get("channel"), by_name=False)
        if not isinstance(channel, Channel):
            return channel
        message = self._find(channel, str(args.get("ts")))
        if message is None:
            return _error("message_not_found")
        message.text = str(args.get("text") or "")
        message.blocks = args.get("blocks")
        message.edited = True
        return _ok(channel=channel.id, ts=message.ts, text=message.text)

    def _readable(self, args: dict[str, Any]) -> tuple[Channel | None, Answer | None]:
        refused = self._scope("channels:history", "groups:history")
        if refused:
            return None, refused
        channel = self._resolve(args.get("channel"), by_name=False)
        if channel is None:
            return None, _error("channel_not_found")
        if not channel.member:
            return None, _error("not_in_channel")
        return channel, None

    def _history(self, args: dict[str, Any]) -> Answer:
        channel, refused = self._readable(args)
        if refused:
            return refused
        assert channel is not None
        top = [m for m in self.history
               if m.channel == channel.id and m.thread_ts in (None, m.ts)]
        return self._page(list(reversed(top)), args)

    def _replies(self, args: dict[str, Any]) -> Answer:
        channel, refused = self._readable(args)
        if refused:
            return refused
        assert channel is not None
        parent = self._find(channel, str(args.get("ts")))
        if parent is None:
            return _error("thread_not_found")
        thread = [parent] + [m for m in self.history
                             if m.channel == channel.id and m.thread_ts == parent.ts and m is not parent]
        return self._page(thread, args, keep_first=True)

    def _page(self, messages: list[Message], args: dict[str, Any], keep_first: bool = False) -> Answer:
        inclusive = _truthy(args.get("inclusive"))
        oldest = float(args.get("oldest") or 0)
        latest = float(args.get("latest") or 1e12)

        def inside(m: Message) -> bool:
            ts = float(m.ts)
            if inclusive:
                return oldest <= ts <= latest
            return oldest < ts < latest

        # conversations.replies always starts with the parent, whatever the time window
        kept = [m for i, m in enumerate(messages) if inside(m) or (keep_first and i == 0)]
        start = int(args.get("cursor") or 0)
        limit = min(int(args.get("limit") or 100), 999)
        page = kept[start:start + limit]
        more = start + limit < len(kept)
        with_metadata = _truthy(args.get("include_all_metadata"))
        return _ok(
            messages=[m.json(with_metadata) for m in page],
            has_more=more,
            response_metadata={"next_cursor": str(start + limit) if more else ""},
        )

    def _list(self, args: dict[str, Any]) -> Answer:
        refused = self._scope("channels:read", "groups:read")
        if refused:
            return refused
        skip_archived = _truthy(args.get("exclude_archived"))
        listed = [c for c in self.channels.values()
                  if not c.deleted and not (skip_archived and c.archived)]
        start = int(args.get("cursor") or 0)
        limit = min(int(args.get("limit") or 100), 1000)
        page = listed[start:start + limit]
        more = start + limit < len(listed)
        return _ok(
            channels=[{"id": c.id, "name": c.name.lstrip("#"), "is_channel": True,
                       "is_archived": c.archived, "is_member": c.member} for c in page],
            response_metadata={"next_cursor": str(start + limit) if more else ""},
        )

    def _members(self, args: dict[str, Any]) -> Answer:
        refused = self._scope("channels:read", "groups:read")
        if refused:
            return refused
        channel = self._resolve(args.get("channel"), by_name=False)
        if channel is None:
            return _error("channel_not_found")
        members = sorted(channel.members)
        start = int(args.get("cursor") or 0)
        limit = min(int(args.get("limit") or 100), 1000)
        more = start + limit < len(members)
        return _ok(members=members[start:start + limit],
                   response_metadata={"next_cursor": str(start + limit) if more else ""})

    def _usergroup(self, args: dict[str, Any]) -> Answer:
        refused = self._scope("usergroups:read")
        if refused:
            return refused
        group = self.usergroups.get(str(args.get("usergroup")))
        if group is None:
            return _error("no_such_subteam")
        return _ok(users=sorted(group))

    def _post_ephemeral(self, args: dict[str, Any]) -> Answer:
        channel = self._for_writing(args.get("channel"), by_name=True)
        if not isinstance(channel, Channel):
            return channel
        if str(args.get("user")) not in channel.members:
            return _error("user_not_in_channel")
        return _ok(message_ts=self._next_ts())

    def _get_upload_url(self, args: dict[str, Any]) -> Answer:
        refused = self._scope("files:write")
        if refused:
            return refused
        filename = args.get("filename")
        length = str(args.get("length", ""))
        if not filename or not length.isdigit():
            return _error("invalid_arguments")
        file_id = f"F{len(self._pending) + 1:08d}"
        self._pending[file_id] = _PendingUpload(str(filename), int(length))
        return _ok(file_id=file_id, upload_url=f"http://127.0.0.1:{self.port}/upload/v1/{file_id}")

    def _receive_upload(self, file_id: str, content: bytes) -> tuple[int, str]:
        with self._lock:
            if self.upload_failures:
                return self.upload_failures.pop(0), "error"
            pending = self._pending.get(file_id)
            if pending is None:
                return 404, "not found"
            pending.content = content
        return 200, f"OK - {len(content)}"

    def _complete_upload(self, args: dict[str, Any]) -> Answer:
        refused = self._scope("files:write")
        if refused:
            return refused
        try:
            files = json.loads(args.get("files") or "[]")
        except ValueError:
            return _error("invalid_arguments")
        given = args.get("channel_id")
        if not files or (args.get("thread_ts") and not given):
            return _error("invalid_arguments")
        channel = None
        if given is not None:
            # Slack wants a channel id here, unlike chat.postMessage which also takes a name
            channel = self._resolve(given, by_name=False)
            refused = self._writable(channel)
            if refused:
                return refused
            assert channel is not None
            refused = self._thread(channel, args.get("thread_ts"))
            if refused:
                return refused
        shared: list[UploadedFile] = []
        for item in files:
            pending = self._pending.get(str(item.get("id")))
            if pending is None or pending.content is None:
                return _error("file_not_found")
            if len(pending.content) != pending.length:
                return _error("file_upload_size_mismatch")
            shared.append(
                UploadedFile(
                    file_id=str(item["id"]),
                    filename=pending.filename,
                    title=str(item.get("title") or pending.filename),
                    content=pending.content,
                    channel=None if channel is None else channel.id,
                    thread_ts=args.get("thread_ts"),
                    initial_comment=args.get("initial_comment"),
                )
            )
        self._shared.extend(shared)
        described = [{"id": f.file_id, "name": f.filename, "title": f.title, "size": len(f.content)}
                     for f in shared]
        if channel is not None:
            self.history.append(Message(channel=channel.id, ts=self._next_ts(), text="",
                                        thread_ts=args.get("thread_ts") or None, files=described))
        return _ok(files=described)

    # --- HTTP --------------------------------------------------------------------------------

    def start(self) -> SlackServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if not self.path.startswith("/link/") or "websocket" not in (
                    self.headers.get("Upgrade") or ""
                ).lower():
                    self.send_error(404)
                    return
                key = self.headers.get("Sec-WebSocket-Key") or ""
                accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
                self.send_response(101, "Switching Protocols")
                self.send_header("Upgrade", "websocket")
                self.send_header("Connection", "Upgrade")
                self.send_header("Sec-WebSocket-Accept", accept)
                self.end_headers()
                self.wfile.flush()
                sock = _Socket(self.connection, self.rfile)
                with server._lock:
                    server._sockets.append(sock)
                sock.send_text(json.dumps({"type": "hello", "num_connections": 1,
                                           "connection_info": {"app_id": "A0TEST"}}))
                sock.greeted = True
                for text in sock.texts():
                    message = json.loads(text)
                    if "envelope_id" in message:
                        with server._lock:
                            server.acks.append(message)
                with server._lock:
                    if sock in server._sockets:
                        server._sockets.remove(sock)
                self.close_connection = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if self.path.startswith("/upload/v1/"):
                    self._upload(self.rfile.read(length))
                    return
                if self.path.startswith("/actions/"):
                    with server._lock:
                        server.responses.append(json.loads(self.rfile.read(length) or b"{}"))
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                    return
                raw = self.rfile.read(length).decode()
                if "json" in (self.headers.get("Content-Type") or ""):
                    args = json.loads(raw) if raw else {}
                else:
                    args = {k: v[0] for k, v in parse_qs(raw).items()}
                    for key in ("blocks", "attachments", "metadata"):
                        if isinstance(args.get(key), str):
                            args[key] = json.loads(args[key])
                token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                method = self.path.rsplit("/", 1)[-1]
                (status, headers, body), delay = server._call(method, args, token)
                time.sleep(delay)
                payload = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up waiting (a timeout under test)

            def _upload(self, content: bytes) -> None:
                status, text = server._receive_upload(self.path.rsplit("/", 1)[-1], content)
                payload = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True  # a delayed answer must not hold up stop()

        self._httpd = Server(("127.0.0.1", self.port), Handler)
        self.port = self._httpd.server_address[1]
        # a short poll interval keeps stop() (and every test teardown) fast
        threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        with self._lock:
            sockets, self._sockets = list(self._sockets), []
        for sock in sockets:
            sock.close()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()


class _Socket:
    """The server's end of one websocket (RFC 6455): text frames out, the client's masked
    frames in; a ping is answered with a pong, a close ends it."""

    def __init__(self, connection: socket.socket, reader: Any) -> None:
        self._connection = connection
        self._reader = reader
        self._send = threading.Lock()
        self.greeted = False

    def send_text(self, text: str) -> None:
        self._frame(0x1, text.encode())

    def _frame(self, opcode: int, data: bytes) -> None:
        size = len(data)
        if size < 126:
            head = struct.pack("!BB", 0x80 | opcode, size)
        elif size < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 126, size)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, size)
        # a client that went away: its reader loop ends
        with self._send, contextlib.suppress(OSError):
            self._connection.sendall(head + data)

    def texts(self) -> Any:
        """The text messages the client sends, until it closes or the connection drops."""
        while True:
            try:
                head = self._reader.read(2)
                if len(head) < 2:
                    return
                opcode, size = head[0] & 0x0F, head[1] & 0x7F
                if size == 126:
                    size = struct.unpack("!H", self._reader.read(2))[0]
                elif size == 127:
                    size = struct.unpack("!Q", self._reader.read(8))[0]
                mask = self._reader.read(4) if head[1] & 0x80 else b"\0\0\0\0"
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(self._reader.read(size)))
            except (OSError, ValueError, struct.error):
                return
            if opcode == 0x8:
                self._frame(0x8, data[:2])
                return
            if opcode == 0x9:
                self._frame(0xA, data)
            elif opcode == 0x1:
                yield data.decode()

    def close(self) -> None:
        self._frame(0x8, struct.pack("!H", 1000))
        with contextlib.suppress(OSError):
            self._connection.shutdown(socket.SHUT_RDWR)


def signed_request(
    url: str,
    payload: dict[str, Any],
    *,
    secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
    signature: str | None = None,
    body: bytes | None = None,
) -> tuple[int, str, dict[str, str]]:
    """POST an interactivity payload to ``url`` as Slack does: form-encoded, signed with
    ``secret`` at ``timestamp`` (now by default); ``signature`` or ``body`` replace the real
    ones to forge a request. Returns (status, body, headers sent) so a test can replay it."""
    raw = body if body is not None else urlencode({"payload": json.dumps(payload)}).encode()
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    mac = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + raw, hashlib.sha256)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature if signature is not None else "v0=" + mac.hexdigest(),
    }
    return (*send_raw(url, raw, headers), headers)


def send_raw(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def _ok(**fields: Any) -> Answer:
    return 200, {}, {"ok": True, **fields}


def _error(name: str) -> Answer:
    return 200, {}, {"ok": False, "error": name}


def _truthy(value: object) -> bool:
    return str(value).lower() in ("1", "true")
