"""Writing to a DuckDB file a warehouse adapter reads, as a loader would."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import duckdb


def write(path: Path, sql: str, params: Sequence[object] = (), *, timeout: float = 20.0) -> None:
    """Run one write, retrying while a reader has the file open (DuckDB allows one writer or
    readers; the adapter keeps the file open for a moment after its last query)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with duckdb.connect(str(path)) as con:
                con.execute(sql, list(params))
            return
        except duckdb.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
