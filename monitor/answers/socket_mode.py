"""Answers over Slack's Socket Mode: no public URL needed (fits a cluster without ingress).

slack-sdk's own Socket Mode client (``slack_sdk.socket_mode.SocketModeClient``, its built-in
websocket) opens the connection with the app-level token (``apps.connections.open`` returns a
``wss://`` URL), keeps it alive (ping/pong) and reconnects by itself when Slack asks it to
(``disconnect`` envelopes) or the connection drops. Each ``interactive`` envelope is received
first and acknowledged after: an envelope whose answer was recorded but not acknowledged (the
process died in between) is sent again by Slack and recorded nothing more (answers are unique
per alert), and one never received is never lost by an early acknowledgement.
"""

from __future__ import annotations

import logging
import threading

from slack_sdk import WebClient
from slack_sdk.errors import SlackClientError
from slack_sdk.socket_mode import SocketModeClient
from slack_sdk.socket_mode.client import BaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from monitor.answers.service import AnswerService, Refused

log = logging.getLogger("monitor.answers")

RETRY_SECONDS = (1, 2, 5, 10, 30, 60)  # between attempts at the first connection


class SocketModeTransport:
    def __init__(self, app_token: str, api_url: str, service: AnswerService) -> None:
        self.app_token = app_token
        self.api_url = api_url.rstrip("/") + "/"
        self.service = service
        self._client: SocketModeClient | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected()

    def start(self) -> None:
        """Connect in the background (a Slack outage must not hold up the daemon's start);
        retried with backoff until it works or ``stop``."""
        self._thread = threading.Thread(target=self._connect, name="slack-socket-mode", daemon=True)
        self._thread.start()

    def _connect(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            client = SocketModeClient(
                app_token=self.app_token,
                web_client=WebClient(base_url=self.api_url),
                logger=logging.getLogger("monitor.answers.socket_mode"),
            )
            client.socket_mode_request_listeners.append(self._on_request)
            try:
                client.connect()
            except Exception as exc:
                client.close()
                wait = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
                attempt += 1
                log.warning(
                    "slack socket mode: cannot connect; trying again",
                    extra={"fields": {"error": f"{type(exc).__name__}: {exc}",
                                      "retry_in_seconds": wait}},
                )  # fmt: skip
                self._stop.wait(wait)
                continue
            self._client = client
            log.info("slack socket mode connected", extra={"fields": {}})
            return

    def _on_request(self, client: BaseSocketModeClient, request: SocketModeRequest) -> None:
        if request.type == "interactive":
            try:
                self.service.receive(request.payload)
            except Refused as exc:
                log.warning("slack envelope refused", extra={"fields": {"reason": str(exc)}})
            except Exception:
                # not acknowledged: Slack sends it again, and the answer is recorded once
                log.exception("slack envelope not handled; left to Slack's retry")
                return
        try:
            client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))
        except SlackClientError as exc:
            # the connection went meanwhile: Slack sends the envelope again, recorded once
            log.warning(
                "slack envelope not acknowledged; Slack will send it again",
                extra={"fields": {"error": type(exc).__name__}},
            )

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._client is not None:
            self._client.close()
