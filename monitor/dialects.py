"""SQL fragments that differ between warehouses. Pure: no connection, no I/O.

Every expression a dialect returns takes timestamp columns as stored (naive timestamps are read as
UTC) and yields *naive UTC* timestamps, so results from every warehouse normalise the same way.
Time zones and other values are bound as parameters, never written into the SQL text.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import Literal

Grain = Literal["hour", "day"]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


class Dialect(ABC):
    """How one warehouse spells identifiers, parameters and time-zone arithmetic."""

    name: str
    quote_char: str
    information_schema = "information_schema"

    def quote(self, identifier: str) -> str:
        """Quote a possibly dotted name (``schema.table``), one part at a time."""
        parts = identifier.split(".")
        q = self.quote_char
        return ".".join(q + part.replace(q, q + q) + q for part in parts)

    @abstractmethod
    def param(self, name: str) -> str:
        """The placeholder for the bound parameter ``name``."""

    @abstractmethod
    def local_time(self, ts: str, tz: str) -> str:
        """Wall-clock time (naive) in time zone ``tz`` (a placeholder) of timestamp ``ts``."""

    @abstractmethod
    def utc_time(self, ts: str) -> str:
        """The naive UTC timestamp of ``ts``."""

    @abstractmethod
    def local_to_utc(self, local: str, tz: str) -> str:
        """The naive UTC timestamp of the naive wall-clock time ``local`` in ``tz``."""

    @abstractmethod
    def trunc(self, grain: str, expr: str) -> str:
        """``expr`` truncated to the start of its ``grain``."""

    @abstractmethod
    def text(self, expr: str) -> str:
        """``expr`` cast to a string."""

    def no_rows(self, sql: str) -> str:
        """``sql`` made to return no rows while the warehouse still resolves its tables, columns,
        functions and grants: a dry run of a check's query."""
        return f"SELECT * FROM (\n{sql}\n) AS kpimon_probe LIMIT 0"

    def bucket(self, ts: str, grain: Grain, tz: str) -> str:
        """The UTC start of the business-time bucket holding ``ts``, DST-safe.

        Hours are cut by subtracting the row's own UTC offset, so the repeated hour when clocks
        fall back stays two buckets. Days (whose offset can change inside them) are cut on the
        wall clock and the local midnight is converted back to UTC.
        """
        local = self.local_time(ts, tz)
        if grain == "hour":
            return f"({self.trunc('hour', local)} - ({local} - {self.utc_time(ts)}))"
        return self.local_to_utc(self.trunc(grain, local), tz)


class DuckDBDialect(Dialect):
    name = "duckdb"
    quote_char = '"'

    def param(self, name: str) -> str:
        return f"${name}"

    def local_time(self, ts: str, tz: str) -> str:
        return f"timezone({tz}, CAST({ts} AS TIMESTAMPTZ))"

    def utc_time(self, ts: str) -> str:
        return f"timezone('UTC', CAST({ts} AS TIMESTAMPTZ))"

    def local_to_utc(self, local: str, tz: str) -> str:
        return f"timezone('UTC', timezone({tz}, CAST({local} AS TIMESTAMP)))"

    def trunc(self, grain: str, expr: str) -> str:
        return f"date_trunc('{grain}', {expr})"

    def text(self, expr: str) -> str:
        return f"CAST({expr} AS VARCHAR)"


def is_plain_identifier(identifier: str) -> bool:
    """True when every dotted part is a plain SQL identifier (what config accepts)."""
    return all(_IDENT.match(part) for part in identifier.split("."))


class DatabricksDialect(Dialect):
    """Databricks SQL: backtick identifiers, ``:name`` native parameters.

    A Databricks ``TIMESTAMP`` is an instant; the adapter opens its session with ``TIMEZONE``
    ``UTC`` so that instants read (and results arrive) as UTC wall-clock times. ``TIMESTAMP_NTZ``
    columns cast to ``TIMESTAMP`` in that session zone, i.e. they are read as UTC.
    ``from_utc_timestamp`` / ``to_utc_timestamp`` shift by the zone's offset at that instant,
    which is what makes the buckets DST-safe.
    """

    name = "databricks"
    quote_char = "`"
    # the columns of every catalog; a bare information_schema is the current catalog's only
    information_schema = "system.information_schema"

    def param(self, name: str) -> str:
        return f":{name}"

    def local_time(self, ts: str, tz: str) -> str:
        return f"from_utc_timestamp(CAST({ts} AS TIMESTAMP), {tz})"

    def utc_time(self, ts: str) -> str:
        return f"CAST({ts} AS TIMESTAMP)"

    def local_to_utc(self, local: str, tz: str) -> str:
        return f"to_utc_timestamp({local}, {tz})"

    def trunc(self, grain: str, expr: str) -> str:
        return f"date_trunc('{grain.upper()}', {expr})"

    def text(self, expr: str) -> str:
        return f"CAST({expr} AS STRING)"


class PostgresDialect(Dialect):
    """PostgreSQL through psycopg 3: ``%(name)s`` parameters, double-quoted identifiers.

    Like DuckDB's, the expressions read a stored timestamp through ``CAST(... AS timestamptz)``:
    ``timestamptz`` columns are instants, and naive ``timestamp`` columns are read in the session
    time zone, which the adapter sets to UTC. ``AT TIME ZONE`` then converts instants to wall-clock
    times and back.
    """

    name = "postgres"
    quote_char = '"'

    def param(self, name: str) -> str:
        return f"%({name})s"

    def local_time(self, ts: str, tz: str) -> str:
        return f"(CAST({ts} AS timestamptz) AT TIME ZONE {tz})"

    def utc_time(self, ts: str) -> str:
        return f"(CAST({ts} AS timestamptz) AT TIME ZONE 'UTC')"

    def local_to_utc(self, local: str, tz: str) -> str:
        return f"((CAST({local} AS timestamp) AT TIME ZONE {tz}) AT TIME ZONE 'UTC')"

    def trunc(self, grain: str, expr: str) -> str:
        return f"date_trunc('{grain}', {expr})"

    def text(self, expr: str) -> str:
        return f"CAST({expr} AS text)"


def dialect_for(kind: str) -> Dialect:
    """The dialect of a warehouse kind (``duckdb``, ``postgres``, ``databricks``)."""
    dialects: dict[str, Dialect] = {
        "duckdb": DuckDBDialect(),
        "postgres": PostgresDialect(),
        "databricks": DatabricksDialect(),
    }
    return dialects[kind]
