"""Deployment verdicts on generated deployments: how fast a break fails, how seldom noise does.

Part of ``python -m benchmarks.deployments`` (``--smoke``: a few of each). Every case is an
hourly KPI-suite series (``benchmarks.kpi_scenarios``: daily and weekly rhythm, growth,
multiplicative noise, Poisson counts) split into five segments of skewed shares (Dirichlet),
watched as the daemon watches a check with a dimension: a ``Detector`` per segment and one on
the total, warmed on ten weeks of history up to a deployment at a random hour of the last two
weeks, then stepped through the six buckets of the default ``post_deploy_window`` (6 h). From
the deployment's bucket on, the data changes by the case:

- breaking: a level shift of 10, 20, 30, 50 or 100% up or down, of the total (every segment) or
  of one segment (a random one); a fan-out (a join duplicating rows: the total, or one segment,
  x2); dropped rows (one segment goes to 0; the total loses 40%);
- benign: no change at all;
- intended: a shift of 30-100% declared with ``expect_change``: the models accept the level from
  the deployment (``acknowledge``), and what counts is any alert opening in the day after.

Reported per kind: the share failed within 2 post-deployment buckets by the sequential test
(``monitor.sequential``, the daemon's) and by the rule it replaces (an alert opening on a
watched series, the daemon's alert policy), and the median delay in buckets of those that
failed within the window.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchmarks.kpi_scenarios import _base, _realise
from monitor.alerts.state import AlertPolicy, AlertState, advance
from monitor.detection import Detector, DetectorSpec
from monitor.sequential import Evidence

SEGMENTS = 5
WINDOW = 6  # buckets of the default post_deploy_window at hourly grain
AFTER_INTENDED = 24  # buckets an intended change is followed for alerts
SHIFTS = (0.1, 0.2, 0.3, 0.5, 1.0)


@dataclass(frozen=True)
class Case:
    kind: str  # "break", "benign", "intended"
    label: str  # what changed, e.g. "total -30%"
    magnitude: float  # relative size of the change (0 for benign)
    seed: int
    scope: str = "total"  # "total" or "segment"
    factor: float = 1.0  # what the changed part is multiplied by


@dataclass(frozen=True)
class Result:
    case: Case
    sequential: int | None  # post-deployment buckets until the test failed it (1 = first)
    alert: int | None  # the same for an alert opening on a watched series
    intended_alerts: int = 0

    @property
    def daemon(self) -> int | None:
        """When the daemon fails it: the first of the two."""
        found = [d for d in (self.sequential, self.alert) if d is not None]
        return min(found) if found else None


def cases(repeat: int, benign: int, intended: int) -> list[Case]:
    out = []
    seed = 0
    for scope in ("total", "segment"):
        for shift in SHIFTS:
            for sign in (-1, 1):
                for _ in range(repeat):
                    seed += 1
                    factor = 1 + sign * shift
                    label = f"{scope} level {sign * shift * 100:+.0f}%"
                    out.append(Case("break", label, shift, seed, scope, factor))
        for _ in range(repeat):
            seed += 1
            out.append(Case("break", f"{scope} fan-out x2", 1.0, seed, scope, 2.0))
    for _ in range(repeat):
        seed += 1
        out.append(Case("break", "segment rows dropped", 1.0, seed, "segment", 0.0))
        seed += 1
        out.append(Case("break", "total loses 40% of rows", 0.4, seed, "total", 0.6))
    for _ in range(benign):
        seed += 1
        out.append(Case("benign", "no change", 0.0, seed))
    for i in range(intended):
        seed += 1
        shift = 0.3 + 0.7 * (i % 4) / 3
        factor = 1 + shift if i % 2 else 1 - min(shift, 0.9)
        out.append(Case("intended", "intended change", shift, seed, "total", factor))
    return out


def simulate(case: Case) -> Result:
    rng = np.random.default_rng(case.seed)
    base = _base("hour", rng)
    n = len(base.mean)
    deploy = int(rng.integers(n - 14 * 24, n - WINDOW - AFTER_INTENDED))
    shares = np.sort(rng.dirichlet(np.full(SEGMENTS, 2.0)))[::-1]
    factor = np.ones((SEGMENTS, n))
    if case.kind != "benign":
        rows = slice(None) if case.scope == "total" else int(rng.integers(SEGMENTS))
        factor[rows, deploy:] = case.factor
    segments = np.array(
        [_realise(base, rng, base.mean * s * factor[i]) for i, s in enumerate(shares)]
    )
    series = [*segments, segments.sum(axis=0)]
    index = base.index
    spec = DetectorSpec(3600)
    policy = AlertPolicy.for_grain(3600)
    follow = AFTER_INTENDED if case.kind == "intended" else WINDOW
    sequential: int | None = None
    alert: int | None = None
    intended_alerts = 0
    for values in series:
        model = Detector(spec)
        model.warm(index[:deploy], values[:deploy])
        if case.kind == "intended":
            model.acknowledge(index[deploy])
        evidence = Evidence("case", "")
        state = AlertState()
        for k in range(follow):
            verdict = model.step(index[deploy + k], float(values[deploy + k]))
            state, transition = advance(state, verdict, policy)
            opened = transition is not None and transition.kind == "opened"
            if case.kind == "intended":
                intended_alerts += opened
                continue
            evidence = evidence.add(verdict)
            if evidence.broken and (sequential is None or k + 1 < sequential):
                sequential = k + 1
            if opened and (alert is None or k + 1 < alert):
                alert = k + 1
    return Result(case, sequential, alert, intended_alerts)


def report(results: list[Result]) -> list[str]:
    def within(rs: list[Result], which: str, buckets: int) -> str:
        hit = [(d := getattr(r, which)) is not None and d <= buckets for r in rs]
        return f"{sum(hit) / len(hit):.2f} ({sum(hit)}/{len(hit)})" if hit else "n/a"

    def delay(rs: list[Result], which: str) -> str:
        found = [getattr(r, which) for r in rs if getattr(r, which) is not None]
        return f"{statistics.median(found):.0f}" if found else "-"

    lines = [
        "| deployments | failed within 2 buckets: sequential test | alert rule (before) |"
        " either (the daemon now) | median delay, buckets: test / alert |",
        "| --- | --- | --- | --- | --- |",
    ]
    breaking = [r for r in results if r.case.kind == "break"]
    levels = [r for r in breaking if "level" in r.case.label]
    groups: list[tuple[str, list[Result]]] = [
        (f"breaking, shift {m * 100:.0f}%", [r for r in levels if r.case.magnitude == m])
        for m in SHIFTS
    ]
    groups += [
        ("breaking, shift >= 30% (all kinds)", [r for r in breaking if r.case.magnitude >= 0.3]),
        ("breaking, fan-out x2", [r for r in breaking if "fan-out" in r.case.label]),
        ("breaking, dropped rows", [r for r in breaking if "rows" in r.case.label]),
        ("breaking, one segment", [r for r in breaking if r.case.scope == "segment"]),
        ("benign (no effect)", [r for r in results if r.case.kind == "benign"]),
    ]
    for label, rs in groups:
        lines.append(
            f"| {label} | {within(rs, 'sequential', 2)} | {within(rs, 'alert', 2)} |"
            f" {within(rs, 'daemon', 2)} | {delay(rs, 'sequential')} / {delay(rs, 'alert')} |"
        )
    benign = [r for r in results if r.case.kind == "benign"]
    lines.append(
        f"| benign failed at all in the {WINDOW}-bucket window | "
        f"{within(benign, 'sequential', WINDOW)} | {within(benign, 'alert', WINDOW)} | "
        f"{within(benign, 'daemon', WINDOW)} | |"
    )
    intended = [r for r in results if r.case.kind == "intended"]
    if intended:
        alerted = sum(r.intended_alerts > 0 for r in intended)
        lines.append(
            f"| intended (expect_change) alerting in the {AFTER_INTENDED} buckets after |"
            f" not tested | {alerted}/{len(intended)} | {alerted}/{len(intended)} | |"
        )
    return lines


def run(repeat: int, benign: int, intended: int) -> list[str]:
    pd.set_option("mode.chained_assignment", None)
    results = [simulate(c) for c in cases(repeat, benign, intended)]
    return report(results)
