"""Deployments as the state store keeps them (tables ``deployments``, ``manifests`` and
``table_schemas``): each deployment's document with its status, the dbt manifest of each
environment, and the columns of the tables a deployment's checks read, as read after it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from monitor.records.outbox import queue
from monitor.statedb import Database, Executor, fetchone, rowcount


class _Recorded(Exception):
    """Rolls back the recording of a deployment whose id exists."""


@dataclass(frozen=True)
class _Latest:
    """A table of one text value per key, stamped when it was last saved."""

    table: str
    key: str
    value: str
    stamp: str

    def get(self, database: Database, key: str) -> str | None:
        rows = database.read(f"SELECT {self.value} FROM {self.table} WHERE {self.key} = ?", (key,))
        return str(rows[0][0]) if rows else None

    def save(self, db: Executor, key: str, value: str) -> None:
        """Inside a transaction: insert or replace the key's value, stamped now."""
        db.execute(
            f"INSERT INTO {self.table} ({self.key}, {self.value}, {self.stamp}) VALUES (?, ?, ?)"
            f" ON CONFLICT ({self.key}) DO UPDATE SET {self.value} = excluded.{self.value},"
            f" {self.stamp} = excluded.{self.stamp}",
            (key, value, datetime.now(UTC).isoformat()),
        )


_MANIFESTS = _Latest("manifests", "environment", "nodes", "updated_at")
_TABLE_SCHEMAS = _Latest("table_schemas", "table_name", "columns", "captured_at")


class DeploymentRecords:
    """The deployments part of the state store."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def record(
        self,
        deployment_id: str,
        environment: str,
        status: str,
        received_at: datetime,
        document: str,
        *,
        manifest: str | None = None,
        schemas: Mapping[str, str] | None = None,
        report: tuple[str, str, list[str]] | None = None,
    ) -> bool:
        """Record a new deployment with what comes with it, in one transaction: the manifest of
        its environment, the columns of its tables as read after it, and the report (key,
        payload, channels) of a deployment decided at once. False, with nothing written, when
        a deployment with this id was recorded before."""
        try:
            with self._db.transaction() as db:
                inserted = db.execute(
                    "INSERT INTO deployments (id, environment, status, received_at, document)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    (deployment_id, environment, status, received_at.isoformat(), document),
                )
                if rowcount(inserted) == 0:
                    raise _Recorded
                if manifest is not None:
                    _MANIFESTS.save(db, environment, manifest)
                for table, columns in (schemas or {}).items():
                    _TABLE_SCHEMAS.save(db, table, columns)
                if report is not None:
                    queue(db, [(report[0], "deployment", report[1])], report[2])
        except _Recorded:
            return False
        return True

    def change(
        self, deployment_id: str, change: Callable[[str], tuple[str, str] | None]
    ) -> str | None:
        """Apply ``change`` (the document -> the new (status, document), or None for no change)
        to a deployment under its row lock, so that replicas observing its checks at once each
        build on the other's change; the document before, or None when there is no such
        deployment or nothing changed."""
        with self._db.transaction() as db:
            found = db.execute(
                "SELECT document FROM deployments WHERE id = ?" + self._db.row_lock,
                (deployment_id,),
            )
            row = fetchone(found)
            if row is None:
                return None
            before = str(row[0])
            after = change(before)
            if after is None:
                return None
            db.execute(
                "UPDATE deployments SET status = ?, document = ? WHERE id = ?",
                (*after, deployment_id),
            )
        return before

    def get(self, deployment_id: str) -> str | None:
        rows = self._db.read("SELECT document FROM deployments WHERE id = ?", (deployment_id,))
        return str(rows[0][0]) if rows else None

    def documents(self, status: str | None = None, since: datetime | None = None) -> list[str]:
        """Deployment documents, oldest first, optionally by status or received since."""
        sql = "SELECT document FROM deployments WHERE 1 = 1"
        params: list[object] = []
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        if since is not None:
            sql += " AND received_at >= ?"
            params.append(since.isoformat())
        return [str(r[0]) for r in self._db.read(sql + " ORDER BY received_at", tuple(params))]

    def manifest(self, environment: str) -> str | None:
        """The dbt manifest's nodes of ``environment`` as last deployed there."""
        return _MANIFESTS.get(self._db, environment)

    def save_manifest(self, environment: str, nodes: str) -> None:
        with self._db.transaction() as db:
            _MANIFESTS.save(db, environment, nodes)

    def table_schema(self, table: str) -> str | None:
        """The columns of ``table`` as last read after a deployment."""
        return _TABLE_SCHEMAS.get(self._db, table)

    def save_table_schema(self, table: str, columns: str) -> None:
        with self._db.transaction() as db:
            _TABLE_SCHEMAS.save(db, table, columns)

    def prune(self, before: datetime) -> tuple[int, int]:
        """Delete finished deployments received before ``before`` and the manifests of
        environments not deployed to since; how many of each went."""
        cutoff = before.astimezone(UTC).isoformat()
        with self._db.transaction() as db:
            deployments = db.execute(
                "DELETE FROM deployments WHERE status <> 'watching' AND received_at < ?", (cutoff,)
            )
            manifests = db.execute("DELETE FROM manifests WHERE updated_at < ?", (cutoff,))
        return rowcount(deployments), rowcount(manifests)
