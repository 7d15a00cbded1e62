"""Load and soak: thousands of checks on a generated DuckDB warehouse, in compressed time.

    python -m benchmarks.soak                 # the full run (on demand; see --help for sizes)
    python -m benchmarks.soak --smoke         # a small configuration for CI (< 60 s)
    python -m benchmarks.soak --churn [--smoke]   # segment churn (see benchmarks/churn.py)

What runs is the daemon's own machinery, minus wall-clock waiting: one ``monitor.engine.Engine``
over a real DuckDB file and a real SQLite state store, its clock injected and advanced one hourly
bucket per cycle; every cycle submits every check to a thread pool of ``scheduler.max_workers``
threads (the daemon's scheduler default unless ``--workers``), exactly as the scheduler's pool
runs them when every check is due at once; the daemon's HTTP server (``monitor.server``, waitress)
serves ``/metrics`` from the same registry, and a scraper thread fetches it over a socket every
``--scrape-interval`` seconds (default 15, real time) while the cycles run, as Prometheus would.
Rendering the exposition holds the GIL, so a much shorter interval slows the checks down.

Printed (plainly; nothing here asserts on timing):

- cycle time: wall time for one run of every check (median, p95, max), and per check run;
- ``/metrics`` scrape time over HTTP (median, max) and the exposition's size;
- peak RSS, and RSS growth between the first and the last hundred cycles (median of each; with
  fewer than 200 cycles, the first and last fifth);
- missed runs: a run waiting in the pool longer than ``scheduler.misfire_grace`` would be skipped
  by APScheduler; and whether one cycle takes longer than the checks' schedule interval (the next
  tick would find the previous one unfinished and coalesce). Both are reported for the real
  wall-clock durations measured here.

Every check is one warehouse query per run (the engine queries the whole lookback each time), so
the full size may not fit in a short run on a small machine: the script prints how long a cycle
takes and, with ``--budget``, stops after that many seconds, reporting what it measured.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from benchmarks.harness import arguments
from monitor.config import Config, SchedulerConfig, parse_config
from monitor.durations import parse_duration
from monitor.engine import Engine
from monitor.exporter import Metrics
from monitor.listener import HttpServer
from monitor.store import StateStore
from monitor.warehouse import open_warehouses
from tests.conftest import bare_api

# A daemon is idle between the ticks of a schedule (a 5-minute one, while a cycle takes seconds),
# and the DuckDB file (with its buffer cache) closes keep_open after the last query; compressed
# time keeps a short pause between cycles, and a shorter keep_open, so it does too.
IDLE_SECONDS = 0.3
START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday; the data begins here (naive UTC in DuckDB)


@dataclass(frozen=True)
class Size:
    checks: int
    segmented: int  # checks split by a dimension: max_segments + 1 (__other__) series each
    segments: int  # distinct dimension values in the data (more than max_segments)
    max_segments: int
    tables: int
    lookback_hours: int
    cycles: int

    @property
    def series(self) -> int:
        return (self.checks - self.segmented) + self.segmented * (self.max_segments + 1)


FULL = Size(
    checks=2000,
    segmented=900,
    segments=25,
    max_segments=20,
    tables=20,
    lookback_hours=14 * 24,
    cycles=300,
)
SMOKE = Size(
    checks=60, segmented=10, segments=8, max_segments=5, tables=4, lookback_hours=7 * 24, cycles=40
)


# --- the warehouse and the config ------------------------------------------------------------


def build_warehouse(path: Path, size: Size) -> None:
    """``kpi.t<k>(ts, seg, amount)``: one row per hour and segment, a daily and weekly rhythm
    with noise, from START over the lookback and every cycle (plus a margin)."""
    hours = size.lookback_hours + size.cycles + 48
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA kpi")
        for k in range(size.tables):
            con.execute(
                f"""
                CREATE TABLE kpi.t{k} AS
                SELECT ts, 's' || lpad(s::VARCHAR, 2, '0') AS seg,
                       round((100 + 10 * s + {k})
                             * (1 + 0.4 * sin(2 * pi() * hour(ts) / 24))
                             * (1 + 0.1 * (dayofweek(ts) IN (0, 6))::INT)
                             * (0.9 + 0.2 * random()), 2) AS amount
                FROM range(TIMESTAMP '{START:%Y-%m-%d %H:%M:%S}',
                           TIMESTAMP '{START:%Y-%m-%d %H:%M:%S}' + INTERVAL {hours} HOUR,
                           INTERVAL 1 HOUR) r(ts),
                     range({size.segments}) g(s)
                """
            )


def soak_config(
    directory: Path, size: Size, workers: int | None, state: dict[str, Any] | None = None
) -> Config:
    checks: list[dict[str, Any]] = []
    for i in range(size.checks):
        table = f"kpi.t{i % size.tables}"
        check: dict[str, Any] = {
            "name": f"c{i:05d}",
            "kind": "metric",
            "table": table,
            "timestamp_column": "ts",
            "expression": "sum(amount)",
            "lookback": f"{size.lookback_hours}h",
            "settle": "5m",
            "labels": {"team": f"team{i % 7}"},
        }
        if i < size.segmented:
            check["dimensions"] = ["seg"]
            check["max_segments"] = size.max_segments
        else:
            check["where"] = f"seg = 's{i % size.segments:02d}'"
        checks.append(check)
    document: dict[str, Any] = {
        "warehouse": {
            "kind": "duckdb",
            "path": str(directory / "soak.duckdb"),
            "keep_open": IDLE_SECONDS / 2,
        },
        "state": state or {"path": str(directory / "soak-state.db")},
        "defaults": {"grain": "hour", "schedule": "5m"},
        "checks": checks,
    }
    if workers is not None:
        document["scheduler"] = {"max_workers": workers}
    return parse_config(document, "soak.yaml")


# --- measurements -------------------------------------------------------------------------------


def rss_bytes() -> int:
    """Resident set size now (Linux /proc; elsewhere the peak from getrusage)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return peak_rss_bytes()


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@dataclass
class Scraper:
    """Fetches /metrics over HTTP every ``interval`` seconds until stopped."""

    url: str
    interval: float
    times: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def scrape(self) -> None:
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(self.url, timeout=60) as response:
                body = response.read()
        except OSError:
            self.errors += 1
            return
        self.times.append(time.perf_counter() - t0)
        self.sizes.append(len(body))

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            self.scrape()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="scraper", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- the soak ------------------------------------------------------------------------------------


@dataclass
class Measured:
    """What the cycles of one process measured."""

    cycle_times: list[float] = field(default_factory=list)
    run_times: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    stopped_early: bool = False
    scrapes: list[float] = field(default_factory=list)
    scrape_bytes: int = 0
    scrape_errors: int = 0


def serve(engine: Engine) -> HttpServer:
    """The daemon's HTTP server on the engine's registry, on a free port."""
    server = HttpServer(bare_api(engine, token=None), "127.0.0.1", 0, engine.config.server)
    server.start()
    return server


def run_cycles(
    engine: Engine,
    names: Callable[[], list[str]],
    size: Size,
    max_workers: int,
    now: list[datetime],
    scrape_interval: float,
    budget: float | None,
    label: str = "",
) -> Measured:
    """Every cycle: each of ``names()`` submitted to a pool of ``max_workers``, as the scheduler
    runs them when all are due at once; then the clock moves one hour on. /metrics is scraped
    over HTTP meanwhile."""
    measured = Measured()
    lock = threading.Lock()
    server = serve(engine)
    scraper = Scraper(f"http://127.0.0.1:{server.port}/metrics", scrape_interval)
    scraper_thread = scraper.start()

    def run(name: str, submitted: float) -> None:
        started = time.perf_counter()
        result = engine.run(name)
        with lock:
            measured.waits.append(started - submitted)
            measured.run_times.append(result.duration)
            measured.outcomes[result.outcome] = measured.outcomes.get(result.outcome, 0) + 1
            if result.error:
                measured.errors[result.error] = measured.errors.get(result.error, 0) + 1

    soak_started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="check") as pool:
        for cycle in range(size.cycles):
            c0 = time.perf_counter()
            futures = [pool.submit(run, name, c0) for name in names()]
            for future in futures:
                future.result()
            measured.cycle_times.append(time.perf_counter() - c0)
            measured.rss.append(rss_bytes())
            now[0] += timedelta(hours=1)
            time.sleep(IDLE_SECONDS)
            if cycle in (0, 1) or (cycle + 1) % 10 == 0:
                print(
                    f"  {label}cycle {cycle + 1}/{size.cycles}: {measured.cycle_times[-1]:.1f} s,"
                    f" RSS {measured.rss[-1] / 2**20:.0f} MiB",
                    flush=True,
                )
            if budget is not None and time.perf_counter() - soak_started > budget:
                measured.stopped_early = cycle + 1 < size.cycles
                break
    scraper.stop()
    scraper_thread.join(timeout=60)
    scraper.scrape()  # one more at rest, after the last cycle
    time.sleep(0.5)  # let waitress finish with the last connection before closing
    server.stop()
    measured.scrapes, measured.scrape_errors = scraper.times, scraper.errors
    measured.scrape_bytes = scraper.sizes[-1] if scraper.sizes else 0
    return measured


def soak(size: Size, workers: int | None, scrape_interval: float, budget: float | None) -> int:
    with tempfile.TemporaryDirectory(prefix="kpimon-soak-") as tmp:
        directory = Path(tmp)
        t0 = time.perf_counter()
        build_warehouse(directory / "soak.duckdb", size)
        config = soak_config(directory, size, workers)
        built = time.perf_counter() - t0
        print(
            f"soak: {describe(size, config)}; warehouse built in {built:.1f} s",
            flush=True,
        )
        now = [START + timedelta(hours=size.lookback_hours, minutes=10)]
        store = StateStore(directory / "soak-state.db")
        metrics = Metrics()
        engine = Engine(
            config, open_warehouses(config), store, metrics, clock=lambda: now[0], announce=False
        )
        names = [c.name for c in config.checks]
        measured = run_cycles(
            engine, lambda: names, size, config.scheduler.max_workers, now, scrape_interval, budget
        )
        store.close()
    report(measured, size, config)
    return 0


def describe(size: Size, config: Config) -> str:
    return (
        f"{size.checks} checks ({size.segmented} split into up to "
        f"{size.max_segments} segments + __other__), {size.series} series, "
        f"{size.tables} tables, lookback {size.lookback_hours} h, {size.cycles} cycles, "
        f"{config.scheduler.max_workers} workers (default {SchedulerConfig().max_workers}), "
        f"{os.cpu_count()} CPUs"
    )


def report(measured: Measured, size: Size, config: Config) -> None:
    """Print what the cycles measured (plainly; nothing asserts on timing)."""
    grace = config.scheduler.misfire_grace.total_seconds()
    interval = parse_duration(config.checks[0].schedule).total_seconds()
    cycle_times, rss, waits = measured.cycle_times, measured.rss, measured.waits
    done = len(cycle_times)
    print()
    stopped = " (stopped by --budget)" if measured.stopped_early else ""
    print(f"cycles run: {done} of {size.cycles}{stopped}")
    tally = ", ".join(f"{k} {v}" for k, v in sorted(measured.outcomes.items()))
    print(f"runs: {sum(measured.outcomes.values())} ({tally})")
    for message, count in sorted(measured.errors.items(), key=lambda kv: -kv[1])[:5]:
        print(f"  error x{count}: {message}")
    steady = cycle_times[1:] or cycle_times
    print(
        f"cycle time: first (models built) {cycle_times[0]:.2f} s; then median "
        f"{statistics.median(steady):.2f} s, p95 {quantile(steady, 0.95):.2f} s, "
        f"max {max(steady):.2f} s"
    )
    print(
        f"check run: median {statistics.median(measured.run_times) * 1000:.1f} ms, "
        f"p95 {quantile(measured.run_times, 0.95) * 1000:.1f} ms"
    )
    if measured.scrapes:
        print(
            f"/metrics scrape over HTTP: {len(measured.scrapes)} scrapes, median "
            f"{statistics.median(measured.scrapes):.3f} s, max {max(measured.scrapes):.3f} s, "
            f"{measured.scrape_bytes / 2**20:.1f} MiB, {measured.scrape_errors} failed"
        )
    window = 100 if done >= 200 else max(1, done // 5)
    first, last = statistics.median(rss[:window]), statistics.median(rss[-window:])
    print(
        f"RSS: peak {peak_rss_bytes() / 2**20:.0f} MiB; median of the first {window} cycles "
        f"{first / 2**20:.0f} MiB, of the last {window} {last / 2**20:.0f} MiB: growth "
        f"{(last - first) / first * 100:+.1f}%"
    )
    late = sum(1 for w in waits if w > grace)
    over = sum(1 for c in cycle_times if c > interval)
    print(
        f"missed runs for lack of workers: {late} waited longer than misfire_grace "
        f"({grace:g} s) in the pool (max wait {max(waits):.1f} s); {over} of {done} cycles took "
        f"longer than the {interval:g} s schedule interval"
    )
    sustainable = statistics.median(steady)
    print(
        f"=> with {config.scheduler.max_workers} workers every check can run about every "
        f"{sustainable:.0f} s ({'within' if sustainable <= interval else 'NOT within'} its "
        f"{interval:g} s schedule)"
    )


# 60,000 series across three replica processes (--replicas 3): three times FULL's checks
REPLICAS_FULL = replace(FULL, checks=3 * FULL.checks, segmented=3 * FULL.segmented, cycles=8)


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__, "a small configuration (< 60 s)")
    parser.add_argument(
        "--churn",
        action="store_true",
        help="segment churn instead: memory and the state store over many segments coming and"
        " going (benchmarks/churn.py)",
    )
    parser.add_argument("--checks", type=int, help=f"checks (full: {FULL.checks})")
    parser.add_argument(
        "--segmented", type=int, help=f"checks with a dimension (full: {FULL.segmented})"
    )
    parser.add_argument("--cycles", type=int, help=f"cycles (full: {FULL.cycles})")
    parser.add_argument("--workers", type=int, help="pool size (default: scheduler.max_workers)")
    parser.add_argument(
        "--scrape-interval",
        type=float,
        help="seconds between scrapes (default 15, as a Prometheus would; --smoke: 1)",
    )
    parser.add_argument(
        "--budget", type=float, help="stop after this many seconds of cycles and report"
    )
    parser.add_argument(
        "--replicas",
        type=int,
        help="run across this many replica processes sharing a PostgreSQL state database"
        f" (full: {REPLICAS_FULL.series} series in all; see benchmarks/soak_replicas.py)",
    )
    # the size in full, as the parent of --replicas hands it to each replica process
    for name in ("segments", "max-segments", "tables", "lookback-hours"):
        parser.add_argument(f"--{name}", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--replica-of", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--state-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)  # errors are tallied and printed below
    if args.churn:
        from benchmarks import churn

        sized = churn.SMOKE if args.smoke else churn.FULL
        return churn.churn(
            churn.ChurnSize(args.checks or sized.checks, args.cycles or sized.cycles)
        )
    size = SMOKE if args.smoke else REPLICAS_FULL if args.replicas else FULL
    overrides = {
        name: getattr(args, name)
        for name in ("checks", "segmented", "cycles", "segments", "max_segments", "tables",
                     "lookback_hours")
        if getattr(args, name) is not None
    }  # fmt: skip
    if overrides:
        size = replace(size, **overrides)
        size = replace(size, segmented=min(size.segmented, size.checks))
    interval = args.scrape_interval or (1.0 if args.smoke else 15.0)
    if args.replica_of is not None:
        from benchmarks.soak_replicas import replica

        return replica(args.replica_of, args.state_url, size, args.replicas, args.workers,
                       interval, args.budget)  # fmt: skip
    if args.replicas:
        from benchmarks.soak_replicas import parent

        return parent(size, args.replicas, args.workers, args.budget)
    return soak(size, args.workers, interval, args.budget)


if __name__ == "__main__":
    sys.exit(main())
