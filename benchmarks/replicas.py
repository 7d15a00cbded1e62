"""Faults with three replicas on one PostgreSQL server: nothing lost, nothing sent twice.

    python -m benchmarks.replicas             # the full run (about 7 minutes)
    python -m benchmarks.replicas --smoke     # one fault, about 2 minutes

Three ``kpi-monitor run`` processes share the checks through a real PostgreSQL server (started
by ``tests/postgres_server.py``), which also holds the warehouse: a ``loads`` table that a loader
thread here feeds, one source per freshness check. Each source loads for a while, then stalls
for longer than its check's ``max_age``, so alerts keep opening and resolving (an opening, a
resolution in its thread, the edit of the alert) while these faults happen, one after another:

- SIGKILL the replica holding the most checks, mid-cycle; it comes back 15 s later;
- SIGSTOP another for twice the lease TTL, then SIGCONT: it must not act on the leases it lost;
- PostgreSQL restarted (stopped ``-m fast``, every session cut, started again 3 s later);
- a rolling restart: each replica in turn stopped with SIGTERM and a new one started.

Alerts go to the local Slack server (``tests/slack_server.py``). At the end every source loads
again, the alerts resolve, and once the outbox is empty the script compares what Slack shows
with the state store: every episode event recorded (``alert_events``) must have reached Slack
(lost: 0) as exactly one message (duplicated: 0). A stall long enough to be alerted on whatever
the faults (its check's ``max_age`` plus a schedule, the TTL and a minute) that opened no alert
counts as lost too. A poller reads each check's last run from the state store twice a second:
the longest time any check went without a run is printed, with the fault it overlapped (the
target: its schedule plus the lease TTL, plus a lease renewal). Nothing here asserts; it prints.
"""

from __future__ import annotations

import itertools
import json
import signal
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import yaml

from benchmarks.harness import arguments
from tests.conftest import free_port
from tests.daemon_process import DaemonProcess
from tests.postgres_server import PostgresServer, running_postgres
from tests.slack_server import SlackServer

TTL = 6.0
SCHEDULE = 2.0
# freshness is judged to the minute: the age of a source loading every few seconds stays < 65 s
MAX_AGE = 75.0
LOAD_EVERY = 5.0
TOKEN = "xoxb-replicas-bench"


@dataclass(frozen=True)
class Plan:
    checks: int
    loading: float  # seconds a source loads, then
    stalled: float  # seconds it stalls
    faults: tuple[str, ...]
    warmup: float
    between: float  # seconds between two faults
    settle: float  # seconds every source loads at the end


FULL = Plan(30, 45.0, 180.0, ("sigkill", "sigstop", "postgres", "rolling"), 60.0, 60.0, 150.0)
SMOKE = Plan(8, 45.0, 180.0, ("sigkill",), 45.0, 30.0, 100.0)


@dataclass
class Timeline:
    """When each fault happened (for the run gaps) and each source's stalls."""

    faults: list[tuple[str, float, float]] = field(default_factory=list)
    stalls: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))

    def during(self, start: float, end: float) -> str:
        names = [n for n, s, e in self.faults if s <= end and e >= start]
        return ", ".join(names) or "no fault"


class Loader(threading.Thread):
    """Feeds ``loads``: each source loads for ``loading`` s then stalls for ``stalled`` s,
    phases staggered, until ``settle()``; then all load."""

    def __init__(self, dsn: str, sources: list[str], plan: Plan, timeline: Timeline) -> None:
        super().__init__(daemon=True, name="loader")
        self.dsn, self.sources, self.plan, self.timeline = dsn, sources, plan, timeline
        self.settling = threading.Event()
        self.stop = threading.Event()
        self.start_time = time.time()

    def stalled(self, index: int, now: float) -> bool:
        cycle = self.plan.loading + self.plan.stalled
        phase = (now - self.start_time + index * cycle / len(self.sources)) % cycle
        return phase >= self.plan.loading and not self.settling.is_set()

    def run(self) -> None:
        conn: Any = None
        since: dict[str, float] = {}
        loaded: set[str] = set()  # a source with no row at all has no data age to judge
        while not self.stop.wait(LOAD_EVERY if conn is not None else 0.5):
            now = time.time()
            rows = []
            for i, source in enumerate(self.sources):
                if self.stalled(i, now):
                    if source in loaded:
                        since.setdefault(source, now)
                    continue
                if source in since:
                    self.timeline.stalls[source].append((since.pop(source), now))
                rows.append((source, datetime.fromtimestamp(now, UTC)))
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2)
                with conn.cursor() as cursor:
                    cursor.executemany("INSERT INTO loads VALUES (%s, %s)", rows)
                loaded.update(source for source, _ in rows)
            except psycopg.Error:
                conn = None  # PostgreSQL restarting: the sources load again after it


class RunPoller(threading.Thread):
    """Each check's runs, as its replicas record them in the state store."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True, name="runs")
        self.dsn = dsn
        self.stop = threading.Event()
        self.runs: dict[str, list[float]] = defaultdict(list)

    def run(self) -> None:
        conn: Any = None
        while not self.stop.wait(0.5):
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2)
                for name, started in conn.execute("SELECT check_name, started FROM check_runs"):
                    moment = datetime.fromisoformat(started).timestamp()
                    if not self.runs[name] or self.runs[name][-1] != moment:
                        self.runs[name].append(moment)
            except psycopg.Error:
                conn = None


class Cluster:
    def __init__(self, config: Path, directory: Path) -> None:
        self.config, self.directory = config, directory
        self.replicas: list[DaemonProcess] = []
        self._made = 0

    def start_one(self) -> DaemonProcess:
        self._made += 1
        replica = DaemonProcess(
            ["run", "-c", str(self.config)], free_port(),
            {"SLACK_BOT_TOKEN": TOKEN}, log=self.directory / f"replica-{self._made}.log",
        )  # fmt: skip
        replica.wait_ready(timeout=60)
        self.replicas.append(replica)
        return replica

    def owned(self, replica: DaemonProcess) -> int:
        for line in replica.metrics().splitlines():
            if line.startswith("kpimon_replica_owned_checks "):
                return int(float(line.split()[1]))
        return 0

    def stop_all(self) -> None:
        for replica in self.replicas:
            if replica.process.poll() is None:
                replica.stop(signal.SIGTERM)


def _config(directory: Path, server: PostgresServer, slack: SlackServer, checks: int) -> Path:
    document = {
        "warehouse": {"kind": "postgres", "dsn": server.dsn("warehouse")},
        "state": {"url": server.dsn("state"), "replicas": 3, "lease_ttl": f"{TTL:g}s"},
        "slack": {"token": "${SLACK_BOT_TOKEN}", "api_url": slack.url, "channel": "#data-alerts",
                  "group_wait": "0s", "chart_buckets": 0, "max_messages": 100},
        "defaults": {"schedule": f"{SCHEDULE:g}s", "timezone": "UTC"},
        "checks": [
            {"name": f"f_{i:02d}", "kind": "freshness", "table": "loads",
             "timestamp_column": "loaded_at", "where": f"source = 'f_{i:02d}'",
             "max_age": f"{MAX_AGE:g}s", "labels": {"team": f"team_{i:02d}"}}
            for i in range(checks)
        ],
    }  # fmt: skip
    path = directory / "replicas.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _fault(name: str, cluster: Cluster, server: PostgresServer) -> None:
    if name == "sigkill":
        victim = max(cluster.replicas, key=cluster.owned)
        victim.stop(signal.SIGKILL)
        cluster.replicas.remove(victim)
        time.sleep(15)
        cluster.start_one()
    elif name == "sigstop":
        victim = cluster.replicas[0]
        victim.process.send_signal(signal.SIGSTOP)
        time.sleep(2 * TTL + 3)
        victim.process.send_signal(signal.SIGCONT)
        time.sleep(5)
    elif name == "postgres":
        server.stop("fast")
        time.sleep(3)
        server.start()
        time.sleep(5)
    elif name == "rolling":
        for old in list(cluster.replicas):
            _code, _ = old.stop(signal.SIGTERM)
            cluster.replicas.remove(old)
            cluster.start_one()
            time.sleep(5)


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(1)
    return False


def run(plan: Plan) -> int:
    # a SIGTERM (a timeout) unwinds the context managers: PostgreSQL is stopped and deleted
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    directory = Path(tempfile.mkdtemp(prefix="kpimon-replicas-"))
    timeline = Timeline()
    with running_postgres(max_connections=100) as server:
        with psycopg.connect(server.dsn(), autocommit=True) as db:
            db.execute("CREATE DATABASE state")
            db.execute("CREATE DATABASE warehouse")
        with psycopg.connect(server.dsn("warehouse"), autocommit=True) as db:
            db.execute("CREATE TABLE loads (source TEXT NOT NULL, loaded_at TIMESTAMPTZ NOT NULL)")
        slack = SlackServer(token=TOKEN).start()
        sources = [f"f_{i:02d}" for i in range(plan.checks)]
        loader = Loader(server.dsn("warehouse"), sources, plan, timeline)
        poller = RunPoller(server.dsn("state"))
        cluster = Cluster(_config(directory, server, slack, plan.checks), directory)
        try:
            loader.start()
            for _ in range(3):
                cluster.start_one()
            poller.start()
            print(f"3 replicas, {plan.checks} freshness checks every {SCHEDULE:g}s, lease TTL "
                  f"{TTL:g}s; logs in {directory}", flush=True)  # fmt: skip
            time.sleep(plan.warmup)
            for name in plan.faults:
                started = time.time()
                _fault(name, cluster, server)
                timeline.faults.append((name, started, time.time()))
                print(f"fault {name}: {time.time() - started:.0f} s", flush=True)
                time.sleep(plan.between)
            loader.settling.set()
            time.sleep(plan.settle)
            state = psycopg.connect(server.dsn("state"), autocommit=True)
            pending = "SELECT count(*) FROM outbox WHERE status = 'pending'"
            drained = _wait(lambda: state.execute(pending).fetchall() == [(0,)], 120)
        finally:
            loader.stop.set()
            poller.stop.set()
            cluster.stop_all()
        report = _report(state, slack, poller, timeline, plan, drained)
        slack.stop()
        for replica_log in sorted(directory.glob("replica-*.log")):
            if "Traceback" in replica_log.read_text():
                print(f"a traceback in {replica_log}")
    print(json.dumps(report, indent=1))
    return 0


def _report(
    state: Any, slack: SlackServer, poller: RunPoller, timeline: Timeline, plan: Plan,
    drained: bool,
) -> dict[str, Any]:  # fmt: skip
    events = [str(k) for (k,) in state.execute("SELECT notification_key FROM alert_events")]
    outbox = {
        str(k): str(s)
        for k, s in state.execute(
            "SELECT notification_key, status FROM outbox WHERE channel = 'slack'"
        )
    }
    opened = [k for k in events if k.endswith("/opened")]
    resolved = [k for k in events if k.endswith("/resolved")]
    lost = [k for k in events if outbox.get(k) != "sent"]
    messages = slack.posted("#data-alerts")
    alerts = [m for m in messages if m.thread_ts is None]
    replies = [m for m in messages if m.thread_ts is not None]
    edits = len(slack.messages("chat.update"))
    sent_edits = sum(1 for k, s in outbox.items() if k.endswith("/update") and s == "sent")
    # stalls long enough that an alert had to open, whatever the faults
    needed = MAX_AGE + 60 + SCHEDULE + TTL + 15
    # each episode as it was open, from its opening to its resolution as recorded
    episodes: dict[tuple[str, int], list[float]] = {}
    for key, created in state.execute("SELECT notification_key, created_at FROM alert_events"):
        check, _segment, episode, event = str(key).rsplit("/", 3)
        moment = datetime.fromisoformat(str(created)).timestamp()
        span = episodes.setdefault((check, int(episode)), [moment, float("inf")])
        span[0 if event == "opened" else 1] = moment
    unalerted = [
        (source, round(start - timeline.faults[0][1]) if timeline.faults else 0, round(end - start))
        for source, stalls in timeline.stalls.items()
        for start, end in stalls
        if end - start >= needed
        and not any(
            o <= start + needed and r >= start
            for (check, _), (o, r) in episodes.items() if check == source
        )
    ]
    gaps = []
    for check, runs in poller.runs.items():
        for before, after in itertools.pairwise(runs):
            gaps.append((after - before, check, timeline.during(before, after)))
    gaps.sort(reverse=True)
    by_fault: dict[str, float] = {}
    for gap, _, during in gaps:
        by_fault[during] = max(by_fault.get(during, 0.0), gap)
    return {
        "episode events recorded": len(events),
        "opened": len(opened),
        "resolved": len(resolved),
        "outbox drained": drained,
        "notifications lost (recorded, not delivered)": len(lost),
        "stalls long enough to alert": sum(
            1 for stalls in timeline.stalls.values() for a, b in stalls if b - a >= needed
        ),
        "stalls with no alert open in time (source, s after the first fault, length)": unalerted,
        "alerts duplicated (Slack messages - alerts sent)": len(alerts) - len(opened),
        "resolutions duplicated (replies - resolutions sent)": len(replies) - len(resolved),
        "edits (chat.update calls / edits recorded sent)": f"{edits} / {sent_edits}",
        "longest time without a run, s (target: schedule + TTL + a renewal)": round(gaps[0][0], 1)
        if gaps else None,
        "target, s": SCHEDULE + TTL + TTL / 6,
        "longest gap per fault, s": {k: round(v, 1) for k, v in sorted(by_fault.items())},
        "checks": plan.checks,
    }


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__, "one fault (about 2 minutes)")
    args = parser.parse_args(argv)
    return run(SMOKE if args.smoke else FULL)


if __name__ == "__main__":
    sys.exit(main())
