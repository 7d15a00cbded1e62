"""OAuth machine-to-machine (client credentials) for Databricks service principals."""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

# Seconds the token request may take.
TOKEN_TIMEOUT_SECONDS = 60.0


class OAuthClientCredentials:
    """A connector ``credentials_provider`` for a service principal's OAuth M2M secret.

    Exchanges the client id and secret for an access token at ``<workspace>/oidc/v1/token``
    (scope ``all-apis``), caches it and gets a new one a minute before it expires.
    """

    def __init__(
        self, token_url: str, client_id: str, client_secret: str, ca_file: str | None = None
    ) -> None:
        self.token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._ca_file = ca_file
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def auth_type(self) -> str:
        return "oauth-m2m"

    def __call__(self, *args: object, **kwargs: object) -> Callable[[], dict[str, str]]:
        return self.headers

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def token(self) -> str:
        with self._lock:
            if self._token is None or time.monotonic() >= self._expires:
                self._token, lifetime = self._fetch()
                self._expires = time.monotonic() + max(lifetime - 60.0, lifetime / 2)
            return self._token

    def _fetch(self) -> tuple[str, float]:
        body = urllib.parse.urlencode({"grant_type": "client_credentials", "scope": "all-apis"})
        basic = base64.b64encode(f"{self._client_id}:{self._client_secret}".encode()).decode()
        request = urllib.request.Request(  # noqa: S310 - the URL is the configured workspace
            self.token_url,
            data=body.encode(),
            headers={
                "Authorization": f"Basic {basic}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
            method="POST",
        )
        context = None
        if self.token_url.startswith("https:"):
            context = ssl.create_default_context(cafile=self._ca_file)
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=TOKEN_TIMEOUT_SECONDS, context=context
            ) as response:
                payload = json.loads(response.read().decode())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:200]
            raise OAuthError(
                f"OAuth token request refused (HTTP {exc.code}): {detail}", refused=exc.code < 500
            ) from None
        except (OSError, ValueError) as exc:
            raise OAuthError(f"OAuth token request failed: {exc}", refused=False) from None
        token = payload.get("access_token")
        if not isinstance(token, str) or not token:
            raise OAuthError("OAuth token response has no access_token", refused=True)
        return token, float(payload.get("expires_in") or 3600)


class OAuthError(Exception):
    """The OAuth token endpoint refused the client credentials (``refused``), or could not be
    reached or failed."""

    def __init__(self, message: str, *, refused: bool) -> None:
        super().__init__(message)
        self.refused = refused
