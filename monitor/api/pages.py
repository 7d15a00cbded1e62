"""The read-only HTML pages: the overview (``/``), a check (``/checks/{name}``), the
deployments (``/deployments``, ``/deployments/{id}``) and their stylesheet. A page's errors are
pages too (an HTML 400 or 404), not JSON."""

from __future__ import annotations

from dataclasses import dataclass

from monitor.api.http import Response, html_response
from monitor.engine import Engine
from monitor.pages import render
from monitor.pages.collect import PageData
from monitor.pages.model import DeploymentPage, Filters


@dataclass(frozen=True)
class Pages:
    """The pages' resource: ``data`` gathers what a page shows, ``render`` draws it."""

    engine: Engine
    data: PageData

    def overview(self, query: dict[str, list[str]]) -> Response:
        try:
            filters = Filters.parse(query)
        except ValueError as exc:
            return html_response(400, render.error(400, f"bad query: {exc}"))
        return html_response(200, render.overview(self.data.overview(filters)))

    def check(self, name: str, query: dict[str, list[str]]) -> Response:
        unknown = sorted(set(query) - {"days"})
        days = query.get("days", [""])[-1]
        if unknown or (days and not days.isdigit()):
            problem = f"unknown parameter {unknown[0]!r}" if unknown else "days: expected a number"
            return html_response(400, render.error(400, f"bad query: {problem}"))
        try:
            page = self.data.check(name, int(days) if days else None)
        except ValueError as exc:
            return html_response(400, render.error(400, f"bad query: {exc}"))
        if page is None:
            return html_response(404, render.error(404, f"no check named {name!r}"))
        return html_response(200, render.check(page))

    def deployments(self) -> Response:
        return html_response(200, render.deployments(self.data.deployments()))

    def deployment(self, deployment_id: str) -> Response:
        deployment = self.data.deployment(deployment_id)
        if deployment is None:
            return html_response(
                404, render.error(404, f"no deployment with id {deployment_id!r}")
            )
        page = DeploymentPage(deployment, self.engine.clock())
        return html_response(200, render.deployment(page))

    def stylesheet(self) -> Response:
        return Response(
            200, render.STYLESHEET, "text/css; charset=utf-8", (("Cache-Control", "max-age=3600"),)
        )
