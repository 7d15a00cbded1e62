"""The state store keeps alert state and the outbox across restarts, without duplicates, in
SQLite and in a real PostgreSQL server."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import psycopg
import pytest

from monitor.alerts.notification import Notification
from monitor.alerts.state import AlertState
from monitor.config import StateConfig, parse_config
from monitor.errors import StateStoreError
from monitor.store import StateStore
from tests.postgres_server import postgres_dsn, postgres_server  # noqa: F401 - fixtures
from tests.test_faults import NOW, hourly_rows, make_engine, visits_check

T = datetime(2026, 11, 26, 10, tzinfo=UTC)
NOTE = Notification("opened", "revenue", "DE", 1, T, T, 1.0, 10.0, 8.0, 12.0, -5.0, "critical")


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], StateStore]:
    """Opens (and reopens) one store: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        config = StateConfig(path=str(tmp_path / "s.db"))
    else:
        config = StateConfig(url=request.getfixturevalue("postgres_dsn"))
    return lambda: StateStore.open(config)


def test_state_and_outbox_survive_reopening(open_store: Callable[[], StateStore]) -> None:
    store = open_store()
    state = AlertState("firing", 2, 0, T, 1, T, quiet_start=T)
    store.record("revenue", "DE", state, [NOTE], ["slack"])
    store.close()
    reopened = open_store()
    assert reopened.load_states() == {("revenue", "DE"): state}
    [entry] = reopened.pending("slack")
    assert entry.notification == NOTE
    reopened.close()


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_a_store_made_by_schema_version_1_is_upgraded_in_place(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    old_series_state = (
        "CREATE TABLE series_state (check_name TEXT NOT NULL, segment TEXT NOT NULL,"
        " status TEXT NOT NULL, anomalous_run INTEGER NOT NULL, normal_run INTEGER NOT NULL,"
        " since TEXT, episode INTEGER NOT NULL, last_bucket TEXT, updated_at TEXT NOT NULL,"
        " PRIMARY KEY (check_name, segment))"
    )
    row = (
        "INSERT INTO series_state VALUES ('revenue', 'DE', 'firing', 2, 0,"
        f" '{T.isoformat()}', 1, '{T.isoformat()}', '{T.isoformat()}')"
    )
    if database == "sqlite":
        config = StateConfig(path=str(tmp_path / "old.db"))
        with sqlite3.connect(tmp_path / "old.db") as db:
            db.execute(old_series_state)
            db.execute(row)
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        config = StateConfig(url=dsn)
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute(old_series_state)
            db.execute(row)
    store = StateStore.open(config)
    assert store.load_states() == {("revenue", "DE"): AlertState("firing", 2, 0, T, 1, T)}
    upgraded = AlertState("firing", 3, 0, T, 1, T, quiet_start=T)
    store.record("revenue", "DE", upgraded, [], ["slack"])
    store.close()
    reopened = StateStore.open(config)  # the upgrade is idempotent
    assert reopened.load_states() == {("revenue", "DE"): upgraded}
    reopened.close()


# DuckDB and Databricks strings can hold any character; PostgreSQL text cannot hold NUL
ODD_SEGMENTS = ["A\x00B", "\x00", "\ufdd0x", '\ufdd0"\x00"', "DE | \u00e9\n\t\\u0000"]


def test_any_segment_value_is_stored_and_read_back_exactly(
    open_store: Callable[[], StateStore],
) -> None:
    store = open_store()
    state = AlertState("firing", 2, 0, T, 1, T)
    for segment in ODD_SEGMENTS:
        store.record("revenue", segment, state, [replace(NOTE, segment=segment)], ["slack"])
    store.save_history(
        "revenue", "f1", T, ODD_SEGMENTS, [(s, T, 1.0) for s in ODD_SEGMENTS],
        replace=True, keep_from=T,
    )  # fmt: skip
    store.save_mute("revenue", T, "backfill of \x00-padded ids")
    store.close()
    again = open_store()
    assert again.load_states() == {("revenue", s): state for s in ODD_SEGMENTS}
    assert [e.notification.segment for e in again.pending("slack")] == ODD_SEGMENTS
    for segment in ODD_SEGMENTS:
        assert again.notification(replace(NOTE, segment=segment).key, "slack") is not None
    history = again.load_history("revenue", "f1")
    assert history is not None
    assert history[1] == ODD_SEGMENTS and sorted(history[2]) == sorted(ODD_SEGMENTS)
    assert again.mutes() == {"revenue": (T, "backfill of \x00-padded ids")}
    again.close()


def test_a_check_whose_segment_holds_a_nul_runs_and_keeps_its_alert_in_postgres(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    rows = hourly_rows(NOW)
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as con:
        con.execute("CREATE SCHEMA kpi")
        con.execute("CREATE TABLE kpi.sales (ts TIMESTAMP, shop VARCHAR, amount DOUBLE)")
        for shop in ("DE", "A\x00B"):
            collapsed = shop != "DE"  # the NUL segment stops selling for its last hours
            con.executemany(
                "INSERT INTO kpi.sales VALUES (?, ?, ?)",
                [(ts, shop, 0.0 if collapsed and i >= len(rows) - 3 else v)
                 for i, (ts, v) in enumerate(rows)],
            )  # fmt: skip
    config = parse_config(
        {
            "warehouse": {"kind": "duckdb", "path": str(tmp_path / "wh.duckdb")},
            "state": {"url": request.getfixturevalue("postgres_dsn")},
            "checks": [visits_check("sales", table="kpi.sales", dimensions=["shop"])],
        }
    )
    engine, _ = make_engine(config, StateStore.open(config.state))
    result = engine.run("sales")
    assert result.outcome == "anomaly", result.error
    assert {s.segment: s.state.status for s in result.series} == {"DE": "ok", "A\x00B": "firing"}
    engine.store.close()
    restarted, _ = make_engine(config, StateStore.open(config.state))
    assert restarted.alert_state("sales", "A\x00B").firing
    [queued] = restarted.store.pending("slack")
    assert queued.notification.segment == "A\x00B"
    assert restarted.run("sales").outcome == "anomaly"
    restarted.store.close()


def test_the_same_episode_event_is_queued_once(open_store: Callable[[], StateStore]) -> None:
    store = open_store()
    for _ in range(3):
        store.record("revenue", "DE", AlertState(), [NOTE], ["slack"])
    assert len(store.pending("slack")) == 1
    entry = store.pending("slack")[0]
    store.mark_delivered(entry.id, "C1:123.4")
    store.record("revenue", "DE", AlertState(), [NOTE], ["slack"])
    assert store.pending("slack") == []
    assert store.remote_id(NOTE.key, "slack") == "C1:123.4"
    store.close()


def test_deployments_manifests_schemas_and_rebaselines_are_kept(
    open_store: Callable[[], StateStore],
) -> None:
    store = open_store()
    assert store.record_deployment("d1", "prod", "watching", T, '{"id": "d1"}')
    assert not store.record_deployment("d1", "prod", "watching", T, '{"id": "d1", "again": 1}')
    store.update_deployment("d1", "failed", '{"id": "d1", "x": 1}')
    store.save_manifest("prod", "{}")
    store.save_table_schema("analytics.fct_orders", '{"id": "BIGINT"}')
    store.save_rebaseline("revenue", T)
    store.close()
    again = open_store()
    assert again.deployment("d1") == '{"id": "d1", "x": 1}'
    assert again.deployments(status="watching") == []
    assert again.manifest("prod") == "{}"
    assert again.table_schema("analytics.fct_orders") == '{"id": "BIGINT"}'
    assert again.rebaselines() == {"revenue": T}
    again.close()


def test_retention_prunes_what_is_done_with_and_keeps_what_is_still_needed(
    open_store: Callable[[], StateStore],
) -> None:
    store = open_store()
    firing = AlertState("firing", 2, 0, T, 1, T)
    resolved = replace(NOTE, kind="resolved", segment="FR")
    store.record("revenue", "DE", firing, [NOTE], ["slack"])  # opened, still firing
    store.record("revenue", "FR", AlertState(episode=1, last_bucket=T),
                 [replace(NOTE, segment="FR"), resolved], ["slack"])  # fmt: skip
    store.record("revenue", "US", firing, [replace(NOTE, segment="US")], ["slack"])
    store.enqueue("deployment/d0/passed", "deployment", "{}", ["slack"])
    for entry in store.pending("slack"):
        if entry.kind == "deployment" or entry.notification.segment != "US":
            store.mark_delivered(entry.id, f"C1:{entry.id}")
    store.record_deployment("d0", "prod", "passed", T - timedelta(days=200), '{"id": "d0"}')
    store.record_deployment("d1", "prod", "watching", T - timedelta(days=200), '{"id": "d1"}')
    store.save_manifest("pr-1234", "{}")  # a preview environment, never deployed again
    time.sleep(0.01)
    cutoff = datetime.now(UTC)
    time.sleep(0.01)
    store.record("revenue", "GB", firing, [replace(NOTE, segment="GB")], ["slack"])
    store.mark_delivered(store.pending("slack")[-1].id, "C1:new")
    store.record_deployment("d2", "prod", "failed", cutoff + timedelta(minutes=1), '{"id": "d2"}')
    store.save_manifest("prod", "{}")

    gone = store.prune(cutoff, cutoff)

    assert gone == {"notifications": 3, "deployments": 1, "manifests": 1}
    # an episode still firing keeps its opening: the resolution is threaded under it
    assert store.remote_id(NOTE.key, "slack") is not None
    assert store.notification(replace(NOTE, segment="GB").key, "slack") is not None
    assert [e.notification.segment for e in store.pending("slack")] == ["US"]
    for note in (replace(NOTE, segment="FR"), resolved):
        assert store.notification(note.key, "slack") is None
    assert store.deployment("d0") is None
    assert store.deployment("d1") == '{"id": "d1"}' and store.deployment("d2") is not None
    assert store.manifest("pr-1234") is None and store.manifest("prod") == "{}"
    assert store.prune(cutoff, cutoff) == {"notifications": 0, "deployments": 0, "manifests": 0}
    store.close()


def test_a_corrupt_file_is_refused_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateStoreError, match="not a SQLite database or is corrupt: move it aside"):
        StateStore(path)


def test_an_unreachable_database_is_named_without_its_password() -> None:
    config = StateConfig(url="postgresql://kpi:hunter2@127.0.0.1:1/state")
    with pytest.raises(StateStoreError) as info:
        StateStore.open(config)
    assert "postgresql://kpi:***@127.0.0.1:1/state" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_ping_fails_fast_while_another_connection_holds_the_sqlite_write_lock(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path / "s.db")
    store.ping()
    locker = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # reads go on in WAL mode; writes wait for this lock
    try:
        assert store.load_states() == {}
        started = time.monotonic()
        with pytest.raises(StateStoreError, match=r"state store .*s\.db cannot be written"):
            store.ping()
        assert time.monotonic() - started < 3, "not the 10 s a save waits for the lock"
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    store.ping()  # the lock is gone
    store.record("revenue", "DE", AlertState("firing", 2, 0, T, 1, T), [], ["slack"])
    store.close()


def test_ping_fails_while_another_session_locks_the_postgres_state_tables(
    request: pytest.FixtureRequest,
) -> None:
    dsn = request.getfixturevalue("postgres_dsn")
    store = StateStore.open(StateConfig(url=dsn))
    store.ping()
    with psycopg.connect(dsn) as locker:  # a transaction until the block ends
        locker.execute("LOCK TABLE meta IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(StateStoreError, match="lock timeout"):
            store.ping()
        assert time.monotonic() - started < 3
    store.ping()  # the lock is gone
    store.close()


def test_every_alert_event_joins_the_history_even_without_a_channel_or_when_muted(
    open_store: Callable[[], StateStore],
) -> None:
    store = open_store()
    resolved = Notification("resolved", "revenue", "DE", 1, T, T.replace(hour=12), 10.0, 10.0,
                            8.0, 12.0, 0.1, "critical")  # fmt: skip
    store.record("revenue", "DE", AlertState(), [NOTE], [])
    store.record_all("revenue", [("DE", AlertState(), [resolved])], [], muted=True)
    store.record("revenue", "DE", AlertState(), [NOTE], ["slack"])  # the same event again
    store.record("orders", "", AlertState(), [replace(NOTE, check="orders", segment="")], [])
    store.close()
    events = open_store().alert_events("revenue")
    assert [(e.notification, e.muted) for e in events] == [(resolved, True), (NOTE, False)]


def test_recent_values_are_the_cached_buckets_of_the_series_asked_for(
    open_store: Callable[[], StateStore],
) -> None:
    store = open_store()
    rows = [(s, T.replace(hour=h), float(h)) for s in ("DE", "US") for h in range(10, 14)]
    store.save_history("revenue", "fp", T, ["DE", "US"], rows, replace=True, keep_from=T)
    found = store.recent_values([("revenue", "DE"), ("orders", "")], T.replace(hour=12))
    assert found == {("revenue", "DE"): [12.0, 13.0]}
