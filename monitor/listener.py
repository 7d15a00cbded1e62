"""The HTTP listener: waitress, guarded against clients that are slow or not allowed.

Plain waitress reads a whole request, body included, before the application sees it, and
serves at most ``connection_limit`` connections, each kept as long as it shows some activity:
a hundred clients trickling a byte now and then kept /healthz and /metrics from answering, and
any client could have 8 MiB bodies buffered to temporary files before its token was checked.
Here, on the server's own loop:

- a request is judged on its line and headers before any byte of its body is read
  (:meth:`monitor.server.Api.refusal`): a refused call (no or a wrong token, no such endpoint, a
  body over the call's limit, a chunked body) is answered at once, and its declared body is
  read and dropped as it comes, never stored; when it cannot be (chunked, over 8 MiB, or the
  client waits for ``100 Continue``) the connection closes after the answer;
- a connection must deliver each request whole within ``request_timeout`` of its first byte,
  and take an answer within ``request_timeout`` too; an idle one goes after ``idle_timeout``;
- at ``connection_limit``, the connection that has waited longest on its client is closed to
  make room, never one whose request is being answered: a probe or a scrape always gets in.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import threading
import time
from typing import Any, cast

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher, WSGITask

from monitor.api.http import HttpError
from monitor.config import ServerConfig
from monitor.errors import KpiMonitorError
from monitor.server import MAX_DEPLOYMENT_BYTES, REFUSAL, Api, RequestHead

log = logging.getLogger("monitor.listener")

MAX_HEADER_BYTES = 32 * 1024  # a bearer token and a few headers; waitress allows 256 KiB
CHECK_INTERVAL_SECONDS = 0.5  # how often deadlines are looked at, on the server's loop


class _Parser(HTTPRequestParser):
    """waitress's request parser, which asks the application about the head before the body."""

    def __init__(self, adj: Adjustments, channel: _Channel) -> None:
        super().__init__(adj)
        self.channel = channel
        self.started = time.monotonic()
        self.refusal: HttpError | None = None
        self.close_after = False

    def parse_header(self, header_plus: bytes) -> None:
        super().parse_header(header_plus)
        parsed = vars(self)  # waitress's stubs type these as bytes, or not at all; they are str
        path, method = str(parsed["path"]), str(parsed["command"])
        # the path as waitress hands it to the application (PATH_INFO)
        path = "/" + path.lstrip("/") if path.startswith("/") else path
        head = RequestHead(
            method,
            path,
            self.headers.get("AUTHORIZATION", ""),
            str(self.content_length),
            self.chunked,
        )
        self.refusal = self.channel.server.gate(head)
        if self.refusal is None:
            return
        # answered without the body: drop it as it arrives, or close once answered
        if self.chunked or self.expect_continue or self.content_length > MAX_DEPLOYMENT_BYTES:
            self.close_after = True
        else:
            self.channel.discard = self.content_length
        self.body_rcv = None
        self.chunked = self.expect_continue = False
        self.content_length = 0


class _Discard(HTTPRequestParser):
    """Stands in for the next request while a refused request's body arrives: drops it."""

    empty = True  # nothing to serve

    def __init__(self, adj: Adjustments, remaining: int) -> None:
        super().__init__(adj)
        self.started = time.monotonic()
        self.remaining = remaining

    def received(self, data: bytes) -> int:
        taken = min(len(data), self.remaining)
        self.remaining -= taken
        self.completed = self.remaining == 0
        return taken


class _Task(WSGITask):
    channel: _Channel

    def service(self) -> None:
        super().service()
        # before the channel lets go of the request: from now on it waits on its client
        self.channel.answered = time.monotonic()

    @property
    def _parsed(self) -> _Parser:
        return cast(_Parser, self.request)  # waitress's stubs type it as an error

    def get_environment(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environment()
        environ[REFUSAL] = self._parsed.refusal
        return environ

    def build_response_header(self) -> bytes:
        if self._parsed.close_after:
            self.set_close_on_finish()
        return super().build_response_header()


class _Channel(HTTPChannel):
    task_class = _Task
    server: _Server
    request: _Parser | _Discard | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.discard = 0  # body bytes of a refused request still to drop
        self.answered = time.monotonic()  # accepted, or the last answer written out
        super().__init__(*args, **kwargs)

    # waitress calls ``self.parser_class(self.adj)`` whenever a new request's bytes arrive: a
    # method answers that call as well as a class
    def parser_class(self, adj: Adjustments) -> HTTPRequestParser:  # type: ignore[override]
        if self.discard:
            remaining, self.discard = self.discard, 0
            return _Discard(adj, remaining)
        return _Parser(adj, self)

    def waiting_since(self) -> tuple[float, float] | None:
        """Since when this connection has waited on its client, and for how long it may: for
        the rest of a request or to take an answer, or idle; None while a request of it is
        being answered."""
        if self.requests or self.will_close or self.close_when_flushed:
            return None
        settings = self.server.settings
        if self.request is not None:
            return self.request.started, settings.request_timeout
        if self.total_outbufs_len:
            return self.answered, settings.request_timeout
        return self.answered, settings.idle_timeout


class _Server(TcpWSGIServer):
    channel_class = _Channel

    def __init__(self, app: Api, settings: ServerConfig, **kwargs: Any) -> None:
        self.gate = app.refusal
        self.settings = settings
        self._next_check = 0.0
        super().__init__(app, **kwargs)

    def readable(self) -> bool:
        """Called by the loop before each poll: close what overstayed, accept below the limit
        (making room first when at it)."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + CHECK_INTERVAL_SECONDS
            for channel in self._channels():
                overdue = channel.waiting_since()
                if overdue is not None and now - overdue[0] > overdue[1]:
                    channel.will_close = True
        if not self.accepting:
            return False
        staying = [c for c in self._channels() if not (c.will_close or c.close_when_flushed)]
        excess = len(staying) - self.settings.connection_limit + 1
        if excess <= 0:
            return True
        waiting = sorted(
            (since[0], id(c), c) for c in staying if (since := c.waiting_since()) is not None
        )
        for _, _, channel in waiting[:excess]:
            channel.will_close = True  # closed by the loop on this round: accept on the next
        return False

    def _channels(self) -> list[_Channel]:
        # waitress keeps its connections by descriptor; its stubs type the mapping wrongly
        return list(cast(dict[int, _Channel], vars(self)["active_channels"]).values())


class HttpServer:
    """The guarded waitress server on its own thread; ``stop`` closes the sockets and workers."""

    def __init__(self, app: Api, host: str, port: int, settings: ServerConfig) -> None:
        """:raises KpiMonitorError: the address cannot be listened on (port in use, bad host)."""
        try:
            adj = Adjustments(
                host=host,
                port=port,
                threads=settings.threads,
                ident="kpi-monitor",
                max_request_header_size=MAX_HEADER_BYTES,
                max_request_body_size=MAX_DEPLOYMENT_BYTES + 1,  # the gate's limits come first
                clear_untrusted_proxy_headers=True,
                connection_limit=settings.connection_limit,
                asyncore_use_poll=True,  # select() fails past 1,024 descriptors
            )
        except ValueError as exc:  # waitress's word for a host it cannot resolve
            raise KpiMonitorError(f"cannot listen on {host}:{port}: {exc}") from None
        dispatcher = ThreadedTaskDispatcher()
        dispatcher.set_thread_count(adj.threads)
        self._map: dict[int, Any] = {}
        # a host such as localhost may stand for several addresses: one socket each
        self._servers: list[_Server] = []
        try:
            for info in adj.listen:
                self._servers.append(
                    _Server(
                        app, settings, map=self._map, dispatcher=dispatcher, adj=adj, sockinfo=info
                    )
                )
        except OSError as exc:
            for server in self._servers:
                server.close()
            dispatcher.shutdown(timeout=2)
            raise KpiMonitorError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}"
                + (" (use another --port or server.port)" if exc.errno == errno.EADDRINUSE else "")
            ) from None
        self._server = self._servers[0]
        self._dispatcher = dispatcher
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(vars(self._server)["effective_port"])

    def start(self) -> None:
        self._thread.start()

    def _serve(self) -> None:
        # closing the listening socket from stop() ends the loop with an OSError
        with contextlib.suppress(OSError):
            self._server.run()

    def stop(self) -> None:
        """Close the sockets from inside the server loop's own thread (closing them from here
        while the loop polls them races: EBADF in the loop); an empty map ends the loop."""
        if self._thread.is_alive():
            trigger = cast(Any, self._server.trigger)  # a waitress trigger; the stubs say int
            try:
                trigger.pull_trigger(lambda: wasyncore.close_all(self._map))
            except OSError as exc:
                # the loop has lost its trigger: close what is left from here (the loop then
                # ends on the closed sockets)
                log.warning(
                    "http server: closing without its loop", extra={"fields": {"error": str(exc)}}
                )
                wasyncore.close_all(self._map, ignore_all=True)
            self._thread.join(timeout=3)
        else:
            for server in self._servers:
                server.close()
        self._dispatcher.shutdown(timeout=2)
        self._thread.join(timeout=3)
