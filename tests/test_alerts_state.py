"""The alert state machine: one alert per episode, no flapping, no double counting."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from monitor.alerts.state import AlertPolicy, AlertState, advance, advance_all

T0 = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass(frozen=True)
class V:
    bucket: datetime
    expected: float | None
    anomalous: bool
    span: int = 0
    lower: float | None = None
    upper: float | None = None
    holding: bool = False


def feed(
    pattern: str, policy: AlertPolicy, state: AlertState | None = None
) -> tuple[AlertState, list[str]]:
    """'x' anomalous, '.' normal, 'h' in the band but still away (holding), '?' no baseline;
    returns the transitions as 'open@i'/'resolve@i'."""
    state = state or AlertState()
    events = []
    for i, ch in enumerate(pattern):
        verdict = V(
            T0 + timedelta(hours=i), None if ch == "?" else 1.0, ch == "x", holding=ch == "h"
        )
        state, transition = advance(state, verdict, policy)
        if transition:
            events.append(f"{transition.kind}@{i}")
    return state, events


def test_opens_after_n_anomalous_buckets_and_resolves_after_m_normal() -> None:
    state, events = feed("..xx..x..", AlertPolicy(open_after=2, resolve_after=2))
    assert events == ["opened@3", "resolved@5"]
    assert state.status == "ok" and state.episode == 1


def test_an_open_episode_holds_while_the_series_is_still_away() -> None:
    # a night bucket that fits a wide band while the level stays down is not a return to normal
    state, events = feed("..xxhhhhhh..", AlertPolicy(open_after=2, resolve_after=2))
    assert events == ["opened@3", "resolved@11"]
    assert state.status == "ok" and state.episode == 1


def test_holding_neither_opens_an_episode_nor_extends_a_pending_run() -> None:
    _, events = feed(".xhhhx.hh", AlertPolicy(open_after=2, resolve_after=2))
    assert events == []


def test_a_single_blip_does_not_open_an_episode() -> None:
    state, events = feed(".x.x.x.", AlertPolicy(open_after=2, resolve_after=2))
    assert events == [] and state.episode == 0


def test_one_alert_per_episode_even_when_it_flickers() -> None:
    _, events = feed("xxx.x.xx.xx..", AlertPolicy(open_after=1, resolve_after=2))
    assert events == ["opened@0", "resolved@12"]


def test_episode_since_is_its_first_anomalous_bucket() -> None:
    state = AlertState()
    for i, ch in enumerate(".xxx"):
        state, transition = advance(
            state, V(T0 + timedelta(hours=i), 1.0, ch == "x"), AlertPolicy(3, 1)
        )
    assert transition is not None and transition.since == T0 + timedelta(hours=1)
    assert state.since == T0 + timedelta(hours=1)


def test_missing_baseline_neither_opens_nor_resolves() -> None:
    _, events = feed("x??x", AlertPolicy(open_after=2, resolve_after=1))
    assert events == ["opened@3"]
    state, events = feed("xx??", AlertPolicy(open_after=2, resolve_after=1))
    assert events == ["opened@1"] and state.firing


def test_a_bucket_already_judged_is_ignored() -> None:
    policy = AlertPolicy(open_after=2, resolve_after=1)
    state, _ = feed("x", policy)
    again, transition = advance(state, V(T0, 1.0, True), policy)
    assert (again, transition) == (state, None)


def test_numbering_continues_across_episodes() -> None:
    state, events = feed("x.x.", AlertPolicy(open_after=1, resolve_after=1))
    assert events == ["opened@0", "resolved@1", "opened@2", "resolved@3"]
    assert state.episode == 2


def test_a_deviation_spanning_two_buckets_counts_as_a_run_of_two() -> None:
    policy = AlertPolicy(open_after=2, resolve_after=2)
    state, transition = advance(AlertState(), V(T0, 1.0, True, span=2), policy)
    assert transition is not None and transition.kind == "opened" and state.firing
    state, transition = advance(AlertState(), V(T0, 1.0, True, span=1), policy)
    assert transition is None and state.status == "pending"


def verdicts(pattern: str) -> list[V]:
    return [V(T0 + timedelta(hours=i), 1.0, ch == "x") for i, ch in enumerate(pattern)]


def test_replayed_history_announces_only_the_episode_still_open_at_its_end_once() -> None:
    policy = AlertPolicy(open_after=2, resolve_after=2)
    # history a first start judged: an episode that ended in it, then one still open
    state, announced = advance_all(AlertState(), verdicts("xx..xxx"), policy, replayed=7)
    assert [(t.kind, v.bucket) for v, t in announced] == [("opened", T0 + timedelta(hours=5))]
    assert state.firing and state.episode == 2


def test_replayed_history_that_ended_quiet_announces_nothing_and_new_buckets_announce() -> None:
    policy = AlertPolicy(open_after=2, resolve_after=2)
    state, announced = advance_all(AlertState(), verdicts("xx.." + "xx"), policy, replayed=4)
    assert [(t.kind, t.episode) for _, t in announced] == [("opened", 2)]
    assert state.firing
