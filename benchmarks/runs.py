"""What one benchmark run is given, and how its tasks are spread over worker processes."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from benchmarks.external import load_cmd_eval
from monitor.alerts.state import AlertPolicy

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Options:
    """The knobs every corpus shares."""

    cmd_dir: Path
    """Where ``cmd_eval.py`` lives: its peers, warm-up and daemon alert policy serve all corpora."""
    detectors: tuple[str, ...]
    spec: dict[str, Any] = field(default_factory=dict)
    """Overrides of ``DetectorSpec`` (``--sensitivity``)."""
    policy: tuple[int, int] | None = None
    """(open_after, resolve_after) instead of the daemon's policy for the grain."""

    def cmd_eval(self) -> ModuleType:
        return load_cmd_eval(self.cmd_dir)

    def policy_for(self, step: int) -> tuple[str, int, int]:
        """The main policy for a grain: its label, open_after and resolve_after. The daemon's
        (cmd_eval's "daemon" policy: the project's defaults) unless overridden."""
        if self.policy is not None:
            return ("custom", *self.policy)
        open_after, resolve_after = self.cmd_eval().policy_for(step, "daemon")
        return "daemon", int(open_after), int(resolve_after)

    def alert_policy(self, step: int) -> AlertPolicy:
        _, open_after, resolve_after = self.policy_for(step)
        return AlertPolicy(open_after=open_after, resolve_after=resolve_after)


@dataclass(frozen=True)
class Outcome:
    """A task's result, or why it failed: one broken file or detector never stops the run."""

    task: Any
    value: Any = None
    error: str | None = None
    seconds: float = 0.0


def _guarded(call: tuple[Callable[[Any], Any], Any]) -> Outcome:
    fn, task = call
    started = time.perf_counter()
    try:
        value = fn(task)
    except Exception as exc:  # reported with its traceback's tail, the other tasks go on
        detail = traceback.format_exc(limit=-3).strip().splitlines()[-1]
        return Outcome(task, error=f"{type(exc).__name__}: {exc} ({detail})"[:800])
    return Outcome(task, value, seconds=time.perf_counter() - started)


def run_tasks(
    fn: Callable[[T], R], tasks: Sequence[T], jobs: int, cost: Callable[[T], float]
) -> list[Outcome]:
    """``fn`` over ``tasks`` in ``jobs`` processes, the costliest first (so that the last task
    to finish is a short one); outcomes in the order of ``tasks``."""
    order = sorted(range(len(tasks)), key=lambda i: -cost(tasks[i]))
    calls = [(fn, tasks[i]) for i in order]
    if jobs > 1 and len(calls) > 1:
        with ProcessPoolExecutor(jobs) as pool:
            done = list(pool.map(_guarded, calls))
    else:
        done = [_guarded(c) for c in calls]
    out: list[Outcome] = [Outcome(None)] * len(tasks)
    for i, outcome in zip(order, done, strict=True):
        out[i] = outcome
    return out


def seconds_by_detector(outcomes: list[Outcome]) -> dict[str, float]:
    """CPU-side seconds each detector's tasks took, summed (which peer is slow, and where)."""
    out: dict[str, float] = {}
    for outcome in outcomes:
        name = outcome.task.detector
        out[name] = round(out.get(name, 0.0) + outcome.seconds, 1)
    return out


def seconds_line(seconds: dict[str, float]) -> str:
    return "task seconds per detector: " + ", ".join(f"{d} {t:.0f}" for d, t in seconds.items())
