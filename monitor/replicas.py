"""An engine's part among replicas that share one state store (monitor/leases.py).

Each replica runs, saves and exports only the checks whose leases it holds; it answers for the
others from what their holders saved in the state store.
"""

from __future__ import annotations

import logging
import threading
from typing import cast

from monitor.alerts.state import AlertState
from monitor.config import Config
from monitor.errors import StateStoreError
from monitor.ledger import Ledger, Outcome, RunResult, SeriesStatus
from monitor.store import StateStore, StoredRun
from monitor.verdicts import verdict_from_json

log = logging.getLogger("monitor.engine")


class Replicas:
    """Owns which checks this engine runs (every one, unless ``shared``), and answers for every
    check's series, runs and open episodes: from the ``ledger`` for those it runs, from what the
    replicas running the others saved. Thread-safe."""

    def __init__(self, config: Config, store: StateStore, ledger: Ledger, *, shared: bool) -> None:
        self._config = config
        self._store = store
        self._ledger = ledger
        self._lock = threading.Lock()
        self._held: set[str] | None = set() if shared else None

    @property
    def shared(self) -> bool:
        """Whether this engine is one of several replicas."""
        return self._held is not None

    def holds(self, name: str) -> bool:
        """Whether this engine runs the check (a single daemon runs every check)."""
        with self._lock:
            return self._held is None or name in self._held

    def hold(self, name: str) -> None:
        """Run the check from now on (this replica acquired its lease)."""
        with self._lock:
            if self._held is not None:
                self._held.add(name)

    def let_go(self, name: str) -> None:
        """Stop running the check (its lease went to another replica)."""
        with self._lock:
            if self._held is not None:
                self._held.discard(name)

    def stored_series(self, name: str | None) -> list[SeriesStatus]:
        """The latest status of a check's series (every check's when ``name`` is None) as the
        state store has them."""
        verdicts = self._store.latest_verdicts(name)
        states = self._store.load_states(name)
        return [
            SeriesStatus(c, s, verdict_from_json(text), states.get((c, s), AlertState()))
            for (c, s), text in verdicts.items()
            if self._config.check(c) is not None
        ]

    def series(self, name: str | None) -> list[SeriesStatus]:
        """The latest status of a check's series (of every check's when ``name`` is None), by
        check and segment: from memory, or from the state store for a check another replica
        runs."""
        found = self._ledger.statuses(lambda c: (name is None or c == name) and self.holds(c))
        if self.shared and (name is None or not self.holds(name)):
            found += [s for s in self.stored_series(name) if not self.holds(s.check)]
        return sorted(found, key=lambda s: (s.check, s.segment))

    def last_run(self, name: str) -> RunResult | None:
        """The check's last run: from memory, or from the state store for a check another
        replica runs."""
        if self.holds(name):
            return self._ledger.last_run(name)
        stored = self._store.last_runs(name).get(name)
        return None if stored is None else run_result(name, stored)

    def last_runs(self) -> dict[str, RunResult]:
        """Every check's last run, as ``last_run`` gives them, in one read of the store."""
        found = self._ledger.last_runs()
        if self.shared:
            found.update(
                (name, run_result(name, stored))
                for name, stored in self._store.last_runs().items()
                if not self.holds(name) and self._config.check(name) is not None
            )
        return found

    def firing(self) -> list[tuple[str, str, int]]:
        """Open episodes as (check, segment, episode): of every replica's checks when shared."""
        if not self.shared:
            return self._ledger.firing()
        return [(c, s, st.episode) for (c, s), st in self._store.load_states().items()
                if st.firing and self._config.check(c) is not None]  # fmt: skip

    def share_run(self, result: RunResult) -> None:
        """Keep a run in the state store for the other replicas (if any); a failure is
        logged."""
        if not self.shared:
            return
        try:
            self._store.record_run(
                result.check, result.started, result.outcome, result.duration, result.error
            )
        except StateStoreError as exc:
            log.warning(
                "cannot record the check's run for the other replicas",
                extra={"fields": {"check": result.check, "error": str(exc)}},
            )


def run_result(name: str, run: StoredRun) -> RunResult:
    """A run of the check as the state store keeps it."""
    return RunResult(name, cast(Outcome, run.outcome), run.started, run.duration, run.error)
