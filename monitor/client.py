"""A small client of a running daemon's API, for CI pipelines (``kpi-monitor deployment``)."""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from monitor.errors import KpiMonitorError

log = logging.getLogger("monitor.client")


class ApiError(KpiMonitorError):
    """The daemon answered with an error, or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def token_from_env() -> str | None:
    """``KPIMON_API_TOKEN``, else the contents of the file ``KPIMON_API_TOKEN_FILE`` names.

    Surrounding whitespace is not part of a token (a secret made from a file ends with a
    newline), and a token that is empty without it is no token at all: a blank variable or file
    never becomes a token that an empty ``Authorization: Bearer`` would match. A blank one is
    logged as a warning, so a misconfigured secret is seen at start.
    """
    variable = os.environ.get("KPIMON_API_TOKEN")
    if variable is not None and variable.strip():
        return variable.strip()
    path = os.environ.get("KPIMON_API_TOKEN_FILE")
    if path:
        try:
            token = Path(path).read_text().strip()
        except OSError as exc:
            raise KpiMonitorError(
                f"cannot read KPIMON_API_TOKEN_FILE {path}: {exc.strerror}"
            ) from None
        if token:
            return token
        log.warning(
            "KPIMON_API_TOKEN_FILE names an empty file: no API token, write calls are refused",
            extra={"fields": {"path": path}},
        )
    if variable is not None:
        log.warning("KPIMON_API_TOKEN is blank: no API token, write calls are refused")
    return None


class DaemonClient:
    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ApiError(f"--url must start with http:// or https:// (got {url!r})")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, body: object = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return dict(json.loads(response.read() or b"{}"))
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                message = exc.reason
            raise ApiError(f"{method} {path}: {exc.code} {message}", exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise ApiError(f"cannot reach the daemon at {self.url}: {reason}") from None
