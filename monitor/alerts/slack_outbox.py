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

This module runs the steps and keeps the outbox's books; ``slack_steps/`` builds them, one
module per kind of message.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial

from monitor.alerts.notification import Notification
from monitor.alerts.retry import next_attempt
from monitor.alerts.slack import DeliveryError, SlackChannel, SlackRef
from monitor.alerts.slack_steps.alerts import AlertPosts
from monitor.alerts.slack_steps.answers import AnswerPosts
from monitor.alerts.slack_steps.chart_uploads import ChartUploads
from monitor.alerts.slack_steps.deployments import DeploymentReports
from monitor.alerts.slack_steps.resolutions import ResolutionPosts
from monitor.alerts.slack_steps.step import Planned, Step
from monitor.config import Config
from monitor.errors import StateStoreError
from monitor.exporter import Metrics
from monitor.records.outbox import OutboxEntry
from monitor.store import StateStore

log = logging.getLogger("monitor.alerts")

PAGE = 500  # entries read from the outbox at a time
# How far before an attempt in doubt its message is looked for: Slack stamps messages with its
# own clock, which may run behind ours.
LOOKUP_MARGIN = timedelta(minutes=5)


class _RoundOver(Exception):
    """Slack is unwell (a passing failure): the rest of the round waits for the next one."""


class SlackOutbox:
    """Delivers the outbox's Slack entries: reads the due ones a page at a time, plans their
    steps, runs each and records its fate (delivered with its follow-ups, retried, failed)."""

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
        self.slack_config = config.slack
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self._alerts = AlertPosts(config, config.slack, slack)
        self._resolutions = ResolutionPosts(config, config.slack, store, slack)
        answers = AnswerPosts(store, slack)
        self._steps: dict[str, Callable[[OutboxEntry], Step]] = {
            "chart": ChartUploads(slack).upload,
            "update": self._resolutions.edit,
            "deployment": DeploymentReports(config.slack.channel, slack).post,
            "answer": answers.reply,
            "answer_update": answers.edit,
        }

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

    def _plan(self, page: list[OutboxEntry], now: datetime) -> list[Planned]:
        """The steps for a page: opened alerts first (grouped), then the rest in queue order.
        Each step is built just before it runs, so a resolution sees its alert delivered by an
        earlier step of the same round."""
        opened: list[tuple[OutboxEntry, Notification]] = []
        rest: list[Planned] = []
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
                rest.append(([entry], partial(self._resolutions.reply, entry, note)))
        return [*self._alerts.plan(opened, now), *rest]

    def _builder(self, entry: OutboxEntry) -> Callable[[], Step | None]:
        make = self._steps.get(entry.kind)
        if make is None:
            return lambda: _unknown(entry)
        return lambda: make(entry)

    def _run(
        self, entries: list[OutboxEntry], build: Callable[[], Step | None], now: datetime
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

    def _found(self, step: Step, now: datetime) -> SlackRef | None:
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


def _unknown(entry: OutboxEntry) -> Step:
    raise ValueError(f"no Slack delivery for outbox entries of kind {entry.kind!r}")
