"""The state store keeps alert state and the outbox across restarts, without duplicates."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor.alerts.notification import Notification
from monitor.alerts.state import AlertState
from monitor.errors import StateStoreError
from monitor.store import StateStore

T = datetime(2026, 11, 26, 10, tzinfo=UTC)
NOTE = Notification("opened", "revenue", "DE", 1, T, T, 1.0, 10.0, 8.0, 12.0, -5.0, "critical")


def test_state_and_outbox_survive_reopening(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.db")
    state = AlertState("firing", 2, 0, T, 1, T)
    store.record("revenue", "DE", state, [NOTE], ["slack"])
    store.close()
    reopened = StateStore(tmp_path / "s.db")
    assert reopened.load_states() == {("revenue", "DE"): state}
    [entry] = reopened.pending("slack")
    assert entry.notification == NOTE


def test_the_same_episode_event_is_queued_once(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.db")
    for _ in range(3):
        store.record("revenue", "DE", AlertState(), [NOTE], ["slack"])
    assert len(store.pending("slack")) == 1
    entry = store.pending("slack")[0]
    store.mark_delivered(entry.id, "C1:123.4")
    store.record("revenue", "DE", AlertState(), [NOTE], ["slack"])
    assert store.pending("slack") == []
    assert store.remote_id(NOTE.key, "slack") == "C1:123.4"


def test_a_corrupt_file_is_refused_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateStoreError, match="If the file is corrupt, move it aside"):
        StateStore(path)
