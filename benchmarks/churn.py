"""Segment churn: new segments appear and old ones vanish for many cycles; memory, the state
store and /metrics must stay flat.

    python -m benchmarks.soak --churn            # 24 checks, 500 cycles (see --help)
    python -m benchmarks.soak --churn --smoke    # 8 checks, 150 cycles, for CI (1 to 2 min)

One ``monitor.engine.Engine`` over a real DuckDB file and a real SQLite state store runs every
check once a cycle, its clock injected and advanced one hourly bucket per cycle (as
``benchmarks.soak``). The warehouse's ``kpi.churn<k>(ts, seg, amount)`` tables get a new segment
every ``EVERY_HOURS`` hours, each living ``LIFE_HOURS`` hours (with 1 to 3 rows an hour, so the
top ``max_segments`` re-rank as segments come and go): at any time about ``LIFE_HOURS /
EVERY_HOURS`` segments are live, and over the run thousands come and go. Segments leave the
ranking, stop for good (their empty hours fire "dropped to 0" until
``state.retention.segments``), and are forgotten; alerts open and resolve.

The state store's retention is pruned once a cycle, as the daemon's hourly job does. The store
stamps what it writes with the real clock while the data's clock runs an hour per cycle, so the
store's cutoffs (``notifications``, ``alert_history``) are the real time at which the cycle
``store_retention`` cycles before began: that many hours of data time. The data starts
``lookback`` before the real time of the start and runs ahead of it, so the cached series of
the running checks (stamped with the data's clock) are never older than the real cutoffs.

Printed: per 50 cycles, RSS, the state file's size (database and WAL), its rows per table and
the series on /metrics; at the end, the median of each over the middle fifth of the cycles
(after the warm-up: the first lookback of segments, retention and alert history) against the
last fifth.
"""

from __future__ import annotations

import sqlite3
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from benchmarks.soak import peak_rss_bytes, rss_bytes
from monitor.config import Config, parse_config
from monitor.engine import Engine
from monitor.exporter import Metrics
from monitor.store import StateStore
from monitor.warehouse import open_warehouses

EVERY_HOURS = 2  # a new segment every two hours
LIFE_HOURS = 48  # each one lives two days
LOOKBACK_HOURS = 4 * 24
MAX_SEGMENTS = 20  # fewer than the ~24 live at a time: the top re-ranks as they churn
SEGMENT_RETENTION = "12h"  # data time
TABLES = 4
TRACKED = ("series_state", "alert_events", "series_history", "outbox")


@dataclass(frozen=True)
class ChurnSize:
    checks: int
    cycles: int
    store_retention: int = 24  # cycles: hours of data time


FULL = ChurnSize(checks=24, cycles=500)
SMOKE = ChurnSize(checks=8, cycles=150)


def build_churn(path: Path, start: datetime, cycles: int) -> None:
    """The churn tables from ``start`` (naive UTC) over the lookback and every cycle."""
    hours = LOOKBACK_HOURS + cycles + 48
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA kpi")
        for k in range(TABLES):
            con.execute(
                f"""
                CREATE TABLE kpi.churn{k} AS
                SELECT ts + INTERVAL (r * 7) MINUTE AS ts, 'n' || lpad(s::VARCHAR, 5, '0') AS seg,
                       round((10 + s % 7) * (1 + 0.3 * sin(2 * pi() * hour(ts) / 24))
                             * (0.9 + 0.2 * random()), 2) AS amount
                FROM range(0, {hours} // {EVERY_HOURS}) g(s),
                     range(TIMESTAMP '{start:%Y-%m-%d %H:%M:%S}'
                             + INTERVAL (s * {EVERY_HOURS}) HOUR,
                           TIMESTAMP '{start:%Y-%m-%d %H:%M:%S}'
                             + INTERVAL (s * {EVERY_HOURS} + {LIFE_HOURS}) HOUR,
                           INTERVAL 1 HOUR) t(ts),
                     range(1 + s % 3) n(r)
                WHERE ts < TIMESTAMP '{start:%Y-%m-%d %H:%M:%S}' + INTERVAL {hours} HOUR
                """
            )


def churn_config(directory: Path, size: ChurnSize) -> Config:
    checks: list[dict[str, Any]] = []
    for i in range(size.checks):
        expression = ("sum(amount)", "count(*)", "max(amount)", "avg(amount)")[i // TABLES % 4]
        checks.append(
            {
                "name": f"churn{i:04d}",
                "kind": "metric",
                "table": f"kpi.churn{i % TABLES}",
                "timestamp_column": "ts",
                "expression": expression,
                "dimensions": ["seg"],
                "max_segments": MAX_SEGMENTS,
                "lookback": f"{LOOKBACK_HOURS}h",
                "settle": "5m",
                **({"fill_missing": "none"} if expression == "avg(amount)" else {}),
            }
        )
    document = {
        "warehouse": {"kind": "duckdb", "path": str(directory / "churn.duckdb"), "keep_open": 0},
        "state": {
            "path": str(directory / "churn-state.db"),
            "retention": {"segments": SEGMENT_RETENTION},
        },
        "defaults": {"grain": "hour", "schedule": "5m"},
        "checks": checks,
    }
    return parse_config(document, "churn.yaml")


@dataclass(frozen=True)
class Sample:
    rss: int
    file_bytes: int
    rows: dict[str, int]
    exported: int  # series on /metrics (kpimon_value lines)
    held: int  # series the engine holds a latest verdict of


def file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def row_counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return {t: int(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in TRACKED}


def churn(size: ChurnSize) -> int:
    with tempfile.TemporaryDirectory(prefix="kpimon-churn-") as tmp:
        directory = Path(tmp)
        # the data's clock starts an hour ahead of the real one (see the module's docstring)
        start = (datetime.now(UTC) - timedelta(hours=LOOKBACK_HOURS - 1)).replace(
            minute=0, second=0, microsecond=0
        )
        build_churn(directory / "churn.duckdb", start.replace(tzinfo=None), size.cycles)
        config = churn_config(directory, size)
        print(
            f"churn: {size.checks} checks on {TABLES} tables split by a segment column (top "
            f"{MAX_SEGMENTS}), a new segment every {EVERY_HOURS} h living {LIFE_HOURS} h "
            f"(~{LIFE_HOURS // EVERY_HOURS} live, {(LOOKBACK_HOURS + size.cycles) // EVERY_HOURS}"
            f" over the run), lookback {LOOKBACK_HOURS} h, {size.cycles} cycles of one hour; "
            f"state.retention.segments {SEGMENT_RETENTION}, store retention "
            f"{size.store_retention} cycles",
            flush=True,
        )
        now = [start + timedelta(hours=LOOKBACK_HOURS, minutes=10)]
        began: list[datetime] = []  # the real time each cycle began
        state = Path(config.state.path)
        store = StateStore(state)
        metrics = Metrics()
        engine = Engine(config, open_warehouses(config), store, metrics,
                        clock=lambda: now[0], announce=False)  # fmt: skip
        names = [c.name for c in config.checks]
        samples: list[Sample] = []
        outcomes: dict[str, int] = {}
        pruned: dict[str, int] = {}
        t0 = time.perf_counter()
        for cycle in range(size.cycles):
            began.append(datetime.now(UTC))
            for name in names:
                result = engine.run(name)
                outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
                opened = sum(1 for n in result.notifications if n.kind == "opened")
                outcomes["alerts opened"] = outcomes.get("alerts opened", 0) + opened
            cutoff = began[max(0, cycle - size.store_retention)]
            for table, count in store.prune(cutoff, cutoff, cutoff).items():
                pruned[table] = pruned.get(table, 0) + count
            rows = row_counts(state)
            exposition = metrics.exposition().decode()
            samples.append(
                Sample(
                    rss=rss_bytes(),
                    file_bytes=file_bytes(state),
                    rows=rows,
                    exported=exposition.count("\nkpimon_value{"),
                    held=len(engine.series()),
                )
            )
            now[0] += timedelta(hours=1)
            if (cycle + 1) % 50 == 0 or cycle == 0:
                s = samples[-1]
                print(
                    f"  cycle {cycle + 1}/{size.cycles}: RSS {s.rss / 2**20:.0f} MiB, state "
                    f"{s.file_bytes / 2**20:.2f} MiB, {s.exported} series on /metrics, rows "
                    + ", ".join(f"{t} {n}" for t, n in s.rows.items()),
                    flush=True,
                )
        store.close()
    elapsed = time.perf_counter() - t0
    print()
    print(f"{size.cycles} cycles in {elapsed:.0f} s; runs: "
          + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))  # fmt: skip
    print("pruned: " + ", ".join(f"{k} {v}" for k, v in sorted(pruned.items())))
    window = max(1, len(samples) // 5)
    middle = slice(2 * window, 3 * window)

    def report(what: str, of: list[float], unit: str, scale: float = 1.0) -> None:
        a, b = statistics.median(of[middle]), statistics.median(of[-window:])
        growth = f"{(b - a) / a * 100:+.1f}%" if a else "n/a"
        print(f"{what}: median of cycles {2 * window + 1}-{3 * window} {a / scale:.2f}{unit}, "
              f"of the last {window} {b / scale:.2f}{unit}: {growth}")  # fmt: skip

    report("RSS", [s.rss for s in samples], " MiB", 2**20)
    report("state file", [s.file_bytes for s in samples], " MiB", 2**20)
    report("series on /metrics", [s.exported for s in samples], "")
    report("series held by the engine", [s.held for s in samples], "")
    for table in TRACKED:
        report(f"rows in {table}", [s.rows[table] for s in samples], "")
    print(f"peak RSS {peak_rss_bytes() / 2**20:.0f} MiB")
    return 0
