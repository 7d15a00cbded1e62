"""``benchmarks.soak`` across replica processes sharing one PostgreSQL state database.

    python -m benchmarks.soak --replicas 3            # 60,000 series in all (6,000 checks)
    python -m benchmarks.soak --replicas 3 --smoke    # a small configuration for CI

The parent builds the soak's DuckDB warehouse once, starts a PostgreSQL server
(``tests/postgres_server.py``) and starts one process per replica (``--replica-of``). Each
replica is the daemon's machinery as in ``benchmarks.soak`` (its engine, its HTTP server scraped
over a socket, its own clock moved one hour per cycle) plus the daemon's lease coordinator:
once the replicas have divided the checks, each runs its share every cycle, writing its state to
the shared database, fenced by its leases. Each replica prints the soak's report; the parent
prints per replica the checks and series held, the cycle times, the peak RSS and the CPU time,
and the sizing figures: series per replica per GiB of RSS, and series one core judges within a
5-minute schedule.
"""

from __future__ import annotations

import itertools
import json
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.soak import (
    START,
    Size,
    build_warehouse,
    describe,
    peak_rss_bytes,
    quantile,
    report,
    run_cycles,
    soak_config,
)
from monitor.engine import Engine
from monitor.exporter import Metrics
from monitor.leases import Coordinator, fair_share
from monitor.store import StateStore
from monitor.warehouse import open_warehouses
from tests.postgres_server import running_postgres

RESULT = "replica result: "
LEASE_TTL = 60.0  # a first cycle of 20,000 series keeps the CPUs busy for minutes
SCHEDULE_SECONDS = 300.0


def size_args(size: Size) -> list[str]:
    return [
        f"--{name.replace('_', '-')}={getattr(size, name)}"
        for name in ("checks", "segmented", "segments", "max_segments", "tables",
                     "lookback_hours", "cycles")
    ]  # fmt: skip


def parent(size: Size, replicas: int, workers: int | None, budget: float | None) -> int:
    # a SIGTERM (a timeout) unwinds the context managers: PostgreSQL is stopped and deleted
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    directory = Path(tempfile.mkdtemp(prefix="kpimon-soak-replicas-"))
    t0 = time.perf_counter()
    build_warehouse(directory / "soak.duckdb", size)
    config = soak_config(directory, size, workers)
    print(f"soak across {replicas} replicas: {describe(size, config)}; warehouse built in"
          f" {time.perf_counter() - t0:.1f} s; logs in {directory}", flush=True)  # fmt: skip
    with running_postgres() as server:
        with psycopg.connect(server.dsn(), autocommit=True) as db:
            db.execute("CREATE DATABASE state")
        extra = [f"--workers={workers}"] if workers else []
        extra += [f"--budget={budget}"] if budget else []
        processes = []
        for index in range(replicas):
            log = (directory / f"replica-{index}.log").open("w")
            command = [sys.executable, "-m", "benchmarks.soak", f"--replica-of={directory}",
                       f"--state-url={server.dsn('state')}", f"--replicas={replicas}",
                       *size_args(size), *extra]  # fmt: skip
            processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        codes = [p.wait() for p in processes]
    results = []
    for index, code in enumerate(codes):
        text = (directory / f"replica-{index}.log").read_text()
        found = [line[len(RESULT):] for line in text.splitlines() if line.startswith(RESULT)]
        if code != 0 or not found:
            print(f"replica {index} failed (exit {code}):\n{text[-3000:]}")
            return 1
        results.append(json.loads(found[-1]))
    print()
    print("| replica | checks | series | first cycle | warm cycle (median, p95) | peak RSS |"
          " CPU s per warm cycle | series per GiB | series per core at 5 min |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for index, r in enumerate(results):
        per_gib = r["series"] / (r["peak_rss"] / 2**30)
        per_core = r["series"] / r["cpu_per_cycle"] * SCHEDULE_SECONDS if r["cpu_per_cycle"] else 0
        print(f"| {index} | {r['checks']} | {r['series']} | {r['first']:.0f} s |"
              f" {r['median']:.1f} s, {r['p95']:.1f} s | {r['peak_rss'] / 2**20:.0f} MiB |"
              f" {r['cpu_per_cycle']:.1f} | {per_gib:,.0f} | {per_core:,.0f} |")  # fmt: skip
    print(f"series in all: {sum(r['series'] for r in results)}; check runs failed: "
          f"{sum(r['errors'] for r in results)}")  # fmt: skip
    return 0


def replica(
    directory: Path, url: str, size: Size, replicas: int, workers: int | None,
    scrape_interval: float, budget: float | None,
) -> int:  # fmt: skip
    state: dict[str, Any] = {"url": url, "replicas": replicas, "lease_ttl": f"{LEASE_TTL:g}s"}
    config = soak_config(directory, size, workers, state)
    now = [START + timedelta(hours=size.lookback_hours, minutes=10)]
    store = StateStore.open(config.state)
    metrics = Metrics()
    engine = Engine(
        config, open_warehouses(config), store, metrics, clock=lambda: now[0], announce=False,
        shared=True,
    )  # fmt: skip

    def acquired(names: list[str]) -> None:
        for name in names:
            engine.handover.take_over(name)

    def lost(names: list[str]) -> None:
        for name in names:
            engine.handover.let_go(name)

    coordinator = Coordinator(
        store, [c.name for c in config.checks], LEASE_TTL, metrics,
        acquired=acquired, lost=lost, idle=lambda name: True,
    )  # fmt: skip
    coordinator.start()
    _settle(coordinator, len(config.checks), replicas)
    held = coordinator.held()
    series_of = {c.name: (c.max_segments + 1 if c.dimensions else 1) for c in config.checks}
    print(f"replica {coordinator.replica}: {len(held)} checks", flush=True)
    cpu = [0.0]

    def names() -> list[str]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu.append(usage.ru_utime + usage.ru_stime)
        return coordinator.held()

    label = f"replica {coordinator.replica} "
    measured = run_cycles(engine, names, size, config.scheduler.max_workers, now,
                          scrape_interval, budget, label=label)  # fmt: skip
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu.append(usage.ru_utime + usage.ru_stime)
    coordinator.stop()
    store.close()
    report(measured, size, config)
    warm = measured.cycle_times[1:] or measured.cycle_times
    per_cycle = [b - a for a, b in itertools.pairwise(cpu[2:])]  # warm cycles only
    print(RESULT + json.dumps({
        "checks": len(held),
        "series": sum(series_of[n] for n in held),
        "first": measured.cycle_times[0],
        "median": statistics.median(warm),
        "p95": quantile(warm, 0.95),
        "peak_rss": peak_rss_bytes(),
        "cpu_per_cycle": statistics.median(per_cycle) if per_cycle else 0.0,
        "errors": measured.outcomes.get("error", 0),
    }), flush=True)  # fmt: skip
    return 0


def _settle(coordinator: Coordinator, checks: int, replicas: int, timeout: float = 600) -> None:
    """Wait until every replica is alive and this one holds its share, the others theirs (every
    check held), for a whole lease renewal: no check changes hands during the cycles."""
    deadline = time.monotonic() + timeout
    steady_since = None
    while time.monotonic() < deadline:
        rows = coordinator.store.database.read(
            "SELECT replica_id FROM replicas ORDER BY replica_id"
        )
        live = [str(r[0]) for r in rows]
        held = coordinator.store.database.read(
            "SELECT count(*) FROM leases WHERE holder IS NOT NULL AND name <> '__outbox__'"
            " AND expires_at > extract(epoch from clock_timestamp())"
        )[0][0]
        settled = (
            len(live) == replicas
            and int(held) == checks
            and coordinator.replica in live
            and len(coordinator.held())
            == fair_share(checks, replicas, live.index(coordinator.replica))
        )
        steady_since = (steady_since or time.monotonic()) if settled else None
        if steady_since is not None and time.monotonic() - steady_since > LEASE_TTL / 6 + 1:
            return
        time.sleep(0.5)
    raise SystemExit(f"the replicas did not divide the checks within {timeout:g} s")
