"""What "False alarm" answers do to a series' false alerts, and that they cannot silence it.

    python -m benchmarks.answers            # 20 series x 16 weeks
    python -m benchmarks.answers --smoke    # 3 series x 10 weeks (CI: make bench-smoke)

Each series is an hourly KPI (daily and weekly season, multiplicative noise) with bursts its
owners know to be normal (a promotion, a batch: +20% to +60% for two to four hours, about
twice a week, none in the first four weeks) and one real incident (a drop to 30% for six
hours) in its last week. It is replayed through the daemon's path (``monitor.backtest.replay``:
the same detector, alert state machine and answer handling as the daemon) with a simulated
on-call person who answers every alert an hour after it opens: "False alarm" on an alert that
began in a burst, "Acknowledge" on the incident. The loop is closed: each answer changes what
fires after it, so the replay runs again after each one until no alert is left unanswered.

Printed, over all series: false alerts per series-week before the first answer and over the
weeks after the n-th answer (1, 2, 3, 4 and more), against the same weeks replayed without any
answer; the sensitivity factor reached; and whether the incident still alerted.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from monitor.alerts.state import AlertPolicy
from monitor.answers.model import AlertRef, AnswerKind, Feedback, sensitivity_factor
from monitor.backtest import Replay, replay
from monitor.detection import DetectorSpec

START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
HOUR = timedelta(hours=1)
ANSWER_AFTER = timedelta(hours=1)
QUIET_WEEKS = 4  # no burst: the model learns the series first


@dataclass(frozen=True)
class Series:
    frame: pd.DataFrame
    bursts: list[tuple[pd.Timestamp, pd.Timestamp]]  # known-normal spans (start, end)
    incident: tuple[pd.Timestamp, pd.Timestamp]


def generate(seed: int, weeks: int) -> Series:
    rng = np.random.default_rng(seed)
    index = pd.date_range(START, periods=weeks * 7 * 24, freq="h", tz="UTC")
    hours = np.arange(len(index))
    daily = 1 + 0.35 * np.sin(2 * np.pi * (hours % 24 - 8) / 24)
    weekly = np.where(index.day_of_week >= 5, 0.75, 1.0)
    level = 1000 * (1 + rng.uniform(-0.5, 0.5))
    values = level * daily * weekly * rng.lognormal(0, 0.06, len(index))
    bursts = []
    t = QUIET_WEEKS * 7 * 24
    while t < len(index) - 8 * 24:
        t += int(rng.integers(48, 120))  # about twice a week
        length = int(rng.integers(2, 5))
        values[t : t + length] *= rng.uniform(1.2, 1.6)
        bursts.append((index[t], index[min(t + length, len(index) - 1)]))
    start = len(index) - int(rng.integers(60, 120))
    values[start : start + 6] *= 0.3
    incident = (index[start], index[start + 6])
    frame = pd.DataFrame({"timestamp": index, "value": values})
    return Series(frame, bursts, incident)


def in_span(moment: pd.Timestamp, spans: list[tuple[pd.Timestamp, pd.Timestamp]]) -> bool:
    return any(a <= moment <= b + 2 * HOUR for a, b in spans)


def answered_replay(
    series: Series, spec: DetectorSpec, policy: AlertPolicy
) -> tuple[Replay, list[Feedback]]:
    """Replay again after each new answer until every alert is answered."""
    answers: list[Feedback] = []
    ref = AlertRef("kpi", "", 0)
    while True:
        result = replay(series.frame, spec, policy, aggregate="sum", answers=answers)
        answered = {a.since for a in answers}
        pending = [e for e in result.episodes if e.since.to_pydatetime() not in answered]
        if not pending:
            return result, answers
        first = pending[0]
        real = in_span(first.since, [series.incident])
        kind: AnswerKind = "acknowledge" if real else "false_alarm"
        # sent when the bucket that opened it ended, answered an hour later
        at = (first.opened + HOUR + ANSWER_AFTER).to_pydatetime()
        answers.append(Feedback(ref, kind, "U0ONCALL", "oncall", at, first.since.to_pydatetime()))
        answers.sort(key=lambda a: a.answered_at)


@dataclass
class Tally:
    weeks: float = 0.0
    false_alerts: int = 0
    false_alerts_unanswered: int = 0

    def per_week(self, unanswered: bool = False) -> float:
        count = self.false_alerts_unanswered if unanswered else self.false_alerts
        return count / self.weeks if self.weeks else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="3 series x 10 weeks")
    parser.add_argument("--series", type=int, default=20)
    parser.add_argument("--weeks", type=int, default=16)
    args = parser.parse_args(argv)
    count, weeks = (3, 10) if args.smoke else (args.series, args.weeks)
    spec = DetectorSpec(3600)
    policy = AlertPolicy.for_grain(3600)
    phases = ["before the first answer", "after 1 answer", "after 2 answers", "after 3 answers",
              "after 4 or more"]  # fmt: skip
    tallies = {p: Tally() for p in phases}
    incidents_caught = incidents_caught_plain = 0
    factors, answers_given = [], []
    for seed in range(count):
        series = generate(seed, weeks)
        plain = replay(series.frame, spec, policy, aggregate="sum")
        result, answers = answered_replay(series, spec, policy)
        false_given = [a for a in answers if a.answer == "false_alarm"]
        answers_given.append(len(false_given))
        end = series.frame["timestamp"].iloc[-1].to_pydatetime()
        factors.append(sensitivity_factor(answers, end))
        incidents_caught += any(in_span(e.since, [series.incident]) for e in result.episodes)
        incidents_caught_plain += any(in_span(e.since, [series.incident]) for e in plain.episodes)
        # phase boundaries: the evaluation starts where bursts may start, each answer opens
        # the next phase; the incident's week is left out (it has its own figure)
        bounds = [pd.Timestamp(START + timedelta(weeks=QUIET_WEEKS))]
        bounds += [pd.Timestamp(a.answered_at) for a in false_given[:4]]
        bounds.append(series.incident[0] - pd.Timedelta(days=1))
        for i, phase in enumerate(phases):
            if i + 1 >= len(bounds) or bounds[i + 1] <= bounds[i]:
                continue
            lo, hi = bounds[i], bounds[i + 1]
            tally = tallies[phase]
            tally.weeks += (hi - lo) / pd.Timedelta(weeks=1)
            tally.false_alerts += sum(
                lo <= e.opened < hi and not in_span(e.since, [series.incident])
                for e in result.episodes
            )
            tally.false_alerts_unanswered += sum(
                lo <= e.opened < hi and not in_span(e.since, [series.incident])
                for e in plain.episodes
            )
    print(f"{count} hourly series x {weeks} weeks; every alert answered an hour after it opens")
    print(f"{'phase':<26} {'series-weeks':>12} {'false alerts/week':>18} {'without answers':>16}")
    for phase, tally in tallies.items():
        if tally.weeks == 0:
            continue
        print(
            f"{phase:<26} {tally.weeks:>12.1f} {tally.per_week():>18.2f} "
            f"{tally.per_week(unanswered=True):>16.2f}"
        )
    print(
        f"false-alarm answers per series: median {np.median(answers_given):.0f}, "
        f"max {max(answers_given)}; sensitivity factor at the end: "
        f"median {np.median(factors):.2f}, max {max(factors):.2f} (bound 1.50)"
    )
    print(
        f"real incident (drop to 30% for 6 h) alerted: {incidents_caught}/{count} with the "
        f"answers, {incidents_caught_plain}/{count} without"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
