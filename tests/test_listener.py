"""The HTTP listener against hostile clients, over real sockets to a daemon in this process:
bodies refused before they are sent, slow and idle connections that cannot hold the port, and
probes and scrapes that get through a crowd of them."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from monitor.config import parse_config
from monitor.daemon import Daemon
from tests.conftest import demo_document

TOKEN = "listener-token-0123456789"


def start(tmp_path: Path, warehouse: Path, monkeypatch: pytest.MonkeyPatch, **server: Any) -> Daemon:
    monkeypatch.setenv("KPIMON_API_TOKEN", TOKEN)
    shutil.copy(warehouse, tmp_path / "demo.duckdb")
    document = demo_document(tmp_path)
    document["server"] = server
    daemon = Daemon(parse_config(document), host="127.0.0.1", port=0)
    daemon.start()
    return daemon


@pytest.fixture
def daemon(
    tmp_path: Path, live_demo_warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Daemon]:
    running = start(tmp_path, live_demo_warehouse, monkeypatch)
    yield running
    running.stop()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def head(method: str, path: str, *lines: str) -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: kpi-monitor\r\n" + "".join(
        f"{line}\r\n" for line in lines) + "\r\n").encode()  # fmt: skip


def answer(conn: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one response: status, headers (lower-case names), body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before an answer: {data!r}")
        data += chunk
    top, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = top.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        rest += conn.recv(65536)
    return int(status_line.split()[1]), headers, rest[:length]


def closed(conn: socket.socket, timeout: float) -> bool:
    """Whether the server closes the connection within ``timeout`` seconds."""
    conn.settimeout(timeout)
    try:
        return conn.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


WRITE_CALLS = [
    "/api/v1/deployments",
    "/api/v1/checks/revenue/run",
    "/api/v1/checks/revenue/mute",
    "/api/v1/checks/revenue/rebaseline",
]


# === refused before the body ======================================================================


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token"])
@pytest.mark.parametrize("path", WRITE_CALLS)
def test_a_write_call_without_the_token_is_refused_before_its_body_is_sent(
    daemon: Daemon, path: str, authorization: str | None
) -> None:
    lines = ["Content-Type: application/json", "Content-Length: 8000000"]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    with connect(daemon.port) as conn:
        conn.sendall(head("POST", path, *lines))  # and not one byte of the 8 MB body
        status, headers, body = answer(conn)
    assert status == 401 and headers["content-type"] == "application/json"
    assert json.loads(body)["error"] == "missing or wrong bearer token"


@pytest.mark.parametrize(
    ("path", "length", "limit"),
    [
        ("/api/v1/checks/revenue/run", 1024 * 1024, 64 * 1024),
        ("/api/v1/checks/revenue/mute", 64 * 1024 + 1, 64 * 1024),
        ("/api/v1/deployments", 8 * 1024 * 1024 + 1, 8 * 1024 * 1024),
    ],
)
def test_a_body_over_the_calls_limit_is_refused_before_it_is_sent(
    daemon: Daemon, path: str, length: int, limit: int
) -> None:
    with connect(daemon.port) as conn:
        conn.sendall(head("POST", path, f"Authorization: Bearer {TOKEN}", f"Content-Length: {length}"))
        status, headers, body = answer(conn)
    assert status == 413 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"error": f"request body over {limit} bytes"}


def test_a_refused_body_is_dropped_unread_and_the_connection_serves_the_next_request(
    daemon: Daemon,
) -> None:
    body = json.dumps({"until": "2030-01-01T00:00:00Z", "reason": "x" * 60_000}).encode()
    with connect(daemon.port) as conn:
        conn.sendall(
            head("POST", "/api/v1/checks/revenue/mute", f"Content-Length: {len(body)}") + body
        )
        assert answer(conn)[0] == 401
        conn.sendall(head("GET", "/healthz"))
        status, _, healthz = answer(conn)
    assert status == 200 and json.loads(healthz) == {"status": "ok"}


def test_a_client_waiting_for_100_continue_gets_the_refusal_instead_and_the_connection_closes(
    daemon: Daemon,
) -> None:
    with connect(daemon.port) as conn:
        conn.sendall(
            head("POST", "/api/v1/deployments", "Expect: 100-continue", "Content-Length: 5000000")
        )
        status, headers, _ = answer(conn)
        assert status == 401 and headers["connection"] == "close"
        assert closed(conn, timeout=5)


def test_a_chunked_body_is_refused_with_411_and_the_connection_closes(daemon: Daemon) -> None:
    with connect(daemon.port) as conn:
        conn.sendall(
            head("POST", "/api/v1/checks/revenue/run", f"Authorization: Bearer {TOKEN}",
                 "Transfer-Encoding: chunked") + b"2\r\n{}\r\n"
        )  # fmt: skip
        status, _, body = answer(conn)
        assert status == 411 and "Content-Length" in json.loads(body)["error"]
        assert closed(conn, timeout=5)


def test_an_authorized_deployment_of_8_mib_is_still_taken(daemon: Daemon) -> None:
    node = {"name": "n" * 200, "checksum": "c" * 64, "relation": "analytics.t"}
    manifest = {f"model.shop.m{i:05}": node for i in range(24_500)}
    data = json.dumps({"id": "big", "environment": "prod", "manifest": manifest}).encode()
    assert 8_000_000 < len(data) <= 8 * 1024 * 1024
    request = urllib.request.Request(
        f"http://127.0.0.1:{daemon.port}/api/v1/deployments",
        data=data,
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 201


# === slow and idle clients ========================================================================


class Trickle:
    """Clients that open connections and send a request a byte at a time, forever: each one
    that is closed is opened again."""

    def __init__(self, port: int, connections: int, silent: int) -> None:
        self.port, self.connections, self.silent = port, connections, silent
        self.stop = threading.Event()
        self.opened = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Trickle:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(timeout=10)

    def _open(self) -> socket.socket | None:
        try:
            conn = socket.create_connection(("127.0.0.1", self.port), timeout=0.05)
        except OSError:
            return None  # the listen queue is full: try again next round
        conn.setblocking(False)
        self.opened += 1
        return conn

    def _run(self) -> None:
        line = b"GET /healthz HTTP/1.1\r\nX-Padding: " + b"a" * 10_000
        talking: list[tuple[socket.socket | None, int]] = [(None, 0)] * self.connections
        quiet: list[socket.socket | None] = [None] * self.silent
        while not self.stop.is_set():
            for i, (conn, sent) in enumerate(talking):
                if conn is None:
                    talking[i] = (self._open(), 0)
                    continue
                try:
                    conn.send(line[sent % len(line) : sent % len(line) + 1])
                    talking[i] = (conn, sent + 1)
                except OSError:
                    conn.close()
                    talking[i] = (None, 0)
            for i, idle in enumerate(quiet):
                if idle is None:
                    quiet[i] = self._open()
            time.sleep(0.3)
        for conn in [c for c, _ in talking] + quiet:
            if conn is not None:
                conn.close()


def get(port: int, path: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        response.read()
        return int(response.status)


def test_slow_unauthenticated_clients_cannot_take_healthz_and_metrics_down(
    daemon: Daemon,
) -> None:
    port = daemon.port
    with Trickle(port, connections=150, silent=50) as crowd:
        deadline = time.monotonic() + 20
        while crowd.opened < 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert crowd.opened >= 200, "the crowd got its connections"
        for _ in range(5):  # probes and scrapes, again and again, while the crowd trickles
            assert get(port, "/healthz") == 200
            assert get(port, "/metrics") == 200
            time.sleep(0.5)


def test_a_request_trickled_past_request_timeout_and_an_idle_connection_are_closed(
    tmp_path: Path, live_demo_warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = start(
        tmp_path, live_demo_warehouse, monkeypatch, request_timeout=2, idle_timeout=3
    )
    try:
        with connect(daemon.port) as slow, connect(daemon.port) as idle:
            started = time.monotonic()
            slow.settimeout(0.3)
            gone = False
            for byte in b"GET /healthz HTTP/1.1\r\nX-Padding: " + b"a" * 100:
                try:
                    slow.send(bytes([byte]))
                    gone = slow.recv(1) == b""
                except TimeoutError:
                    continue
                except OSError:
                    gone = True
                if gone:
                    break
            assert gone, "a request trickled for 40 s was never closed"
            assert time.monotonic() - started < 10
            assert closed(idle, timeout=10)
        # a keep-alive client that asks within the idle timeout keeps its connection
        with connect(daemon.port) as kept:
            for _ in range(3):
                kept.sendall(head("GET", "/healthz"))
                assert answer(kept)[0] == 200
                time.sleep(1)
    finally:
        daemon.stop()


def test_stop_closes_the_port_even_when_the_loop_lost_its_wakeup_pipe(
    tmp_path: Path, live_demo_warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = start(tmp_path, live_demo_warehouse, monkeypatch)
    port = daemon.port
    trigger = cast(Any, daemon.http._server.trigger)  # a waitress trigger; the stubs say int
    os.close(trigger.trigger)  # the pipe stop() wakes the loop with
    daemon.stop()  # a clean stop all the same
    with pytest.raises(OSError):
        connect(port).close()
