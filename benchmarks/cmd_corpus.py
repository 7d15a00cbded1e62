"""CMD: real production KPIs labelled by their operators, scored exactly as ``cmd_eval.py`` does.

Everything that defines the metric comes from ``cmd_eval.py``, imported from the corpus folder:
loading and hourly aggregation (``series_for``, ``to_hourly``), the warm-up, the policies, the
events, the alert rule for peers, ``score_file``, ``summarise`` and the tables. What differs:
kpi-monitor runs in this process (``monitor.backtest.replay``, the code path of ``kpi-monitor
backtest --csv``) on the frame that command would read: the file itself for hourly files,
cmd_eval's hourly aggregate (``write_hourly_csv``) for per-minute files. A test checks that its
onsets equal the command's. Raw per-minute files are scored only aggregated to hourly: the
daemon's checks are hourly or daily (``cmd_eval.py`` alone scores them raw too).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd

from benchmarks.peers import Flags, onsets, peer_flags
from benchmarks.runs import Options, Outcome, run_tasks, seconds_by_detector, seconds_line
from monitor.alerts.state import AlertPolicy
from monitor.backtest import infer_bucket_seconds, replay
from monitor.detection import DetectorSpec

TOLERANCES = (3, 6)  # T in buckets, cmd_eval's default; the README reports T = 3
MERGE_GAP = 3  # cmd_eval's default --merge-gap
SMOKE_FILES = (
    "application-crash-rate-2/app2-01.csv",
    "middle-tier-api-dependency-latency/outbound-01.csv",
    "data-ingress-rate/ingress-01.csv",
)


@dataclass(frozen=True)
class Task:
    path: str
    domain: str
    variant: str
    detector: str
    options: Options
    buckets: int

    @property
    def key(self) -> str:
        return f"{self.domain}/{Path(self.path).name}"


def variants(cmd_eval: ModuleType, series: Any) -> list[str]:
    """The grains a file is scored at: its own, per-minute files aggregated to hourly."""
    return [v for v in cmd_eval.variants_of(series) if v != "minute"]


def policies(options: Options, step: int) -> dict[str, tuple[int, int]]:
    """Label -> (open_after, resolve_after): the main policy and the CLI's."""
    label, open_after, resolve_after = options.policy_for(step)
    cli = options.cmd_eval().policy_for(step, "cli")
    return {label: (open_after, resolve_after), "cli": (int(cli[0]), int(cli[1]))}


def cli_frame(cmd_eval: ModuleType, series: Any, variant: str, work: Path) -> pd.DataFrame:
    """The frame `kpi-monitor backtest --csv` reads in cmd_eval for this file and grain."""
    source = Path(series.path)
    if variant == "minute->hourly":
        source = work / "hourly.csv"
        cmd_eval.write_hourly_csv(series, source)
    return pd.read_csv(source)


def kpi_monitor_onsets(
    cmd_eval: ModuleType, series: Any, variant: str, options: Options
) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """Alert onsets (grid positions) of kpi-monitor per policy, before the warm-up is applied:
    what ``cmd_eval.run_kpi_monitor`` gets from the CLI, computed in process."""
    with tempfile.TemporaryDirectory(prefix="kpimon-cmd-") as tmp:
        frame = cli_frame(cmd_eval, series, variant, Path(tmp))
    seconds = infer_bucket_seconds(frame["TimeStamp"])
    spec = DetectorSpec(seconds, **options.spec)
    info: dict[str, Any] = {"grain_s": seconds}
    found: dict[str, list[int]] = {}
    for label, (open_after, resolve_after) in policies(options, series.step).items():
        rows = replay(
            frame,
            spec,
            AlertPolicy(open_after=open_after, resolve_after=resolve_after),
            timestamp_column="TimeStamp",
            value_column="Value",
        ).rows
        stamps = cmd_eval.parse_ts(rows.loc[rows["alert"] == 1, "timestamp"]).dropna()
        pos = series.grid.get_indexer(
            pd.DatetimeIndex(stamps.dt.floor(pd.Timedelta(seconds=series.step)))
        )
        found[label] = sorted({int(i) for i in pos if i >= 0})
    return found, info


def run_task(task: Task) -> dict[str, Any]:
    """One (file, grain, detector): onsets per policy after the warm-up, as cmd_eval.run_task."""
    cmd_eval = task.options.cmd_eval()
    series = cmd_eval.series_for(task.path, task.domain, task.variant)
    warm = cmd_eval.warmup_buckets(series)
    if task.detector == "kpi-monitor":
        found, info = kpi_monitor_onsets(cmd_eval, series, task.variant, task.options)
        return {"onsets": {p: [i for i in o if i >= warm] for p, o in found.items()}, "info": info}
    flags: Flags = peer_flags(task.detector, series, warm, cmd_eval)
    return {
        "onsets": {
            label: onsets(cmd_eval, flags, open_after, resolve_after)
            for label, (open_after, resolve_after) in policies(task.options, series.step).items()
        },
        "info": flags.info,
    }


def _cost(task: Task) -> float:
    weight = {"prophet": task.buckets / 50, "holt-winters": 3.0, "kpi-monitor": 2.0}
    return weight.get(task.detector, 0.1) * task.buckets


@dataclass
class CmdResult:
    summary: dict[str, dict[str, Any]]  # variant -> "T3" -> row name -> {overall, domains}
    per_file: dict[str, dict[str, Any]]
    errors: list[dict[str, str]]
    tables: str
    notes: list[str]
    task_seconds: dict[str, float]  # per detector, summed over its tasks


def run_cmd(
    options: Options, jobs: int, only: list[str] | None, smoke: bool, notes: list[str]
) -> CmdResult:
    """Every CMD file (or the smoke files, or those matching ``only``) with every detector."""
    cmd_eval = options.cmd_eval()
    errors: list[dict[str, str]] = []
    loaded: dict[tuple[str, str], Any] = {}  # (variant, key) -> series
    tasks: list[Task] = []
    for path, domain in cmd_eval.discover(options.cmd_dir / "data", None):
        key = f"{domain}/{Path(path).name}"
        if (smoke and not only and key not in SMOKE_FILES) or (
            only and not any(o in key for o in only)
        ):
            continue
        try:
            raw = cmd_eval.load_series(path, domain)
        except Exception as exc:  # a file that cannot be read is reported, the rest go on
            errors.append({"file": key, "stage": "load", "error": f"{type(exc).__name__}: {exc}"})
            continue
        for variant in variants(cmd_eval, raw):
            series = cmd_eval.to_hourly(raw) if variant == "minute->hourly" else raw
            loaded[(variant, key)] = series
            tasks += [
                Task(path, domain, variant, d, options, series.n) for d in options.detectors
            ]
    outcomes = run_tasks(run_task, tasks, jobs, _cost)
    results = _collect(outcomes, errors)
    summary, per_file, md = _score(cmd_eval, options, loaded, results)
    return CmdResult(summary, per_file, errors, md, notes, seconds_by_detector(outcomes))


def _collect(outcomes: list[Outcome], errors: list[dict[str, str]]) -> dict[tuple[str, ...], Any]:
    results: dict[tuple[str, ...], Any] = {}
    for outcome in outcomes:
        task: Task = outcome.task
        if outcome.error is not None:
            errors.append(
                {"file": task.key, "variant": task.variant, "detector": task.detector,
                 "error": outcome.error}
            )  # fmt: skip
            continue
        results[(task.variant, task.key, task.detector)] = {
            **outcome.value, "seconds": round(outcome.seconds, 2)
        }  # fmt: skip
    return results


def _score(
    cmd_eval: ModuleType,
    options: Options,
    loaded: dict[tuple[str, str], Any],
    results: dict[tuple[str, ...], Any],
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """cmd_eval's figures per file; per grain, tolerance and row (detector and policy), the
    summaries overall and per domain; cmd_eval's tables at T = 3."""
    summary: dict[str, Any] = {}
    per_file: dict[str, Any] = {}
    md: list[str] = []
    for variant in sorted({v for v, _ in loaded}, key=cmd_eval.VARIANTS.index):
        files = {k: s for (v, k), s in sorted(loaded.items()) if v == variant}
        rules = policies(options, next(iter(files.values())).step)
        per_file[variant] = {
            key: _file_figures(cmd_eval, series, rules, options, variant, results)
            for key, series in files.items()
        }
        summary[variant] = {}
        for t in TOLERANCES:
            rows: dict[str, Any] = {}
            for d in options.detectors:
                for label, (open_after, resolve_after) in rules.items():
                    figures = {
                        key: f["detectors"][d][label][f"T{t}"]
                        for key, f in per_file[variant].items()
                        if d in f["detectors"]
                    }
                    if figures:
                        name = f"{d} ({label} {open_after}/{resolve_after})"
                        rows[name] = _summaries(cmd_eval, figures, files)
            summary[variant][f"T{t}"] = rows
        first = summary[variant][f"T{TOLERANCES[0]}"]
        domain_rows = sorted(
            ((dom, name, x) for name, r in first.items() for dom, x in r["domains"].items()),
            key=lambda row: row[0],
        )
        title = f"CMD {variant}: overall, T = {TOLERANCES[0]} buckets"
        md.append(cmd_eval.table(title, [(name, r["overall"]) for name, r in first.items()]))
        md.append(cmd_eval.domain_table(f"CMD {variant}: per domain", domain_rows))
    return summary, per_file, "\n".join(md)


def _file_figures(
    cmd_eval: ModuleType,
    series: Any,
    rules: dict[str, tuple[int, int]],
    options: Options,
    variant: str,
    results: dict[tuple[str, ...], Any],
) -> dict[str, Any]:
    """One file's onsets and cmd_eval figures, per detector, policy and tolerance."""
    warm = cmd_eval.warmup_buckets(series)
    detectors: dict[str, Any] = {}
    for d in options.detectors:
        r = results.get((variant, series.key, d))
        if r is None:  # the task failed: reported as an error, absent from the figures
            continue
        detectors[d] = {"info": r["info"], "seconds": r["seconds"]}
        for label in rules:
            ons = r["onsets"][label]
            detectors[d][label] = {"onsets": [str(series.grid[i]) for i in ons]} | {
                f"T{t}": cmd_eval.score_file(series, ons, warm, t, MERGE_GAP) for t in TOLERANCES
            }
    return {"buckets": series.n, "warmup_buckets": warm, "detectors": detectors}


def _summaries(
    cmd_eval: ModuleType, figures: dict[str, Any], files: dict[str, Any]
) -> dict[str, Any]:
    """cmd_eval's micro-averaged summary of files' figures, overall and per domain."""
    domains = sorted({files[key].domain for key in figures})
    return {
        "overall": cmd_eval.summarise(list(figures.values())),
        "domains": {
            dom: cmd_eval.summarise([x for k, x in figures.items() if files[k].domain == dom])
            for dom in domains
        },
    }


def print_cmd(result: CmdResult, elapsed: float) -> None:
    files = len({k for v in result.per_file.values() for k in v})
    print(f"\nCMD part in ../shared/benchmarks/cmd: {files} files, {elapsed:.1f} s\n")
    print(result.tables)
    print(seconds_line(result.task_seconds))
    for note in result.notes:
        print(f"note: {note}")
    for e in result.errors:
        where = " ".join(e.get(k, "") for k in ("variant", "detector", "stage") if e.get(k))
        print(f"FAILED {where} {e['file']}: {e['error']}")

