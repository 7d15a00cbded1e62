"""An operator's controls of a check (tables ``mutes`` and ``rebaselines``): muted until when
and why, and the baseline restarts, so that a restart keeps them."""

from __future__ import annotations

from datetime import datetime

from monitor.statedb import Database


class CheckControls:
    """The mutes and baseline restarts part of the state store."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def mutes(self) -> dict[str, tuple[datetime, str]]:
        rows = self._db.read("SELECT check_name, until, reason FROM mutes")
        return {str(n): (datetime.fromisoformat(str(u)), str(r)) for n, u, r in rows}

    def save_mute(self, check: str, until: datetime, reason: str) -> None:
        with self._db.transaction() as db:
            db.execute(
                "INSERT INTO mutes (check_name, until, reason) VALUES (?, ?, ?)"
                " ON CONFLICT (check_name) DO UPDATE SET until = excluded.until,"
                " reason = excluded.reason",
                (check, until.isoformat(), reason),
            )

    def rebaselines(self) -> dict[str, datetime]:
        rows = self._db.read("SELECT check_name, since FROM rebaselines")
        return {str(name): datetime.fromisoformat(str(since)) for name, since in rows}

    def save_rebaseline(self, check: str, since: datetime) -> None:
        with self._db.transaction() as db:
            db.execute(
                "INSERT INTO rebaselines (check_name, since) VALUES (?, ?)"
                " ON CONFLICT (check_name) DO UPDATE SET since = excluded.since",
                (check, since.isoformat()),
            )
