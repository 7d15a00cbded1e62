"""Links in alerts (dashboard, runbook) built from the config's templates. Pure."""

from __future__ import annotations

from urllib.parse import quote


def render_link(template: str | None, check: str, segment: str) -> str | None:
    """Fill ``{check}`` and ``{segment}`` into ``template``; None when there is no template.

    Both values are percent-encoded (a segment such as ``EU/DE & AT`` must stay one query value).
    Only these two placeholders are replaced, not ``str.format`` fields, so templates may carry
    other braces, as Grafana URLs with JSON in their query do.
    """
    if not template:
        return None
    return template.replace("{check}", quote(check, safe="")).replace(
        "{segment}", quote(segment, safe="")
    )
