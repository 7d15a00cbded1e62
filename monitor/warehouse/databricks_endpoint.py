"""Where a Databricks SQL warehouse is and how to reach it: the settings from the config and
the ``DATABRICKS_*`` environment variables, and the connector's keyword arguments for sessions
and for the side channel that cancels their statements."""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from typing import Any

from monitor.config import DatabricksWarehouseConfig, split_server_hostname
from monitor.errors import WarehouseUnavailable
from monitor.warehouse.databricks_auth import OAuthClientCredentials


@dataclass(frozen=True)
class Endpoint:
    host: str | None
    port: int | None
    http_path: str | None
    token: str | None
    client_id: str | None
    client_secret: str | None
    connection_uri: str | None
    catalog: str | None
    schema: str | None
    ca_file: str | None

    @classmethod
    def from_config(cls, name: str, config: DatabricksWarehouseConfig) -> Endpoint:
        """Config fields, each falling back to its variable.

        :raises WarehouseUnavailable: a connection field or the credentials are missing, or
            ``DATABRICKS_HOST`` is malformed (the config's own fields were validated at load).
        """
        env = os.environ

        def secret(value: Any) -> str | None:
            return value.get_secret_value() if value is not None else None

        problems = []
        host = port = None
        raw_host = config.server_hostname or env.get("DATABRICKS_HOST") or None
        if raw_host:
            try:
                host, port = split_server_hostname(raw_host)
            except ValueError as exc:
                problems.append(f"server_hostname (or DATABRICKS_HOST) {exc}")
        client_secret = secret(config.client_secret) or env.get("DATABRICKS_CLIENT_SECRET")
        endpoint = cls(
            host=host,
            port=port,
            http_path=config.http_path or env.get("DATABRICKS_HTTP_PATH") or None,
            token=secret(config.access_token) or env.get("DATABRICKS_TOKEN") or None,
            client_id=config.client_id or env.get("DATABRICKS_CLIENT_ID") or None,
            client_secret=client_secret or None,
            connection_uri=config.connection_uri,
            catalog=config.catalog,
            schema=config.schema_,
            ca_file=config.tls_trusted_ca_file,
        )
        missing = []
        if not endpoint.connection_uri:
            if not raw_host:
                missing.append("server_hostname (or DATABRICKS_HOST)")
            if not endpoint.http_path:
                missing.append("http_path (or DATABRICKS_HTTP_PATH)")
        if not endpoint.token and not (endpoint.client_id and endpoint.client_secret):
            missing.append(
                "access_token (or DATABRICKS_TOKEN), or client_id and client_secret "
                "(or DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET)"
            )
        if missing:
            problems.insert(0, "missing " + "; ".join(missing))
        if problems:
            raise WarehouseUnavailable("not configured: " + "; ".join(problems), warehouse=name)
        return endpoint

    def credentials(self) -> OAuthClientCredentials | None:
        """The OAuth machine-to-machine credentials provider, when no token is given."""
        if self.token or not (self.client_id and self.client_secret):
            return None
        return OAuthClientCredentials(
            self._token_url(), self.client_id, self.client_secret, self.ca_file
        )

    def _token_url(self) -> str:
        if self.connection_uri:
            parts = urllib.parse.urlsplit(self.connection_uri)
            return f"{parts.scheme}://{parts.netloc}/oidc/v1/token"
        port = f":{self.port}" if self.port else ""
        return f"https://{self.host}{port}/oidc/v1/token"

    def transport_kwargs(self, socket_timeout: float) -> dict[str, Any]:
        """Connector settings of the HTTP transport, for sessions and the side channel alike."""
        kwargs: dict[str, Any] = {
            "_socket_timeout": socket_timeout,
            # The adapter retries on a new session with its own backoff and deadline, and honours
            # Retry-After. The connector's retry policy (urllib3-based, "v3") would re-send
            # ExecuteStatement after a socket read timeout, sleep at least 5 s before a 429/503
            # retry, and, when refused a retry, raise without the status or Retry-After. Without
            # it the connector sends each request once and reports the status, the Thrift call
            # and the Retry-After (as "bounded-retry-delay", bounded by these two delays) in the
            # error's context. tests/test_warehouse_databricks.py pins each of these.
            "_enable_v3_retries": False,
            "_retry_stop_after_attempts_count": 1,
            "_retry_delay_min": 0.1,
            "_retry_delay_max": 3600.0,
        }
        if self.port:
            kwargs["_port"] = self.port
        if self.connection_uri:
            kwargs["_connection_uri"] = self.connection_uri
        if self.ca_file:
            kwargs["_tls_trusted_ca_file"] = self.ca_file
        return kwargs

    def session_kwargs(
        self,
        statement_timeout: int,
        socket_timeout: float,
        credentials: OAuthClientCredentials | None,
    ) -> dict[str, Any]:
        """``databricks.sql.connect`` arguments for one session."""
        kwargs: dict[str, Any] = {
            "server_hostname": self.host or "localhost",
            "http_path": self.http_path or "",
            "session_configuration": {
                "STATEMENT_TIMEOUT": str(statement_timeout),
                "TIMEZONE": "UTC",
            },
            "enable_telemetry": False,
            "user_agent_entry": "kpi-monitor",
            "use_cloud_fetch": False,
            **self.transport_kwargs(socket_timeout),
        }
        if self.catalog:
            kwargs["catalog"] = self.catalog
        if self.schema:
            kwargs["schema"] = self.schema
        if credentials is not None:
            kwargs["credentials_provider"] = credentials
        else:
            kwargs["access_token"] = self.token
        return kwargs

    def side_channel(self, conn: Any, socket_timeout: float) -> Any:
        """A connector backend of its own next to the session ``conn`` (same host, auth and TLS),
        for CancelOperation and CloseSession: the session's own backend sends one request at a
        time, under a lock that a running call holds through each long poll (seconds on
        Databricks)."""
        from databricks.sql.backend.thrift_backend import ThriftDatabricksClient

        own = conn.session
        return ThriftDatabricksClient(
            server_hostname=own.host,
            port=own.port,
            http_path=own.http_path,
            http_headers=[("User-Agent", own.useragent_header)],
            auth_provider=own.auth_provider,
            ssl_options=own.ssl_options,
            http_client=own.http_client,
            **self.transport_kwargs(socket_timeout),
        )
