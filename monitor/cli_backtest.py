"""``kpi-monitor backtest``: replay a CSV or a configured check's warehouse history through the
daemon's detection and alerting, print what would have fired, write the scored rows, draw it.

For a check, ``--since`` is the window reported: the model learns from the check's whole
lookback before it, as the daemon would have, so verdicts inside the window are those the daemon
would have given. A freshness check replays its data age, judged every schedule interval against
the limit learned from the loads before each moment.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from monitor.alerts.state import AlertPolicy
from monitor.answers.model import Feedback
from monitor.backtest import Episode, Replay, infer_bucket_seconds, replay
from monitor.calendar.config import RecordedEvent, calendar_for
from monitor.calendar.days import Calendar, Span, check_region
from monitor.config import GRAIN_SECONDS, CheckConfig, Config
from monitor.detection import DetectorSpec
from monitor.durations import is_cron, parse_duration
from monitor.errors import KpiMonitorError, StateStoreError
from monitor.plots import MAX_PANELS, Mark, Panel, render_backtest
from monitor.report import moment
from monitor.rules import Bounds, apply_bounds
from monitor.warehouse.base import Warehouse

EXIT_OK = 0
FRESHNESS_STEP = timedelta(minutes=5)  # a freshness check on a cron schedule is replayed so


def backtest_csv(args: argparse.Namespace) -> int:
    try:
        frame = pd.read_csv(args.csv)
    except (OSError, ValueError) as exc:
        raise KpiMonitorError(f"cannot read {args.csv}: {exc}") from None
    for column in (args.timestamp_column, args.value_column):
        if column not in frame.columns:
            found = ", ".join(map(str, frame.columns))
            raise KpiMonitorError(f"{args.csv} has no column {column!r} (columns: {found})")
    if args.grain == "auto":
        try:
            seconds = infer_bucket_seconds(frame[args.timestamp_column])
        except ValueError as exc:
            raise KpiMonitorError(f"{args.csv}: {exc}") from None
    elif args.grain in GRAIN_SECONDS:
        seconds = GRAIN_SECONDS[args.grain]
    else:
        seconds = int(parse_duration(args.grain).total_seconds())
    try:
        spec = DetectorSpec(seconds, timezone=args.timezone)
        if args.country is not None:
            check_region(args.country, args.subdivision)
    except ValueError as exc:
        raise KpiMonitorError(f"backtest: {exc}") from None
    calendar = Calendar(args.timezone, args.country, args.subdivision, on_holiday=args.on_holiday)
    if args.sensitivity is not None:
        spec = replace(spec, sensitivity=args.sensitivity)
    daemon = AlertPolicy.for_grain(seconds)  # unless told otherwise, what the daemon would send
    policy = replace(
        daemon,
        **{
            field: value
            for field, value in (
                ("open_after", args.alert_after),
                ("resolve_after", args.resolve_after),
            )
            if value is not None
        },
    )
    bounds = Bounds(args.min, args.max)
    result = replay(
        frame,
        spec,
        policy,
        timestamp_column=args.timestamp_column,
        value_column=args.value_column,
        rules=lambda v: apply_bounds(v, bounds, policy.open_after),
        calendar=calendar,
    )
    print(f"{len(result.rows)} rows in {seconds}s buckets")
    print_episodes("", result.episodes, args.timezone)
    if args.out:
        result.rows.to_csv(args.out, index=False)
        print(f"scored rows -> {args.out}")
    if args.plot:
        title = f"{Path(args.csv).name}: backtest"
        png = render_backtest([Panel(Path(args.csv).stem, result.buckets, result.episodes)],
                              title=title, timezone=args.timezone,
                              spans=_spans(calendar, result))  # fmt: skip
        Path(args.plot).write_bytes(png)
        print(f"chart of {len(result.buckets)} buckets -> {args.plot}")
    return EXIT_OK


def backtest_check(config: Config, check: CheckConfig, args: argparse.Namespace) -> int:
    from monitor.warehouse import open_warehouse

    now = datetime.now(UTC)
    shown_from = pd.Timestamp(now - parse_duration(args.since))
    marks, recorded = _from_store(config, check, shown_from)
    calendar = calendar_for(check, recorded)
    name = config.warehouse_of(check)
    with open_warehouse(name, config.all_warehouses()[name]) as warehouse:
        if check.kind == "freshness":
            replays = {"": _replay_freshness(check, warehouse, shown_from, now)}
            answers: dict[str, list[Feedback]] | None = None
        else:
            answers = _answers(config, check) if args.answers else None
            replays = _replay_series(check, warehouse, shown_from, now, calendar, answers)
            if answers is not None:
                unanswered = _replay_series(check, warehouse, shown_from, now, calendar)
    if args.answers and answers is None:
        print(f"{check.name}: a freshness check has no model answers could change")
    if not replays:
        print(f"{check.name}: no data in the lookback before {moment(shown_from)} or since")
        return EXIT_OK
    if args.segment is not None and args.segment not in replays:
        known = ", ".join("'' (the total)" if s == "" else repr(s) for s in replays)
        raise KpiMonitorError(f"{check.name} has no segment {args.segment!r}; segments: {known}")
    shown = {segment: _window(r, shown_from) for segment, r in replays.items()}
    for segment, result in shown.items():
        label = f"{check.name} [{segment}]" if segment else check.name
        print_episodes(label, result.episodes, check.timezone, shown_from)
    for line in _explained(check, replays, shown):
        print(line)
    if answers is not None:
        _compare(check, shown, {s: _window(r, shown_from) for s, r in unanswered.items()},
                 answers)  # fmt: skip
    if args.out:
        rows = pd.concat(
            [r.rows.assign(segment=segment) for segment, r in shown.items()], ignore_index=True
        )
        rows[["segment", *(c for c in rows.columns if c != "segment")]].to_csv(
            args.out, index=False
        )
        print(f"{len(rows)} scored rows -> {args.out}")
    if args.plot:
        panels = _panels(check, shown, args.segment)
        unit = "seconds" if check.kind == "freshness" else ""
        title = f"{check.name}: backtest from {moment(shown_from, check.timezone)}"
        spans = calendar.spans(shown_from, pd.Timestamp(now)) if check.kind != "freshness" else []
        png = render_backtest(panels, title=title, timezone=check.timezone, unit=unit,
                              marks=marks, spans=spans)  # fmt: skip
        Path(args.plot).write_bytes(png)
        drawn = ", ".join(p.label for p in panels[:MAX_PANELS])
        more = f" and {len(panels) - MAX_PANELS} more" if len(panels) > MAX_PANELS else ""
        print(f"chart of {drawn}{more}, {len(marks)} deployments marked -> {args.plot}")
    return EXIT_OK


def _answers(config: Config, check: CheckConfig) -> dict[str, list[Feedback]]:
    """Per segment, the answers given to the check's alerts, from the daemon's state store
    (read beside a running daemon, without its lock); none without a store."""
    from monitor.store import StateStore

    if config.state.url is None and not Path(config.state.path).exists():
        print(f"{check.name}: no state store at {config.state.path}: no answers to replay")
        return {}
    with StateStore.open(config.state, exclusive=False) as store:
        given = store.answers.since(datetime(1970, 1, 1, tzinfo=UTC), check.name)
    by_segment: dict[str, list[Feedback]] = {}
    for answer in given:
        by_segment.setdefault(answer.ref.segment, []).append(answer)
    return by_segment


def _compare(
    check: CheckConfig,
    answered: dict[str, Replay],
    unanswered: dict[str, Replay],
    answers: dict[str, list[Feedback]],
) -> None:
    """What the recorded answers changed: alerts with them and without, per segment."""
    given = sum(len(a) for a in answers.values())
    print(f"{check.name}: {given} recorded answers replayed")
    for segment, result in answered.items():
        label = f"{check.name} [{segment}]" if segment else check.name
        mine = answers.get(segment, [])
        kinds = ", ".join(sorted({a.answer for a in mine})) or "none"
        before = len(unanswered[segment].episodes) if segment in unanswered else 0
        print(
            f"{label}: {len(result.episodes)} alerts with the answers ({kinds}), "
            f"{before} without"
        )


def _replay_series(
    check: CheckConfig,
    warehouse: Warehouse,
    shown_from: pd.Timestamp,
    now: datetime,
    calendar: Calendar,
    answers: dict[str, list[Feedback]] | None = None,
) -> dict[str, Replay]:
    from monitor.buckets import bucket_start, last_complete, next_bucket
    from monitor.engine import alert_policy, detector_spec
    from monitor.queries import series_query
    from monitor.series import normalise

    start = bucket_start(shown_from - check.effective_lookback, check.grain, check.timezone)
    until = next_bucket(
        last_complete(now, check.grain, check.timezone, check.settle), check.grain, check.timezone
    )
    query = series_query(check, warehouse.dialect, start, until=until)
    found = normalise(warehouse.query(query.sql, query.params), check, now)
    policy = alert_policy(check)
    bounds = Bounds(check.min, check.max)
    return {
        segment: replay(
            pd.DataFrame({"timestamp": series.index, "value": series.to_numpy()}),
            detector_spec(check),
            policy,
            aggregate="sum",
            rules=lambda v: apply_bounds(v, bounds, policy.open_after),
            calendar=calendar,
            answers=(answers or {}).get(segment, ()),
        )
        for segment, series in found.items()
        if not series.empty
    }


def _explained(
    check: CheckConfig, replays: dict[str, Replay], shown: dict[str, Replay]
) -> list[str]:
    """Where each episode of the total came from, as the daemon's alert would have said it:
    the drill-down over its buckets up to the one that opened it."""
    from monitor.detection import Verdict
    from monitor.engine import detector_spec
    from monitor.incidents import explain_buckets, explainable

    total = shown.get("")
    if not explainable(check) or total is None:
        return []
    def judged(frame: pd.DataFrame) -> list[Verdict]:
        columns = ("value", "expected", "lower", "upper", "score")
        value, expected, lower, upper, score = (frame[c].to_numpy(dtype=float) for c in columns)
        return [
            Verdict(
                pd.Timestamp(b),
                float(value[i]),
                _known(expected[i]),
                _known(lower[i]),
                _known(upper[i]),
                float(score[i]),
                bool(a),
            )
            for i, (b, a) in enumerate(zip(frame["bucket"], frame["anomalous"], strict=True))
        ]

    verdicts = {segment: judged(result.buckets) for segment, result in replays.items()}
    lines = []
    for episode in total.episodes:
        upto = {s: [v for v in vs if v.bucket <= episode.opened] for s, vs in verdicts.items()}
        found = explain_buckets(
            upto, check.dimensions, episode.since, detector_spec(check).sensitivity
        )
        if found is not None:
            when = _when(episode.opened, check.timezone)
            lines.append(f"{check.name}: where, at {when}: {found.text(check.name)}")
    return lines


def _known(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _replay_freshness(
    check: CheckConfig, warehouse: Warehouse, shown_from: pd.Timestamp, now: datetime
) -> Replay:
    from monitor.engine import DEFAULT_SENSITIVITY, alert_policy
    from monitor.freshness import replay_ages
    from monitor.queries import freshness_query

    query = freshness_query(
        check, warehouse.dialect, shown_from - check.effective_lookback, now, limit=None
    )
    frame = warehouse.query(query.sql, query.params)
    column = pd.to_datetime(frame.iloc[:, 0].dropna()) if len(frame.columns) else pd.Series([])
    loaded = pd.DatetimeIndex(column)
    loaded = loaded.tz_localize("UTC") if loaded.tz is None else loaded.tz_convert("UTC")
    step = FRESHNESS_STEP if is_cron(check.schedule) else parse_duration(check.schedule)
    step = max(step, timedelta(minutes=1))
    moments = pd.date_range(shown_from.ceil("min"), now, freq=step)
    return replay_ages(
        loaded,
        moments,
        check.effective_lookback,
        check.sensitivity or DEFAULT_SENSITIVITY,
        check.max_age,
        alert_policy(check),
    )


def _window(result: Replay, shown_from: pd.Timestamp) -> Replay:
    """The part of a replay from ``shown_from`` on: its buckets and rows, and the episodes open
    at some point in it (one that opened before it and is still open is kept)."""
    start = pd.Timestamp(shown_from).tz_convert("UTC")
    buckets = result.buckets[pd.to_datetime(result.buckets["bucket"], utc=True) >= start]
    rows = result.rows[pd.to_datetime(result.rows["timestamp"], utc=True, format="mixed") >= start]
    episodes = [e for e in result.episodes if e.resolved is None or e.resolved >= start]
    return Replay(rows.reset_index(drop=True), buckets.reset_index(drop=True), episodes,
                  result.bucket_seconds)  # fmt: skip


def _panels(check: CheckConfig, shown: dict[str, Replay], wanted: str | None) -> list[Panel]:
    """The segment asked for; else every segment that alerted, most alerts first; else the
    first segment."""
    def label(segment: str) -> str:
        return f"{check.name} [{segment}]" if segment else check.name

    if wanted is not None:
        chosen = [wanted]
    else:
        alerted = [s for s, r in shown.items() if r.episodes]
        chosen = sorted(alerted, key=lambda s: (-len(shown[s].episodes), s)) or [next(iter(shown))]
    return [Panel(label(s), shown[s].buckets, shown[s].episodes) for s in chosen]


def _from_store(
    config: Config, check: CheckConfig, shown_from: pd.Timestamp
) -> tuple[list[Mark], list[RecordedEvent]]:
    """Deployments that watched the check since ``shown_from``, and the calendar events and
    exclusions recorded through the API, from the daemon's state store (read only when it
    exists: a backtest never creates one; and beside the daemon, without taking the lock that
    keeps a second daemon off the file)."""
    from monitor.deployments import Deployment
    from monitor.store import StateStore

    if config.state.url is None and not Path(config.state.path).exists():
        return [], []
    try:
        with StateStore.open(config.state, exclusive=False) as store:
            documents = store.deployments.documents(since=shown_from.to_pydatetime())
            events = store.calendar.events()
    except StateStoreError as exc:
        print(f"deployments and recorded events not used: {exc}")
        return [], []
    deployments = [Deployment.from_json(d) for d in documents]
    marks = [
        Mark(pd.Timestamp(d.received_at), f"{d.id} ({d.environment})")
        for d in deployments
        if d.watched(check.name) is not None
    ]
    return marks, [RecordedEvent.from_json(json.loads(e)) for e in events]


def _spans(calendar: Calendar, result: Replay) -> list[Span]:
    if result.buckets.empty:
        return []
    buckets = pd.to_datetime(result.buckets["bucket"], utc=True)
    end = buckets.max() + pd.Timedelta(seconds=result.bucket_seconds)
    return calendar.spans(buckets.min(), end)


def print_episodes(
    name: str, episodes: list[Episode], timezone: str, shown_from: pd.Timestamp | None = None
) -> None:
    """One line per episode, each time in UTC and in the check's time zone."""
    label = f"{name}: " if name else ""
    if not episodes:
        print(f"{label}no alert would have fired")
    for episode in episodes:
        resolved = (
            f", resolved {_when(episode.resolved, timezone)}"
            if episode.resolved is not None
            else ", still open"
        )
        before = shown_from is not None and episode.opened < shown_from
        opened = "already open" if before else f"alert at {_when(episode.opened, timezone)}"
        answer = f" (answered: {episode.answer.replace('_', ' ')})" if episode.answer else ""
        print(
            f"{label}{opened} (deviating since {_when(episode.since, timezone)}){resolved}{answer}"
        )


def _when(at: pd.Timestamp, timezone: str) -> str:
    utc = moment(at)
    return utc if timezone.upper() == "UTC" else f"{utc} = {moment(at, timezone)}"
