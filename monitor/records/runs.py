"""What any replica answers for the checks another one runs (tables ``check_runs`` and
``run_requests``): each check's last run, and the runs asked for through another replica."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from monitor.statedb import Database, Fenced, fetchall, parse


@dataclass(frozen=True)
class StoredRun:
    """A check's last run as the state store keeps it (``check_runs``)."""

    started: datetime
    outcome: str
    duration: float
    error: str | None
    succeeded_at: datetime | None


class RunRecords:
    """The check runs part of the state store; a run's record is fenced by the check's lease."""

    def __init__(self, db: Database, fenced: Fenced) -> None:
        self._db = db
        self._fenced = fenced

    def record(
        self, check: str, started: datetime, outcome: str, duration: float, error: str | None
    ) -> None:
        """A check's last run (and, unless it failed, its last success), for the replicas
        that do not run it and for the one that takes it over."""
        success = None if outcome == "error" else datetime.now(UTC).isoformat()
        with self._fenced(check) as db:
            db.execute(
                "INSERT INTO check_runs (check_name, started, outcome, duration, error,"
                " succeeded_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (check_name) DO UPDATE"
                " SET started = excluded.started, outcome = excluded.outcome,"
                " duration = excluded.duration, error = excluded.error,"
                " succeeded_at = COALESCE(excluded.succeeded_at, check_runs.succeeded_at)",
                (check, started.isoformat(), outcome, duration, error, success),
            )

    def last(self, check: str | None = None) -> dict[str, StoredRun]:
        sql = "SELECT check_name, started, outcome, duration, error, succeeded_at FROM check_runs"
        read = self._db.read
        rows = read(sql + " WHERE check_name = ?", (check,)) if check else read(sql)
        return {
            str(name): StoredRun(
                datetime.fromisoformat(str(started)), str(outcome), float(duration), error,
                parse(success),
            )
            for name, started, outcome, duration, error, success in rows
        }  # fmt: skip

    def request(self, check: str) -> None:
        """Ask the replica holding ``check`` to run it now (POST .../run on another one)."""
        with self._db.transaction() as db:
            db.execute(
                "INSERT INTO run_requests (check_name, requested_at) VALUES (?, ?)"
                " ON CONFLICT (check_name) DO NOTHING",
                (check, datetime.now(UTC).isoformat()),
            )

    def take_requests(self, checks: Sequence[str]) -> list[str]:
        """The runs asked for among ``checks``, each handed out once."""
        if not checks:
            return []
        marks = ", ".join("?" for _ in checks)
        with self._db.transaction() as db:
            taken = db.execute(
                f"DELETE FROM run_requests WHERE check_name IN ({marks}) RETURNING check_name",
                tuple(checks),
            )
            return [str(row[0]) for row in fetchall(taken)]
