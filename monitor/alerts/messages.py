"""Alert messages as people read them: a one-line text and Slack Block Kit. Pure.

The one-line text serves Slack (``slack=True``: every value from data escaped for mrkdwn) and
plain channels (Alertmanager annotations, logs); Block Kit is Slack's only, always escaped. Only
``plain_text`` objects, which Slack shows as written, carry unescaped values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from monitor.alerts import mrkdwn
from monitor.alerts.notification import Notification
from monitor.deployments import Deployment

_EMOJI = {
    "critical": ":red_circle:",
    "warning": ":large_orange_circle:",
    "info": ":large_blue_circle:",
}


def number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if unit == "seconds":
        return duration(timedelta(seconds=value))
    if abs(value) >= 1000 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.2f}" if abs(value) >= 1 else f"{value:.3g}"


def duration(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    return f"{hours // 24}d{hours % 24}h"


def when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _plain(text: str) -> str:
    return text


def _markup(slack: bool) -> Callable[[str], str]:
    return mrkdwn.escape if slack else _plain


def series_name(note: Notification, *, slack: bool = False) -> str:
    esc = _markup(slack)
    return f"{esc(note.check)} [{esc(note.segment)}]" if note.segment else esc(note.check)


def deviation(note: Notification) -> str:
    pct = note.deviation_pct
    size = (
        f"{abs(pct):.0f}% {note.direction} expected"
        if pct is not None
        else f"{note.direction} expected"
    )
    return f"{size} ({note.score:+.1f} robust SD)"


def alert_text(note: Notification, *, slack: bool = False) -> str:
    """The one-line text: notification previews, logs, Alertmanager, clients without blocks."""
    esc = _markup(slack)
    name = series_name(note, slack=slack)
    if note.kind == "resolved":
        lasted = duration(note.bucket - note.since)
        if note.reason:
            return (
                f"Resolved: {name}: {esc(note.reason)}; "
                f"the deviation lasted {lasted} from {when(note.since)}."
            )
        return (
            f"Resolved: {name} is back within its band "
            f"({number(note.value, note.unit)}, expected {number(note.expected, note.unit)}); "
            f"the deviation lasted {lasted} from {when(note.since)}."
        )
    owner = ""
    if note.owner:
        owner = f" Owner {mrkdwn.owner(note.owner) if slack else note.owner}."
    cause = f" Likely cause: {esc(note.cause)}." if note.cause else ""
    cause = f" Where: {esc(note.explanation)}.{cause}" if note.explanation else cause
    if note.reason:  # a fixed bound broken: the rule, not the model's deviation, is the news
        return (
            f"{note.severity.upper()}: {name} is {esc(note.reason)}: "
            f"{number(note.value, note.unit)} (expected {number(note.expected, note.unit)}), "
            f"since {when(note.since)}.{owner}{cause}"
        )
    return (
        f"{note.severity.upper()}: {name} is {deviation(note)}: "
        f"{number(note.value, note.unit)} vs {number(note.expected, note.unit)} expected "
        f"(band {number(note.lower, note.unit)} to {number(note.upper, note.unit)}), "
        f"since {when(note.since)}.{owner}{cause}"
    )


def _section(text: str) -> dict[str, Any]:
    # verbatim: Slack turns no bare channel name or URL in our text into a link of its own
    return {"type": "section", "text": _mrkdwn(text[:3000])}


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": text[:150]}}


def alert_blocks(note: Notification) -> list[dict[str, Any]]:
    """Block Kit for an opened episode."""
    emoji = _EMOJI.get(note.severity, ":red_circle:")
    fields = [
        ("Value", number(note.value, note.unit)),
        ("Expected", number(note.expected, note.unit)),
        ("Normal band", f"{number(note.lower, note.unit)} to {number(note.upper, note.unit)}"),
        ("Deviation", deviation(note)),
        ("Since", when(note.since)),
        ("Severity", note.severity),
    ]
    if note.owner:
        fields.append(("Owner", mrkdwn.owner(note.owner)))
    if note.team:
        fields.append(("Team", mrkdwn.escape(note.team)))
    if note.explanation:
        fields.append(("Where", mrkdwn.escape(note.explanation)))
    if note.cause:
        fields.append(("Likely cause", mrkdwn.escape(note.cause)))
    return [
        _header(f"{series_name(note)} moved unexpectedly"),
        _section(f"{emoji} {alert_text(note, slack=True)}"),
        {"type": "section", "fields": [_mrkdwn(f"*{k}*\n{v}"[:2000]) for k, v in fields]},
        {
            "type": "context",
            "elements": [
                _mrkdwn(
                    f"check `{mrkdwn.escape(note.check)}` · episode {note.episode}"
                    f" · bucket {when(note.bucket)}{link_line(note)}"
                )
            ],
        },
    ]


def link_line(note: Notification) -> str:
    return "".join(
        f" · {mrkdwn.link(url, name.capitalize())}" for name, url in sorted(note.links.items())
    )


def ranked(notes: list[Notification]) -> list[Notification]:
    """One incident's series as on-call reads them: each check's total first, then its
    segments by their impact on it (the size of their deviation), largest first."""
    first_seen = {n.check: i for i, n in reversed(list(enumerate(notes)))}

    def impact(note: Notification) -> float:
        return abs(note.value - note.expected) if note.expected is not None else 0.0

    return sorted(notes, key=lambda n: (first_seen[n.check], n.segment != "", -impact(n)))


def explanations(notes: list[Notification]) -> list[str]:
    """Each check's drill-down once, in the order its series are listed."""
    seen: dict[str, str] = {}
    for note in notes:
        if note.explanation and note.check not in seen:
            seen[note.check] = note.explanation
    return list(seen.values())


def group_text(notes: list[Notification]) -> str:
    """One message for several series that opened together (one team or table), for Slack."""
    notes = ranked(notes)
    lines = [group_title(notes, slack=True)]
    lines += [f"Where: {mrkdwn.escape(text)}." for text in explanations(notes)]
    lines += [f"• {alert_text(replace(n, explanation=''), slack=True)}" for n in notes]
    return "\n".join(lines)


def group_title(notes: list[Notification], *, slack: bool = False) -> str:
    first = notes[0]
    topic = f"team {first.team}" if first.team else (first.table or first.check)
    return f"{len(notes)} series of {_markup(slack)(topic)} moved unexpectedly:"


def group_blocks(notes: list[Notification]) -> list[dict[str, Any]]:
    notes = ranked(notes)
    blocks: list[dict[str, Any]] = [_header(group_title(notes))]
    blocks += [_section(f"*Where:* {mrkdwn.escape(text)}.") for text in explanations(notes)[:3]]
    # Slack caps a section at 3000 characters and a message at 50 blocks
    blocks += [_section(f"• {alert_text(replace(n, explanation=''), slack=True)}")
               for n in notes[:42]]  # fmt: skip
    if len(notes) > 42:
        blocks.append({"type": "context", "elements": [_mrkdwn(f"and {len(notes) - 42} more")]})
    return blocks


def summary_text(groups: list[list[Notification]]) -> str:
    """One message instead of many when a run opens more alerts than a channel should take."""
    total = sum(len(g) for g in groups)
    lines = [f"{total} alerts opened at once; listed here instead of {len(groups)} messages:"]
    for notes in groups:
        for n in notes:
            lines.append(
                f"• {n.severity.upper()} {series_name(n, slack=True)}: {deviation(n)}"
                f" since {when(n.since)}"
            )
    return "\n".join(lines)


def resolved_text(opened: Notification) -> str:
    """The text that replaces the original alert once its episode resolved."""
    return f"Resolved: {alert_text(opened, slack=True)}"


def resolved_blocks(opened: Notification, resolved: Notification) -> list[dict[str, Any]]:
    """Block Kit that replaces the original alert once its episode resolved."""
    lasted = duration(resolved.bucket - resolved.since)
    return [
        _section(
            f":white_check_mark: *Resolved* after {lasted}: ~{series_name(opened, slack=True)}~ "
            f"was {deviation(opened)} from {when(opened.since)}."
        ),
        {"type": "context", "elements": [_mrkdwn(alert_text(resolved, slack=True))]},
    ]


def deployment_text(deployment: Deployment) -> str:
    """One line for Slack: the verdict, why, and what was watched."""
    esc = mrkdwn.escape
    verdict = {"passed": "PASSED", "failed": "FAILED"}.get(deployment.status, "WATCHING")
    commit = f" (commit {esc(deployment.commit[:12])})" if deployment.commit else ""
    watched = ", ".join(esc(c.name) for c in deployment.checks) or "no check"
    return (
        f"Deployment {esc(deployment.id)} to {esc(deployment.environment)}{commit} {verdict}: "
        f"{esc(deployment.reason)}. Watched: {watched}."
    )


def deployment_blocks(deployment: Deployment) -> list[dict[str, Any]]:
    esc = mrkdwn.escape
    emoji = {"passed": ":white_check_mark:", "failed": ":x:"}.get(deployment.status, ":eyes:")
    lines = [f"{emoji} {deployment_text(deployment)}"]
    for d in deployment.deviations:
        where = f"{esc(d.check)} [{esc(d.segment)}]" if d.segment else esc(d.check)
        tag = " (intended)" if d.intended else ""
        lines.append(
            f"• {where}{tag}: {number(d.value)} vs {number(d.expected)} expected "
            f"({d.score:+.1f} robust SD) since {when(d.since)}"
        )
    for change in deployment.schema_changes:
        parts = []
        if change.removed:
            parts.append(f"removed {esc(', '.join(change.removed))}")
        if change.retyped:
            parts.append(esc(", ".join(f"{c} {b} -> {a}" for c, b, a in change.retyped)))
        if change.added:
            parts.append(f"added {esc(', '.join(change.added))}")
        broken = (
            f" (breaks {esc(', '.join(change.broken_checks))})" if change.broken_checks else ""
        )
        lines.append(f"• schema of {esc(change.table)}: {'; '.join(parts)}{broken}")
    blocks: list[dict[str, Any]] = [_section("\n".join(lines))]
    if deployment.url:
        blocks.append(
            {"type": "context", "elements": [_mrkdwn(mrkdwn.link(deployment.url, "change"))]}
        )
    return blocks
