"""Answers in the state store, SQLite and PostgreSQL: one per alert, with the Slack steps they
cause queued in the same transaction, kept across reopening; signed requests remembered to
refuse their replay."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.answers.model import AlertRef, AnswerKind, Feedback
from monitor.errors import StateStoreError
from monitor.store import StateStore
from tests.postgres_server import postgres_dsn, postgres_server  # noqa: F401 - fixtures
from tests.test_store import open_store  # noqa: F401 - fixture

# pytest passes the imported fixtures in as parameters of the same name
# ruff: noqa: F811

T = datetime(2026, 12, 6, 9, tzinfo=UTC)
ODD = "DE \u00e9\x00<x>"  # a segment from the warehouse: any character, NUL included


def feedback(answer: AnswerKind = "false_alarm", segment: str = ODD, at: datetime = T) -> Feedback:
    return Feedback(AlertRef("revenue", segment, 3), answer, "U1", "ana", at,
                    T - timedelta(hours=2), applied=False)  # fmt: skip


def test_an_alert_takes_one_answer_and_its_slack_steps_are_queued_with_it(
    open_store: Callable[[], StateStore],
) -> None:
    store = open_store()
    first = feedback()
    assert store.answers.record(first, [("k/answer", "answer", json.dumps({"x": 1}))])
    assert not store.answers.record(feedback("acknowledge"), [("k2/answer", "answer", "{}")])
    [queued] = store.outbox.pending("slack")
    assert (queued.key, queued.kind) == ("k/answer", "answer")
    assert store.answers.get(first.ref) == first
    store.close()
    reopened = open_store()
    assert reopened.answers.unapplied() == [first]
    reopened.answers.mark_applied(first.ref)
    assert reopened.answers.unapplied() == []
    assert reopened.answers.of_episodes("revenue", [(ODD, 3), ("FR", 3)]) == [
        Feedback(first.ref, first.answer, "U1", "ana", first.answered_at, first.since)
    ]
    reopened.close()


def test_answers_are_read_from_a_moment_on_oldest_first(
    open_store: Callable[[], StateStore],
) -> None:
    store = open_store()
    for hours, segment in ((0, "A"), (48, "B"), (24, "C")):
        store.answers.record(feedback(segment=segment, at=T - timedelta(hours=hours)), [])
    assert [a.ref.segment for a in store.answers.since(T - timedelta(hours=30))] == ["C", "A"]
    assert store.answers.since(T, "other") == []
    store.close()


def test_a_signed_request_is_seen_once_and_forgotten_after_it_went_stale(
    open_store: Callable[[], StateStore],
) -> None:
    store = open_store()
    assert store.answers.first_sight("d1", T, T - timedelta(minutes=10))
    assert not store.answers.first_sight("d1", T + timedelta(seconds=5), T - timedelta(minutes=10))
    later = T + timedelta(minutes=11)
    assert store.answers.first_sight("d1", later, later - timedelta(minutes=10))
    store.close()


def test_a_failed_transaction_records_no_answer(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.db")
    store.close()
    reopened = StateStore(tmp_path / "s.db")
    # a message that cannot be queued (no payload) fails the whole recording
    with pytest.raises(StateStoreError):
        reopened.answers.record(feedback(), [("k", "answer", None)])  # type: ignore[list-item]  # the fault under test
    assert reopened.answers.get(feedback().ref) is None
    reopened.close()
