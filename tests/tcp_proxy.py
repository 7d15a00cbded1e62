"""A loopback TCP proxy that can make the network hang (test code).

Every connection to the proxy is forwarded to the target. :meth:`TcpProxy.freeze` makes the
connections open at that moment stop passing bytes in both directions while staying open (a
stateful firewall or load balancer that lost them, a link gone dark): the client's calls on them
block until its own timeouts fire. Connections made afterwards pass normally.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class _Link:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.frozen = threading.Event()

    def pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if self.frozen.is_set():
                    continue  # swallowed: the peer never hears of it
                sink.sendall(data)
        if not self.frozen.is_set():
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.close()


class TcpProxy:
    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host = "127.0.0.1"
        self.port: int = self._listener.getsockname()[1]
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            link = _Link(client, upstream)
            with self._lock:
                if self._closed:
                    link.close()
                    return
                self._links.append(link)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=link.pump, args=(source, sink), daemon=True).start()

    def freeze(self) -> int:
        """Hang every connection open now; return how many."""
        with self._lock:
            links = list(self._links)
        for link in links:
            link.frozen.set()
        return len(links)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            links, self._links = self._links, []
        with contextlib.suppress(OSError):
            self._listener.close()
        for link in links:
            link.close()


__all__ = ["TcpProxy"]
