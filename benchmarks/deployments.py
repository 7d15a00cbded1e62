"""Deployments: verdicts you can trust, and recording with a large dbt manifest.

    python -m benchmarks.deployments            # 10 of each breaking deployment, 500 benign,
                                                # 40 intended; 75,000-node manifest, 100 checks
    python -m benchmarks.deployments --smoke    # 1 of each, 20 benign, 4 intended; 2,000 nodes

Verdicts: see ``benchmarks.deployment_verdicts``.

Two deployments to one environment go through the daemon's own path (the API's request model,
then ``DeploymentWatcher.record`` on a SQLite state store and a DuckDB warehouse): the first has
no earlier manifest, the second changes 1% of the models. While the second is recorded, another
thread asks for a deployment over and over (what ``GET /api/v1/deployments/{id}`` does, and
``deployment verify --wait`` polls): its longest wait is how long recording holds the watcher's
lock. Matching is which checks 150,000 changed models and their relations touch
(``affected_checks``), none of them but one checked.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from benchmarks.deployment_verdicts import run as verdicts
from benchmarks.harness import arguments
from monitor.config import parse_config
from monitor.deployments import DeploymentRequest, affected_checks
from monitor.engine import Engine
from monitor.exporter import Metrics
from monitor.store import StateStore
from monitor.warehouse import open_warehouses
from monitor.watcher import DeploymentWatcher


def manifest(nodes: int, changed: int = 0) -> dict[str, dict[str, str]]:
    """A compact manifest as ``deployment record`` sends it; ``changed`` nodes get a new
    checksum (every hundredth one, so they are spread over the project)."""
    step = max(nodes // changed, 1) if changed else 0
    out = {}
    for j in range(nodes):
        digest = hashlib.sha256(f"{j}/{1 if step and j % step == 0 else 0}".encode()).hexdigest()
        out[f"model.shop.m{j}"] = {
            "name": f"m{j}",
            "checksum": digest,
            "relation": f'"prod"."analytics"."m{j}"',
        }
    return out


def build(directory: Path, checks: int) -> DeploymentWatcher:
    warehouse = directory / "wh.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE SCHEMA analytics")
        for i in range(checks):
            con.execute(f"CREATE TABLE analytics.m{i * 7} (ts TIMESTAMP, amount DOUBLE)")
    config = parse_config(
        {
            "warehouse": {"kind": "duckdb", "path": str(warehouse)},
            "state": {"path": str(directory / "state.db")},
            "checks": [
                {
                    "name": f"c{i}",
                    "kind": "metric",
                    "table": f"analytics.m{i * 7}",
                    "timestamp_column": "ts",
                    "expression": "sum(amount)",
                    "models": [f"m{i * 7}"],
                }
                for i in range(checks)
            ],
        }
    )
    store, metrics = StateStore(config.state.path), Metrics()
    engine = Engine(config, open_warehouses(config), store, metrics)
    return DeploymentWatcher(config, store, engine, metrics, channels=[], clock=_now)


def _now() -> datetime:
    return datetime.now(UTC)


def timed_record(watcher: DeploymentWatcher, body: dict[str, Any]) -> tuple[float, float, float]:
    """Seconds to validate the request, to record it, and the longest wait of a concurrent
    read of another deployment meanwhile."""
    started = time.perf_counter()
    request = DeploymentRequest.model_validate(body)
    validated = time.perf_counter() - started
    done = threading.Event()
    waits: list[float] = []

    def reader() -> None:
        while not done.is_set():
            asked = time.perf_counter()
            watcher.get("another-deployment")
            waits.append(time.perf_counter() - asked)
            time.sleep(0.001)

    thread = threading.Thread(target=reader)
    thread.start()
    started = time.perf_counter()
    watcher.record(request)
    recorded = time.perf_counter() - started
    done.set()
    thread.join()
    return validated, recorded, max(waits, default=0.0)


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__, "2,000 nodes, 10 checks")
    parser.add_argument("--nodes", type=int, default=75_000)
    parser.add_argument("--checks", type=int, default=100)
    parser.add_argument("--names", type=int, default=150_000, help="changed names to match")
    parser.add_argument("--repeat", type=int, default=10, help="of each breaking deployment")
    parser.add_argument("--benign", type=int, default=500)
    parser.add_argument("--intended", type=int, default=40)
    args = parser.parse_args(argv)
    nodes, checks, names = args.nodes, args.checks, args.names
    repeat, benign, intended = args.repeat, args.benign, args.intended
    if args.smoke:
        nodes, checks, names = 2_000, 10, 4_000
        repeat, benign, intended = 1, 20, 4
    print("verdicts on generated deployments (hourly KPI-suite series, 5 segments and the total)")
    print("\n".join(verdicts(repeat, benign, intended)))
    with tempfile.TemporaryDirectory() as tmp:
        watcher = build(Path(tmp), checks)
        first = manifest(nodes)
        size = len(json.dumps({"manifest": first})) / 1e6
        print(f"manifest: {nodes:,} nodes, {size:.1f} MB as sent; {checks} checks")
        second = manifest(nodes, nodes // 100)
        for label, body in (
            ("first deployment (no earlier manifest)", {"id": "d1", "manifest": first}),
            ("second deployment (1% changed)", {"id": "d2", "manifest": second}),
        ):
            validated, recorded, waited = timed_record(watcher, {**body, "environment": "prod"})
            print(
                f"{label}: request validated in {validated:.2f} s, recorded in {recorded:.2f} s;"
                f" a concurrent read waited at most {waited * 1000:.0f} ms"
            )
        config = watcher.config
        # names of models no check depends on, but the last: every name must be looked at
        changed = [f"m{j}" for j in range(checks * 7, checks * 7 + names - 1)] + ["m0"]
        relations = [f'"prod"."analytics"."{name}"' for name in changed]
        started = time.perf_counter()
        hit = affected_checks(config, changed, relations)
        print(
            f"matching {checks} checks against {names:,} changed models and relations:"
            f" {time.perf_counter() - started:.3f} s ({len(hit)} checks touched)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
