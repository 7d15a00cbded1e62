"""A daemon whose alerts can be answered, on a small DuckDB shop with incidents under way, and
the local Slack server it talks to: shared by the answer tests."""

from __future__ import annotations

import json
import math
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from monitor.config import parse_config
from monitor.daemon import Daemon
from tests.slack_server import (
    APP_TOKEN,
    ONCALL_GROUP,
    SIGNING_SECRET,
    Message,
    SlackServer,
    signed_request,
)
from tests.test_faults import scrape, wait_until

INCIDENT_HOURS = 5  # the newest hours of DE, FR and visits fell to a tenth


def build_shop(path: Path, now: datetime, recovered: int = 0) -> Path:
    """``kpi.sales(ts, country, amount)`` (DE, FR, US) and ``kpi.visits(ts, amount)``: three
    weeks of hours up to ``now`` with a daily cycle; DE, FR and visits collapse at the end (and
    are back for the ``recovered`` newest hours)."""
    end = now.replace(minute=0, second=0, microsecond=0)
    back = end - timedelta(hours=recovered)
    start = end - timedelta(weeks=3)
    sales, visits = [], []
    ts, i = start, 0
    while ts < end:
        cycle = 30 * math.sin(2 * math.pi * ts.hour / 24) + (i * 7919 % 11) - 5
        late = back - timedelta(hours=INCIDENT_HOURS) <= ts < back
        naive = ts.replace(tzinfo=None)
        for country, level in (("DE", 200.0), ("FR", 150.0), ("US", 300.0)):
            value = level + cycle
            sales.append((naive, country, round(value * (0.1 if late and country != "US" else 1), 2)))
        visits.append((naive, round((100 + cycle) * (0.1 if late else 1), 2)))
        ts += timedelta(hours=1)
        i += 1
    sales_frame = pd.DataFrame(sales, columns=["ts", "country", "amount"])
    visits_frame = pd.DataFrame(visits, columns=["ts", "amount"])
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA kpi")
        # from frames: DuckDB's executemany takes seconds for these few thousand rows
        con.register("sales_frame", sales_frame)
        con.register("visits_frame", visits_frame)
        con.execute("CREATE TABLE kpi.sales AS SELECT * FROM sales_frame")
        con.execute("CREATE TABLE kpi.visits AS SELECT * FROM visits_frame")
    return path


def shop_document(directory: Path, slack: SlackServer, **slack_fields: Any) -> dict[str, Any]:
    fields = {
        "token": slack.token, "api_url": slack.url, "channel": "#data-alerts",
        "group_wait": "0s", "chart_buckets": 0, "signing_secret": SIGNING_SECRET,
        "answer_groups": [ONCALL_GROUP], **slack_fields,
    }  # fmt: skip
    check = {"kind": "metric", "timestamp_column": "ts", "expression": "sum(amount)",
             "lookback": "3w", "schedule": "1h", "settle": "1m"}  # fmt: skip
    return {
        "warehouse": {"kind": "duckdb", "path": str(directory / "shop.duckdb")},
        "state": {"path": str(directory / "state.db")},
        "slack": {k: v for k, v in fields.items() if v is not None},
        "checks": [
            {"name": "sales", "table": "kpi.sales", "dimensions": ["country"], **check},
            {"name": "visits", "table": "kpi.visits", **check},
        ],
    }


@dataclass
class Shop:
    """A started daemon on the shop, and what the tests look at."""

    daemon: Daemon
    slack: SlackServer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.daemon.port}"

    def alert(self, check: str) -> Message:
        """The alert message whose buttons answer ``check`` (as it is now)."""

        def found() -> Message | None:
            for message in self.slack.posted("#data-alerts"):
                values = [e.get("value", "") for b in message.blocks or []
                          if b.get("type") == "actions" for e in b["elements"]]  # fmt: skip
                if message.thread_ts is None and any(v.startswith(f"{check}:") for v in values):
                    return message
            return None

        message: Message = wait_until(found, 30, f"the alert of {check} with its buttons")
        return message

    def post(self, payload: dict[str, Any], **forge: Any) -> tuple[int, str]:
        status, body, _ = signed_request(f"{self.url}/slack/interactivity", payload, **forge)
        return status, body

    def settle(self) -> None:
        """Wait until every answer received is carried out and its Slack steps delivered."""
        assert self.daemon.answers is not None and self.daemon.answers.wait_idle(30)
        self.daemon.dispatcher.deliver_pending()

    def alerts(self, check: str, query: str = "") -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/api/v1/checks/{check}/alerts{query}") as r:
            result: dict[str, Any] = json.loads(r.read())
        return result

    def metric(self, name: str, **labels: str) -> float | None:
        samples = scrape(self.daemon.port)
        wanted = set(labels.items())
        found = [v for (n, ls), v in samples.items() if n == name and wanted <= ls]
        return found[0] if len(found) == 1 else None

    def stop(self) -> None:
        self.daemon.stop()


def start_shop(directory: Path, slack: SlackServer, *, build: bool = True, **slack_fields: Any) -> Shop:
    """The daemon on the shop in ``directory`` (built there unless it exists), started, with
    its first runs done."""
    if build:
        build_shop(directory / "shop.duckdb", datetime.now(UTC))
    daemon = Daemon(parse_config(shop_document(directory, slack, **slack_fields)),
                    host="127.0.0.1", port=0)  # fmt: skip
    daemon.start()
    shop = Shop(daemon, slack)
    wait_until(
        lambda: all(daemon.engine.last_run(c) is not None for c in ("sales", "visits")),
        60,
        "the first runs",
    )
    return shop


__all__ = ["APP_TOKEN", "Shop", "build_shop", "start_shop"]
