"""The alert state machine of one series: ok -> pending -> firing -> ok. Pure.

An episode opens after ``open_after`` anomalous buckets in a row (a verdict's ``span`` counts:
a deviation the detector sees lasting two buckets is a run of two), stays open while the
deviation lasts, and resolves after ``resolve_after`` normal buckets in a row. A verdict without
any band (not enough history yet, and no fixed ``min``/``max``) changes nothing: missing
knowledge is neither normal nor anomalous.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal, Protocol, TypeVar

Status = Literal["ok", "pending", "firing"]


class Scored(Protocol):
    """What the state machine needs from a verdict."""

    @property
    def bucket(self) -> datetime: ...

    @property
    def expected(self) -> float | None: ...

    @property
    def lower(self) -> float | None: ...

    @property
    def upper(self) -> float | None: ...

    @property
    def anomalous(self) -> bool: ...

    @property
    def span(self) -> int: ...

    @property
    def holding(self) -> bool: ...


@dataclass(frozen=True)
class AlertPolicy:
    open_after: int = 1
    resolve_after: int = 2

    @classmethod
    def for_grain(cls, bucket_seconds: int) -> AlertPolicy:
        """The daemon's defaults for a grain: open after two anomalous buckets in a row below
        daily grain (one at daily grain and coarser), resolve after two normal buckets; below an
        hour, resolving takes the same two hours, not two buckets."""
        return cls(
            open_after=2 if bucket_seconds < 86_400 else 1,
            resolve_after=max(2, -(-7_200 // bucket_seconds)),
        )


@dataclass(frozen=True)
class AlertState:
    status: Status = "ok"
    anomalous_run: int = 0
    normal_run: int = 0
    since: datetime | None = None  # first anomalous bucket of the pending run or open episode
    episode: int = 0  # how many episodes this series has opened; the open one's number
    last_bucket: datetime | None = None  # newest bucket fed in, so none is counted twice
    # the detector's quiet period (Detector.quiet_start), saved with the alert state so that a
    # restarted detector resumes it; the state machine itself never reads it
    quiet_start: datetime | None = None
    # the detector's hold on an open episode (Detector.hold: the run's direction and the
    # evidence the series is still away), saved so a restart mid-incident keeps it
    hold_sign: int = 0
    hold_evidence: float = 0.0

    @property
    def firing(self) -> bool:
        return self.status == "firing"


@dataclass(frozen=True)
class Transition:
    kind: Literal["opened", "resolved"]
    episode: int
    since: datetime  # first anomalous bucket of the episode
    bucket: datetime  # the bucket that caused the transition


def advance(
    state: AlertState, verdict: Scored, policy: AlertPolicy
) -> tuple[AlertState, Transition | None]:
    """Feed one verdict; return the new state and the transition it caused, if any."""
    if state.last_bucket is not None and verdict.bucket <= state.last_bucket:
        return state, None
    state = replace(state, last_bucket=verdict.bucket)
    if verdict.expected is None and verdict.lower is None and verdict.upper is None:
        return state, None
    if verdict.anomalous:
        since = state.since if state.anomalous_run or state.firing else verdict.bucket
        # a deviation the detector sees lasting `span` buckets counts as a run at least that long
        run = max(state.anomalous_run + 1, verdict.span)
        state = replace(state, anomalous_run=run, normal_run=0, since=since)
        if state.firing:
            return state, None
        if state.anomalous_run >= policy.open_after:
            opened = replace(state, status="firing", episode=state.episode + 1)
            assert since is not None
            return opened, Transition("opened", opened.episode, since, verdict.bucket)
        return replace(state, status="pending"), None
    if state.status == "pending":
        return replace(state, status="ok", anomalous_run=0, normal_run=1, since=None), None
    # an open episode's bucket that fits the band while the series is still away from its
    # expected level (a wide night band) is not a normal one: the episode stays open
    held = state.firing and verdict.holding
    state = replace(state, anomalous_run=0, normal_run=0 if held else state.normal_run + 1)
    if state.firing and state.normal_run >= policy.resolve_after:
        assert state.since is not None
        resolved = replace(state, status="ok", since=None)
        return resolved, Transition("resolved", state.episode, state.since, verdict.bucket)
    return state, None


ScoredT = TypeVar("ScoredT", bound=Scored)


def advance_all(
    state: AlertState, verdicts: Sequence[ScoredT], policy: AlertPolicy, *, replayed: int = 0
) -> tuple[AlertState, list[tuple[ScoredT, Transition]]]:
    """Feed verdicts in order; return the new state and the transitions to announce, each with
    its verdict. The first ``replayed`` verdicts are history a first start judged: episodes
    that ended within it are not announced, the one still open at its end is (once, as
    opened)."""
    announced: list[tuple[ScoredT, Transition]] = []
    opening = None
    for i, verdict in enumerate(verdicts):
        state, transition = advance(state, verdict, policy)
        if i < replayed:
            if transition is not None:
                opening = (verdict, transition) if transition.kind == "opened" else None
            if i + 1 < replayed or opening is None or not state.firing:
                continue
            verdict, transition = opening
        if transition is not None:
            announced.append((verdict, transition))
    return state, announced
