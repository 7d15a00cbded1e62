"""What an engine knows of its series between runs: alert states, latest verdicts, last runs.

The state store holds the same (it is written first, see ``Engine._commit``); this is the
in-memory copy the API and the exporter read without a query, and the runs carry on from.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

import pandas as pd

from monitor.alerts.notification import Notification
from monitor.alerts.state import AlertState
from monitor.buckets import to_utc
from monitor.detection import Verdict

Outcome = Literal["ok", "anomaly", "no_data", "error"]


@dataclass(frozen=True)
class SeriesStatus:
    """The latest verdict and alert state of one (check, segment)."""

    check: str
    segment: str
    verdict: Verdict
    state: AlertState


@dataclass(frozen=True)
class Judged:
    """One series' outcome of a run, before it is saved."""

    segment: str
    verdicts: list[Verdict]
    state: AlertState
    notes: list[Notification]


@dataclass(frozen=True)
class RunResult:
    check: str
    outcome: Outcome
    started: datetime
    duration: float
    error: str | None = None
    series: list[SeriesStatus] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    verdicts: dict[str, list[Verdict]] = field(default_factory=dict)
    """Per segment, every verdict the run gave (a first start's judged history included)."""


def outcome_of(statuses: list[SeriesStatus]) -> Outcome:
    """A successful run's outcome, from the latest status of the series it judged."""
    if not statuses:
        return "no_data"
    return "anomaly" if any(s.state.firing for s in statuses) else "ok"


class Ledger:
    """Owns the alert state and latest status of each (check, segment) this engine runs, each
    check's last run, and the newest bucket any series of a check has judged (so a clock that
    went back shows as buckets judged ahead of their time). Thread-safe."""

    def __init__(self, states: dict[tuple[str, str], AlertState]) -> None:
        self._lock = threading.Lock()
        self._states = dict(states)
        self._latest: dict[tuple[str, str], SeriesStatus] = {}
        self._last_run: dict[str, RunResult] = {}
        # per check: the newest bucket any of its series has judged (see ``ahead``)
        self._judged_until: dict[str, datetime] = {}
        for (name, _), state in states.items():
            self._note_judged(name, state)

    # --- alert states and latest verdicts ---------------------------------------------------

    def state(self, name: str, segment: str) -> AlertState:
        with self._lock:
            return self._states.get((name, segment), AlertState())

    def states(self, name: str) -> dict[str, AlertState]:
        """The check's alert states, by segment."""
        with self._lock:
            return {s: st for (c, s), st in self._states.items() if c == name}

    def firing(self) -> list[tuple[str, str, int]]:
        """Open episodes as (check, segment, episode)."""
        with self._lock:
            return [(c, s, st.episode) for (c, s), st in self._states.items() if st.firing]

    def latest(self, name: str, segment: str) -> SeriesStatus | None:
        with self._lock:
            return self._latest.get((name, segment))

    def latest_of(self, name: str) -> dict[str, SeriesStatus]:
        """The check's latest statuses, by segment."""
        with self._lock:
            return {s: st for (c, s), st in self._latest.items() if c == name}

    def statuses(self, keep: Callable[[str], bool]) -> list[SeriesStatus]:
        """The latest status of every series of the checks ``keep`` picks."""
        with self._lock:
            return [s for (c, _), s in self._latest.items() if keep(c)]

    def save(
        self, name: str, segment: str, state: AlertState, latest: SeriesStatus | None = None
    ) -> None:
        """A series judged: its new alert state, and its latest status if it has one."""
        with self._lock:
            self._states[(name, segment)] = state
            self._note_judged(name, state)
            if latest is not None:
                self._latest[(name, segment)] = latest

    def close(self, name: str, segment: str, closed: AlertState) -> None:
        """A series' episode resolved for a reason (not a recovery): ``closed`` is its state."""
        with self._lock:
            self._states[(name, segment)] = closed
            latest = self._latest.get((name, segment))
            if latest is not None:
                self._latest[(name, segment)] = SeriesStatus(name, segment, latest.verdict, closed)

    def untrack(self, name: str, segments: Iterable[str]) -> None:
        """Forget the series of segments no longer tracked (their state stays in the store)."""
        with self._lock:
            for segment in segments:
                self._latest.pop((name, segment), None)
                self._states.pop((name, segment), None)

    def resume(
        self, name: str, segments: Iterable[str], saved: dict[tuple[str, str], AlertState]
    ) -> None:
        """Segments tracked again carry on from their ``saved`` states, when they have one."""
        with self._lock:
            for segment in segments:
                if (name, segment) in saved:
                    self._states[(name, segment)] = saved[(name, segment)]

    def ahead(self, name: str, newest: pd.Timestamp) -> list[tuple[str, int]] | None:
        """The series of the check, with their episodes, that judged buckets after ``newest``
        (None when none did); the check is then taken as judged no further than that."""
        with self._lock:
            judged = self._judged_until.get(name)
            if judged is None or to_utc(judged) <= newest:
                return None
            self._judged_until.pop(name)
            return [
                (segment, state.episode)
                for (check, segment), state in self._states.items()
                if check == name and state.last_bucket is not None
                and to_utc(state.last_bucket) > newest
            ]  # fmt: skip

    def _note_judged(self, name: str, state: AlertState) -> None:
        """Keep ``_judged_until`` up to date; call with the lock held (or in ``__init__``)."""
        judged = self._judged_until.get(name)
        if state.last_bucket is not None and (judged is None or state.last_bucket > judged):
            self._judged_until[name] = state.last_bucket

    # --- last runs --------------------------------------------------------------------------

    def last_run(self, name: str) -> RunResult | None:
        with self._lock:
            return self._last_run.get(name)

    def last_runs(self) -> dict[str, RunResult]:
        with self._lock:
            return dict(self._last_run)

    def ran(self, result: RunResult) -> None:
        """Keep a check's run, without its verdicts: a first run's are the whole lookback of
        every segment."""
        with self._lock:
            self._last_run[result.check] = replace(result, verdicts={})

    # --- a check changing hands -------------------------------------------------------------

    def drop(self, name: str) -> None:
        """Forget everything held about a check."""
        with self._lock:
            self._drop(name)

    def _drop(self, name: str) -> None:
        self._last_run.pop(name, None)
        for key in [k for k in self._states if k[0] == name]:
            del self._states[key]
        for key in [k for k in self._latest if k[0] == name]:
            del self._latest[key]

    def take_over(
        self,
        name: str,
        states: dict[tuple[str, str], AlertState],
        latest: Iterable[SeriesStatus],
        run: RunResult | None,
    ) -> None:
        """Hold the check as another replica saved it, forgetting what was held of it."""
        with self._lock:
            self._drop(name)
            self._states.update(states)
            self._latest.update({(s.check, s.segment): s for s in latest})
            if run is not None:
                self._last_run[name] = run

    def adopt(
        self,
        name: str,
        states: dict[str, AlertState],
        latest: dict[str, SeriesStatus],
        run: RunResult | None,
    ) -> None:
        """Carry on with the check as another engine released it."""
        with self._lock:
            self._states.update({(name, s): st for s, st in states.items()})
            for state in states.values():
                self._note_judged(name, state)
            self._latest.update({(name, s): st for s, st in latest.items()})
            if run is not None:
                self._last_run[name] = run
