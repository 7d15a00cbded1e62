"""The NAB development corpus, scored by NAB's own scorer (``nabscore.py`` in the corpus folder).

Every detector writes NAB's result layout (``timestamp,value,anomaly_score`` per file) twice: its
``score`` column, scored under NAB's best-threshold rule (standard, reward low FP, reward low FN),
and its ``alert`` column (1 where an alert opens), scored at the fixed threshold 0.5: what users
receive. kpi-monitor is ``monitor.backtest.replay``, the daemon's code path. The peers give flags,
not graded scores (``benchmarks.peers``): their score column is their alert column.

Prophet refits once a day on all history before it; on the 5-minute files that is thousands of
fits on up to 4,000 rows each, so it runs where cmd_eval runs it, on hourly series: NAB's hourly
files (``realAdExchange``), scored in a second table with every detector on the same files.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from benchmarks.external import load_nabscore
from benchmarks.peers import grid_series, onsets, peer_flags
from benchmarks.runs import Options, run_tasks, seconds_by_detector, seconds_line
from monitor.backtest import infer_bucket_seconds, replay
from monitor.detection import DetectorSpec

SMOKE_FILES = (
    "artificialNoAnomaly/art_daily_small_noise.csv",
    "artificialWithAnomaly/art_daily_jumpsup.csv",
    "realAdExchange/exchange-3_cpc_results.csv",
    "realAWSCloudwatch/ec2_cpu_utilization_5f5533.csv",
    "realTweets/Twitter_volume_GOOG.csv",
)
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
PROBATION = 0.15  # NAB's probation fraction (nabscore's default)
PROPHET_MIN_STEP = 3600  # where cmd_eval runs Prophet: hourly series

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Task:
    nab_dir: Path
    rel: str  # category/file.csv
    detector: str
    options: Options
    rows: int


def read_raw(nab_dir: Path, rel: str) -> pd.DataFrame:
    """A corpus file as published: timestamps kept as text, for NAB's result files."""
    return pd.read_csv(nab_dir / "data" / rel, dtype={"timestamp": str})


def frame_of(raw: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {"timestamp": pd.to_datetime(raw["timestamp"]), "value": raw["value"].astype(float)}
    )


def run_task(task: Task) -> tuple[FloatArray, FloatArray]:
    """(score, alert) per row of one file for one detector."""
    frame = frame_of(read_raw(task.nab_dir, task.rel))
    step = infer_bucket_seconds(frame["timestamp"])
    options = task.options
    if task.detector == "kpi-monitor":
        spec = DetectorSpec(step, **options.spec)
        rows = replay(frame, spec, options.alert_policy(step)).rows
        return rows["score"].to_numpy(float), rows["alert"].to_numpy(float)
    cmd_eval = options.cmd_eval()
    nabscore = load_nabscore(task.nab_dir)
    category = task.rel.split("/", 1)[0]
    series, positions = grid_series(
        cmd_eval, task.rel, category, frame["timestamp"], frame["value"], step
    )
    probation = min(int(nabscore.probation_rows(len(frame), PROBATION)), len(frame) - 1)
    warm = max(int(positions[: probation + 1].max()), 0)  # the bucket of the first scored row
    flags = peer_flags(task.detector, series, warm, cmd_eval)
    _, open_after, resolve_after = options.policy_for(step)
    opened = np.zeros(series.n, dtype=bool)
    opened[onsets(cmd_eval, flags, open_after, resolve_after)] = True
    # the alert goes on the first row of its bucket, as in kpi-monitor's replay
    first_row = ~pd.Series(positions).duplicated().to_numpy() & (positions >= 0)
    alert = (first_row & opened[np.maximum(positions, 0)]).astype(float)
    return alert, alert


def nab_files(nab_dir: Path) -> list[str]:
    data = nab_dir / "data"
    return sorted(str(p.relative_to(data)) for p in data.glob("*/*.csv"))


@dataclass
class NabRow:
    detector: str
    files: int
    best: dict[str, float]  # profile -> normalised score at the best threshold of `score`
    fixed: dict[str, float]  # profile -> normalised score of `alert` at threshold 0.5
    no_anomaly_alerts: int
    alerts: int


@dataclass
class NabResult:
    rows: list[NabRow]  # every selected file; Prophet only where it ran on all of them
    hourly: list[NabRow]  # NAB's hourly files, every detector (Prophet's comparison)
    errors: list[dict[str, str]]
    notes: list[str]
    task_seconds: dict[str, float]  # per detector, summed over its tasks


def run_nab(
    nab_dir: Path, files: list[str], options: Options, jobs: int, notes: list[str]
) -> NabResult:
    nabscore = load_nabscore(nab_dir)
    windows_all = nabscore.load_windows(str(nab_dir / "labels" / "combined_windows.json"))
    profiles = nabscore.load_profiles(str(nab_dir / "config" / "profiles.json"))
    raws = {rel: read_raw(nab_dir, rel) for rel in files}
    steps = {rel: infer_bucket_seconds(frame_of(raw)["timestamp"]) for rel, raw in raws.items()}
    hourly = [rel for rel in files if steps[rel] >= PROPHET_MIN_STEP]
    notes = list(notes)
    tasks = []
    for rel in files:
        for d in options.detectors:
            if d == "prophet" and steps[rel] < PROPHET_MIN_STEP:
                continue
            tasks.append(Task(nab_dir, rel, d, options, len(raws[rel])))
    if "prophet" in options.detectors and len(hourly) < len(files):
        notes.append(
            f"prophet not run on the {len(files) - len(hourly)} files finer than hourly (one fit "
            "a day on up to 4,000 rows: hours); compared on the hourly files below"
        )
    weight = {"prophet": 30.0, "holt-winters": 2.0, "kpi-monitor": 2.0}
    outcomes = run_tasks(run_task, tasks, jobs, lambda t: weight.get(t.detector, 0.1) * t.rows)
    errors: list[dict[str, str]] = []
    alerts: dict[tuple[str, str], int] = {}  # (detector, file) -> alerts opened
    with tempfile.TemporaryDirectory(prefix="kpimon-nab-") as tmp:
        for outcome in outcomes:
            task: Task = outcome.task
            if outcome.error is not None:
                errors.append({"file": task.rel, "detector": task.detector,
                               "error": outcome.error})  # fmt: skip
                continue
            raw = raws[task.rel]
            score, alert = outcome.value
            alerts[(task.detector, task.rel)] = int(alert.sum())
            for kind, column in (("score", score), ("alert", alert)):
                path = Path(tmp) / f"{task.detector}.{kind}" / task.rel
                path.parent.mkdir(parents=True, exist_ok=True)
                pd.DataFrame(
                    {"timestamp": raw["timestamp"], "value": raw["value"], "anomaly_score": column}
                ).to_csv(path, index=False, float_format="%.10g")

        def score(selection: list[str]) -> list[NabRow]:
            """Rows of the detectors that ran on every file of ``selection``."""
            windows = {rel: windows_all[rel] for rel in selection if rel in windows_all}
            rows = []
            for d in options.detectors:
                if any((d, rel) not in alerts for rel in selection):
                    continue
                opened = {rel: alerts[(d, rel)] for rel in selection}
                rows.append(_score_detector(nabscore, tmp, d, windows, profiles, opened))
            return rows

        result = NabResult(
            score(files), score(hourly) if hourly else [], errors, notes,
            seconds_by_detector(outcomes),
        )  # fmt: skip
    return result


def _score_detector(
    nabscore: ModuleType,
    tmp: str,
    detector: str,
    windows: dict[str, Any],
    profiles: dict[str, tuple[float, float, float]],
    opened: dict[str, int],
) -> NabRow:
    """NAB's figures of one detector over the files of ``opened`` (file -> alerts opened)."""
    best: dict[str, float] = {}
    fixed: dict[str, float] = {}
    score_corpus = nabscore.Corpus(f"{tmp}/{detector}.score", windows, verbose=False)
    alert_corpus = nabscore.Corpus(f"{tmp}/{detector}.alert", windows, verbose=False)
    for profile in PROFILES:
        tpw, fpw, fnw = profiles[profile]
        _, raw = score_corpus.best(tpw, fpw, fnw)
        best[profile] = float(score_corpus.normalize(raw, tpw, fpw, fnw))
        raw_fixed = alert_corpus.score_at(0.5, tpw, fpw, fnw)
        fixed[profile] = float(alert_corpus.normalize(raw_fixed, tpw, fpw, fnw))
    no_anomaly = sum(n for rel, n in opened.items() if rel.startswith("artificialNoAnomaly/"))
    return NabRow(detector, len(opened), best, fixed, no_anomaly, sum(opened.values()))


def _table(rows: list[NabRow], counts: bool) -> None:
    header = (
        f"{'detector':<14} {'standard':>9} {'low FP':>8} {'low FN':>8} "
        f"{'alert@0.5 std':>14} {'lowFP':>7} {'lowFN':>7}"
    ) + (f" {'alerts':>7} {'noAnomaly':>10}" if counts else "")
    print(header)
    print("-" * len(header))
    for r in rows:
        line = (
            f"{r.detector:<14} {r.best['standard']:9.1f} {r.best['reward_low_FP_rate']:8.1f} "
            f"{r.best['reward_low_FN_rate']:8.1f} {r.fixed['standard']:14.1f} "
            f"{r.fixed['reward_low_FP_rate']:7.1f} {r.fixed['reward_low_FN_rate']:7.1f}"
        )
        print(line + (f" {r.alerts:7d} {r.no_anomaly_alerts:10d}" if counts else ""))


def print_nab(result: NabResult, n_files: int, elapsed: float) -> None:
    print(f"\nNAB development corpus: {n_files} files, {elapsed:.1f} s")
    print("best threshold on `score` (standard / low FP / low FN), then the `alert` column at 0.5")
    _table(result.rows, counts=True)
    if result.hourly and any(r.detector == "prophet" for r in result.hourly):
        print(f"\nNAB hourly files only ({result.hourly[0].files}), every detector")
        _table(result.hourly, counts=False)
    print(seconds_line(result.task_seconds))
    for note in result.notes:
        print(f"note: {note}")
    for e in result.errors:
        print(f"FAILED {e['detector']} {e['file']}: {e['error']}")
