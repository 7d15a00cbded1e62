"""What every resource shares: the answer to a request, the error that becomes one, and reading
and validating a request's body."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TypeVar
from wsgiref.types import WSGIEnvironment

from pydantic import BaseModel, ValidationError

_M = TypeVar("_M", bound=BaseModel)

HTML = "text/html; charset=utf-8"


class HttpError(Exception):
    """A request refused: answered with ``status``, ``{"error": message}`` and ``headers``."""

    def __init__(
        self, status: int, message: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or []


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def json_response(status: int, payload: object) -> Response:
    return Response(status, json.dumps(payload, default=str).encode())


def html_response(status: int, body: bytes) -> Response:
    # a page shows the state of the moment: never served from a cache
    return Response(status, body, HTML, (("Cache-Control", "no-store"),))


def raw_body(environ: WSGIEnvironment) -> bytes:
    """The request's body, of the length its head gave (judged by ``Api.refusal``)."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    return environ["wsgi.input"].read(length) if length else b""


def no_body(body: object) -> None:
    """Refuse a body sent to a call that takes none."""
    if body not in (None, {}):
        raise HttpError(400, "this call takes no body")


def validate(model: type[_M], body: object) -> _M:
    """The body as ``model``; a 400 naming the first field that is wrong."""
    if not isinstance(body, dict):
        raise HttpError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise HttpError(400, f"{where}: {first['msg']}{more}") from None
