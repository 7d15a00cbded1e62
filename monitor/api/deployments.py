"""dbt deployments to watch, and their reports: ``/api/v1/deployments``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from monitor.api.http import HttpError, Response, json_response, validate
from monitor.deployments import Deployment, DeploymentRequest, summary
from monitor.errors import UnknownCheck
from monitor.watcher import DeploymentConflict, DeploymentWatcher


@dataclass(frozen=True)
class Deployments:
    """The deployments' resource: ``watcher`` records and keeps them, ``watch`` has the
    scheduler follow a recorded one."""

    watcher: DeploymentWatcher
    watch: Callable[[Deployment], None]

    def record(self, body: object) -> Response:
        request = validate(DeploymentRequest, body)
        try:
            deployment = self.watcher.record(request)
        except DeploymentConflict as exc:
            raise HttpError(409, str(exc)) from None
        except UnknownCheck as exc:  # a check the deployment names: the body is wrong, not the URL
            raise HttpError(400, str(exc)) from None
        self.watch(deployment)
        return json_response(201, summary(deployment))

    def show(self, deployment_id: str) -> Response:
        deployment = self.watcher.get(deployment_id)
        if deployment is None:
            raise HttpError(404, f"no deployment with id {deployment_id!r}")
        return json_response(200, summary(deployment))
