"""The Slack side of the outbox: one delivery round, one step of a delivery at a time.

A delivery is a chain of steps, each an outbox entry of its own, recorded on its own and never
repeated once Slack accepted it: the alert (alone, grouped with alerts of the same team or table
that opened within ``slack.group_wait``, or listed in a channel's storm summary), then its chart
in the alert's thread; the resolution's reply in that thread, then the edit of the alert that
says it resolved; a deployment report. The next step is queued in the transaction that records
the step before it, and a resolution waits while its alert is still pending.

Refusals stay with their message: a refusal no retry can change (an archived channel, a missing
scope, a chart that cannot be drawn) records that entry as failed with Slack's reason and the
round goes on; a passing failure (5xx, timeout, rate limit, a refused token) schedules that entry
again with backoff (``retry.py``) and ends the round, since Slack itself is unwell. Anything else
a step raises fails that entry alone: nothing one message holds can stall the outbox.

Exactly once: before a post that cannot be repeated safely, the entry records a fresh marker
(``begin_attempt``) that the post carries in its metadata. When Slack's answer is lost (timeout,
dropped connection, 5xx) or could not be recorded (the state store failed, the process died),
the entry keeps the marker, and its next attempt first looks the marker up in the channel's
history (or the thread's replies; a chart by its title): found, it is recorded as delivered
without posting again.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, cast

import pandas as pd

from monitor.alerts.buttons import (
    MAX_ANSWERABLE,
    alert_with_buttons,
    answered_text,
    group_with_buttons,
    ref,
    settled_blocks,
)
from monitor.alerts.charts import render_chart
from monitor.alerts.messages import (
    alert_blocks,
    alert_text,
    deployment_blocks,
    deployment_text,
    group_blocks,
    group_text,
    resolved_text,
    series_name,
    summary_text,
)
from monitor.alerts.notification import Notification, event_key
from monitor.alerts.retry import next_attempt
from monitor.alerts.routing import channel_for, group_key
from monitor.alerts.slack import DeliveryError, SlackChannel, SlackRef
from monitor.answers.model import Feedback
from monitor.calendar.days import Kind, Span
from monitor.config import Config
from monitor.deployments import Deployment
from monitor.errors import StateStoreError
from monitor.exporter import Metrics
from monitor.records.outbox import FollowUp, OutboxEntry
from monitor.store import StateStore

log = logging.getLogger("monitor.alerts")

PAGE = 500  # entries read from the outbox at a time
CHARTS_PER_GROUP = 5
# How far before an attempt in doubt its message is looked for: Slack stamps messages with its
# own clock, which may run behind ours.
LOOKUP_MARGIN = timedelta(minutes=5)

Send = Callable[[str | None], SlackRef]  # posts, given the marker to carry
Find = Callable[[str, datetime], SlackRef | None]  # finds a post by marker, since a time


@dataclass(frozen=True)
class _Step:
    """One Slack call on behalf of ``entries``."""

    entries: list[OutboxEntry]
    what: str  # for the log
    send: Send
    find: Find | None  # None: the call can be repeated safely, nothing to look up
    then: Callable[[SlackRef], list[FollowUp]] = lambda _: []


class _RoundOver(Exception):
    """Slack is unwell (a passing failure): the rest of the round waits for the next one."""


class SlackOutbox:
    def __init__(
        self,
        config: Config,
        store: StateStore,
        metrics: Metrics,
        slack: SlackChannel,
        clock: Callable[[], datetime],
        may_send: Callable[[], bool] = lambda: True,
    ) -> None:
        assert config.slack is not None
        self.may_send = may_send
        self.config = config
        self.slack_config = config.slack
        self.store = store
        self.metrics = metrics
        self.slack = slack
        self.clock = clock

    def deliver(self) -> int:
        """One round over the due entries; returns how many were delivered.

        Raises StateStoreError when the outbox cannot be read or written.
        """
        now = self.clock()
        delivered, after = 0, 0
        try:
            while page := self.store.outbox.pending("slack", PAGE, due=now, after=after):
                # follow-up steps get higher ids: later pages of this same round take them
                after = page[-1].id
                for entries, build in self._plan(page, now):
                    delivered += self._run(entries, build, now)
        except _RoundOver:
            pass
        return delivered

    # --- planning ----------------------------------------------------------------------------

    def _plan(
        self, page: list[OutboxEntry], now: datetime
    ) -> list[tuple[list[OutboxEntry], Callable[[], _Step | None]]]:
        """The steps for a page: opened alerts first (grouped), then the rest in queue order.
        Each step is built just before it runs, so a resolution sees its alert delivered by an
        earlier step of the same round."""
        opened: list[tuple[OutboxEntry, Notification]] = []
        rest: list[tuple[list[OutboxEntry], Callable[[], _Step | None]]] = []
        for entry in page:
            if entry.kind != "alert":
                rest.append(([entry], self._builder(entry)))
                continue
            try:
                note = entry.notification
            except Exception as exc:  # a corrupt payload fails that entry only
                self._broken([entry], exc)
                continue
            if note.kind == "opened":
                opened.append((entry, note))
            else:
                rest.append(([entry], partial(self._resolution, entry, note)))
        return [*self._opened(opened, now), *rest]

    def _builder(self, entry: OutboxEntry) -> Callable[[], _Step | None]:
        steps = {
            "chart": self._chart,
            "update": self._update,
            "deployment": self._deployment,
            "answer": self._answer,
            "answer_update": self._answer_update,
        }
        make = steps.get(entry.kind)
        if make is None:
            return lambda: _unknown(entry)
        return lambda: make(entry)

    def _opened(
        self, found: list[tuple[OutboxEntry, Notification]], now: datetime
    ) -> list[tuple[list[OutboxEntry], Callable[[], _Step | None]]]:
        """Alerts in doubt are retried as the message they were; the others, once past
        ``group_wait``, are grouped per channel and team (or table), and a channel about to get
        more than ``max_messages`` messages gets one summary."""
        steps: list[tuple[list[OutboxEntry], Callable[[], _Step | None]]] = []
        doubtful: dict[str, list[tuple[OutboxEntry, Notification]]] = defaultdict(list)
        groups: dict[tuple[str, str], list[tuple[OutboxEntry, Notification]]] = defaultdict(list)
        cutoff = now - self.slack_config.group_wait
        for entry, note in found:
            if entry.in_doubt is not None:
                doubtful[entry.in_doubt].append((entry, note))
            elif entry.created_at <= cutoff:
                groups[group_key(note, channel_for(note, self.config))].append((entry, note))
        for members in doubtful.values():
            channel = channel_for(members[0][1], self.config)
            steps.append(self._message(members, channel, summary=False))
        by_channel: dict[str, list[list[tuple[OutboxEntry, Notification]]]] = defaultdict(list)
        for (channel, _), members in groups.items():
            by_channel[channel].append(members)
        for channel, channel_groups in by_channel.items():
            if len(channel_groups) > self.slack_config.max_messages:
                everyone = [m for g in channel_groups for m in g]
                steps.append(self._message(everyone, channel, summary=True, groups=channel_groups))
            else:
                steps += [self._message(m, channel, summary=False) for m in channel_groups]
        return steps

    def _message(
        self,
        members: list[tuple[OutboxEntry, Notification]],
        channel: str,
        *,
        summary: bool,
        groups: list[list[tuple[OutboxEntry, Notification]]] | None = None,
    ) -> tuple[list[OutboxEntry], Callable[[], _Step | None]]:
        entries = [e for e, _ in members]
        notes = [n for _, n in members]

        def build() -> _Step:
            blocks: list[dict[str, Any]] | None
            if summary:
                text, blocks = summary_text([[n for _, n in g] for g in groups or []]), None
            elif len(notes) == 1:
                text, blocks = alert_text(notes[0], slack=True), alert_blocks(notes[0])
                if self.slack_config.answers:
                    blocks = alert_with_buttons(notes[0])
            else:
                text, blocks = group_text(notes), group_blocks(notes)
                if self.slack_config.answers and len(notes) <= MAX_ANSWERABLE:
                    blocks = group_with_buttons(notes)
            grouped = len(notes) > 1

            def send(marker: str | None) -> SlackRef:
                posted = self.slack.post(channel, text, blocks, marker=marker)
                return replace(posted, grouped=grouped)

            def find(marker: str, oldest: datetime) -> SlackRef | None:
                posted = self.slack.find_message(channel, marker, oldest)
                return None if posted is None else replace(posted, grouped=grouped)

            def charts(thread: SlackRef) -> list[FollowUp]:
                charted = [n for n in notes if n.history][:CHARTS_PER_GROUP]
                return [
                    FollowUp(
                        f"{n.key}/chart",
                        "chart",
                        json.dumps({"thread": str(thread), "notification": n.to_json()}),
                    )
                    for n in charted
                ]

            what = "alert " + ", ".join(series_name(n) for n in notes)
            return _Step(entries, what, send, find, charts)

        return entries, build

    def _resolution(self, entry: OutboxEntry, note: Notification) -> _Step | None:
        """The reply in the alert's thread (or a message of its own when the alert has none),
        then the edit of the alert; None while the alert itself waits for delivery."""
        opened_key = event_key(note.check, note.segment, note.episode, "opened")
        status = self.store.outbox.status(opened_key, "slack")
        if status == "pending":
            return None
        remote = self.store.outbox.remote_id(opened_key, "slack")
        thread = SlackRef.parse(remote) if remote else None
        opened = self.store.outbox.notification(opened_key, "slack")
        channel = channel_for(note, self.config)
        text = alert_text(note, slack=True)

        def send(marker: str | None) -> SlackRef:
            return self.slack.post(channel, text, thread=thread, marker=marker)

        def find(marker: str, oldest: datetime) -> SlackRef | None:
            return self.slack.find_message(channel, marker, oldest, thread=thread)

        def edit(_: SlackRef) -> list[FollowUp]:
            if thread is None or opened is None:
                return []
            if thread.grouped:
                if not self.slack_config.answers:
                    return []
                # the group's message loses this alert's buttons: rebuilt as it stands
                payload = {"thread": str(thread), "opened": opened.to_json()}
                return [FollowUp(f"{note.key}/update", "answer_update", json.dumps(payload))]
            payload = {
                "thread": str(thread), "opened": opened.to_json(), "resolved": note.to_json()
            }
            return [FollowUp(f"{note.key}/update", "update", json.dumps(payload))]

        return _Step([entry], f"resolution {series_name(note)}", send, find, edit)

    def _update(self, entry: OutboxEntry) -> _Step:
        data = json.loads(entry.payload)
        thread = SlackRef.parse(data["thread"])
        opened = Notification.from_json(data["opened"])
        resolved = Notification.from_json(data["resolved"])

        def send(_: str | None) -> SlackRef:
            # an answer given meanwhile stays on the message (its own edit may have come first)
            answered = self.store.answers.get(ref(opened))
            blocks = settled_blocks(opened, resolved, answered)
            self.slack.update(thread, resolved_text(opened), blocks)
            return thread

        return _Step([entry], f"edit of the alert {series_name(opened)}", send, None)

    def _answer(self, entry: OutboxEntry) -> _Step:
        """The reply in the alert's thread saying who answered what; then the edit of the
        alert that replaces its buttons."""
        data = json.loads(entry.payload)
        thread = SlackRef.parse(data["thread"])
        feedback = Feedback.from_json(data["feedback"])
        opened = Notification.from_json(data["opened"])
        text = answered_text(feedback, opened)

        def send(marker: str | None) -> SlackRef:
            return self.slack.post(thread.channel, text, thread=thread, marker=marker)

        def find(marker: str, oldest: datetime) -> SlackRef | None:
            return self.slack.find_message(thread.channel, marker, oldest, thread=thread)

        def edit(_: SlackRef) -> list[FollowUp]:
            key = entry.key.removesuffix("/answer") + "/answer_update"
            return [FollowUp(key, "answer_update", entry.payload)]

        return _Step([entry], f"answer to {series_name(opened)}", send, find, edit)

    def _answer_update(self, entry: OutboxEntry) -> _Step:
        """The alert's message as it stands now: without buttons where answered, resolved if
        it resolved (read at the time of the edit, so the last edit is always the whole truth)."""
        data = json.loads(entry.payload)
        thread = SlackRef.parse(data["thread"])
        opened = Notification.from_json(data["opened"])

        def send(_: str | None) -> SlackRef:
            if thread.grouped:
                notes = self.store.outbox.opened_posted_as(str(thread))
                answers = {
                    a.ref: a
                    for check in {n.check for n in notes}
                    for a in self.store.answers.of_episodes(
                        check, [(n.segment, n.episode) for n in notes if n.check == check]
                    )
                }
                resolutions = (
                    (n, event_key(n.check, n.segment, n.episode, "resolved")) for n in notes
                )
                ended = {
                    ref(n): r
                    for n, key in resolutions
                    if (r := self.store.outbox.notification(key, "slack")) is not None
                }
                blocks = group_with_buttons(notes, answers, ended)
                self.slack.update(thread, group_text(notes), blocks)
                return thread
            key = event_key(opened.check, opened.segment, opened.episode, "resolved")
            resolved = self.store.outbox.notification(key, "slack")
            answered = self.store.answers.get(ref(opened))
            text = resolved_text(opened) if resolved is not None else alert_text(opened, slack=True)
            self.slack.update(thread, text, settled_blocks(opened, resolved, answered))
            return thread

        return _Step([entry], f"edit of the answered alert {series_name(opened)}", send, None)

    def _chart(self, entry: OutboxEntry) -> _Step:
        data = json.loads(entry.payload)
        thread = SlackRef.parse(data["thread"])
        note = Notification.from_json(data["notification"])
        title = f"{series_name(note)} {note.since:%Y-%m-%d %H:%M}"

        def send(_: str | None) -> SlackRef:
            try:
                png = render_chart(
                    _history(note), title=series_name(note), unit=note.unit, spans=_spans(note),
                    beside=_beside(note),
                )
            except Exception as exc:
                raise DeliveryError(
                    f"chart could not be drawn: {type(exc).__name__}: {exc}", permanent=True
                ) from None
            self.slack.upload_chart(thread, png, title)
            return thread

        def find(_: str, oldest: datetime) -> SlackRef | None:
            return thread if self.slack.find_file(thread, title, oldest) else None

        return _Step([entry], f"chart of {series_name(note)}", send, find)

    def _deployment(self, entry: OutboxEntry) -> _Step:
        deployment = Deployment.from_json(entry.payload)
        channel = self.slack_config.channel

        def send(marker: str | None) -> SlackRef:
            return self.slack.post(
                channel, deployment_text(deployment), deployment_blocks(deployment), marker=marker
            )

        def find(marker: str, oldest: datetime) -> SlackRef | None:
            return self.slack.find_message(channel, marker, oldest)

        return _Step([entry], f"deployment report {deployment.id}", send, find)

    # --- running a step ----------------------------------------------------------------------

    def _run(
        self, entries: list[OutboxEntry], build: Callable[[], _Step | None], now: datetime
    ) -> int:
        try:
            step = build()
            if step is None:
                return 0
            posted = self._found(step, now) if step.find is not None else None
            if posted is None:
                if not self.may_send():
                    # this replica's outbox lease ran out: another one delivers from here
                    raise _RoundOver
                marker = None
                if step.find is not None:
                    marker = secrets.token_hex(8)
                    self.store.outbox.begin_attempt([e.id for e in entries], marker, now)
                posted = step.send(marker)
            then = step.then(posted)
        except DeliveryError as exc:
            self._refused(entries, exc, now)
            return 0
        except (StateStoreError, _RoundOver):
            raise
        except Exception as exc:  # a bug or odd data in one message: it must not stall the rest
            self._broken(entries, exc)
            return 0
        self.store.outbox.mark_delivered([e.id for e in entries], str(posted), then)
        self.metrics.alerts_sent.labels("slack", "ok").inc(len(entries))
        log.info("slack message delivered", extra={"fields": {"message": step.what}})
        return len(entries)

    def _found(self, step: _Step, now: datetime) -> SlackRef | None:
        """The post of an earlier attempt in doubt, if Slack has it."""
        first = step.entries[0]
        if first.in_doubt is None or step.find is None:
            return None
        since = (first.in_doubt_at or now) - LOOKUP_MARGIN
        try:
            found = step.find(first.in_doubt, since)
        except DeliveryError as exc:
            if not exc.permanent:
                raise DeliveryError(str(exc), in_doubt=True) from None
            log.warning(
                "cannot tell whether Slack took an earlier attempt; posting again, which may"
                " show the message twice",
                extra={"fields": {"message": step.what, "error": str(exc)}},
            )
            return None
        if found is not None:
            log.info(
                "slack already had a message whose answer was lost; recorded, not posted again",
                extra={"fields": {"message": step.what}},
            )
        return found

    def _refused(self, entries: list[OutboxEntry], exc: DeliveryError, now: datetime) -> None:
        ids = [e.id for e in entries]
        self.metrics.alerts_sent.labels("slack", "error").inc(len(entries))
        fields = {"error": str(exc), "entries": len(entries)}
        if exc.permanent:
            self.store.outbox.mark_failed(ids, str(exc))
            log.warning("slack refused a message; recorded as failed", extra={"fields": fields})
            return
        attempts = max(e.attempts for e in entries) + 1
        when = next_attempt(attempts, now, self.slack_config.max_attempts)
        if when is None:
            self.store.outbox.mark_failed(
                ids, f"gave up after {attempts} attempts: {exc}", in_doubt=exc.in_doubt
            )
            log.warning("slack delivery given up", extra={"fields": fields})
        else:
            self.store.outbox.mark_retry(ids, str(exc), when, in_doubt=exc.in_doubt)
            log.warning(
                "slack delivery failed; kept for retry",
                extra={"fields": {**fields, "next_attempt": when.isoformat()}},
            )
        raise _RoundOver

    def _broken(self, entries: list[OutboxEntry], exc: Exception) -> None:
        log.error(
            "cannot deliver a message; recorded as failed",
            exc_info=exc,
            extra={"fields": {"entries": [e.id for e in entries]}},
        )
        self.metrics.alerts_sent.labels("slack", "error").inc(len(entries))
        # in doubt if an earlier attempt's answer was lost: Slack may show it all the same
        self.store.outbox.mark_failed(
            [e.id for e in entries], f"internal error: {type(exc).__name__}: {exc}", in_doubt=True
        )


def _unknown(entry: OutboxEntry) -> _Step:
    raise ValueError(f"no Slack delivery for outbox entries of kind {entry.kind!r}")


def _spans(note: Notification) -> list[Span]:
    return [
        Span(cast(Kind, kind), name, pd.Timestamp(start), pd.Timestamp(end))
        for kind, name, start, end in note.calendar
    ]


def _beside(note: Notification) -> dict[str, pd.Series[float]]:
    """The segments drawn under a total's chart, as values by bucket."""
    return {
        name: pd.Series(
            [float(v) for _, v in rows],
            index=pd.to_datetime([b for b, _ in rows], utc=True),
            dtype=float,
        )
        for name, rows in note.beside.items()
    }


def _history(note: Notification) -> pd.DataFrame:
    columns = ["bucket", "value", "expected", "lower", "upper", "anomalous"]
    frame = pd.DataFrame(note.history, columns=columns)
    frame["bucket"] = pd.to_datetime(frame["bucket"], utc=True)
    return frame
