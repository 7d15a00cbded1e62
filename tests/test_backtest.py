"""The backtest replays a series through the daemon's code path: Detector + alert state machine."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from monitor.alerts.state import AlertPolicy
from monitor.answers.model import AlertRef, AnswerKind, Feedback
from monitor.backtest import (
    OUTPUT_COLUMNS,
    Episode,
    Replay,
    alert_score,
    bucket_starts,
    infer_bucket_seconds,
    replay,
    unit_score,
)
from monitor.backtest import backtest as run_backtest
from monitor.detection import Detector, DetectorSpec, Verdict

HOUR = 3600


def orders(weeks: int = 4, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2026-01-05", periods=weeks * 168, freq="h", tz="UTC")
    hour = np.asarray(idx.hour)
    daily = 0.3 + np.exp(-0.5 * ((hour - 15) / 4.0) ** 2)
    lam = 200 * daily * np.exp(rng.normal(0, 0.08, idx.size))
    return pd.DataFrame({"timestamp": idx, "value": rng.poisson(lam).astype(float)})


def test_output_has_one_row_per_input_row_and_the_documented_columns() -> None:
    frame = orders()
    out = run_backtest(frame, DetectorSpec(HOUR), AlertPolicy(open_after=2, resolve_after=2))
    assert list(out.columns) == OUTPUT_COLUMNS
    assert len(out) == len(frame)
    assert out["score"].between(0, 1).all()
    assert set(out["alert"].unique()) <= {0, 1}
    assert out["alert"].sum() == 0  # clean data: nothing would have been sent


def test_an_incident_alerts_once_at_its_onset() -> None:
    frame = orders()
    frame.loc[500:509, "value"] = 0.0  # ten hours of nothing
    policy = AlertPolicy(open_after=2, resolve_after=2)
    result = replay(frame, DetectorSpec(HOUR), policy)
    out = result.rows
    assert out["alert"].sum() == 1
    assert out.index[out["alert"] == 1][0] == 500  # far beyond the band: opens at once
    assert len(result.episodes) == 1
    episode = result.episodes[0]
    assert episode.since == frame["timestamp"][500]
    assert episode.resolved is not None and episode.resolved > frame["timestamp"][509]
    # far outside the band throughout; only the bucket that sends the alert scores 0.5 or more
    assert (out.loc[500:509, "score"] > 0.25).all()
    assert list(out.index[out["score"] >= 0.5]) == [500]


def test_replay_matches_the_daemon_path_step_by_step() -> None:
    frame = orders(weeks=3)
    spec = DetectorSpec(HOUR)
    out = run_backtest(frame, spec, AlertPolicy())
    detector = Detector(spec)
    for i, (ts, value) in enumerate(zip(frame["timestamp"], frame["value"], strict=True)):
        verdict = detector.step(ts, value)
        expected = np.nan if verdict.expected is None else verdict.expected
        assert np.isclose(out["expected"][i], expected, equal_nan=True)
        opened = bool(out["alert"][i])
        assert out["score"][i] == pytest.approx(alert_score(verdict, spec, opened=opened))


def test_replay_is_causal() -> None:
    frame = orders(weeks=3)
    spec = DetectorSpec(HOUR)
    full = run_backtest(frame, spec)
    prefix = run_backtest(frame.iloc[:300], spec)
    pd.testing.assert_frame_equal(full.iloc[:300], prefix)


def test_irregular_duplicate_and_missing_timestamps() -> None:
    frame = orders(weeks=3)
    shuffled = frame.sample(frac=1.0, random_state=1)  # out of order
    dupes = frame.iloc[[100, 200, 300]]  # the same buckets twice
    jittered = frame.copy()
    jittered["timestamp"] = jittered["timestamp"] + pd.Timedelta(minutes=7)  # mid-bucket stamps
    gappy = frame.drop(index=range(150, 170))
    for data in (shuffled, pd.concat([frame, dupes]), jittered, gappy):
        out = run_backtest(data.reset_index(drop=True), DetectorSpec(HOUR))
        assert len(out) == len(data)
        assert out["alert"].sum() == 0
    # duplicates are aggregated into one bucket and alert on one row at most
    spiky = pd.concat([frame, frame.iloc[[400, 401]]]).reset_index(drop=True)
    spiky.loc[[400, 401, len(frame), len(frame) + 1], "value"] = 5000.0
    out = run_backtest(spiky, DetectorSpec(HOUR), AlertPolicy(open_after=2))
    assert out["alert"].sum() == 1


def test_unparsable_rows_are_skipped_not_fatal() -> None:
    frame = orders(weeks=2).astype({"timestamp": "object", "value": "object"})
    frame.loc[5, "timestamp"] = "not a time"
    frame.loc[6, "value"] = "n/a"
    out = run_backtest(frame, DetectorSpec(HOUR))
    assert len(out) == len(frame)
    assert out["score"][5] == 0.0 and np.isnan(out["expected"][5])


@pytest.mark.parametrize(
    ("step", "expected"),
    [("5min", 300), ("h", 3600), ("D", 86400), ("15min", 900), ("W", 604800)],
)
def test_infer_bucket_seconds(step: str, expected: int) -> None:
    stamps = pd.Series(pd.date_range("2026-01-01", periods=50, freq=step))
    assert infer_bucket_seconds(stamps) == expected
    noisy = pd.concat([stamps, stamps.iloc[:5]]).sample(frac=1.0, random_state=0)
    assert infer_bucket_seconds(noisy) == expected  # duplicates and disorder are fine


def test_infer_bucket_seconds_needs_two_timestamps() -> None:
    with pytest.raises(ValueError, match="two distinct"):
        infer_bucket_seconds(pd.Series(["2026-01-01", "2026-01-01"]))


def test_bucket_starts_follow_the_business_timezone() -> None:
    stamps = pd.Series(pd.to_datetime(["2026-03-07 06:30", "2026-03-09 05:10"], utc=True))
    utc = bucket_starts(stamps, DetectorSpec(86400))
    local = bucket_starts(stamps, DetectorSpec(86400, timezone="America/New_York"))
    assert list(utc.dt.hour) == [0, 0]
    assert list(local.dt.tz_convert("America/New_York").dt.hour) == [0, 0]
    assert local[1] == pd.Timestamp("2026-03-09 04:00", tz="UTC")  # after the DST change


def test_unit_score_is_monotone_and_half_on_the_band_edge() -> None:
    spec = DetectorSpec(HOUR)
    ts = pd.Timestamp("2026-01-01", tz="UTC")

    def verdict(value: float) -> Verdict:
        return Verdict(ts, value, 100.0, 80.0, 130.0, 0.0, False)

    assert unit_score(verdict(100.0), spec) == 0.0
    assert unit_score(verdict(130.0), spec) == pytest.approx(0.5)
    assert unit_score(verdict(80.0), spec) == pytest.approx(0.5)
    ups = [unit_score(verdict(v), spec) for v in (100, 110, 130, 200, 1000)]
    downs = [unit_score(verdict(v), spec) for v in (100, 90, 80, 40, 0)]
    assert ups == sorted(ups) and downs == sorted(downs)
    assert unit_score(verdict(1000.0), DetectorSpec(HOUR, direction="down")) == 0.0
    no_baseline = Verdict(ts, 5.0, None, None, None, 0.0, False)
    assert unit_score(no_baseline, spec) == 0.0


def test_alert_score_is_half_the_unit_score_unless_the_bucket_opens_an_alert() -> None:
    spec = DetectorSpec(HOUR)
    ts = pd.Timestamp("2026-01-01", tz="UTC")
    outside = Verdict(ts, 200.0, 100.0, 80.0, 130.0, 9.0, True)
    unit = unit_score(outside, spec)
    assert alert_score(outside, spec, opened=True) == unit > 0.5
    halved = alert_score(outside, spec, opened=False)
    assert halved == pytest.approx(unit / 2) and halved < 0.5


def test_acknowledging_an_intended_shift_stops_alerting() -> None:
    frame = orders(weeks=5)
    shift_at = 4 * 168
    frame.loc[shift_at:, "value"] *= 0.5
    policy = AlertPolicy(open_after=2, resolve_after=2)
    plain = replay(frame, DetectorSpec(HOUR), policy)
    acked = replay(
        frame, DetectorSpec(HOUR), policy, acknowledge=[frame["timestamp"][shift_at + 3]]
    )
    assert plain.rows["alert"][shift_at:].sum() >= 1
    assert acked.rows["alert"][shift_at:].sum() == 1  # the onset, then accepted
    assert acked.episodes[-1].resolved is not None
    assert acked.buckets["anomalous"][shift_at + 12 :].sum() <= 2


def test_incomplete_buckets_are_neither_scored_nor_learned() -> None:
    frame = orders(weeks=3)
    frame["value"] = frame["value"].where(frame.index < len(frame) - 1, 5.0)  # still filling
    cutoff = frame["timestamp"].iloc[-1] + pd.Timedelta(minutes=20)
    result = replay(frame, DetectorSpec(HOUR), complete_before=cutoff)
    assert len(result.buckets) == len(frame) - 1
    last = result.rows.iloc[-1]
    assert np.isnan(last["expected"]) and last["score"] == 0.0 and last["alert"] == 0


def test_missing_columns_are_reported() -> None:
    with pytest.raises(ValueError, match="needs columns"):
        run_backtest(pd.DataFrame({"ts": [], "v": []}), DetectorSpec(HOUR))


# --- recorded answers replayed ------------------------------------------------------------------

POLICY = AlertPolicy(open_after=2, resolve_after=2)


def answer_to(episode: Episode, kind: AnswerKind, after_hours: int = 2) -> Feedback:
    """An answer an hour after the alert was sent (when the bucket that opened it ended)."""
    at = (episode.opened + pd.Timedelta(hours=after_hours)).to_pydatetime()
    return Feedback(AlertRef("orders", "", 1), kind, "U1", "ana", at, episode.since.to_pydatetime())


def plateau(factor: float, hours: int) -> pd.DataFrame:
    frame = orders()
    frame.loc[500 : 500 + hours - 1, "value"] *= factor
    return frame


def test_a_false_alarm_ends_its_episode_and_the_same_deviation_opens_nothing_more() -> None:
    frame = plateau(0.4, 10)
    [alone] = replay(frame, DetectorSpec(HOUR), POLICY).episodes
    answered = replay(frame, DetectorSpec(HOUR), POLICY, answers=[answer_to(alone, "false_alarm")])
    [episode] = answered.episodes
    assert episode.answer == "false_alarm"
    assert episode.resolved is not None and alone.resolved is not None
    assert episode.resolved < alone.resolved, "ended by the answer, not by the data"


def test_an_expected_change_rebases_the_level_at_the_onset_and_the_new_level_stays_quiet() -> None:
    frame = orders()
    frame.loc[400:, "value"] *= 0.6  # for good
    alone = replay(frame, DetectorSpec(HOUR), POLICY).episodes
    answered = replay(frame, DetectorSpec(HOUR), POLICY,
                      answers=[answer_to(alone[0], "expected_change")])  # fmt: skip
    assert answered.episodes[0].answer == "expected_change"
    assert len(answered.episodes) == 1, "nothing opens on the accepted level"


def test_false_alarms_widen_the_band_from_the_answer_on_and_never_before() -> None:
    frame = plateau(0.4, 6)
    spec = DetectorSpec(HOUR)
    plain = replay(frame, spec, POLICY)
    answer = answer_to(plain.episodes[0], "false_alarm")
    answered = replay(frame, spec, POLICY, answers=[answer])

    def width(r: Replay) -> np.ndarray:
        return (r.buckets["upper"] - r.buckets["expected"]).to_numpy()

    # judged before the answer: the buckets that had ended when it was given
    before = plain.buckets["bucket"] + pd.Timedelta(hours=1) <= pd.Timestamp(answer.answered_at)
    assert np.allclose(width(answered)[before], width(plain)[before], equal_nan=True)
    later = np.nanmedian(width(answered)[~before] / width(plain)[~before])
    assert 1.05 < later < 1.3


def test_answers_older_than_their_window_no_longer_raise_the_threshold() -> None:
    frame = plateau(0.4, 6)
    spec = DetectorSpec(HOUR)
    plain = replay(frame, spec, POLICY)
    old = answer_to(plain.episodes[0], "false_alarm")
    old = replace(old, answered_at=old.answered_at - timedelta(days=40))
    answered = replay(frame, spec, POLICY, answers=[old])
    tail = slice(-24, None)
    assert np.allclose(answered.buckets["upper"].to_numpy()[tail],
                       plain.buckets["upper"].to_numpy()[tail])  # fmt: skip
