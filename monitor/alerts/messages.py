"""Alert messages as people read them: a one-line text and Slack Block Kit. Pure."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

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


def series_name(note: Notification) -> str:
    return f"{note.check} [{note.segment}]" if note.segment else note.check


def deviation(note: Notification) -> str:
    pct = note.deviation_pct
    size = (
        f"{abs(pct):.0f}% {note.direction} expected"
        if pct is not None
        else f"{note.direction} expected"
    )
    return f"{size} ({note.score:+.1f} robust SD)"


def alert_text(note: Notification) -> str:
    """The plain-text line: notification previews, logs, and clients without blocks."""
    if note.kind == "resolved":
        lasted = duration(note.bucket - note.since)
        if note.reason:
            return (
                f"Resolved: {series_name(note)}: {note.reason}; "
                f"the deviation lasted {lasted} from {when(note.since)}."
            )
        return (
            f"Resolved: {series_name(note)} is back within its band "
            f"({number(note.value, note.unit)}, expected {number(note.expected, note.unit)}); "
            f"the deviation lasted {lasted} from {when(note.since)}."
        )
    owner = f" Owner {note.owner}." if note.owner else ""
    cause = f" Likely cause: {note.cause}." if note.cause else ""
    if note.reason:  # a fixed bound broken: the rule, not the model's deviation, is the news
        return (
            f"{note.severity.upper()}: {series_name(note)} is {note.reason}: "
            f"{number(note.value, note.unit)} (expected {number(note.expected, note.unit)}), "
            f"since {when(note.since)}.{owner}{cause}"
        )
    return (
        f"{note.severity.upper()}: {series_name(note)} is {deviation(note)}: "
        f"{number(note.value, note.unit)} vs {number(note.expected, note.unit)} expected "
        f"(band {number(note.lower, note.unit)} to {number(note.upper, note.unit)}), "
        f"since {when(note.since)}.{owner}{cause}"
    )


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
        fields.append(("Owner", note.owner))
    if note.team:
        fields.append(("Team", note.team))
    if note.cause:
        fields.append(("Likely cause", note.cause))
    return [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": f"{series_name(note)} moved unexpectedly"[:150]},
        },
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"{emoji} {alert_text(note)}"[:3000]},
        },
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in fields],
        },
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": (
                        f"check `{note.check}` · episode {note.episode}"
                        f" · bucket {when(note.bucket)}{link_line(note)}"
                    ),
                }
            ],
        },
    ]


def link_line(note: Notification) -> str:
    return "".join(f" · <{url}|{name.capitalize()}>" for name, url in sorted(note.links.items()))


def group_text(notes: list[Notification]) -> str:
    """One message for several series that opened together (one team or table)."""
    first = notes[0]
    topic = f"team {first.team}" if first.team else (first.table or first.check)
    lines = [f"{len(notes)} series of {topic} moved unexpectedly:"]
    lines += [f"• {alert_text(n)}" for n in notes]
    return "\n".join(lines)


def group_blocks(notes: list[Notification]) -> list[dict[str, Any]]:
    text = group_text(notes)
    header, *rest = text.split("\n")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header[:150]}}
    ]
    # Slack caps a section at 3000 characters and a message at 50 blocks
    for line in rest[:45]:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": line[:3000]}})
    if len(rest) > 45:
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"and {len(rest) - 45} more"}],
            }
        )
    return blocks


def summary_text(groups: list[list[Notification]]) -> str:
    """One message instead of many when a run opens more alerts than a channel should take."""
    total = sum(len(g) for g in groups)
    lines = [f"{total} alerts opened at once; listed here instead of {len(groups)} messages:"]
    for notes in groups:
        for n in notes:
            lines.append(
                f"• {n.severity.upper()} {series_name(n)}: {deviation(n)} since {when(n.since)}"
            )
    return "\n".join(lines)


def resolved_blocks(opened: Notification, resolved: Notification) -> list[dict[str, Any]]:
    """Block Kit that replaces the original alert once its episode resolved."""
    lasted = duration(resolved.bucket - resolved.since)
    return [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": (
                    f":white_check_mark: *Resolved* after {lasted}: ~{series_name(opened)}~ "
                    f"was {deviation(opened)} from {when(opened.since)}."
                ),
            },
        },
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": alert_text(resolved)}],
        },
    ]


def deployment_text(deployment: Deployment) -> str:
    """One line: the verdict, why, and what was watched."""
    verdict = {"passed": "PASSED", "failed": "FAILED"}.get(deployment.status, "WATCHING")
    commit = f" (commit {deployment.commit[:12]})" if deployment.commit else ""
    watched = ", ".join(c.name for c in deployment.checks) or "no check"
    return (
        f"Deployment {deployment.id} to {deployment.environment}{commit} {verdict}: "
        f"{deployment.reason}. Watched: {watched}."
    )


def deployment_blocks(deployment: Deployment) -> list[dict[str, Any]]:
    emoji = {"passed": ":white_check_mark:", "failed": ":x:"}.get(deployment.status, ":eyes:")
    lines = [f"{emoji} {deployment_text(deployment)}"]
    for d in deployment.deviations:
        where = f"{d.check} [{d.segment}]" if d.segment else d.check
        tag = " (intended)" if d.intended else ""
        lines.append(
            f"• {where}{tag}: {number(d.value)} vs {number(d.expected)} expected "
            f"({d.score:+.1f} robust SD) since {when(d.since)}"
        )
    for change in deployment.schema_changes:
        parts = []
        if change.removed:
            parts.append(f"removed {', '.join(change.removed)}")
        if change.retyped:
            parts.append(", ".join(f"{c} {b} -> {a}" for c, b, a in change.retyped))
        if change.added:
            parts.append(f"added {', '.join(change.added)}")
        broken = f" (breaks {', '.join(change.broken_checks)})" if change.broken_checks else ""
        lines.append(f"• schema of {change.table}: {'; '.join(parts)}{broken}")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:3000]}}
    ]
    if deployment.url:
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"<{deployment.url}|change>"}],
            }
        )
    return blocks
