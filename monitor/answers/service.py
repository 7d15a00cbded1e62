"""One click on an answer button, from the transport to its effect. [I/O]

``receive`` takes a payload from either transport (Socket Mode, or a signed HTTP request that
``receive_signed`` verifies first) and, for each click on one of our buttons:

1. finds the alert (the check's series whose segment matches the button's digest, and the
   episode's opening in the alert history); an unknown one is refused;
2. checks that the user may answer: a member of the alert's channel, or of a user group in
   ``slack.answer_groups``; anyone else gets an ephemeral "not allowed" and nothing changes;
3. records the answer with the Slack steps it causes (a reply in the alert's thread, the edit
   that replaces the buttons) in one transaction: a second click on an answered alert records
   nothing and tells the user who answered it;
4. hands the effect to a worker thread (a baseline restart waits for a check run in progress,
   which may take longer than the three seconds Slack gives a transport to answer): acknowledge
   changes nothing but the message, expected change restarts the check's baseline at the
   episode's onset, false alarm resolves the episode and raises the series' threshold, a mute
   silences the check for a day or a week. Each answer is marked applied once its effect is
   carried out; answers a restart interrupted are carried out at the next start (``resume``).

The counters and the precision gauge follow every answer; the precision also as answers age
out of its 30-day window (hourly).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from monitor.alerts import mrkdwn
from monitor.alerts.notification import event_key
from monitor.alerts.slack import DeliveryError, SlackChannel
from monitor.answers import payload as payloads
from monitor.answers import signing
from monitor.answers.model import (
    DONE,
    MUTES,
    WINDOW,
    AlertRef,
    Feedback,
    precision,
    segment_digest,
)
from monitor.answers.payload import Click, MalformedPayload
from monitor.config import SlackConfig
from monitor.engine import Engine
from monitor.errors import StateStoreError
from monitor.exporter import Metrics
from monitor.store import StateStore

log = logging.getLogger("monitor.answers")

PRECISION_REFRESH = timedelta(hours=1)
NOT_ALLOWED = (
    "You are not allowed to answer this alert: only members of its channel{groups} may."
    " Nothing was changed."
)


class Refused(Exception):
    """A request refused as a whole: ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(eq=False)  # a service with a worker thread: compared by identity, never by its fields
class AnswerService:
    """Receives answers; thread-safe. ``engine`` returns the current engine (a config reload
    replaces it), ``deliver`` asks for an outbox delivery round soon."""

    config: SlackConfig
    slack: SlackChannel
    engine: Callable[[], Engine]
    store: StateStore
    metrics: Metrics
    _: KW_ONLY
    clock: Callable[[], datetime]
    deliver: Callable[[], None] = lambda: None
    _work: queue.Queue[Feedback | _Marker | None] = field(
        init=False, repr=False, default_factory=queue.Queue
    )
    _worker: threading.Thread | None = field(init=False, repr=False, default=None)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Carry out the answers a restart interrupted, then take new ones."""
        for feedback in self.store.answers.unapplied():
            self._work.put(feedback)
        self.refresh_precision()
        self._worker = threading.Thread(target=self._apply_loop, name="answers", daemon=True)
        self._worker.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._worker is not None:
            self._work.put(None)
            self._worker.join(timeout)

    def reconfigure(self, config: SlackConfig, slack: SlackChannel) -> None:
        with self._lock:
            self.config, self.slack = config, slack

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Whether every answer received so far has been carried out within ``timeout``."""
        done = threading.Event()
        self._work.put(_Marker(done))
        return done.wait(timeout)

    # --- receiving ----------------------------------------------------------------------------

    def receive_signed(self, headers: dict[str, str], body: bytes) -> None:
        """An HTTP request from Slack: verified (signature, freshness, not seen before), then
        received.

        :raises Refused: 401 for a forged or stale request, 409 for a replay, 400 for a body
            that is not an interactivity payload, 404 when HTTP answers are not configured.
        """
        with self._lock:
            secret = self.config.signing_secret
        if secret is None:
            raise Refused(404, "interactivity over HTTP is off: set slack.signing_secret")
        signature = headers.get("x-slack-signature", "")
        now = self.clock()
        try:
            signing.verify(
                secret.get_secret_value(),
                headers.get("x-slack-request-timestamp", ""),
                signature,
                body,
                now,
            )
        except signing.SignatureRefused as exc:
            log.warning("slack request refused", extra={"fields": {"reason": str(exc)}})
            raise Refused(401, f"not a valid Slack request: {exc}") from None
        try:
            data = payloads.from_form(body)
        except MalformedPayload as exc:
            raise Refused(400, str(exc)) from None
        forget = now - 2 * signing.MAX_AGE
        if not self.store.answers.first_sight(signing.digest(signature), now, forget):
            log.warning("slack request replayed; refused", extra={"fields": {}})
            raise Refused(409, "this request was received before (a replay)")
        self.receive(data)

    def receive(self, data: dict[str, Any]) -> None:
        """An interactivity payload from either transport.

        :raises Refused: 400 for a malformed payload (nothing of it is acted on).
        """
        try:
            clicks = payloads.clicks(data)
        except MalformedPayload as exc:
            log.warning("slack payload refused", extra={"fields": {"reason": str(exc)}})
            raise Refused(400, f"malformed interactivity payload: {exc}") from None
        for click in clicks:
            self._click(click)

    def _click(self, click: Click) -> None:
        engine = self.engine()
        found = self._alert(engine, click)
        if found is None:
            self._tell(click, "This alert is not known to kpi-monitor (any more). Nothing changed.")
            return
        ref, since, thread, opened_json = found
        if not self._allowed(click, thread.split(":")[0]):
            log.warning(
                "answer refused: user not allowed",
                extra={"fields": {"user": click.user_id, "check": ref.check,
                                  "answer": click.answer}},
            )  # fmt: skip
            groups = " or of the user groups allowed" if self.config.answer_groups else ""
            self._tell(click, NOT_ALLOWED.format(groups=groups))
            return
        feedback = Feedback(
            ref, click.answer, click.user_id, click.user_name, self.clock(), since, applied=False
        )
        key = event_key(ref.check, ref.segment, ref.episode, "opened") + "/answer"
        message = json.dumps(
            {"thread": thread, "feedback": feedback.to_json(), "opened": opened_json}
        )
        if not self.store.answers.record(feedback, [(key, "answer", message)]):
            earlier = self.store.answers.get(ref)
            said = (
                f"{DONE[earlier.answer]} by {mrkdwn.escape(earlier.user_name)}"
                if earlier
                else "answered before"
            )
            self._tell(click, f"This alert was already answered: {said}. Nothing changed.")
            return
        self.metrics.alert_feedback.labels(ref.check, click.answer).inc()
        log.info(
            "alert answered",
            extra={"fields": {"check": ref.check, "segment": ref.segment,
                              "episode": ref.episode, "answer": click.answer,
                              "user": click.user_id}},
        )  # fmt: skip
        self._work.put(feedback)

    def _alert(self, engine: Engine, click: Click) -> tuple[AlertRef, datetime, str, str] | None:
        """The alert a click is about: its reference, onset, the Slack message it was posted
        as (``channel:ts``) and its opening notification (JSON); None when unknown."""
        name = click.alert.check
        if engine.config.check(name) is None:
            return None
        segments = [s for (_, s) in self.store.load_states(name)]
        segment = next((s for s in segments if segment_digest(s) == click.alert.digest), None)
        if segment is None:
            return None
        ref = AlertRef(name, segment, click.alert.episode)
        key = event_key(name, segment, ref.episode, "opened")
        event = self.store.alerts.event(key)
        if event is None:
            return None
        posted = self.store.outbox.remote_id(key, "slack")
        thread = posted or f"{click.channel_id}:{click.message_ts}"
        return ref, event.notification.since, thread, event.notification.to_json()

    def _allowed(self, click: Click, channel: str) -> bool:
        with self._lock:
            slack, groups = self.slack, list(self.config.answer_groups)
        try:
            if any(click.user_id in slack.group_members(group) for group in groups):
                return True
            return slack.is_member(channel, click.user_id)
        except DeliveryError as exc:
            # who may answer is unknown: nobody may, until Slack tells
            log.warning(
                "cannot check who may answer; refused",
                extra={"fields": {"user": click.user_id, "error": str(exc)}},
            )
            return False

    def _tell(self, click: Click, text: str) -> None:
        """An ephemeral message to the user who clicked; failing to send it changes nothing."""
        with self._lock:
            slack = self.slack
        try:
            slack.post_ephemeral(click.channel_id, click.user_id, text, click.response_url)
        except DeliveryError as exc:
            log.warning("ephemeral message not sent", extra={"fields": {"error": str(exc)}})

    # --- carrying answers out -----------------------------------------------------------------

    def _apply_loop(self) -> None:
        next_refresh = self.clock() + PRECISION_REFRESH
        while True:
            timeout = max((next_refresh - self.clock()).total_seconds(), 0.0)
            try:
                item = self._work.get(timeout=timeout)
            except queue.Empty:
                item = _Marker(None)
            if item is None:
                return
            if isinstance(item, _Marker):
                if item.done is not None:
                    item.done.set()
                if self.clock() >= next_refresh:
                    next_refresh = self.clock() + PRECISION_REFRESH
                    self._refresh_quietly()
                continue
            try:
                self.apply(item)
            except Exception:
                # kept unapplied: carried out at the next start
                log.exception(
                    "answer not carried out; retried at the next start",
                    extra={"fields": {"check": item.ref.check, "answer": item.answer}},
                )

    def apply(self, feedback: Feedback) -> None:
        """Carry out an answer's effect (idempotent: an answer a restart interrupted may have
        been partly carried out), then mark it applied."""
        engine, ref = self.engine(), feedback.ref
        if engine.config.check(ref.check) is not None:
            if feedback.answer == "expected_change":
                if self.store.rebaselines().get(ref.check) != feedback.since:
                    engine.rebaseline(ref.check, feedback.since)
            elif feedback.answer == "false_alarm":
                reason = f"answered as a false alarm by {feedback.user_name}"
                if not engine.false_alarm(ref, reason):
                    # the episode had ended already: no deviation to count as normal
                    self.store.answers.release(ref.check, ref.segment)
            elif feedback.answer in MUTES:
                until = feedback.answered_at + MUTES[feedback.answer]
                current = self.store.mutes().get(ref.check)
                if current is None or current[0] < until:
                    reason = f"muted from Slack by {feedback.user_name}"
                    engine.mute(ref.check, until, reason)
        self.store.answers.mark_applied(ref)
        self.refresh_precision()
        self.deliver()

    def refresh_precision(self) -> None:
        """``kpimon_alert_precision`` of every check with answers in the last 30 days."""
        now = self.clock()
        answers = self.store.answers.since(now - WINDOW)
        configured = self.engine().config
        by_check: dict[str, list[Feedback]] = {}
        for a in answers:
            if configured.check(a.ref.check) is not None:  # a removed check has no figure
                by_check.setdefault(a.ref.check, []).append(a)
        figures = {c: precision(given, now) for c, given in by_check.items()}
        self.metrics.set_precision({c: p for c, p in figures.items() if p is not None})

    def _refresh_quietly(self) -> None:
        try:
            self.refresh_precision()
        except StateStoreError as exc:
            log.warning("alert precision not refreshed", extra={"fields": {"error": str(exc)}})


class _Marker:
    """Queued to learn when the worker got this far (``done``), or to wake it."""

    def __init__(self, done: threading.Event | None) -> None:
        self.done = done
