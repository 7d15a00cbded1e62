"""How fast the daemon's pages render: the overview with 2,000 checks, a check with 20 segments.

    python -m benchmarks.pages            # 2,000 checks, 7 requests of each kind
    python -m benchmarks.pages --smoke    # 200 checks, 3 requests

Writes a DuckDB warehouse (every check's two weeks of hourly values, a tenth of them with a live
incident; one metric check over 20 segments and eight weeks), runs every check once through the
daemon's engine, then asks the daemon's own HTTP server (real sockets) for the pages and prints
the medians: ``/`` (the first page of the overview, sorted worst first), ``/checks/{name}`` of the
20-segment check on a cold replay cache (the first view after a new bucket: every segment's week
judged again) and on a warm one. With Chromium installed, also the browser's time from navigation
to the load event (HTML parsed, SVG laid out and painted).
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from benchmarks.browser import Browser, chromium
from benchmarks.harness import arguments, median_seconds
from monitor.config import Config, parse_config
from monitor.daemon import Daemon
from monitor.history import Replays

SEGMENTED = "by_segment"
SEGMENTS = 20


def build(directory: Path, checks: int) -> Config:
    now = pd.Timestamp(datetime.now(UTC)).floor("h")
    rng = np.random.default_rng(18)
    hours = pd.date_range(now - pd.Timedelta(weeks=2), now, freq="h", inclusive="left")
    daily = 100 + 40 * np.sin(np.arange(len(hours)) * 2 * np.pi / 24)
    scale = rng.uniform(0.5, 2, (checks, 1))
    values = daily[None, :] * scale + rng.normal(0, 5, (checks, len(hours)))
    values[::10, -3:] *= 0.1  # a live incident on every tenth check
    kpi = pd.DataFrame({
        "check_id": np.repeat(np.arange(checks), len(hours)),
        "ts": np.tile(hours.tz_localize(None).to_numpy(), checks),
        "value": values.ravel(),
    })  # fmt: skip
    long = pd.date_range(now - pd.Timedelta(weeks=8), now, freq="h", inclusive="left")
    shape = 50 + 20 * np.sin(np.arange(len(long)) * 2 * np.pi / 24)
    segmented = pd.DataFrame({
        "segment": np.repeat([f"s{i:02d}" for i in range(SEGMENTS)], len(long)),
        "ts": np.tile(long.tz_localize(None).to_numpy(), SEGMENTS),
        "amount": (shape[None, :] + rng.normal(0, 4, (SEGMENTS, len(long)))).ravel(),
    })  # fmt: skip
    path = directory / "pages.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA analytics")
        for name, frame in (("kpi", kpi), ("segmented", segmented)):
            con.register("frame", frame)
            con.execute(f"CREATE TABLE analytics.{name} AS SELECT * FROM frame")
            con.unregister("frame")
    teams = ("revenue", "growth", "platform", "finance")
    document: dict[str, Any] = {
        "warehouse": {"kind": "duckdb", "path": str(path)},
        "state": {"path": str(directory / "state.db")},
        "defaults": {"grain": "hour", "lookback": "2w", "settle": "0s", "schedule": "1h"},
        "checks": [
            {
                "name": f"kpi_{i:04d}",
                "kind": "sql",
                "sql": "select ts as bucket, value from analytics.kpi"
                f" where check_id = {i} and ts >= :since",
                "labels": {"team": teams[i % len(teams)]},
                "severity": ("info", "warning", "critical")[i % 3],
            }
            for i in range(checks)
        ]
        + [
            {
                "name": SEGMENTED,
                "kind": "metric",
                "table": "analytics.segmented",
                "timestamp_column": "ts",
                "expression": "sum(amount)",
                "dimensions": ["segment"],
                "lookback": "8w",
            }
        ],
    }
    return parse_config(document, "benchmark")


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__, "200 checks, 3 requests")
    parser.add_argument("--checks", type=int, help="checks besides the segmented one")
    parser.add_argument("--repeats", type=int, help="requests of each kind (default 7)")
    args = parser.parse_args(argv)
    logging.getLogger("monitor").setLevel(logging.ERROR)  # the incidents' alert lines
    checks = args.checks or (200 if args.smoke else 2000)
    repeats = args.repeats or (3 if args.smoke else 7)
    with tempfile.TemporaryDirectory(prefix="kpimon-pages-") as scratch:
        config = build(Path(scratch), checks)
        daemon = Daemon(config, host="127.0.0.1", port=0)
        engine = daemon.engine
        t0 = time.perf_counter()
        outcomes = [engine.run(c.name).outcome for c in config.checks]
        ran = time.perf_counter() - t0
        daemon.http.start()
        try:
            base = f"http://127.0.0.1:{daemon.port}"

            def get(path: str) -> Callable[[], bytes]:
                def fetch() -> bytes:
                    with urllib.request.urlopen(base + path, timeout=60) as response:
                        return bytes(response.read())

                return fetch

            def cold() -> None:
                # what a new bucket does to a cached replay: every segment judged again
                engine._history.replays = Replays(engine._tuning.fitted)

            overview = median_seconds(get("/"), repeats)
            first_view = median_seconds(get(f"/checks/{SEGMENTED}"), repeats, cold)
            cached = median_seconds(get(f"/checks/{SEGMENTED}"), repeats)
            browser = browser_times(base, repeats) if chromium() else None
        finally:
            daemon.http.stop()
            daemon.store.close()
    print(f"{len(config.checks)} checks run once in {ran:.1f} s"
          f" ({outcomes.count('anomaly')} with an open alert)")  # fmt: skip
    rows = [
        (f"GET / ({len(config.checks)} checks, first page)", overview),
        (f"GET /checks/{SEGMENTED} ({SEGMENTS} segments x 7 days), cold replay", first_view),
        (f"GET /checks/{SEGMENTED}, replay cached", cached),
    ]
    print(f"{'request':<62} {'median':>9} {'size':>9}")
    for label, (seconds, size) in rows:
        print(f"{label:<62} {seconds * 1000:>7.0f}ms {size / 1024:>7.0f}KB")
    if browser is not None:
        for label, seconds in browser:
            print(f"{'Chromium, navigation to load event: ' + label:<62} {seconds * 1000:>7.0f}ms")
    else:
        print("(Chromium not installed: no browser figures)")
    return 0


def browser_times(base: str, repeats: int) -> list[tuple[str, float]]:
    found = []
    with Browser() as browser:
        page = browser.page()
        for path in ("/", f"/checks/{SEGMENTED}"):
            times = []
            for _ in range(repeats):
                page.open(base + path)
                timing = page.evaluate("performance.getEntriesByType('navigation')[0].toJSON()")
                times.append(timing["loadEventEnd"] / 1000)
            found.append((path, statistics.median(times)))
        page.close()
    return found


if __name__ == "__main__":
    sys.exit(main())
