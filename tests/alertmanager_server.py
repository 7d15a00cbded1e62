"""A real Alertmanager for the tests, on loopback, and webhook receivers that record what it sends.

Uses the Debian package ``prometheus-alertmanager``: the server is ``/usr/bin/prometheus-alertmanager``
(upstream calls it ``alertmanager``; both names are looked up) and the CLI ``/usr/bin/amtool``.
Without them the tests that need them are skipped, except under ``CI=true``, where that is a
failure (CI must install the package).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import pytest
import yaml


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _which(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
        if found:
            return found
    return None


def binaries() -> tuple[str, str]:
    """Paths of the alertmanager server and amtool; skips (fails under CI=true) without them."""
    server = _which("alertmanager", "prometheus-alertmanager")
    amtool = _which("amtool")
    if server and amtool:
        return server, amtool
    message = "alertmanager/amtool not found: apt-get install prometheus-alertmanager"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Webhook:
    """One Alertmanager webhook receiver: records each notification (the JSON body) it gets."""

    name: str
    received: list[Any] = field(default_factory=list)  # JSON bodies, as posted
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # path, headers
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/hook"

    def notifications(self, check: str | None = None) -> list[dict[str, Any]]:
        """Notifications received, only those about ``check`` when given."""
        with self._lock:
            found = list(self.received)
        if check is None:
            return found
        return [n for n in found if n.get("commonLabels", {}).get("check") == check]

    def wait_for(
        self,
        predicate: Callable[[list[dict[str, Any]]], bool],
        check: str,
        timeout: float = 10.0,
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.notifications(check)
            if predicate(found):
                return found
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: no matching notification for {check}: {self.notifications(check)}")

    def start(self) -> Webhook:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with hook._lock:
                    hook.requests.append((self.path, dict(self.headers.items())))
                    hook.received.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()


def routing_config(example: Path, hooks: dict[str, Webhook]) -> dict[str, Any]:
    """``example``'s routing tree with each receiver replaced by the webhook of the same name, and
    timings shrunk so a test sees a notification within a second instead of minutes."""
    document: dict[str, Any] = yaml.safe_load(example.read_text())
    names = {r["name"] for r in document["receivers"]}
    assert names == set(hooks), f"receivers {sorted(names)} vs webhooks {sorted(hooks)}"
    document["receivers"] = [
        {"name": name, "webhook_configs": [{"url": hook.url, "send_resolved": True}]}
        for name, hook in hooks.items()
    ]

    def shrink(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval", "repeat_interval"):
            route.pop(key, None)
        for child in route.get("routes", []):
            shrink(child)

    route = document["route"]
    shrink(route)
    route.update(group_wait="200ms", group_interval="1s", repeat_interval="1h")
    return document


@dataclass
class Alertmanager:
    binary: str
    directory: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, config: dict[str, Any], timeout: float = 15.0) -> Alertmanager:
        config_file = self.directory / "alertmanager.yml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        self.port = _free_port()
        self.log = log_file = self.directory / "alertmanager.log"
        with log_file.open("wb") as log:  # the child keeps its own copy of the descriptor
            self.process = self._spawn(config_file, log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"alertmanager exited: {log_file.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"alertmanager not ready in {timeout}s: {log_file.read_text()[-2000:]}")

    def _spawn(self, config_file: Path, log: IO[bytes]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                self.binary,
                f"--config.file={config_file}",
                f"--storage.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",  # no gossip: one replica, no settle delay
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
