"""Warehouse cost of one cycle over the demo config: queries, rows returned, time; cold and warm.

    python -m benchmarks.warehouse            # demo warehouse, 6 warm cycles of one hour each
    python -m benchmarks.warehouse --smoke    # 2 warm cycles

The cold cycle is the first run of every check (whole lookback); each warm cycle advances the
clock one hour, so it should read the new bucket plus ``refetch_buckets`` per series: rows
O(new buckets), not O(lookback). The clock is injected; the demo warehouse is a real DuckDB file.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import yaml

from benchmarks.harness import arguments
from monitor import demo
from monitor.config import parse_config
from monitor.engine import Engine
from monitor.exporter import Metrics
from monitor.store import StateStore
from monitor.warehouse import Warehouse, open_warehouses

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "config" / "demo.yaml"


class Counting(Warehouse):
    """A real warehouse, counting the queries it answers and the rows they return."""

    def __init__(self, inner: Warehouse) -> None:
        super().__init__(inner.name)
        self.inner = inner
        self.dialect = inner.dialect
        self.queries = 0
        self.rows = 0

    def _query(
        self, sql: str, params: Mapping[str, object], *, timeout: float | None
    ) -> pd.DataFrame:
        frame = self.inner.query(sql, params, timeout=timeout)
        self.queries += 1
        self.rows += len(frame)
        return frame

    def ping(self) -> None:
        self.inner.ping()


def cycle(engine: Engine, counting: Counting, names: list[str]) -> tuple[int, int, float]:
    queries, rows = counting.queries, counting.rows
    started = time.perf_counter()
    for name in names:
        engine.run(name)
    return counting.queries - queries, counting.rows - rows, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__, "2 warm cycles")
    parser.add_argument("--cycles", type=int, default=6, help="warm cycles (default 6)")
    args = parser.parse_args(argv)
    warm_cycles = 2 if args.smoke else args.cycles
    now = datetime.now(UTC).replace(minute=20, second=0, microsecond=0)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        demo.build(directory / "demo.duckdb", now=now)
        document = yaml.safe_load(DEMO_CONFIG.read_text())
        document["warehouse"]["path"] = str(directory / "demo.duckdb")
        document["state"]["path"] = str(directory / "state.db")
        document.pop("slack")
        config = parse_config(document)
        counting = Counting(open_warehouses(config)["default"])
        clock = [now - timedelta(hours=warm_cycles)]
        engine = Engine(
            config,
            {"default": counting},
            StateStore(":memory:"),
            Metrics(),
            announce=False,
            clock=lambda: clock[0],
        )
        names = [c.name for c in config.checks]
        cold = cycle(engine, counting, names)
        warm = []
        for _ in range(warm_cycles):
            clock[0] += timedelta(hours=1)
            warm.append(cycle(engine, counting, names))
    print(f"demo config: {len(names)} checks; warm cycles advance the clock one hour")
    print(f"{'cycle':<6} {'queries':>8} {'rows':>8} {'seconds':>8}")
    print(f"{'cold':<6} {cold[0]:>8} {cold[1]:>8} {cold[2]:>8.3f}")
    for q, r, s in warm:
        print(f"{'warm':<6} {q:>8} {r:>8} {s:>8.3f}")
    rows = statistics.median(r for _, r, _ in warm)
    seconds = statistics.median(s for _, _, s in warm)
    print(
        f"median warm cycle: {rows:.0f} rows ({rows / cold[1]:.2%} of cold), "
        f"{seconds:.3f} s ({seconds / cold[2]:.0%} of cold)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
