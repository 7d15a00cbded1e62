"""The HTTP server: metrics, health, the JSON API and the pages, on one port (waitress,
threaded). ``Api`` is the WSGI application: it routes a request to its resource (``monitor.api``)
and owns what every request shares: the bearer token, body limits, the mapping of errors to
statuses, compression and security headers."""

from __future__ import annotations

import gzip
import hmac
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import parse_qs
from wsgiref.types import StartResponse, WSGIEnvironment

from monitor.answers.service import AnswerService
from monitor.api.checks import Checks
from monitor.api.deployments import Deployments
from monitor.api.events import Events
from monitor.api.http import HttpError, Response, json_response, raw_body
from monitor.api.operations import Operations
from monitor.api.pages import Pages
from monitor.api.slack import SlackInteractivity
from monitor.calendar.config import RecordedEvent
from monitor.deployments import Deployment
from monitor.engine import Engine
from monitor.errors import StateStoreError, UnknownCheck
from monitor.exporter import Metrics
from monitor.pages.collect import PageData
from monitor.reload import ReloadPlan
from monitor.watcher import DeploymentWatcher

log = logging.getLogger("monitor.server")

MAX_BODY_BYTES = 64 * 1024
MAX_DEPLOYMENT_BYTES = 8 * 1024 * 1024  # a compacted dbt manifest of a large project
# Bodies from this size on are gzipped for clients that accept it (Prometheus does): /metrics of
# 20,000 series is 17 MiB of text, 1.1 MiB gzipped at level 1 in about 70 ms; higher levels take
# twice as long or more for a few percent less.
GZIP_MIN_BYTES = 1024  # below, the headers outweigh what gzip saves
GZIP_LEVEL = 1
_STATUS = {
    200: "200 OK",
    201: "201 Created",
    202: "202 Accepted",
    400: "400 Bad Request",
    401: "401 Unauthorized",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    409: "409 Conflict",
    411: "411 Length Required",
    413: "413 Payload Too Large",
    422: "422 Unprocessable Content",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}


@dataclass(frozen=True)
class RequestHead:
    """What a request says before its body: enough to refuse it without reading the body."""

    method: str
    path: str
    authorization: str
    content_length: str
    chunked: bool


# the WSGI environ key under which the listener hands over its judgement of the request head
REFUSAL = "kpimon.refusal"


# Every answer: the pages load nothing but their own stylesheet, run no script at all, submit
# forms only to the daemon and cannot be framed; a JSON answer is never sniffed as HTML.
SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
        " base-uri 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)


@dataclass(frozen=True)
class Route:
    """The handlers of one path, by method, and what a request to it may bring."""

    pattern: re.Pattern[str]
    handlers: dict[str, Callable[..., Response]]
    body_limit: int = MAX_BODY_BYTES
    query: bool = False  # a GET handler takes the parsed query string as ``query``
    # Slack signs its requests instead of sending our token: the handler checks the signature
    # of the raw request (its ``environ``)
    signed: bool = False


class Api:
    """The WSGI application. ``ready`` returns what keeps the daemon from being ready.

    The daemon swaps ``engine`` on a reload and sets ``answers`` once Slack answers are set up;
    either remounts the resources, so every request after it is served by the new ones."""

    def __init__(
        self,
        engine: Engine,
        metrics: Metrics,
        *,
        ready: Callable[[], list[str]],
        run_now: Callable[[str], None],
        token: str | None,
        deployments: DeploymentWatcher,
        watch: Callable[[Deployment], None],
        reload: Callable[[], ReloadPlan] | None = None,
        annotate: Callable[[RecordedEvent, str], None] | None = None,
    ) -> None:
        self.metrics = metrics
        self.ready = ready
        self.run_now = run_now
        self.token = token or None  # an empty token would match an empty Authorization
        self.deployments = deployments
        self.watch = watch
        self.reload = reload
        self.annotate = annotate  # a recorded event, in its checks' time zone: to Grafana
        self._engine = engine
        self._answers: AnswerService | None = None  # set when alerts can be answered from Slack
        self._mount()

    @property
    def engine(self) -> Engine:
        return self._engine

    @engine.setter
    def engine(self, engine: Engine) -> None:
        self._engine = engine
        self._mount()

    @property
    def answers(self) -> AnswerService | None:
        return self._answers

    @answers.setter
    def answers(self, answers: AnswerService | None) -> None:
        self._answers = answers
        self._mount()

    def _mount(self) -> None:
        """The routes to the resources over the current engine and answer service."""
        engine = self._engine
        ops = Operations(engine, self.metrics, self.ready, self.reload)
        checks = Checks(engine, self.run_now)
        events = Events(engine, self.annotate)
        deployments = Deployments(self.deployments, self.watch)
        pages = Pages(engine, PageData(engine, engine.store, self.deployments))
        slack = SlackInteractivity(self._answers)
        check = r"^/api/v1/checks/(?P<name>[^/]+)"
        self._routes = (
            Route(re.compile(r"^/metrics$"), {"GET": ops.get_metrics}),
            Route(re.compile(r"^/healthz$"), {"GET": ops.get_health}),
            Route(re.compile(r"^/readyz$"), {"GET": ops.get_ready}),
            Route(re.compile(r"^/api/v1/checks$"), {"GET": checks.index}),
            Route(re.compile(check + "$"), {"GET": checks.show}),
            Route(re.compile(check + "/run$"), {"POST": checks.run}),
            Route(re.compile(check + "/rebaseline$"), {"POST": checks.rebaseline}),
            Route(re.compile(check + "/mute$"), {"POST": checks.mute}),
            Route(re.compile(r"^/api/v1/notifications$"), {"GET": ops.list_notifications}),
            Route(re.compile(r"^/api/v1/events$"), {"GET": events.index, "POST": events.record}),
            Route(re.compile(r"^/api/v1/events/(?P<event_id>[^/]+)$"), {"DELETE": events.delete}),
            Route(
                re.compile(r"^/api/v1/deployments$"),
                {"POST": deployments.record},
                body_limit=MAX_DEPLOYMENT_BYTES,
            ),
            Route(re.compile(r"^/-/reload$"), {"POST": ops.post_reload}),
            Route(re.compile(r"^/slack/interactivity$"), {"POST": slack.receive}, signed=True),
            Route(re.compile(check + "/alerts$"), {"GET": checks.alerts}, query=True),
            Route(
                re.compile(r"^/api/v1/deployments/(?P<deployment_id>.+)$"),
                {"GET": deployments.show},
            ),
            Route(re.compile(r"^/$"), {"GET": pages.overview}, query=True),
            Route(re.compile(r"^/checks/(?P<name>[^/]+)$"), {"GET": pages.check}, query=True),
            Route(re.compile(r"^/deployments$"), {"GET": pages.deployments}),
            Route(re.compile(r"^/deployments/(?P<deployment_id>.+)$"), {"GET": pages.deployment}),
            Route(re.compile(r"^/static/page\.css$"), {"GET": pages.stylesheet}),
        )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/")
        headers: list[tuple[str, str]] = []
        try:
            response = self._dispatch(method, path, environ)
        except HttpError as exc:
            response = json_response(exc.status, {"error": str(exc)})
            headers = exc.headers
        except UnknownCheck as exc:  # the one place a check's name is found wanting
            response = json_response(404, {"error": str(exc)})
        except StateStoreError as exc:
            # nothing was applied: the call may be repeated once the store takes writes again
            log.warning("request failed", extra={"fields": {"path": path, "error": str(exc)}})
            response = json_response(503, {"error": str(exc)})
        except Exception:
            log.exception("request failed", extra={"fields": {"method": method, "path": path}})
            response = json_response(500, {"error": "internal error; see the daemon's log"})
        body = response.body
        if len(body) >= GZIP_MIN_BYTES:
            headers = [*headers, ("Vary", "Accept-Encoding")]
            if _accepts_gzip(environ.get("HTTP_ACCEPT_ENCODING", "")):
                body = gzip.compress(body, compresslevel=GZIP_LEVEL)
                headers.append(("Content-Encoding", "gzip"))
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(body))),
            *SECURITY_HEADERS,
            *response.headers,
            *headers,
        ]
        start_response(_STATUS[response.status], headers)
        return [body] if method != "HEAD" else [b""]

    def _dispatch(self, method: str, path: str, environ: WSGIEnvironment) -> Response:
        # the listener judged the request head before reading any body; called without it
        # (tests, another WSGI server) the same judgement is made here
        refusal = (
            environ[REFUSAL]
            if REFUSAL in environ
            else self.refusal(
                RequestHead(
                    method,
                    path,
                    environ.get("HTTP_AUTHORIZATION", ""),
                    environ.get("CONTENT_LENGTH") or "0",
                    chunked=False,  # a WSGI server hands over a whole body
                )
            )
        )
        if refusal is not None:
            raise refusal
        route, handler, params = self._route(method, path)
        if route.signed:
            return handler(environ)
        if method not in ("GET", "HEAD"):
            return handler(body=self._read_body(environ), **params)
        if route.query:
            query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
            return handler(query=query, **params)
        return handler(**params)

    def refusal(self, head: RequestHead) -> HttpError | None:
        """Why a request is refused from its line and headers alone, before a byte of its body
        is read (None: admitted): no such endpoint (404), a method it does not take (405), a
        write call without the token (401), a body that is chunked (411), of a bad length (400)
        or over the call's limit (413; 64 KiB, 8 MiB for a deployment)."""
        try:
            route, _, _ = self._route(head.method, head.path)
            if head.method not in ("GET", "HEAD") and not route.signed:
                self._authorize(head.authorization)
            if head.chunked:
                raise HttpError(411, "send the body with a Content-Length, not chunked")
            try:
                length = int(head.content_length)
            except ValueError:
                raise HttpError(400, "Content-Length is not a number") from None
            if length > route.body_limit:
                raise HttpError(413, f"request body over {route.body_limit} bytes")
        except HttpError as exc:
            return exc
        return None

    def _route(
        self, method: str, path: str
    ) -> tuple[Route, Callable[..., Response], dict[str, str]]:
        for route in self._routes:
            match = route.pattern.match(path)
            if not match:
                continue
            handler = route.handlers.get("GET" if method == "HEAD" else method)
            if handler is None:
                allowed = ", ".join(sorted(route.handlers))
                raise HttpError(
                    405, f"{method} is not allowed on {path}; use {allowed}", [("Allow", allowed)]
                )
            return route, handler, match.groupdict()
        raise HttpError(404, f"no such endpoint: {path}")

    def _authorize(self, authorization: str) -> None:
        scheme, _, given = authorization.partition(" ")
        if self.token is None:
            raise HttpError(
                401, "write calls are disabled: the daemon has no API token (set KPIMON_API_TOKEN)"
            )
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self.token.encode()
        ):
            raise HttpError(401, "missing or wrong bearer token", [("WWW-Authenticate", "Bearer")])

    def _read_body(self, environ: WSGIEnvironment) -> object:
        raw = raw_body(environ)
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpError(400, f"request body is not valid JSON: {exc}") from None
        except RecursionError:
            # the decoder recurses once per nesting level; no valid body is more than a few deep
            raise HttpError(400, "request body is nested too deeply") from None


def _accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header lists gzip, with a quality above 0."""
    for item in accept_encoding.lower().split(","):
        coding, *params = item.split(";")
        if coding.strip() != "gzip":
            continue
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False
