"""The HTTP server: metrics, health, and the JSON API, on one port (waitress, threaded)."""

from __future__ import annotations

import gzip
import hmac
import json
import logging
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qs
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from monitor.alert_history import alerts_page
from monitor.alerts.dispatch import outbox_json
from monitor.answers.service import AnswerService, Refused
from monitor.buckets import to_utc
from monitor.calendar.book import UnknownChecks
from monitor.calendar.config import EventRequest, RecordedEvent
from monitor.config import CheckConfig
from monitor.deployments import Deployment, DeploymentRequest, summary
from monitor.engine import Engine, RunResult, SeriesStatus
from monitor.errors import ConfigError, StateStoreError, UnknownCheck
from monitor.exporter import Metrics
from monitor.pages import render
from monitor.pages.collect import PageData
from monitor.pages.model import DeploymentPage, Filters
from monitor.reload import ReloadBusy, ReloadPlan
from monitor.watcher import DeploymentConflict, DeploymentWatcher

log = logging.getLogger("monitor.server")
_M = TypeVar("_M", bound=BaseModel)

NOTIFICATIONS_LISTED = 500
REBASELINE_RANGE = (datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC))
CALENDAR_AHEAD = timedelta(days=90)  # a check's upcoming holidays and events, in its answer
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


class HttpError(Exception):
    def __init__(
        self, status: int, message: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or []


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


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


HTML = "text/html; charset=utf-8"
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


def _json(status: int, payload: object) -> Response:
    return Response(status, json.dumps(payload, default=str).encode())


def _number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def series_json(status: SeriesStatus) -> dict[str, Any]:
    v = status.verdict
    return {
        "segment": status.segment,
        "bucket": to_utc(v.bucket).isoformat(),
        "value": _number(v.value),
        "expected": _number(v.expected),
        "lower": _number(v.lower),
        "upper": _number(v.upper),
        "score": _number(v.score),
        "anomalous": v.anomalous,
        "alert": {
            "status": status.state.status,
            "since": status.state.since.isoformat() if status.state.since else None,
            "episode": status.state.episode,
        },
    }


class Api:
    """The WSGI application. ``ready`` returns what keeps the daemon from being ready."""

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
        self.engine = engine
        self.reload = reload
        self.metrics = metrics
        self.ready = ready
        self.run_now = run_now
        self.token = token or None  # an empty token would match an empty Authorization
        self.deployments = deployments
        self.watch = watch
        self.annotate = annotate  # a recorded event, in its checks' time zone: to Grafana
        self.pages = PageData(engine, engine.store, deployments)
        self._routes: list[tuple[re.Pattern[str], dict[str, Callable[..., Response]]]] = [
            (re.compile(r"^/metrics$"), {"GET": self.get_metrics}),
            (re.compile(r"^/healthz$"), {"GET": self.get_health}),
            (re.compile(r"^/readyz$"), {"GET": self.get_ready}),
            (re.compile(r"^/api/v1/checks$"), {"GET": self.list_checks}),
            (re.compile(r"^/api/v1/checks/(?P<name>[^/]+)$"), {"GET": self.get_check}),
            (re.compile(r"^/api/v1/checks/(?P<name>[^/]+)/run$"), {"POST": self.post_run}),
            (
                re.compile(r"^/api/v1/checks/(?P<name>[^/]+)/rebaseline$"),
                {"POST": self.post_rebaseline},
            ),
            (re.compile(r"^/api/v1/checks/(?P<name>[^/]+)/mute$"), {"POST": self.post_mute}),
            (re.compile(r"^/api/v1/notifications$"), {"GET": self.list_notifications}),
            (re.compile(r"^/api/v1/events$"), {"GET": self.list_events, "POST": self.post_event}),
            (re.compile(r"^/api/v1/events/(?P<event_id>[^/]+)$"), {"DELETE": self.delete_event}),
            (re.compile(r"^/api/v1/deployments$"), {"POST": self.post_deployment}),
            (re.compile(r"^/-/reload$"), {"POST": self.post_reload}),
            (re.compile(r"^/slack/interactivity$"), {"POST": self.post_slack}),
            (re.compile(r"^/api/v1/checks/(?P<name>[^/]+)/alerts$"), {"GET": self.list_alerts}),
            (
                re.compile(r"^/api/v1/deployments/(?P<deployment_id>.+)$"),
                {"GET": self.get_deployment},
            ),
            (re.compile(r"^/$"), {"GET": self.page_overview}),
            (re.compile(r"^/checks/(?P<name>[^/]+)$"), {"GET": self.page_check}),
            (re.compile(r"^/deployments$"), {"GET": self.page_deployments}),
            (re.compile(r"^/deployments/(?P<deployment_id>.+)$"), {"GET": self.page_deployment}),
            (re.compile(r"^/static/page\.css$"), {"GET": self.get_stylesheet}),
        ]
        self._with_query = (self.page_overview, self.page_check, self.list_alerts)
        self.answers: AnswerService | None = None  # set when alerts can be answered from Slack

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/")
        headers: list[tuple[str, str]] = []
        try:
            response = self._dispatch(method, path, environ)
        except HttpError as exc:
            response = _json(exc.status, {"error": str(exc)})
            headers = exc.headers
        except UnknownCheck as exc:  # the one place a check's name is found wanting
            response = _json(404, {"error": str(exc)})
        except StateStoreError as exc:
            # nothing was applied: the call may be repeated once the store takes writes again
            log.warning("request failed", extra={"fields": {"path": path, "error": str(exc)}})
            response = _json(503, {"error": str(exc)})
        except Exception:
            log.exception("request failed", extra={"fields": {"method": method, "path": path}})
            response = _json(500, {"error": "internal error; see the daemon's log"})
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
        handler, params = self._route(method, path)
        if handler == self.post_slack:
            return self.post_slack(environ)
        if method not in ("GET", "HEAD"):
            return handler(body=self._read_body(environ), **params)
        if handler in self._with_query:
            query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
            return handler(query=query, **params)
        return handler(**params)

    def refusal(self, head: RequestHead) -> HttpError | None:
        """Why a request is refused from its line and headers alone, before a byte of its body
        is read (None: admitted): no such endpoint (404), a method it does not take (405), a
        write call without the token (401), a body that is chunked (411), of a bad length (400)
        or over the call's limit (413; 64 KiB, 8 MiB for a deployment)."""
        try:
            handler, _ = self._route(head.method, head.path)
            # Slack signs its requests instead of sending our token (see post_slack)
            if head.method not in ("GET", "HEAD") and handler != self.post_slack:
                self._authorize(head.authorization)
            if head.chunked:
                raise HttpError(411, "send the body with a Content-Length, not chunked")
            try:
                length = int(head.content_length)
            except ValueError:
                raise HttpError(400, "Content-Length is not a number") from None
            limit = MAX_DEPLOYMENT_BYTES if handler == self.post_deployment else MAX_BODY_BYTES
            if length > limit:
                raise HttpError(413, f"request body over {limit} bytes")
        except HttpError as exc:
            return exc
        return None

    def _route(self, method: str, path: str) -> tuple[Callable[..., Response], dict[str, str]]:
        for pattern, handlers in self._routes:
            match = pattern.match(path)
            if not match:
                continue
            handler = handlers.get("GET" if method == "HEAD" else method)
            if handler is None:
                allowed = ", ".join(sorted(handlers))
                raise HttpError(
                    405, f"{method} is not allowed on {path}; use {allowed}", [("Allow", allowed)]
                )
            return handler, match.groupdict()
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
        length = int(environ.get("CONTENT_LENGTH") or 0)  # judged by ``refusal``
        raw = environ["wsgi.input"].read(length) if length else b""
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpError(400, f"request body is not valid JSON: {exc}") from None
        except RecursionError:
            # the decoder recurses once per nesting level; no valid body is more than a few deep
            raise HttpError(400, "request body is nested too deeply") from None

    # --- handlers ---------------------------------------------------------------------------

    def get_metrics(self) -> Response:
        return Response(200, self.metrics.exposition(), CONTENT_TYPE_LATEST)

    def get_health(self) -> Response:
        return _json(200, {"status": "ok"})

    def get_ready(self) -> Response:
        problems = self.ready()
        if problems:
            return _json(503, {"status": "not ready", "problems": problems})
        return _json(200, {"status": "ready"})

    def _check_json(
        self, name: str, last: RunResult | None, series: list[SeriesStatus]
    ) -> dict[str, Any]:
        check = self.engine.check(name)
        explained = self.engine.explanation(name)
        return {
            "name": check.name,
            "kind": check.kind,
            "grain": check.grain,
            "schedule": check.schedule,
            "owner": check.owner,
            "severity": check.severity,
            "labels": check.labels,
            "models": check.models,
            "last_run": None
            if last is None
            else {
                "started": last.started.isoformat(),
                "outcome": last.outcome,
                "duration_seconds": round(last.duration, 4),
                "error": last.error,
            },
            "series": [series_json(s) for s in series],
            "explanation": None if explained is None else explained.to_json(check.name),
        }

    def _calendar_json(self, check: CheckConfig) -> dict[str, Any] | None:
        """A check's calendar: its settings and the holidays, events and exclusion windows
        from its lookback to 90 days ahead (None for a freshness check: it has none)."""
        if check.kind == "freshness":
            return None
        calendar = self.engine.calendars.calendar(check)
        now = to_utc(self.engine.clock())
        spans = calendar.spans(now - check.effective_lookback, now + CALENDAR_AHEAD)
        return {
            "country": calendar.country,
            "subdivision": calendar.subdivision,
            "on_holiday": calendar.on_holiday,
            "widen": calendar.widen,
            "learn_from": None if check.learn_from is None else check.learn_from.isoformat(),
            "spans": [span.json() for span in spans],
        }

    def list_checks(self) -> Response:
        # two reads for all (with replicas, the checks another one runs come from the store)
        runs = self.engine.last_runs()
        series: dict[str, list[SeriesStatus]] = defaultdict(list)
        for status in self.engine.series():
            series[status.check].append(status)
        checks = [
            self._check_json(c.name, runs.get(c.name), series[c.name])
            for c in self.engine.config.checks
        ]
        return _json(200, {"checks": checks})

    def get_check(self, name: str) -> Response:
        answer = self._check_json(name, self.engine.last_run(name), self.engine.series(name))
        check = self.engine.config.check(name)
        assert check is not None  # _check_json answered 404 otherwise
        # one check's answer only: a list of 2,000 checks would compute every calendar
        return _json(200, {**answer, "calendar": self._calendar_json(check)})

    def list_notifications(self) -> Response:
        """Messages not delivered yet and those given up, newest first."""
        outbox = self.engine.store.outbox
        entries = outbox.entries(["pending", "failed"], limit=NOTIFICATIONS_LISTED)
        return _json(200, {"notifications": [outbox_json(e) for e in entries]})

    def list_events(self) -> Response:
        """The events and exclusion windows recorded through the API, oldest first."""
        return _json(200, {"events": [e.json() for e in self.engine.calendars.events()]})

    def post_event(self, body: object) -> Response:
        request = _validate(EventRequest, body)
        try:
            event = self.engine.record_event(request)
        except UnknownChecks as exc:
            raise HttpError(400, str(exc)) from None
        if self.annotate is not None:
            self.annotate(event, self._zone(request.checks))
        return _json(201, event.json())

    def _zone(self, names: list[str]) -> str:
        """The time zone of these checks (of every check when empty) if they share one, else
        UTC: what the dates of an event mean on a Grafana annotation."""
        checks = [c for c in self.engine.config.checks if not names or c.name in names]
        zones = {c.timezone for c in checks}
        return zones.pop() if len(zones) == 1 else "UTC"

    def delete_event(self, event_id: str, body: object) -> Response:
        if body not in (None, {}):
            raise HttpError(400, "this call takes no body")
        event = self.engine.delete_event(event_id)
        if event is None:
            raise HttpError(404, f"no event with id {event_id!r}")
        return _json(200, {"deleted": event.json()})

    def post_run(self, name: str, body: object) -> Response:
        self.engine.check(name)  # an unknown check is a 404, whatever the body says
        if body not in (None, {}):
            raise HttpError(400, "this call takes no body")
        self.run_now(name)
        return _json(202, {"check": name, "status": "scheduled"})

    def post_rebaseline(self, name: str, body: object) -> Response:
        self.engine.check(name)  # an unknown check is a 404, whatever the body says
        request = _validate(RebaselineRequest, body or {})
        since = request.since or self.engine.clock()
        if since.tzinfo is None:
            raise HttpError(400, "since: give a time zone, e.g. 2026-11-26T10:00:00Z")
        if not REBASELINE_RANGE[0] <= since <= REBASELINE_RANGE[1]:
            # the models count buckets in time pandas can hold (years 1677 to 2262)
            raise HttpError(400, "since: must be between the years 1970 and 2200")
        resolved = self.engine.rebaseline(name, since)
        if resolved is None:  # saved; the replica that runs the check follows it shortly
            return _json(202, {"check": name, "since": since.isoformat(), "resolved": None})
        return _json(200, {"check": name, "since": since.isoformat(), "resolved": len(resolved)})

    def post_mute(self, name: str, body: object) -> Response:
        self.engine.check(name)  # an unknown check is a 404, whatever the body says
        request = _validate(MuteRequest, body)
        if request.until.tzinfo is None:
            raise HttpError(400, "until: give a time zone, e.g. 2026-11-27T06:00:00Z")
        self.engine.mute(name, request.until, request.reason)
        return _json(
            200, {"check": name, "until": request.until.isoformat(), "reason": request.reason}
        )

    def post_deployment(self, body: object) -> Response:
        request = _validate(DeploymentRequest, body)
        try:
            deployment = self.deployments.record(request)
        except DeploymentConflict as exc:
            raise HttpError(409, str(exc)) from None
        except UnknownCheck as exc:
            raise HttpError(400, str(exc)) from None
        self.watch(deployment)
        return _json(201, summary(deployment))

    def post_reload(self, body: object) -> Response:
        """Re-read the config file and the dbt manifest (as SIGHUP does)."""
        if body not in (None, {}):
            raise HttpError(400, "this call takes no body")
        if self.reload is None:
            raise HttpError(404, "this server cannot reload a config")
        try:
            plan = self.reload()
        except ConfigError as exc:
            raise HttpError(422, exc.render()) from None
        except ReloadBusy as exc:
            raise HttpError(
                503, f"not reloaded: {exc}; try again", [("Retry-After", "10")]
            ) from None
        return _json(200, {"status": "reloaded", **plan.summary()})

    def post_slack(self, environ: WSGIEnvironment) -> Response:
        """Slack's interactivity request (a click on an alert's button): signed by Slack with
        the app's signing secret instead of our bearer token; refused (401 forged or stale,
        409 replayed, 400 malformed) with nothing changed. A valid request is answered 200
        whatever the click's fate: a user not allowed is told so by an ephemeral message."""
        if self.answers is None:
            raise HttpError(
                404, "answers from Slack are off: set slack.token and slack.signing_secret"
            )
        length = int(environ.get("CONTENT_LENGTH") or 0)  # judged by ``refusal``
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {
            "x-slack-signature": environ.get("HTTP_X_SLACK_SIGNATURE", ""),
            "x-slack-request-timestamp": environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP", ""),
        }
        try:
            self.answers.receive_signed(headers, body)
        except Refused as exc:
            raise HttpError(exc.status, str(exc)) from None
        return Response(200, b"", "text/plain; charset=utf-8")

    def list_alerts(self, name: str, query: dict[str, list[str]]) -> Response:
        """A check's alerts, newest first, with their resolution and answer: ``?limit=`` (1 to
        100, default 50) of them after ``?cursor=`` (the ``next`` of the page before)."""
        self.engine.check(name)
        try:
            page = alerts_page(self.engine.store, name, query)
        except ValueError as exc:
            raise HttpError(400, f"bad query: {exc}") from None
        return _json(200, page)

    def get_deployment(self, deployment_id: str) -> Response:
        deployment = self.deployments.get(deployment_id)
        if deployment is None:
            raise HttpError(404, f"no deployment with id {deployment_id!r}")
        return _json(200, summary(deployment))


    # --- pages: read-only HTML ---------------------------------------------------------------

    def page_overview(self, query: dict[str, list[str]]) -> Response:
        try:
            filters = Filters.parse(query)
        except ValueError as exc:
            return _html(400, render.error(400, f"bad query: {exc}"))
        return _html(200, render.overview(self.pages.overview(filters)))

    def page_check(self, name: str, query: dict[str, list[str]]) -> Response:
        unknown = sorted(set(query) - {"days"})
        days = query.get("days", [""])[-1]
        if unknown or (days and not days.isdigit()):
            problem = f"unknown parameter {unknown[0]!r}" if unknown else "days: expected a number"
            return _html(400, render.error(400, f"bad query: {problem}"))
        try:
            page = self.pages.check(name, int(days) if days else None)
        except ValueError as exc:
            return _html(400, render.error(400, f"bad query: {exc}"))
        if page is None:
            return _html(404, render.error(404, f"no check named {name!r}"))
        return _html(200, render.check(page))

    def page_deployments(self) -> Response:
        return _html(200, render.deployments(self.pages.deployments()))

    def page_deployment(self, deployment_id: str) -> Response:
        deployment = self.pages.deployment(deployment_id)
        if deployment is None:
            return _html(404, render.error(404, f"no deployment with id {deployment_id!r}"))
        page = DeploymentPage(deployment, self.engine.clock())
        return _html(200, render.deployment(page))

    def get_stylesheet(self) -> Response:
        return Response(
            200, render.STYLESHEET, "text/css; charset=utf-8", (("Cache-Control", "max-age=3600"),)
        )


def _html(status: int, body: bytes) -> Response:
    # a page shows the state of the moment: never served from a cache
    return Response(status, body, HTML, (("Cache-Control", "no-store"),))


class RebaselineRequest(BaseModel):
    """Body of POST /api/v1/checks/{name}/rebaseline; ``since`` defaults to now."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    since: datetime | None = None


class MuteRequest(BaseModel):
    """Body of POST /api/v1/checks/{name}/mute: no notification until ``until``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    until: datetime
    reason: str = Field(min_length=1, max_length=500)


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


def _validate(model: type[_M], body: object) -> _M:
    if not isinstance(body, dict):
        raise HttpError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise HttpError(400, f"{where}: {first['msg']}{more}") from None
