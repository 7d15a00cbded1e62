"""A local Slack Web API server for tests: records every call slack-sdk makes.

It speaks the real wire protocol (HTTP POST to /api/<method>, bearer token, JSON or form body,
``{"ok": ...}`` answers) for the methods the monitor uses, and can be told to fail: answer 429
with Retry-After, 5xx, or an API error, for the next N calls.

File uploads follow Slack's external upload flow, the one slack-sdk's ``files_upload_v2`` uses:
``files.getUploadURLExternal`` (filename, length) hands out an upload URL on this server and a file
id, the client POSTs the raw bytes there (no token: the URL itself is the credential), and
``files.completeUploadExternal`` (``files`` JSON of id + title, ``channel_id``, ``thread_ts``)
shares it. ``uploads()`` returns the files shared so far.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

CHANNEL_IDS = {"#data-alerts": "C0DATA", "#revenue": "C0REVENUE", "#growth": "C0GROWTH"}


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    token: str


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
class SlackServer:
    token: str = "xoxb-test-token"
    calls: list[Call] = field(default_factory=list)
    failures: list[tuple[int, dict[str, str], dict[str, Any]]] = field(default_factory=list)
    upload_failures: list[int] = field(default_factory=list)
    _pending: dict[str, _PendingUpload] = field(default_factory=dict)
    _shared: list[UploadedFile] = field(default_factory=list)
    _ts: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/api/"

    def fail_next(
        self,
        count: int,
        status: int = 500,
        retry_after: int | None = None,
        error: str | None = None,
    ) -> None:
        """Answer the next ``count`` calls with ``status`` (or ok=false ``error`` at 200)."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        body = {
            "ok": False,
            "error": error or ("ratelimited" if status == 429 else "internal_error"),
        }
        with self._lock:
            self.failures.extend([(status, headers, body)] * count)

    def fail_next_uploads(self, count: int, status: int = 500) -> None:
        """Answer the next ``count`` POSTs to an upload URL with ``status``."""
        with self._lock:
            self.upload_failures.extend([status] * count)

    def uploads(self) -> list[UploadedFile]:
        """Files shared into channels (completed uploads), in order."""
        with self._lock:
            return list(self._shared)

    def messages(self, method: str = "chat.postMessage") -> list[dict[str, Any]]:
        with self._lock:
            return [c.args for c in self.calls if c.method == method]

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

    def _answer(
        self, method: str, args: dict[str, Any], token: str
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        with self._lock:
            self.calls.append(Call(method, args, token))
            if token != self.token:
                return 200, {}, {"ok": False, "error": "invalid_auth"}
            if self.failures:
                return self.failures.pop(0)
            self._ts += 1
            ts = f"{1_700_000_000 + self._ts}.{self._ts:06d}"
        channel = str(args.get("channel", ""))
        channel_id = CHANNEL_IDS.get(channel, channel)
        if method == "chat.postMessage":
            return (
                200,
                {},
                {
                    "ok": True,
                    "channel": channel_id,
                    "ts": ts,
                    "message": {"text": args.get("text")},
                },
            )
        if method == "chat.update":
            return (
                200,
                {},
                {"ok": True, "channel": channel_id, "ts": args.get("ts"), "text": args.get("text")},
            )
        if method == "files.getUploadURLExternal":
            return self._get_upload_url(args)
        if method == "files.completeUploadExternal":
            return self._complete_upload(args)
        if method == "auth.test":
            return 200, {}, {"ok": True, "user_id": "U0BOT", "team_id": "T0TEST"}
        return 200, {}, {"ok": False, "error": "unknown_method"}

    def _get_upload_url(self, args: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        filename = args.get("filename")
        length = str(args.get("length", ""))
        if not filename or not length.isdigit():
            return 200, {}, {"ok": False, "error": "invalid_arguments"}
        with self._lock:
            file_id = f"F{len(self._pending) + 1:08d}"
            self._pending[file_id] = _PendingUpload(str(filename), int(length))
        assert self._httpd is not None
        port = self._httpd.server_address[1]
        return (
            200,
            {},
            {
                "ok": True,
                "file_id": file_id,
                "upload_url": f"http://127.0.0.1:{port}/upload/v1/{file_id}",
            },
        )

    def _receive_upload(self, file_id: str, content: bytes) -> tuple[int, str]:
        with self._lock:
            if self.upload_failures:
                return self.upload_failures.pop(0), "error"
            pending = self._pending.get(file_id)
            if pending is None:
                return 404, "not found"
            pending.content = content
        return 200, f"OK - {len(content)}"

    def _complete_upload(self, args: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        try:
            files = json.loads(args.get("files") or "[]")
        except ValueError:
            return 200, {}, {"ok": False, "error": "invalid_arguments"}
        channel = args.get("channel_id")
        if not files or (args.get("thread_ts") and not channel):
            return 200, {}, {"ok": False, "error": "invalid_arguments"}
        if channel is not None and str(channel).startswith("#"):
            # Slack wants a channel id here, unlike chat.postMessage which also takes a name
            return 200, {}, {"ok": False, "error": "channel_not_found"}
        shared: list[UploadedFile] = []
        with self._lock:
            for item in files:
                pending = self._pending.get(str(item.get("id")))
                if pending is None or pending.content is None:
                    return 200, {}, {"ok": False, "error": "file_not_found"}
                if len(pending.content) != pending.length:
                    return 200, {}, {"ok": False, "error": "file_upload_size_mismatch"}
                shared.append(
                    UploadedFile(
                        file_id=str(item["id"]),
                        filename=pending.filename,
                        title=str(item.get("title") or pending.filename),
                        content=pending.content,
                        channel=channel,
                        thread_ts=args.get("thread_ts"),
                        initial_comment=args.get("initial_comment"),
                    )
                )
            self._shared.extend(shared)
        return (
            200,
            {},
            {
                "ok": True,
                "files": [
                    {"id": f.file_id, "name": f.filename, "title": f.title, "size": len(f.content)}
                    for f in shared
                ],
            },
        )

    def start(self) -> SlackServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if self.path.startswith("/upload/v1/"):
                    self._upload(self.rfile.read(length))
                    return
                raw = self.rfile.read(length).decode()
                if "json" in (self.headers.get("Content-Type") or ""):
                    args = json.loads(raw) if raw else {}
                else:
                    args = {k: v[0] for k, v in parse_qs(raw).items()}
                    for key in ("blocks", "attachments"):
                        if isinstance(args.get(key), str):
                            args[key] = json.loads(args[key])
                token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                method = self.path.rsplit("/", 1)[-1]
                status, headers, body = server._answer(method, args, token)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

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

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # a short poll interval keeps stop() (and every test teardown) fast
        threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
