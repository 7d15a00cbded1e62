"""The KPI scenario suite (``benchmarks/kpi_scenarios.py``): episode precision, recall, F1,
median detection delay in buckets and false alerts per series-month, per scenario and grain.

kpi-monitor is ``monitor.backtest.replay`` with the series' acknowledgements and incomplete last
bucket; the peers (``benchmarks.peers``) get the complete buckets only and know nothing of
acknowledgements, and none of them flags before the suite's evaluation start (cmd_eval's warm-up
rule). Prophet is not run here: one fit a day on every series is tens of thousands of fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchmarks.kpi_scenarios import SCENARIOS, Series, make_series
from benchmarks.peers import grid_series, onsets, peer_flags
from benchmarks.runs import Options, run_tasks, seconds_by_detector, seconds_line
from monitor.backtest import replay
from monitor.detection import DetectorSpec

PROPHET_NOTE = (
    "prophet not run on the KPI suite (one fit a day on every series: tens of thousands of "
    "fits, hours); it is compared on CMD and NAB's hourly files"
)


@dataclass(frozen=True)
class Task:
    scenario: str
    grain: str
    seed: int
    detector: str
    options: Options


@dataclass
class Counts:
    """Episode counts of one series."""

    onsets: int = 0
    true_onsets: int = 0
    false_onsets: int = 0
    windows: int = 0
    detected: int = 0
    delays: tuple[float, ...] = ()
    months: float = 0.0


def complete(series: Series) -> pd.DataFrame:
    """The series' rows whose bucket has ended (the daemon never judges an incomplete one)."""
    frame = series.frame
    if series.complete_before is None:
        return frame
    ends = frame["timestamp"] + pd.Timedelta(seconds=series.bucket_seconds)
    return frame[ends <= series.complete_before].reset_index(drop=True)


def onsets_of(series: Series, detector: str, options: Options) -> list[pd.Timestamp]:
    """Alert onsets of ``detector`` on one series."""
    step = series.bucket_seconds
    if detector == "kpi-monitor":
        buckets = replay(
            series.frame,
            DetectorSpec(step, **options.spec),
            options.alert_policy(step),
            acknowledge=series.acknowledge,
            complete_before=series.complete_before,
        ).buckets
        return list(pd.DatetimeIndex(buckets["bucket"][buckets["alert"] == 1]))
    frame = complete(series)
    cmd_eval = options.cmd_eval()
    gridded, _ = grid_series(
        cmd_eval, series.scenario, "kpi", frame["timestamp"], frame["value"], step
    )
    start = series.eval_start if series.eval_start is not None else gridded.grid[0]
    warm = int(gridded.grid.searchsorted(start))
    flags = peer_flags(detector, gridded, warm, cmd_eval)
    _, open_after, resolve_after = options.policy_for(step)
    return [gridded.grid[i] for i in onsets(cmd_eval, flags, open_after, resolve_after)]


def evaluate(series: Series, detector: str, options: Options) -> Counts:
    """Replay one series and match alert onsets against its labels."""
    found = onsets_of(series, detector, options)
    step = pd.Timedelta(seconds=series.bucket_seconds)
    start = series.eval_start if series.eval_start is not None else series.frame["timestamp"][0]
    end = complete(series)["timestamp"].iloc[-1] + step
    _, open_after, _ = options.policy_for(series.bucket_seconds)
    grace = step * open_after
    out = Counts(windows=len(series.windows))
    delays = []
    hit = [False] * len(series.windows)
    for t in found:
        if t < start or any(a <= t <= b for a, b in series.ignore):
            continue
        out.onsets += 1
        inside = [i for i, (a, b) in enumerate(series.windows) if a <= t <= b + grace]
        if inside:
            out.true_onsets += 1
            for i in inside:
                if not hit[i]:
                    hit[i] = True
                    delays.append((t - series.windows[i][0]) / step)
        else:
            out.false_onsets += 1
    out.detected = sum(hit)
    out.delays = tuple(delays)
    out.months = max((end - start) / pd.Timedelta(days=30), 1e-9)
    return out


def run_task(task: Task) -> Counts:
    series = make_series(task.scenario, task.grain, task.seed)  # type: ignore[arg-type]
    return evaluate(series, task.detector, task.options)


@dataclass
class SuiteRow:
    detector: str
    scenario: str
    grain: str
    series: int
    precision: float
    recall: float
    f1: float
    delay: float
    false_per_month: float
    anomalous: bool


@dataclass
class SuiteResult:
    rows: list[SuiteRow]
    errors: list[dict[str, str]]
    notes: list[str]
    task_seconds: dict[str, float]  # per detector, summed over its tasks


def run_suite(
    seeds: list[int], scenarios: list[str], options: Options, jobs: int, notes: list[str]
) -> SuiteResult:
    detectors = [d for d in options.detectors if d != "prophet"]
    tasks = [
        Task(name, grain, seed, d, options)
        for name in scenarios
        for grain in ("hour", "day")
        for seed in seeds
        for d in detectors
    ]
    weight = {"holt-winters": 10.0, "kpi-monitor": 1.0}
    outcomes = run_tasks(run_task, tasks, jobs, lambda t: weight.get(t.detector, 0.1))
    groups: dict[tuple[str, str, str], list[Counts]] = {}
    errors: list[dict[str, str]] = []
    for outcome in outcomes:
        t: Task = outcome.task
        if outcome.error is not None:
            errors.append({"file": f"{t.scenario}/{t.grain}/seed {t.seed}", "detector": t.detector,
                           "error": outcome.error})  # fmt: skip
            continue
        groups.setdefault((t.detector, t.scenario, t.grain), []).append(outcome.value)
    rows = [_row(key, counts) for key, counts in groups.items()]
    if "prophet" in options.detectors:
        notes = [*notes, PROPHET_NOTE]
    return SuiteResult(rows, errors, notes, seconds_by_detector(outcomes))


def _row(key: tuple[str, str, str], counts: list[Counts]) -> SuiteRow:
    detector, scenario, grain = key
    onsets = sum(o.onsets for o in counts)
    true = sum(o.true_onsets for o in counts)
    windows = sum(o.windows for o in counts)
    detected = sum(o.detected for o in counts)
    # clean series (no windows): every alert is false, see false/month
    precision = (true / onsets if onsets else 1.0) if windows else math.nan
    recall = detected / windows if windows else math.nan
    f1 = (
        2 * precision * recall / (precision + recall)
        if windows and precision + recall > 0
        else (0.0 if windows else math.nan)
    )
    delays = [d for o in counts for d in o.delays]
    months = sum(o.months for o in counts)
    return SuiteRow(
        detector,
        scenario,
        grain,
        len(counts),
        precision,
        recall,
        f1,
        float(np.median(delays)) if delays else math.nan,
        sum(o.false_onsets for o in counts) / months,
        SCENARIOS[scenario],
    )


def _fmt(x: float, width: int, digits: int = 2) -> str:
    return f"{'-':>{width}}" if math.isnan(x) else f"{x:{width}.{digits}f}"


def print_suite(result: SuiteResult, elapsed: float) -> None:
    rows = result.rows
    ours = [r for r in rows if r.detector == "kpi-monitor"]
    count = sum(r.series for r in ours) or max((r.series for r in rows), default=0)
    print(f"\nKPI scenario suite: {count} series, {elapsed:.1f} s")
    if ours:
        header = (
            f"{'scenario':<22} {'grain':<5} {'series':>6} {'precision':>9} {'recall':>7} "
            f"{'F1':>6} {'delay':>6} {'false/month':>12}"
        )
        print(header)
        print("-" * len(header))
        for r in ours:
            print(
                f"{r.scenario:<22} {r.grain:<5} {r.series:6d} {_fmt(r.precision, 9)} "
                f"{_fmt(r.recall, 7)} {_fmt(r.f1, 6)} {_fmt(r.delay, 6, 1)} "
                f"{_fmt(r.false_per_month, 12)}"
            )
    names = list(dict.fromkeys(r.detector for r in rows))
    by = {(r.detector, r.scenario, r.grain): r for r in rows}
    cases = list(dict.fromkeys((r.scenario, r.grain) for r in rows))
    print("\nevery detector: F1 on anomaly scenarios, false alerts per series-month on the others")
    header = f"{'scenario':<22} {'grain':<5} " + " ".join(f"{n[:12]:>12}" for n in names)
    print(header)
    print("-" * len(header))
    for scenario, grain in cases:
        cells = []
        for name in names:
            other = by.get((name, scenario, grain))
            value = math.nan if other is None else (
                other.f1 if other.anomalous else other.false_per_month
            )  # fmt: skip
            cells.append(_fmt(value, 12))
        kind = "F1" if SCENARIOS[scenario] else "false/mo"
        print(f"{scenario:<22} {grain:<5} " + " ".join(cells) + f"  {kind}")
    print(seconds_line(result.task_seconds))
    for note in result.notes:
        print(f"note: {note}")
    for e in result.errors:
        print(f"FAILED {e['detector']} {e['file']}: {e['error']}")
