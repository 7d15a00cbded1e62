"""Pages as HTML: Jinja2 templates with autoescaping on, so every value (segment names come
from the warehouse) is text, never markup. Pure: page data in, bytes out."""

from __future__ import annotations

from datetime import datetime, timedelta
from importlib.resources import files
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from monitor import __version__
from monitor.alerts.messages import duration, number, when
from monitor.pages.collect import deployment_href
from monitor.pages.model import (
    SEVERITIES,
    STATE_LABELS,
    STATES,
    CheckPage,
    DeploymentList,
    DeploymentPage,
    Overview,
)
from monitor.pages.svg import chart, sparkline

STYLESHEET = files("monitor.pages").joinpath("static/page.css").read_bytes()

_env = Environment(
    loader=PackageLoader("monitor.pages", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.globals.update(
    version=__version__,
    states=STATES,
    state_labels=STATE_LABELS,
    severities=SEVERITIES,
    sparkline=sparkline,
    chart=chart,
    deployment_href=deployment_href,
    number=number,
)


def _when(moment: datetime | None) -> str:
    return when(moment) if moment is not None else "never"


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return ""
    delta = now - moment
    if delta < timedelta(0):
        return "in " + duration(-delta)
    return "just now" if delta < timedelta(minutes=1) else duration(delta) + " ago"


def _segment(segment: str) -> str:
    return segment if segment else "total"


def _http_url(url: str) -> bool:
    """Only web links become links (no javascript: or data: from a config or an API call)."""
    return url.lower().startswith(("https://", "http://"))


_env.filters.update(when=_when, segment=_segment, http_url=_http_url)
_env.globals.update(ago=_ago)


def _render(template: str, **context: Any) -> bytes:
    return _env.get_template(template).render(**context).encode()


def overview(page: Overview) -> bytes:
    return _render("overview.html", page=page, now=page.now)


def check(page: CheckPage) -> bytes:
    return _render("check.html", page=page, now=page.now)


def deployments(page: DeploymentList) -> bytes:
    return _render("deployments.html", page=page, now=page.now)


def deployment(page: DeploymentPage) -> bytes:
    return _render("deployment.html", page=page, d=page.deployment, now=page.now)


def error(status: int, message: str) -> bytes:
    return _render("error.html", status=status, message=message)
