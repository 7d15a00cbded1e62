"""A local Slack Web API server for tests: records every call slack-sdk makes.

It speaks the real wire protocol (HTTP POST to /api/<method>, bearer token, JSON or form body,
``{"ok": ...}`` answers) for the methods the monitor uses, and can be told to fail: answer 429
with Retry-After, 5xx, or an API error, for the next N calls.
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
class SlackServer:
    token: str = "xoxb-test-token"
    calls: list[Call] = field(default_factory=list)
    failures: list[tuple[int, dict[str, str], dict[str, Any]]] = field(default_factory=list)
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

    def messages(self, method: str = "chat.postMessage") -> list[dict[str, Any]]:
        with self._lock:
            return [c.args for c in self.calls if c.method == method]

    def wait_for(
        self, count: int, method: str = "chat.postMessage", timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages(method)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"expected {count} {method} calls, got {len(self.messages(method))}")

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
        if method == "auth.test":
            return 200, {}, {"ok": True, "user_id": "U0BOT", "team_id": "T0TEST"}
        return 200, {}, {"ok": False, "error": "unknown_method"}

    def start(self) -> SlackServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
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

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
