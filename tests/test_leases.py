"""Leases on a real PostgreSQL server: replicas divide the checks, rebalance when one joins or
leaves, take over what expired, and a replica that lost a lease cannot write about it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from pydantic import SecretStr

from monitor.alerts.notification import Notification
from monitor.alerts.state import AlertState
from monitor.config import StateConfig
from monitor.exporter import Metrics
from monitor.leases import Coordinator, LeaseLost, fair_share
from monitor.records.outbox import OUTBOX_LEASE
from monitor.statedb import PostgresDatabase
from monitor.store import StateStore
from tests.postgres_server import postgres_dsn, postgres_server  # noqa: F401 - fixtures

T = datetime(2026, 11, 26, 10, tzinfo=UTC)
CHECKS = [f"check_{i:02d}" for i in range(10)]
FIRING = AlertState("firing", 2, 0, T, 1, T)
NOTE = Notification("opened", "check_00", "", 1, T, T, 1.0, 10.0, 8.0, 12.0, -5.0, "critical")


class Replica:
    """A coordinator on its own store, recording what it was told to take and let go."""

    def __init__(self, dsn: str, name: str, ttl: float = 30.0) -> None:
        self.store = StateStore.open(StateConfig(url=SecretStr(dsn)))
        self.metrics = Metrics()
        self.running: set[str] = set()
        self.coordinator = Coordinator(
            self.store, CHECKS, ttl, self.metrics,
            acquired=lambda names: None, lost=lambda names: None,
            idle=lambda name: name not in self.running, replica=name,
        )  # fmt: skip

    def held(self) -> set[str]:
        return set(self.coordinator.held())

    def owned(self) -> float:
        """How many checks this replica's metrics say it owns."""
        owned = self.metrics.registry.get_sample_value("kpimon_replica_owned_checks")
        assert owned is not None, "kpimon_replica_owned_checks is not exported"
        return owned


@pytest.fixture
def replicas(postgres_dsn: str) -> Iterator[Callable[[str], Replica]]:  # noqa: F811
    made: list[Replica] = []

    def make(name: str) -> Replica:
        made.append(Replica(postgres_dsn, name))
        return made[-1]

    yield make
    for replica in made:
        replica.store.close()


def beat_all(*replicas: Replica, rounds: int = 2) -> None:
    for _ in range(rounds):
        for replica in replicas:
            replica.coordinator.beat()


def test_shares_add_up_to_every_check_and_differ_by_one_at_most() -> None:
    for checks in range(0, 30):
        for replicas in range(1, 6):
            shares = [fair_share(checks, replicas, rank) for rank in range(replicas)]
            assert sum(shares) == checks
            assert max(shares) - min(shares) <= 1


def test_three_replicas_divide_the_checks_and_one_delivers_the_outbox(
    replicas: Callable[[str], Replica],
) -> None:
    a, b, c = replicas("a"), replicas("b"), replicas("c")
    beat_all(a, b, c, rounds=3)
    shares = [a.held(), b.held(), c.held()]
    assert set().union(*shares) == set(CHECKS)
    assert sum(len(s) for s in shares) == len(CHECKS), "a check held twice"
    assert sorted(len(s) for s in shares) == [3, 3, 4]
    assert [r.coordinator.holds(OUTBOX_LEASE) for r in (a, b, c)].count(True) == 1
    assert sorted(r.owned() for r in (a, b, c)) == [3, 3, 4]


def test_a_replica_joining_takes_a_share_and_one_leaving_hands_its_share_over(
    replicas: Callable[[str], Replica],
) -> None:
    a, b = replicas("a"), replicas("b")
    beat_all(a, b)
    assert (len(a.held()), len(b.held())) == (5, 5)
    c = replicas("c")
    beat_all(c, a, b, c, rounds=2)
    assert sorted(len(r.held()) for r in (a, b, c)) == [3, 3, 4]
    assert a.held() | b.held() | c.held() == set(CHECKS)
    b.coordinator.stop()  # a clean stop hands the leases back at once
    beat_all(a, c)
    assert (len(a.held()), len(c.held())) == (5, 5)
    assert a.held() | c.held() == set(CHECKS)


def test_a_check_running_is_not_handed_over_until_its_run_ends(
    replicas: Callable[[str], Replica],
) -> None:
    a = replicas("a")
    beat_all(a)
    a.running = set(CHECKS)
    b = replicas("b")
    beat_all(b, a)
    assert (len(a.held()), len(b.held())) == (10, 0)
    a.running = set()
    beat_all(a, b)
    assert (len(a.held()), len(b.held())) == (5, 5)


def test_expired_leases_are_taken_over_and_the_late_holder_can_no_longer_write(
    replicas: Callable[[str], Replica], postgres_dsn: str  # noqa: F811
) -> None:
    a, b = replicas("a"), replicas("b")
    beat_all(a, b)
    had = a.held()
    check = sorted(had)[0]
    a.store.record(check, "", FIRING, [], ["slack"])  # held: the write lands
    # a stops beating (SIGSTOP, a lost connection) past its TTL: in the database's clock its
    # leases expired, though its own deadline has not come yet
    with psycopg.connect(postgres_dsn, autocommit=True) as db:
        db.execute("UPDATE leases SET expires_at = 0 WHERE holder = 'a'")
        db.execute("UPDATE replicas SET expires_at = 0 WHERE replica_id = 'a'")
    b.coordinator.beat()
    assert b.held() == set(CHECKS)
    with pytest.raises(LeaseLost, match=f"lost the lease on '{check}'"):
        a.store.record(check, "", AlertState(), [NOTE], ["slack"])
    assert a.store.load_states(check) == {(check, ""): FIRING}, "nothing of it landed"
    assert a.store.outbox.pending("slack") == []
    b.store.record(check, "", AlertState(), [NOTE], ["slack"])
    # a's next beat finds its leases gone and says so
    beat = a.coordinator.beat()
    assert set(beat.lost) - {OUTBOX_LEASE} == had
    assert a.held() == set()  # until b hands some back at its next beat
    beat_all(b, a)
    assert (len(a.held()), len(b.held())) == (5, 5)


def test_only_the_outbox_lease_holder_records_delivery_steps(
    replicas: Callable[[str], Replica],
) -> None:
    a, b = replicas("a"), replicas("b")
    beat_all(a, b)
    holder, other = (a, b) if a.coordinator.holds(OUTBOX_LEASE) else (b, a)
    holder.store.outbox.enqueue("deployment/d1/passed", "deployment", "{}", ["slack"])
    [entry] = other.store.outbox.pending("slack")
    with pytest.raises(LeaseLost):
        other.store.outbox.begin_attempt([entry.id], "marker", T)
    with pytest.raises(LeaseLost):
        other.store.outbox.mark_delivered([entry.id], "C1:1.0")
    holder.store.outbox.mark_delivered([entry.id], "C1:1.0")
    assert holder.store.outbox.status(entry.key, "slack") == "sent"


def test_a_replica_cut_off_from_the_database_stops_acting_on_its_leases_by_itself(
    postgres_dsn: str,  # noqa: F811
) -> None:
    lost: list[str] = []
    store = StateStore.open(StateConfig(url=SecretStr(postgres_dsn)))
    coordinator = Coordinator(
        store, CHECKS, 3.0, Metrics(), acquired=lambda names: None, lost=lost.extend,
        idle=lambda name: True, replica="a",
    )  # fmt: skip
    coordinator.beat()
    assert len(coordinator.held()) == 10
    # the database goes away: every renewal from now on fails to connect
    renewals = coordinator._db  # the connection the renewals use, the store's is another
    assert isinstance(renewals, PostgresDatabase)
    renewals._url = "postgresql://kpi@127.0.0.1:1/gone"
    renewals.close()
    time.sleep(3.0 * 0.9)
    coordinator._safe_beat()
    assert coordinator.held() == []
    assert sorted(lost) == CHECKS
    assert not coordinator.holds(OUTBOX_LEASE)
