"""The demo warehouse: 8 weeks of hourly e-commerce data with live incidents, in DuckDB.

Orders follow a daily and weekly rhythm in New York time, grow slowly, and carry Poisson and
day-to-day noise. Three incidents are live when the demo starts: Germany's payments fail (its
orders are cancelled, so revenue from Germany collapses and the total halves), the
raw events table stops loading, and signups spike; they end one to two hours later, so the
alerts resolve while the demo runs. `kpi-monitor demo` also runs a referral campaign that more
than doubles signups for four hours before their spike: a configured event (its times come from
KPIMON_DEMO_CAMPAIGN_START and _END, set by the command, in config/demo.yaml), so it does not
alert. Rows are also written for the next 24 hours (each appears
in the table at once, but buckets are judged only once complete and freshness ignores rows
stamped in the future) so the demo stays live for a day without a writer fighting the monitor
for the DuckDB file lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

DEMO_TZ = "America/New_York"
HISTORY = timedelta(weeks=8)
AHEAD = timedelta(hours=24)
SEED = 20261126

COUNTRIES = ("US", "GB", "DE", "FR", "BR", "JP", "CA", "AU")
COUNTRY_SHARE = (0.25, 0.08, 0.50, 0.05, 0.05, 0.03, 0.02, 0.02)
BROKEN_COUNTRY = "DE"
CAMPAIGN_EFFECT = 1.5  # the campaign's signups: +150%, as config/demo.yaml expects

# What the demo breaks, as (check, segment): the series whose alert must fire, and no others.
# Germany's payments fail: its orders are cancelled, so revenue's total drops with it (half of
# revenue: enough that the total's drop is clear at the quietest hour of the night, which at 40%
# it was not at every hour), and the total's alert says Germany explains the drop.
INCIDENTS: frozenset[tuple[str, str]] = frozenset(
    {("revenue", BROKEN_COUNTRY), ("revenue", ""), ("events_freshness", ""), ("signups", "")}
)


@dataclass(frozen=True)
class DemoTimes:
    """When the incidents start, relative to the hour the demo was built in."""

    now: datetime

    @property
    def hour(self) -> pd.Timestamp:
        return pd.Timestamp(self.now).floor("h")

    @property
    def country_outage(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        return self.hour - pd.Timedelta(hours=4), self.hour + pd.Timedelta(hours=2)

    @property
    def signup_spike(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        return self.hour - pd.Timedelta(hours=3), self.hour + pd.Timedelta(hours=1)

    @property
    def campaign(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        """A referral campaign: signups x2.5 for four hours, ending before their incident."""
        return self.hour - pd.Timedelta(hours=9), self.hour - pd.Timedelta(hours=5)

    @property
    def events_stopped(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        """Loads stop, then resume with a catch-up load of everything missed."""
        now = pd.Timestamp(self.now)
        return now - pd.Timedelta(hours=5), now + pd.Timedelta(hours=1)


def _rhythm(hours: pd.DatetimeIndex) -> np.ndarray:
    """Relative activity per UTC hour: local daily curve, weekends busier, slow growth."""
    local = hours.tz_convert(DEMO_TZ)
    h = local.hour.to_numpy() + 0.5
    daily = (
        0.25 + 0.75 * np.exp(-((h - 13.0) ** 2) / 18.0) + 0.35 * np.exp(-((h - 20.0) ** 2) / 6.0)
    )
    weekly = np.where(local.day_of_week.to_numpy() >= 5, 1.2, 1.0)
    age = (hours - hours[0]).total_seconds().to_numpy() / HISTORY.total_seconds()
    return daily * weekly * (1.0 + 0.15 * age)


def _day_noise(hours: pd.DatetimeIndex, rng: np.random.Generator, sd: float) -> np.ndarray:
    days = hours.tz_convert(DEMO_TZ).normalize()
    codes, uniques = pd.factorize(days)
    return np.exp(rng.normal(0.0, sd, len(uniques)))[codes]


def _timestamps(
    hours: pd.DatetimeIndex, counts: np.ndarray, rng: np.random.Generator
) -> pd.DatetimeIndex:
    starts = np.repeat(hours.tz_localize(None).to_numpy(), counts)
    offsets = rng.integers(0, 3_600_000_000, counts.sum()).astype("timedelta64[us]")
    return pd.DatetimeIndex(starts + offsets)


def build(
    path: str | Path, now: datetime | None = None, seed: int = SEED, *, campaign: bool = False
) -> DemoTimes:
    """Write the demo warehouse to ``path`` (replacing it) and return its incident times; with
    ``campaign``, signups also follow the referral campaign (see :attr:`DemoTimes.campaign`)."""
    times = DemoTimes((now or datetime.now(UTC)).astimezone(UTC))
    rng = np.random.default_rng(seed)
    first = times.hour - pd.Timedelta(HISTORY)
    hours = pd.date_range(first, times.hour + pd.Timedelta(AHEAD), freq="h")
    rhythm = _rhythm(hours)

    orders = _orders(hours, rhythm, times, rng)
    signups = _signups(hours, rhythm, times, rng, campaign)
    events = _events(hours, rhythm, times, rng)

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_suffix(".building")
    scratch.unlink(missing_ok=True)
    con = duckdb.connect(str(scratch))
    try:
        con.execute("SET TimeZone = 'UTC'")
        for schema in ("analytics", "raw"):
            con.execute(f"CREATE SCHEMA {schema}")
        for name, frame in (
            ("analytics.fct_orders", orders),
            ("analytics.signups", signups),
            ("raw.events", events),
        ):
            con.register("frame", frame)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM frame")
            con.unregister("frame")
    finally:
        con.close()
    scratch.replace(target)
    Path(str(target) + ".wal").unlink(missing_ok=True)
    return times


def _orders(
    hours: pd.DatetimeIndex, rhythm: np.ndarray, times: DemoTimes, rng: np.random.Generator
) -> pd.DataFrame:
    share = np.array(COUNTRY_SHARE)
    rate = 640.0 * rhythm * _day_noise(hours, rng, 0.04)
    per_country = rng.poisson(np.outer(rate, share))  # hours x countries
    counts = per_country.sum(axis=1)
    order_ts = _timestamps(hours, counts, rng)
    country = np.concatenate([np.repeat(COUNTRIES, row) for row in per_country])
    n = len(order_ts)
    loaded = order_ts.floor("h") + pd.Timedelta(minutes=65)
    status = rng.choice(["completed", "refunded", "cancelled"], n, p=[0.92, 0.05, 0.03])
    # the outage: Germany's payments fail, its orders are still written but cancelled
    start, end = (t.tz_convert("UTC").tz_localize(None) for t in times.country_outage)
    failed = (country == BROKEN_COUNTRY) & (order_ts >= start) & (order_ts < end)
    status[failed & (rng.random(n) < 0.97)] = "cancelled"
    return pd.DataFrame(
        {
            "order_id": np.arange(1, n + 1, dtype=np.int64),
            "order_ts": order_ts,
            "loaded_at": loaded,
            "customer_id": rng.integers(1, 60_000, n),
            "country": country,
            "status": status,
            "amount": np.round(rng.lognormal(3.6, 0.6, n), 2),
        }
    )


def _signups(
    hours: pd.DatetimeIndex,
    rhythm: np.ndarray,
    times: DemoTimes,
    rng: np.random.Generator,
    campaign: bool,
) -> pd.DataFrame:
    rate = 80.0 * rhythm * _day_noise(hours, rng, 0.05)
    if campaign:
        start, end = times.campaign
        rate = np.where((hours >= start) & (hours < end), rate * (1 + CAMPAIGN_EFFECT), rate)
    start, end = times.signup_spike
    rate = np.where((hours >= start) & (hours < end), rate * 6.0, rate)
    signup_ts = _timestamps(hours, rng.poisson(rate), rng)
    n = len(signup_ts)
    return pd.DataFrame(
        {
            "user_id": np.arange(1, n + 1, dtype=np.int64),
            "signup_ts": signup_ts,
            "channel": rng.choice(["organic", "paid", "referral"], n, p=[0.5, 0.35, 0.15]),
        }
    )


def _events(
    hours: pd.DatetimeIndex, rhythm: np.ndarray, times: DemoTimes, rng: np.random.Generator
) -> pd.DataFrame:
    event_ts = _timestamps(hours, rng.poisson(600.0 * rhythm), rng)
    loaded = event_ts.ceil("15min") + pd.Timedelta(minutes=3)
    stopped, resumed = (t.tz_convert("UTC").tz_localize(None) for t in times.events_stopped)
    missed = np.asarray((loaded > stopped) & (loaded < resumed))
    loaded = pd.DatetimeIndex(np.where(missed, resumed.to_datetime64(), loaded.to_numpy()))
    n = len(event_ts)
    return pd.DataFrame(
        {
            "event_id": np.arange(1, n + 1, dtype=np.int64),
            "event_ts": event_ts,
            "user_id": rng.integers(1, 200_000, n),
            "event_type": rng.choice(
                ["page_view", "add_to_cart", "checkout"], n, p=[0.8, 0.15, 0.05]
            ),
            "loaded_at": loaded,
        }
    )
