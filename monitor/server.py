"""The HTTP server: metrics, health, and the JSON API, on one port (waitress, threaded)."""

from __future__ import annotations

import gzip
import hmac
import json
import logging
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qs
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from monitor.alerts.dispatch import outbox_json
from monitor.buckets import to_utc
from monitor.deployments import Deployment, DeploymentRequest, summary
from monitor.engine import Engine, SeriesStatus
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
# the moments a rebaseline may start from: series are indexed from the Unix epoch, and pandas
# timestamps end in April 2262
REBASELINE_RANGE = (datetime(1970, 1, 1, tzinfo=UTC), datetime(2262, 1, 1, tzinfo=UTC))
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
    ) -> None:
        self.engine = engine
        self.reload = reload
        self.metrics = metrics
        self.ready = ready
        self.run_now = run_now
        self.token = token or None  # an empty token would match an empty Authorization
        self.deployments = deployments
        self.watch = watch
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
            (re.compile(r"^/api/v1/deployments$"), {"POST": self.post_deployment}),
            (re.compile(r"^/-/reload$"), {"POST": self.post_reload}),
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
        self._with_query = (self.page_overview, self.page_check)

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
            if head.method not in ("GET", "HEAD"):
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

    def _check_json(self, name: str) -> dict[str, Any]:
        check = self.engine.check(name)
        last = self.engine.last_run(name)
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
            "series": [series_json(s) for s in self.engine.series(name)],
        }

    def list_checks(self) -> Response:
        return _json(200, {"checks": [self._check_json(c.name) for c in self.engine.config.checks]})

    def get_check(self, name: str) -> Response:
        return _json(200, self._check_json(name))

    def list_notifications(self) -> Response:
        """Messages not delivered yet and those given up, newest first."""
        entries = self.engine.store.outbox(["pending", "failed"], limit=NOTIFICATIONS_LISTED)
        return _json(200, {"notifications": [outbox_json(e) for e in entries]})

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
        if not REBASELINE_RANGE[0] <= since < REBASELINE_RANGE[1]:
            raise HttpError(400, "since: give a moment from 1970 to 2261")
        resolved = self.engine.rebaseline(name, since)
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
