"""Detection quality: the NAB development corpus and the project's KPI scenario suite.

    python -m benchmarks.detection            # full run (NAB corpus + KPI suite)
    python -m benchmarks.detection --smoke    # a few files and seeds, for CI (< 60 s)

For our detector (``monitor.backtest.replay``, the daemon's code path) and two baselines computed
in the same run (a rolling z-score; an Elementary-style z-score against the same weekday/hour slot
over a 14-bucket training window, 3 sigma), it prints the NAB score of the ``score`` column under
NAB's best-threshold rule (standard, reward low FP, reward low FN), the NAB standard score of the
``alert`` column at the fixed threshold 0.5 (what users receive), and the number of alerts on the
``artificialNoAnomaly`` files (all false). NAB's own scorer (``nabscore.py`` in the corpus folder)
does the scoring; the corpus is read in place, never copied.

Then, per KPI scenario: episode precision, recall, F1, median detection delay in buckets and false
alerts per series-month.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

if __package__ in (None, ""):  # run as a script: python benchmarks/detection.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.kpi_scenarios import SCENARIOS, Series, suite
from monitor.alerts.state import AlertPolicy, AlertState, advance
from monitor.backtest import infer_bucket_seconds, replay
from monitor.detection import DetectorSpec, Verdict

DEFAULT_NAB = Path(__file__).resolve().parents[1] / ".." / "shared" / "benchmarks" / "nab"
SMOKE_FILES = [
    "artificialNoAnomaly/art_daily_small_noise.csv",
    "artificialWithAnomaly/art_daily_jumpsup.csv",
    "realAdExchange/exchange-3_cpc_results.csv",
    "realAWSCloudwatch/ec2_cpu_utilization_5f5533.csv",
    "realTweets/Twitter_volume_GOOG.csv",
]
DETECTORS = ("kpi-monitor", "rolling-zscore", "elementary")
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")

FloatArray = npt.NDArray[np.float64]
Result = tuple[FloatArray, FloatArray]  # (score in [0, 1], alert 0/1) per row


# ----------------------------------------------------------------------------- detectors


def default_policy(bucket_seconds: int) -> AlertPolicy:
    """The daemon's defaults: open after two anomalous buckets in a row below daily grain (else
    one), resolve after two normal buckets; for grains finer than the daemon's hour, resolving
    takes the same two hours (24 buckets of 5 minutes), not two buckets."""
    resolve = max(2, math.ceil(7200 / bucket_seconds))
    return AlertPolicy(open_after=2 if bucket_seconds < 86400 else 1, resolve_after=resolve)


def run_ours(frame: pd.DataFrame, spec: DetectorSpec, policy: AlertPolicy) -> Result:
    rows = replay(frame, spec, policy).rows
    return rows["score"].to_numpy(float), rows["alert"].to_numpy(float)


def _alerts_from(
    buckets: pd.DatetimeIndex, expected: FloatArray, anomalous: npt.NDArray[np.bool_],
    policy: AlertPolicy,
) -> FloatArray:  # fmt: skip
    """Onsets of a baseline's flags through the same alert state machine as ours."""
    state = AlertState()
    out = np.zeros(len(buckets))
    for i, bucket in enumerate(buckets):
        exp = None if math.isnan(expected[i]) else float(expected[i])
        verdict = Verdict(bucket, 0.0, exp, None, None, 0.0, bool(anomalous[i]))
        state, transition = advance(state, verdict, policy)
        out[i] = 1.0 if transition is not None and transition.kind == "opened" else 0.0
    return out


def _utc_index(frame: pd.DataFrame) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(frame["timestamp"], utc=True))


def run_rolling_zscore(
    frame: pd.DataFrame, spec: DetectorSpec, policy: AlertPolicy, window: int = 100
) -> Result:
    """|x - mean| / std over the previous ``window`` rows (NAB's example detector), 3 sigma."""
    x = frame["value"].astype(float)
    past = x.shift(1).rolling(window, min_periods=20)
    mu, sd = past.mean(), past.std()
    z = ((x - mu).abs() / sd.where(sd > 1e-9)).to_numpy(float)
    score = np.tanh(np.nan_to_num(z, nan=0.0) / 10.0)
    flags = np.nan_to_num(z, nan=0.0) > 3.0
    return score, _alerts_from(_utc_index(frame), mu.to_numpy(float), flags, policy)


def run_elementary(
    frame: pd.DataFrame, spec: DetectorSpec, policy: AlertPolicy, training: int = 14
) -> Result:
    """Elementary-style: z against the same weekday/hour slot (weekday for daily data) over the
    previous ``training`` buckets of that slot, anomalous beyond 3 sigma."""
    ts = _utc_index(frame)
    x = pd.Series(frame["value"].astype(float).to_numpy())
    if spec.bucket_seconds < 86400:
        slot = np.asarray(ts.day_of_week) * 24 + np.asarray(ts.hour)
    else:
        slot = np.asarray(ts.day_of_week)
    grouped = x.groupby(slot)
    mu = grouped.transform(lambda s: s.shift(1).rolling(training, min_periods=7).mean())
    sd = grouped.transform(lambda s: s.shift(1).rolling(training, min_periods=7).std())
    z = ((x - mu).abs() / sd.where(sd > 1e-9)).to_numpy(float)
    score = np.tanh(np.nan_to_num(z, nan=0.0) / 10.0)
    flags = np.nan_to_num(z, nan=0.0) > 3.0
    return score, _alerts_from(ts, mu.to_numpy(float), flags, policy)


RUNNERS: dict[str, Callable[[pd.DataFrame, DetectorSpec, AlertPolicy], Result]] = {
    "kpi-monitor": run_ours,
    "rolling-zscore": run_rolling_zscore,
    "elementary": run_elementary,
}


# ----------------------------------------------------------------------------- NAB


def load_nabscore(nab_dir: Path) -> ModuleType:
    """Import the corpus's own scorer from its folder (never copied into the repo)."""
    path = nab_dir / "nabscore.py"
    spec = importlib.util.spec_from_file_location("_nabscore", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load NAB scorer {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["_nabscore"] = module
    spec.loader.exec_module(module)
    return module


def nab_files(nab_dir: Path) -> list[str]:
    data = nab_dir / "data"
    return sorted(str(p.relative_to(data)) for p in data.glob("*/*.csv"))


def _nab_one(args: tuple[str, str, str, dict[str, Any]]) -> tuple[str, float, dict[str, Result]]:
    nab_dir, rel, out_dir, options = args
    raw = pd.read_csv(Path(nab_dir) / "data" / rel, dtype={"timestamp": str})
    frame = pd.DataFrame(
        {"timestamp": pd.to_datetime(raw["timestamp"]), "value": raw["value"].astype(float)}
    )
    bucket = infer_bucket_seconds(frame["timestamp"])
    spec = DetectorSpec(bucket, **options.get("spec", {}))
    policy = AlertPolicy(**options["policy"]) if "policy" in options else default_policy(bucket)
    started = time.perf_counter()
    results = {name: RUNNERS[name](frame, spec, policy) for name in options["detectors"]}
    elapsed = time.perf_counter() - started
    for name, (score, alert) in results.items():
        for kind, column in (("score", score), ("alert", alert)):
            path = Path(out_dir) / f"{name}.{kind}" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(
                {"timestamp": raw["timestamp"], "value": raw["value"], "anomaly_score": column}
            ).to_csv(path, index=False, float_format="%.10g")
    return rel, elapsed, results


@dataclass
class NabRow:
    detector: str
    best: dict[str, float]  # profile -> normalised score at the best threshold of `score`
    fixed: dict[str, float]  # profile -> normalised score of `alert` at threshold 0.5
    no_anomaly_alerts: int
    alerts: int


def run_nab(
    nab_dir: Path,
    files: list[str],
    detectors: Iterable[str],
    jobs: int,
    options: dict[str, Any] | None = None,
) -> tuple[list[NabRow], float]:
    nabscore = load_nabscore(nab_dir)
    windows_all = nabscore.load_windows(str(nab_dir / "labels" / "combined_windows.json"))
    windows = {rel: windows_all[rel] for rel in files if rel in windows_all}
    profiles = nabscore.load_profiles(str(nab_dir / "config" / "profiles.json"))
    detectors = list(detectors)
    opts = dict(options or {})
    opts["detectors"] = detectors
    started = time.perf_counter()
    no_anomaly = dict.fromkeys(detectors, 0)
    alerts = dict.fromkeys(detectors, 0)
    with tempfile.TemporaryDirectory(prefix="kpimon-nab-") as tmp:
        work = [(str(nab_dir), rel, tmp, opts) for rel in files]
        if jobs > 1:
            with ProcessPoolExecutor(jobs) as pool:
                done = list(pool.map(_nab_one, work))
        else:
            done = [_nab_one(w) for w in work]
        for rel, _, results in done:
            for name, (_, alert) in results.items():
                alerts[name] += int(alert.sum())
                if rel.startswith("artificialNoAnomaly/"):
                    no_anomaly[name] += int(alert.sum())
        rows = []
        for name in detectors:
            best: dict[str, float] = {}
            fixed: dict[str, float] = {}
            score_corpus = nabscore.Corpus(f"{tmp}/{name}.score", windows, verbose=False)
            alert_corpus = nabscore.Corpus(f"{tmp}/{name}.alert", windows, verbose=False)
            for profile in PROFILES:
                tpw, fpw, fnw = profiles[profile]
                _, raw = score_corpus.best(tpw, fpw, fnw)
                best[profile] = float(score_corpus.normalize(raw, tpw, fpw, fnw))
                raw_fixed = alert_corpus.score_at(0.5, tpw, fpw, fnw)
                fixed[profile] = float(alert_corpus.normalize(raw_fixed, tpw, fpw, fnw))
            rows.append(NabRow(name, best, fixed, no_anomaly[name], alerts[name]))
    return rows, time.perf_counter() - started


def print_nab(rows: list[NabRow], n_files: int, elapsed: float) -> None:
    print(f"\nNAB development corpus: {n_files} files, {elapsed:.1f} s")
    header = (
        f"{'detector':<16} {'standard':>9} {'low FP':>8} {'low FN':>8} "
        f"{'alert@0.5 std':>14} {'lowFP':>7} {'lowFN':>7} {'alerts':>7} {'noAnomaly':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.detector:<16} {r.best['standard']:9.1f} {r.best['reward_low_FP_rate']:8.1f} "
            f"{r.best['reward_low_FN_rate']:8.1f} {r.fixed['standard']:14.1f} "
            f"{r.fixed['reward_low_FP_rate']:7.1f} {r.fixed['reward_low_FN_rate']:7.1f} "
            f"{r.alerts:7d} {r.no_anomaly_alerts:10d}"
        )


# ----------------------------------------------------------------------------- KPI suite


@dataclass
class Outcome:
    """Episode counts of one series."""

    onsets: int = 0
    true_onsets: int = 0
    false_onsets: int = 0
    windows: int = 0
    detected: int = 0
    delays: tuple[float, ...] = ()
    months: float = 0.0


def onsets_of(
    series: Series, spec: DetectorSpec, policy: AlertPolicy, detector: str = "kpi-monitor"
) -> tuple[list[pd.Timestamp], pd.Timestamp]:
    """Alert onsets of ``detector`` on one series, and the end of its last scored bucket."""
    step = pd.Timedelta(seconds=series.bucket_seconds)
    if detector == "kpi-monitor":
        buckets = replay(
            series.frame,
            spec,
            policy,
            acknowledge=series.acknowledge,
            complete_before=series.complete_before,
        ).buckets
        stamps = pd.DatetimeIndex(buckets["bucket"])
        alert = buckets["alert"].to_numpy()
    else:  # baselines know nothing of acknowledgements; they get complete buckets only
        frame = series.frame
        if series.complete_before is not None:
            frame = frame[frame["timestamp"] + step <= series.complete_before]
        _, alert = RUNNERS[detector](frame.reset_index(drop=True), spec, policy)
        stamps = pd.DatetimeIndex(frame["timestamp"])
    return [t for t, a in zip(stamps, alert, strict=True) if a], stamps[-1] + step


def evaluate(
    series: Series, spec: DetectorSpec, policy: AlertPolicy, detector: str = "kpi-monitor"
) -> Outcome:
    """Replay one series and match alert onsets against its labels."""
    onsets, end = onsets_of(series, spec, policy, detector)
    step = pd.Timedelta(seconds=series.bucket_seconds)
    start = series.eval_start if series.eval_start is not None else series.frame["timestamp"][0]
    grace = step * policy.open_after
    out = Outcome(windows=len(series.windows))
    delays = []
    hit = [False] * len(series.windows)
    for t in onsets:
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


def _evaluate_one(args: tuple[Series, dict[str, Any]]) -> list[tuple[str, str, str, Outcome]]:
    series, options = args
    spec = DetectorSpec(series.bucket_seconds, **options.get("spec", {}))
    policy = (
        AlertPolicy(**options["policy"])
        if "policy" in options
        else default_policy(series.bucket_seconds)
    )
    return [
        (name, series.scenario, series.grain, evaluate(series, spec, policy, name))
        for name in options.get("detectors", ["kpi-monitor"])
    ]


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


def run_suite(
    seeds: list[int], jobs: int, options: dict[str, Any] | None = None,
    scenarios: list[str] | None = None,
) -> tuple[list[SuiteRow], float]:  # fmt: skip
    started = time.perf_counter()
    work = [(s, dict(options or {})) for s in suite(seeds, scenarios=scenarios)]
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            done = [r for rs in pool.map(_evaluate_one, work, chunksize=4) for r in rs]
    else:
        done = [r for w in work for r in _evaluate_one(w)]
    groups: dict[tuple[str, str, str], list[Outcome]] = {}
    for detector, scenario, grain, outcome in done:
        groups.setdefault((detector, scenario, grain), []).append(outcome)
    rows = []
    for (detector, scenario, grain), outcomes in groups.items():
        onsets = sum(o.onsets for o in outcomes)
        true = sum(o.true_onsets for o in outcomes)
        windows = sum(o.windows for o in outcomes)
        detected = sum(o.detected for o in outcomes)
        # clean series (no windows): every alert is false, see false/month
        precision = (true / onsets if onsets else 1.0) if windows else math.nan
        recall = detected / windows if windows else math.nan
        f1 = (
            2 * precision * recall / (precision + recall)
            if windows and precision + recall > 0
            else (0.0 if windows else math.nan)
        )
        delays = [d for o in outcomes for d in o.delays]
        months = sum(o.months for o in outcomes)
        rows.append(
            SuiteRow(
                detector,
                scenario,
                grain,
                len(outcomes),
                precision,
                recall,
                f1,
                float(np.median(delays)) if delays else math.nan,
                sum(o.false_onsets for o in outcomes) / months,
                SCENARIOS[scenario],
            )
        )
    return rows, time.perf_counter() - started


def _fmt(x: float, width: int, digits: int = 2) -> str:
    return f"{'-':>{width}}" if math.isnan(x) else f"{x:{width}.{digits}f}"


def print_suite(rows: list[SuiteRow], elapsed: float) -> None:
    ours = [r for r in rows if r.detector == "kpi-monitor"]
    print(f"\nKPI scenario suite: {sum(r.series for r in ours)} series, {elapsed:.1f} s")
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
    others = sorted({r.detector for r in rows} - {"kpi-monitor"})
    if not others:
        return
    names = ["kpi-monitor", *others]
    by = {(r.detector, r.scenario, r.grain): r for r in rows}
    print("\nsame suite, baselines (F1 on anomaly scenarios; false alerts per series-month)")
    header = f"{'scenario':<22} {'grain':<5} " + " ".join(f"{n[:14]:>14}" for n in names)
    print(header)
    print("-" * len(header))
    for r in ours:
        cells = []
        for name in names:
            other = by[(name, r.scenario, r.grain)]
            value = other.f1 if other.anomalous else other.false_per_month
            cells.append(_fmt(value, 14))
        kind = "F1" if r.anomalous else "false/mo"
        print(f"{r.scenario:<22} {r.grain:<5} " + " ".join(cells) + f"  {kind}")


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nab-dir", type=Path, default=DEFAULT_NAB)
    parser.add_argument("--smoke", action="store_true", help="a few files and seeds (CI)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--seeds", type=int, default=None, help="KPI suite seeds per scenario")
    parser.add_argument("--sensitivity", type=float, default=None)
    parser.add_argument("--open-after", type=int, default=None)
    parser.add_argument("--resolve-after", type=int, default=None)
    parser.add_argument("--skip-nab", action="store_true")
    parser.add_argument("--skip-suite", action="store_true")
    parser.add_argument("--only", action="append", help="NAB file (category/name.csv); repeat")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    options: dict[str, Any] = {}
    if args.sensitivity is not None:
        options["spec"] = {"sensitivity": args.sensitivity}
    if args.open_after is not None or args.resolve_after is not None:
        options["policy"] = {
            "open_after": args.open_after or 2,
            "resolve_after": args.resolve_after or 2,
        }
    report: dict[str, Any] = {}
    if not args.skip_nab:
        nab_dir = args.nab_dir.resolve()
        if not (nab_dir / "nabscore.py").is_file():
            print(f"NAB corpus not found at {nab_dir} (use --nab-dir)", file=sys.stderr)
            return 2
        files = args.only or (SMOKE_FILES if args.smoke else nab_files(nab_dir))
        nab_rows, elapsed = run_nab(nab_dir, files, DETECTORS, args.jobs, options)
        print_nab(nab_rows, len(files), elapsed)
        report["nab"] = [r.__dict__ for r in nab_rows]
    if not args.skip_suite:
        seeds = list(range(args.seeds if args.seeds is not None else (2 if args.smoke else 10)))
        suite_options = dict(options)
        suite_options["detectors"] = list(DETECTORS)
        suite_rows, elapsed = run_suite(seeds, args.jobs, suite_options)
        print_suite(suite_rows, elapsed)
        report["suite"] = [r.__dict__ for r in suite_rows]
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
