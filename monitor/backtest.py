"""Replay a series causally through the daemon's detection path: Detector + alert state machine.

Pure: a DataFrame in, DataFrames out. Each bucket is scored with the model learned from the
buckets before it, then learned (incrementally, no refit per row), and fed to the same
``advance`` the daemon uses, so the ``alert`` column shows exactly what would have been sent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd

from monitor.alerts.state import AlertPolicy, AlertState, advance
from monitor.answers.hush import hushed
from monitor.answers.model import Feedback, sensitivity_factor
from monitor.calendar.days import Calendar
from monitor.calendar.detector import detector_for
from monitor.detection import DetectorSpec, Verdict
from monitor.relearn import relearned

Aggregate = Literal["mean", "sum", "last", "max", "min"]

OUTPUT_COLUMNS = ["timestamp", "value", "expected", "lower", "upper", "score", "alert"]

# grains a median step snaps to when within 5% of one
_NICE_STEPS = (1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
               86400, 604800)  # fmt: skip


@dataclass(frozen=True)
class Episode:
    """One alert episode as the daemon would have reported it."""

    since: pd.Timestamp  # first anomalous bucket
    opened: pd.Timestamp  # bucket whose verdict opened it (the alert was sent then)
    resolved: pd.Timestamp | None = None  # bucket that resolved it; None if still open
    answer: str = ""  # the recorded answer that ended it, when one did (a replay of answers)


@dataclass(frozen=True)
class Replay:
    """Everything a replay produced."""

    rows: pd.DataFrame
    """One row per input row: ``timestamp,value,expected,lower,upper,score,alert``."""
    buckets: pd.DataFrame
    """One row per bucket: ``bucket,value,expected,lower,upper`` and ``z`` (signed robust
    deviation), ``sustained`` (see Verdict), ``score``, ``anomalous``, ``firing`` (the episode is
    open after this bucket) and ``alert`` (this bucket opened one)."""
    episodes: list[Episode] = field(default_factory=list)
    bucket_seconds: int = 0


def infer_bucket_seconds(timestamps: Iterable[object]) -> int:
    """The grain of a series: the median step between distinct timestamps, in seconds.

    Snapped to a usual grain (5 min, 1 h, 1 d, ...) when within 5% of one; irregular and
    duplicate timestamps are fine. Raises ValueError with fewer than two distinct timestamps.
    """
    ts = _utc(pd.Series(list(timestamps) if not isinstance(timestamps, pd.Series) else timestamps))
    seconds = np.unique(ts.dropna().astype("datetime64[s, UTC]").astype("int64").to_numpy())
    if seconds.size < 2:
        raise ValueError("need at least two distinct timestamps to infer the grain")
    step = float(np.median(np.diff(seconds)))
    for nice in _NICE_STEPS:
        if abs(step - nice) <= 0.05 * nice:
            return nice
    return max(round(step), 1)


def unit_score(verdict: Verdict, spec: DetectorSpec) -> float:
    """Deviation mapped to [0, 1): 0 on the expected value, 0.5 on the band edge, towards 1 far
    outside; only deviations in a direction the spec counts score above 0."""
    if verdict.expected is None or verdict.lower is None or verdict.upper is None:
        return 0.0
    dev = verdict.value - verdict.expected
    if dev > 0 and spec.direction != "down":
        half = verdict.upper - verdict.expected
    elif dev < 0 and spec.direction != "up":
        half = verdict.expected - verdict.lower
    else:
        return 0.0
    if not half > 0:
        return 1.0
    q = abs(dev) / half
    if verdict.sustained:  # a sustained shift: its windowed deviation, in units of the band
        q = max(q, abs(verdict.sustained) / spec.sensitivity)
    return q / (1.0 + q) if math.isfinite(q) else 1.0


def alert_score(verdict: Verdict, spec: DetectorSpec, *, opened: bool) -> float:
    """The ``score`` column: how strongly this bucket says "send a new alert now", in [0, 1].

    ``unit_score`` of the bucket that opens an episode (at least 0.5: it is outside the band or
    sustained), half of it anywhere else (below 0.5): inside the band, while a run is pending,
    and once the episode is open, when the daemon has already alerted and sends nothing new. So
    ``score >= 0.5`` is exactly the ``alert`` column, higher thresholds keep the clearer alerts,
    and for a given alert state the score is monotone in the size of the deviation."""
    unit = unit_score(verdict, spec)
    return unit if opened else 0.5 * unit


def bucket_starts(timestamps: pd.Series, spec: DetectorSpec) -> pd.Series:
    """Start (UTC) of the bucket each timestamp falls in, cut in the spec's time zone."""
    ts = _utc(timestamps)
    b = spec.bucket_seconds
    seconds = ts.astype("datetime64[s, UTC]").astype("int64")
    if spec.timezone.upper() == "UTC":
        floored = (seconds // b) * b
    else:
        local = ts.dt.tz_convert(spec.timezone)
        offset = local.dt.tz_localize(None).astype("datetime64[s]").astype("int64") - seconds
        floored = ((seconds + offset) // b) * b - offset
    return pd.Series(pd.to_datetime(floored, unit="s", utc=True), index=timestamps.index)


def replay(
    frame: pd.DataFrame,
    spec: DetectorSpec,
    policy: AlertPolicy | None = None,
    *,
    timestamp_column: str = "timestamp",
    value_column: str = "value",
    aggregate: Aggregate = "mean",
    acknowledge: Iterable[object] = (),
    complete_before: object | None = None,
    rules: Callable[[Verdict], Verdict] | None = None,
    calendar: Calendar | None = None,
    answers: Sequence[Feedback] = (),
) -> Replay:
    """Replay ``frame`` bucket by bucket, causally, through Detector and the alert state machine.

    Rows are cut into buckets of ``spec.bucket_seconds`` (duplicates and several rows per bucket
    are aggregated with ``aggregate``; missing buckets are gaps; unparsable timestamps and
    non-numeric values are skipped). ``acknowledge``: instants at which an operator accepted the
    open episode as the new normal (an intended change): the detector re-bases its level on
    the episode and stops alerting on it. ``complete_before``: buckets ending after this instant
    are incomplete; they are neither scored nor learned, exactly as in the daemon. ``rules``:
    applied to each verdict before the alert state machine, as the daemon applies a check's
    fixed bounds (:func:`monitor.rules.apply_bounds`). ``calendar``: the check's holidays,
    events and exclusion windows, marked on each bucket as the daemon marks them. ``answers``:
    answers recorded for this series (from the daemon's state store), each acted on before the
    first bucket ending after it was given, as the daemon does: an expected change re-bases the
    level at its onset and ends the open episode; a false alarm ends it and the series is judged
    from then on at the sensitivity the answers give (``sensitivity_factor``; the model learns
    its history again when that changes, answers ageing out included).
    """
    policy = policy or AlertPolicy()
    if timestamp_column not in frame.columns or value_column not in frame.columns:
        raise ValueError(
            f"frame needs columns {timestamp_column!r} and {value_column!r}, "
            f"has {list(frame.columns)}"
        )
    raw_ts = _utc(frame[timestamp_column])
    values = pd.to_numeric(frame[value_column], errors="coerce").astype("float64")
    ok = raw_ts.notna()
    starts = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
    if ok.any():
        starts[ok] = bucket_starts(raw_ts[ok], spec).astype("datetime64[ns, UTC]")
    grouped = (
        pd.DataFrame({"bucket": starts[ok], "value": values[ok]})
        .dropna(subset=["value"])
        .groupby("bucket", sort=True)["value"]
        .agg(aggregate)
    )
    if complete_before is not None:
        cutoff = _ts(complete_before)
        starts_index = pd.DatetimeIndex(grouped.index)
        end = starts_index + pd.Timedelta(seconds=spec.bucket_seconds)
        grouped = grouped[np.asarray(end <= cutoff)]
    acks = sorted(_utc(pd.Series(list(acknowledge), dtype="object")).dropna())

    detector = detector_for(spec, calendar)
    state = AlertState()
    episodes: list[Episode] = []
    given = sorted(answers, key=lambda a: a.answered_at)
    acted, factor, rebased, hush = 0, 1.0, None, False
    step = pd.Timedelta(seconds=spec.bucket_seconds)
    n = len(grouped)
    names = ("expected", "lower", "upper", "z", "sustained", "score")
    out = {name: np.full(n, np.nan) for name in names}
    anomalous = np.zeros(n, dtype=bool)
    firing = np.zeros(n, dtype=bool)
    alert = np.zeros(n, dtype=np.int64)
    ack_i = 0
    for i, (bucket, value) in enumerate(zip(grouped.index, grouped.to_numpy(), strict=True)):
        if given:
            # the answers given before this bucket was judged (at its end, at the earliest)
            moment = (bucket + step).to_pydatetime()
            while acted < len(given) and given[acted].answered_at < moment:
                answer = given[acted]
                acted += 1
                if answer.answer == "expected_change":
                    rebased = answer.since
                    detector.acknowledge(pd.Timestamp(answer.since))
                if answer.answer in ("expected_change", "false_alarm") and state.firing:
                    episodes[-1] = replace(episodes[-1], resolved=_ts(bucket),
                                           answer=answer.answer)  # fmt: skip
                    state = AlertState(episode=state.episode, last_bucket=state.last_bucket)
                    hush = answer.answer == "false_alarm"
            now = sensitivity_factor(given[:acted], moment)
            if now != factor:
                factor = now
                detector, _ = relearned(
                    replace(spec, sensitivity=spec.sensitivity * factor),
                    pd.DatetimeIndex(grouped.index[:i]),
                    grouped.to_numpy()[:i],
                    rebaselined=rebased,
                    state=state,
                    calendar=calendar,
                )
        verdict = detector.step(bucket, float(value))
        if rules is not None:
            verdict = rules(verdict)
        if hush:
            verdict, hush = hushed(verdict)
        state, transition = advance(state, verdict, policy)
        if transition is not None and transition.kind == "opened":
            alert[i] = 1
            episodes.append(Episode(since=_ts(transition.since), opened=_ts(transition.bucket)))
        elif transition is not None and transition.kind == "resolved" and episodes:
            episodes[-1] = Episode(episodes[-1].since, episodes[-1].opened, _ts(bucket))
        while ack_i < len(acks) and acks[ack_i] <= bucket:
            ack_i += 1
            detector.acknowledge(since=_ts(state.since) if state.since is not None else bucket)
        out["expected"][i] = _nan(verdict.expected)
        out["lower"][i] = _nan(verdict.lower)
        out["upper"][i] = _nan(verdict.upper)
        out["z"][i] = verdict.score
        out["sustained"][i] = verdict.sustained
        out["score"][i] = alert_score(verdict, spec, opened=bool(alert[i]))
        anomalous[i] = verdict.anomalous
        firing[i] = state.firing

    buckets = pd.DataFrame(
        {
            "bucket": grouped.index,
            "value": grouped.to_numpy(),
            "expected": out["expected"],
            "lower": out["lower"],
            "upper": out["upper"],
            "z": out["z"],
            "sustained": out["sustained"],
            "score": out["score"],
            "anomalous": anomalous,
            "firing": firing,
            "alert": alert,
        }
    )
    rows = _rows(frame[timestamp_column], values, starts, buckets)
    return Replay(rows=rows, buckets=buckets, episodes=episodes, bucket_seconds=spec.bucket_seconds)


def backtest(
    frame: pd.DataFrame,
    spec: DetectorSpec,
    policy: AlertPolicy | None = None,
    *,
    timestamp_column: str = "timestamp",
    value_column: str = "value",
    aggregate: Aggregate = "mean",
) -> pd.DataFrame:
    """One row per input row: ``timestamp,value,expected,lower,upper,score,alert``.

    ``score`` is in [0, 1], monotone in the size of the deviation for a given alert state, and
    at least 0.5 only on the rows of a bucket that opens an alert (see ``alert_score``); ``alert``
    is 1 on the first row of the bucket where the daemon would send a new alert.
    """
    return replay(
        frame,
        spec,
        policy,
        timestamp_column=timestamp_column,
        value_column=value_column,
        aggregate=aggregate,
    ).rows


def _rows(
    timestamps: pd.Series, values: pd.Series, starts: pd.Series, buckets: pd.DataFrame
) -> pd.DataFrame:
    """Map bucket verdicts back to the input rows; the alert goes on a bucket's first row."""
    lookup = buckets.set_index("bucket")
    known = starts.notna() & starts.isin(lookup.index)
    rows = pd.DataFrame(
        {
            "timestamp": timestamps.to_numpy(),
            "value": values.to_numpy(),
            "expected": np.nan,
            "lower": np.nan,
            "upper": np.nan,
            "score": 0.0,
            "alert": 0,
        }
    )
    if known.any():
        pos = np.flatnonzero(known.to_numpy())
        keys = pd.DatetimeIndex(starts[known])
        matched = lookup.loc[keys]
        for col in ("expected", "lower", "upper", "score"):
            rows.loc[pos, col] = matched[col].to_numpy()
        # the alert goes on the first row (in input order) of its bucket
        first = ~pd.Series(keys).duplicated().to_numpy()
        alerts = matched["alert"].to_numpy() * first
        rows.loc[pos, "alert"] = alerts.astype(np.int64)
    rows["alert"] = rows["alert"].astype(np.int64)
    return rows[OUTPUT_COLUMNS]


def _utc(values: pd.Series) -> pd.Series:
    """Parse to tz-aware UTC; naive timestamps are taken as UTC; unparsable ones become NaT."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        converted: pd.Series = values.dt.tz_convert("UTC")
        return converted
    parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    return pd.Series(parsed, index=values.index)


def _ts(value: object) -> pd.Timestamp:
    ts = pd.Timestamp(value)  # type: ignore[arg-type]
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _nan(value: float | None) -> float:
    return math.nan if value is None else value
