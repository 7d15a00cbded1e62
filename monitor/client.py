"""A small client of a running daemon's API, for CI pipelines (``kpi-monitor deployment``)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from monitor.errors import KpiMonitorError


class ApiError(KpiMonitorError):
    """The daemon answered with an error, or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def token_from_env() -> str | None:
    """``KPIMON_API_TOKEN``, or the contents of the file ``KPIMON_API_TOKEN_FILE`` names."""
    token = os.environ.get("KPIMON_API_TOKEN")
    if token:
        return token.strip()
    path = os.environ.get("KPIMON_API_TOKEN_FILE")
    if path:
        try:
            return Path(path).read_text().strip() or None
        except OSError as exc:
            raise KpiMonitorError(
                f"cannot read KPIMON_API_TOKEN_FILE {path}: {exc.strerror}"
            ) from None
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
