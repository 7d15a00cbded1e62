"""The calendar benchmark: the same retail-like series judged without and with their calendar.

    python -m benchmarks.calendar                 # 5 seeds x US, DE x daily, hourly
    python -m benchmarks.calendar --smoke         # 1 seed (CI: make bench-smoke)
    python -m benchmarks.calendar --seeds 10 --json out.json

Each series of ``benchmarks/calendar_corpus.py`` is replayed through ``monitor.backtest.replay``
(the daemon's detector and alert state machine, the daemon's alert policy for the grain) twice:
"before", with no calendar, and "after", with the market's public holidays and the events the
corpus gives (Black Friday, Cyber Monday, the week before Christmas, a campaign with its expected
effect). Counted from the series' evaluation start:

- false alerts (onsets outside every incident window and its grace of ``open_after`` buckets) on
  holiday buckets, event buckets, month-end buckets, in the week after a holiday or event, and
  elsewhere;
- recall and median delay (buckets from the window's first bucket to the onset) on the incidents,
  and separately on those placed on holidays and events.

NAB's ``realKnownCause/nyc_taxi.csv`` (New York taxi passengers every 30 minutes; its labelled
windows include the marathon, Thanksgiving, Christmas, New Year and a snowstorm) is replayed
the same way, with the US calendar, when it is in ``--nab-dir``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.calendar_corpus import CalendarSeries, Market, corpus, make_series
from monitor.alerts.state import AlertPolicy
from monitor.backtest import replay
from monitor.calendar.days import Calendar
from monitor.calendar.detector import detector_for
from monitor.detection import DetectorSpec

NAB_DIR = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "nab"
NYC_TAXI = "realKnownCause/nyc_taxi.csv"
PLACES = ("holiday", "event", "month_end", "after", "elsewhere")


@dataclass
class Tally:
    """Counts over the series of one market and grain, before or after."""

    false: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PLACES, 0))
    incidents: int = 0
    detected: int = 0
    delays: list[float] = field(default_factory=list)
    on_calendar: int = 0
    detected_on_calendar: int = 0
    delays_on_calendar: list[float] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        for place in PLACES:
            self.false[place] += other.false[place]
        self.incidents += other.incidents
        self.detected += other.detected
        self.delays += other.delays
        self.on_calendar += other.on_calendar
        self.detected_on_calendar += other.detected_on_calendar
        self.delays_on_calendar += other.delays_on_calendar


def onsets(series: CalendarSeries, calendar: Calendar | None) -> list[int]:
    """Bucket positions where an alert opens, replayed as the daemon would."""
    seconds = series.bucket_seconds
    spec = DetectorSpec(seconds, timezone=series.calendar.timezone)
    buckets = replay(
        series.frame, spec, AlertPolicy.for_grain(seconds), aggregate="sum", calendar=calendar
    ).buckets
    return [int(i) for i in np.flatnonzero(buckets["alert"].to_numpy() == 1)]


def tally(series: CalendarSeries, found: Sequence[int]) -> Tally:
    stamps = pd.DatetimeIndex(series.frame["timestamp"])
    start = int(stamps.searchsorted(series.eval_start))
    grace = AlertPolicy.for_grain(series.bucket_seconds).open_after
    windows = [
        (int(stamps.searchsorted(a)), int(stamps.searchsorted(b))) for a, b in series.windows
    ]
    out = Tally(incidents=len(windows), on_calendar=sum(series.on_calendar))
    hit = [False] * len(windows)
    for t in found:
        if t < start:
            continue
        inside = [k for k, (a, b) in enumerate(windows) if a <= t <= b + grace]
        for k in inside:
            if not hit[k]:
                hit[k] = True
                delay = float(t - windows[k][0])
                out.delays.append(delay)
                if series.on_calendar[k]:
                    out.delays_on_calendar.append(delay)
        if not inside:
            out.false[_place(series, t)] += 1
    out.detected = sum(hit)
    out.detected_on_calendar = sum(h for h, c in zip(hit, series.on_calendar, strict=True) if c)
    return out


def _place(series: CalendarSeries, t: int) -> str:
    for place, flags in (("holiday", series.holiday), ("event", series.event),
                         ("month_end", series.month_end), ("after", series.after)):  # fmt: skip
        if flags[t]:
            return place
    return "elsewhere"


def run(seeds: range, markets: tuple[Market, ...]) -> dict[tuple[str, str, str], Tally]:
    results: dict[tuple[str, str, str], Tally] = {}
    for series in corpus(seeds, markets):
        for label, calendar in (("before", None), ("after", series.calendar)):
            key = (series.market, series.grain, label)
            results.setdefault(key, Tally()).add(tally(series, onsets(series, calendar)))
    return results


def _median(values: list[float]) -> str:
    return f"{np.median(values):.1f}" if values else "-"


def _reduction(before: int, after: int) -> str:
    return f"{(before - after) / before:+.0%}".replace("+", "-") if before else "n/a"


def print_table(results: dict[tuple[str, str, str], Tally], seeds: int) -> None:
    print(f"calendar benchmark, {seeds} seed(s) per market and grain; false alerts by where they "
          "opened; recall (median delay in buckets)")  # fmt: skip
    print("| market, grain | | holiday | event | month-end | week after | elsewhere | recall "
          "| recall on holidays/events |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    pairs = sorted({(m, g) for m, g, _ in results}, key=lambda k: (k[0] != "US", k[1] != "day"))
    for market, grain in pairs:
        for label in ("before", "after"):
            t = results[(market, grain, label)]
            print(
                f"| {market} {'daily' if grain == 'day' else 'hourly'} | {label} | "
                + " | ".join(str(t.false[p]) for p in PLACES)
                + f" | {t.detected}/{t.incidents} ({_median(t.delays)})"
                + f" | {t.detected_on_calendar}/{t.on_calendar} ({_median(t.delays_on_calendar)}) |"
            )
    total = {label: Tally() for label in ("before", "after")}
    for (_, _, label), t in results.items():
        total[label].add(t)
    b, a = total["before"], total["after"]
    days_b, days_a = b.false["holiday"] + b.false["event"], a.false["holiday"] + a.false["event"]
    marked_b, marked_a = days_b + b.false["month_end"], days_a + a.false["month_end"]
    print(f"false alerts on holiday, event and month-end buckets: {marked_b} -> {marked_a} "
          f"({_reduction(marked_b, marked_a)}); holiday and event buckets alone: "
          f"{days_b} -> {days_a} ({_reduction(days_b, days_a)}); "
          f"in the week after: {b.false['after']} -> {a.false['after']}; "
          f"recall {b.detected}/{b.incidents} -> {a.detected}/{a.incidents}, on holidays and "
          f"events {b.detected_on_calendar}/{b.on_calendar} -> "
          f"{a.detected_on_calendar}/{a.on_calendar}")  # fmt: skip


def nyc_taxi(nab_dir: Path) -> dict[str, object] | None:
    """NAB's New York taxi series before and after the US calendar, or None when absent."""
    path = nab_dir / "data" / NYC_TAXI
    if not path.exists():
        return None
    frame = pd.read_csv(path)
    # NAB's timestamps are New York wall-clock times
    local = pd.to_datetime(frame["timestamp"]).dt.tz_localize(
        "America/New_York", ambiguous="NaT", nonexistent="NaT"
    )
    frame = pd.DataFrame({"timestamp": local.dt.tz_convert("UTC"), "value": frame["value"]})
    frame = frame.dropna().reset_index(drop=True)
    labels = json.loads((nab_dir / "labels" / "combined_windows.json").read_text())[NYC_TAXI]
    windows = [
        (pd.Timestamp(a).tz_localize("America/New_York"), pd.Timestamp(b).tz_localize(
            "America/New_York")) for a, b in labels
    ]  # fmt: skip
    spec = DetectorSpec(1800, timezone="America/New_York")
    out: dict[str, object] = {"windows": [f"{a:%Y-%m-%d} to {b:%Y-%m-%d}" for a, b in windows]}
    us = Calendar(timezone="America/New_York", country="US")
    for label, calendar in (("before", None), ("after", us)):
        result = replay(frame, spec, AlertPolicy.for_grain(1800), calendar=calendar)
        opened = [e.opened for e in result.episodes]
        inside = [any(a <= t <= b for a, b in windows) for t in opened]
        out[label] = {
            "alerts": len(opened),
            "in windows": sum(inside),
            "windows detected": [
                f"{a:%Y-%m-%d}" for a, b in windows if any(a <= t <= b for t in opened)
            ],
            "alerts outside windows": [f"{t:%Y-%m-%d %H:%M}" for t, i in zip(opened, inside,
                                                                           strict=True) if not i],
        }
    return out


def step_cost(series: CalendarSeries) -> tuple[float, float]:
    """CPU milliseconds per ``step`` of the hourly series' last four weeks, after a ``warm``
    of what comes before: without and with its calendar (best of three)."""
    spec = DetectorSpec(series.bucket_seconds, timezone=series.calendar.timezone)
    index = pd.DatetimeIndex(series.frame["timestamp"])
    values = series.frame["value"].to_numpy()
    cut = len(index) - 28 * 24
    costs = []
    for calendar in (None, series.calendar):
        best = math.inf
        for _ in range(3):
            detector = detector_for(spec, calendar)
            detector.warm(index[:cut], values[:cut])
            t0 = time.process_time()
            for bucket, value in zip(index[cut:], values[cut:], strict=True):
                detector.step(bucket, float(value))
            best = min(best, (time.process_time() - t0) / (len(index) - cut) * 1000)
        costs.append(best)
    return costs[0], costs[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="one seed, both markets and grains")
    parser.add_argument("--seeds", type=int, help="seeds per market and grain (default 5)")
    parser.add_argument("--markets", default="US,DE", help="US, DE or both (default)")
    parser.add_argument("--nab-dir", type=Path, default=NAB_DIR, help="NAB's folder")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args(argv)
    seeds = args.seeds or (1 if args.smoke else 5)
    markets = tuple(m.strip() for m in args.markets.split(","))
    unknown = [m for m in markets if m not in ("US", "DE")]
    if unknown:
        parser.error(f"--markets: unknown market {unknown[0]!r}; use US, DE")
    t0 = time.perf_counter()
    results = run(range(seeds), markets)
    print_table(results, seeds)
    plain, marked = step_cost(make_series("US", "hour", 0))
    print(f"one step of an hourly series: {plain:.3f} ms CPU without a calendar, {marked:.3f} ms "
          "with the US holidays and events")  # fmt: skip
    taxi = nyc_taxi(args.nab_dir)
    if taxi is None:
        print(f"NAB {NYC_TAXI}: not in {args.nab_dir}; not run")
    else:
        print(f"NAB {NYC_TAXI}: {json.dumps(taxi, indent=1)}")
    print(f"{time.perf_counter() - t0:.0f} s")
    if args.json:
        document = {
            " ".join(key): asdict(tally) for key, tally in results.items()
        } | {"nyc_taxi": taxi}
        args.json.write_text(json.dumps(document, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
