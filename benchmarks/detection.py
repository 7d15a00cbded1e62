"""Detection quality: kpi-monitor and the peers users pick instead, side by side, on every corpus.

    python -m benchmarks.detection --jobs 2           # full run: NAB, CMD and the KPI suite
    python -m benchmarks.detection --smoke            # a few files and one seed, for CI
    python -m benchmarks.detection --corpus cmd --detectors kpi-monitor,zscore

Corpora (``--corpus nab,cmd,kpi``):
* ``nab``: the NAB development corpus (``../shared/benchmarks/nab``), scored by its own
  ``nabscore.py`` (``benchmarks.nab_corpus``);
* ``cmd``: the CMD part in ``../shared/benchmarks/cmd``, scored by ``cmd_eval.py``'s definitions
  (``benchmarks.cmd_corpus``);
* ``kpi``: the project's generated KPI scenario suite (``benchmarks.kpi_suite``).

Detectors (``--detectors``): ``kpi-monitor`` (``monitor.backtest.replay``, the daemon's code path),
and the peers of ``benchmarks.peers``: ``zscore`` and ``elementary`` (cmd_eval's), ``holt-winters``
(statsmodels), ``prophet`` (cmd_eval's; optional extra ``bench``, skipped with a note when absent).
Every peer goes through the daemon's alert rule. ``--json`` writes every figure.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python benchmarks/detection.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cmd_corpus import print_cmd, run_cmd
from benchmarks.external import DEFAULT_CMD, DEFAULT_NAB, MissingCorpus, load_cmd_eval
from benchmarks.kpi_scenarios import SCENARIOS
from benchmarks.kpi_suite import print_suite, run_suite
from benchmarks.nab_corpus import SMOKE_FILES, nab_files, print_nab, run_nab
from benchmarks.peers import DETECTORS, prophet_missing
from benchmarks.runs import Options

CORPORA = ("nab", "cmd", "kpi")


def _names(value: str, known: tuple[str, ...], what: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or '(none given)'}; choose from {', '.join(known)}"
        )
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--corpus",
        type=lambda v: _names(v, CORPORA, "corpus"),
        default=CORPORA,
        help="comma-separated: nab,cmd,kpi (default all)",
    )
    parser.add_argument(
        "--detectors",
        type=lambda v: _names(v, DETECTORS, "detector"),
        default=DETECTORS,
        help=f"comma-separated, default all: {','.join(DETECTORS)}",
    )
    parser.add_argument("--nab-dir", type=Path, default=DEFAULT_NAB)
    parser.add_argument("--cmd-dir", type=Path, default=DEFAULT_CMD)
    parser.add_argument("--smoke", action="store_true", help="a few files and one seed (CI)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--seeds", type=int, default=None, help="KPI suite seeds per scenario")
    parser.add_argument("--sensitivity", type=float, default=None, help="kpi-monitor's")
    parser.add_argument("--open-after", type=int, default=None, help="instead of the daemon's")
    parser.add_argument("--resolve-after", type=int, default=None, help="instead of the daemon's")
    parser.add_argument(
        "--only",
        action="append",
        help="keep the NAB and CMD files (category/name.csv) and KPI scenarios whose name "
        "contains this; repeat for several",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    args = parser.parse_args(argv)
    counts = (args.jobs, args.seeds, args.open_after, args.resolve_after)
    if any(n is not None and n < 1 for n in counts):
        parser.error("--jobs, --seeds, --open-after and --resolve-after take a positive number")
    return args


def _commit() -> str | None:
    """The checkout's commit (with ``-dirty`` for local changes), so a figure names its code."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    commit = _commit()  # before the run: the code that produced the figures
    try:
        load_cmd_eval(args.cmd_dir)  # the peers' definitions serve every corpus
    except MissingCorpus as exc:
        print(f"CMD evaluation script: {exc} (use --cmd-dir)", file=sys.stderr)
        return 2
    detectors = list(args.detectors)
    skipped: dict[str, str] = {}
    if "prophet" in detectors and (why := prophet_missing()) is not None:
        detectors.remove("prophet")
        skipped["prophet"] = why
    policy = None
    if args.open_after is not None or args.resolve_after is not None:
        policy = (args.open_after or 2, args.resolve_after or 2)
    spec = {} if args.sensitivity is None else {"sensitivity": args.sensitivity}
    options = Options(args.cmd_dir.resolve(), tuple(detectors), spec, policy)
    notes = list(skipped.values())
    report: dict[str, Any] = {}
    errors = 0

    if "nab" in args.corpus:
        nab_dir = args.nab_dir.resolve()
        if not (nab_dir / "nabscore.py").is_file():
            print(f"NAB corpus not found at {nab_dir} (use --nab-dir)", file=sys.stderr)
            return 2
        all_files = nab_files(nab_dir)
        if args.only:
            files = [f for f in all_files if any(o in f for o in args.only)]
        else:
            files = list(SMOKE_FILES) if args.smoke else all_files
        t0 = time.perf_counter()
        if files:
            nab = run_nab(nab_dir, files, options, args.jobs, notes)
            print_nab(nab, len(files), time.perf_counter() - t0)
            errors += len(nab.errors)
            report["nab"] = {"files": files, "seconds": round(time.perf_counter() - t0, 1)}
            report["nab"] |= asdict(nab)
        else:
            print("\nNAB: no file matches --only")

    if "cmd" in args.corpus:
        t0 = time.perf_counter()
        cmd = run_cmd(options, args.jobs, args.only, args.smoke, notes)
        if cmd.per_file:
            print_cmd(cmd, time.perf_counter() - t0)
            report["cmd"] = {"seconds": round(time.perf_counter() - t0, 1)} | asdict(cmd)
        else:
            print("\nCMD: no file matches --only")
        errors += len(cmd.errors)

    if "kpi" in args.corpus:
        scenarios = [s for s in SCENARIOS if not args.only or any(o in s for o in args.only)]
        seeds = list(range(args.seeds if args.seeds is not None else (1 if args.smoke else 10)))
        if scenarios:
            t0 = time.perf_counter()
            suite = run_suite(seeds, scenarios, options, args.jobs, notes)
            print_suite(suite, time.perf_counter() - t0)
            errors += len(suite.errors)
            report["kpi"] = {"seeds": len(seeds), "seconds": round(time.perf_counter() - t0, 1)}
            report["kpi"] |= asdict(suite)
        else:
            print("\nKPI suite: no scenario matches --only")

    elapsed = time.perf_counter() - started
    print(f"\n{elapsed:.1f} s in all, {args.jobs} jobs" + (f", {errors} FAILED" if errors else ""))
    if args.json is not None:
        report["meta"] = {
            "commit": commit,
            "argv": sys.argv[1:] if argv is None else argv,
            "corpora": list(args.corpus),
            "detectors": detectors,
            "skipped": skipped,
            "policy": "daemon" if policy is None else f"custom {policy[0]}/{policy[1]}",
            "spec": spec,
            "jobs": args.jobs,
            "seconds": round(elapsed, 1),
            "python": platform.python_version(),
        }
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
