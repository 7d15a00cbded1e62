"""Slack's interactivity requests (``/slack/interactivity``): a click on an alert's button."""

from __future__ import annotations

from dataclasses import dataclass
from wsgiref.types import WSGIEnvironment

from monitor.answers.service import AnswerService, Refused
from monitor.api.http import HttpError, Response, raw_body


@dataclass(frozen=True)
class SlackInteractivity:
    """Hands Slack's signed requests to ``answers`` (None: answers from Slack are off)."""

    answers: AnswerService | None

    def receive(self, environ: WSGIEnvironment) -> Response:
        """Slack's interactivity request (a click on an alert's button): signed by Slack with
        the app's signing secret instead of our bearer token; refused (401 forged or stale,
        409 replayed, 400 malformed) with nothing changed. A valid request is answered 200
        whatever the click's fate: a user not allowed is told so by an ephemeral message."""
        if self.answers is None:
            raise HttpError(
                404, "answers from Slack are off: set slack.token and slack.signing_secret"
            )
        headers = {
            "x-slack-signature": environ.get("HTTP_X_SLACK_SIGNATURE", ""),
            "x-slack-request-timestamp": environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP", ""),
        }
        try:
            self.answers.receive_signed(headers, raw_body(environ))
        except Refused as exc:
            raise HttpError(exc.status, str(exc)) from None
        return Response(200, b"", "text/plain; charset=utf-8")
