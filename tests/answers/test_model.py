"""What answers add up to: the precision of a check and the sensitivity factor of a series,
bounded and ageing out; the button value that names an alert without carrying its segment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from monitor.answers.model import (
    MAX_FACTOR,
    AlertRef,
    AnswerKind,
    ButtonValue,
    Feedback,
    precision,
    segment_digest,
    sensitivity_factor,
    series_factors,
)

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


def answered(answer: AnswerKind, days_ago: float = 1, segment: str = "DE", episode: int = 1) -> Feedback:
    at = NOW - timedelta(days=days_ago)
    return Feedback(AlertRef("revenue", segment, episode), answer, "U1", "ana", at, at)


def test_precision_is_the_share_of_judged_answers_that_say_the_alert_was_real() -> None:
    answers = [answered("acknowledge"), answered("expected_change"), answered("false_alarm"),
               answered("false_alarm")]  # fmt: skip
    assert precision(answers, NOW) == 0.5


def test_mutes_say_nothing_about_precision_and_no_judged_answer_gives_no_figure() -> None:
    assert precision([answered("mute_day"), answered("mute_week")], NOW) is None
    assert precision([], NOW) is None


def test_precision_counts_the_last_30_days_only() -> None:
    assert precision([answered("false_alarm", days_ago=31), answered("acknowledge")], NOW) == 1.0


def test_one_false_alarm_raises_the_threshold_by_15_percent() -> None:
    assert sensitivity_factor([answered("false_alarm")], NOW) == pytest.approx(1.15)


def test_no_number_of_false_alarms_raises_the_threshold_past_one_and_a_half() -> None:
    many = [answered("false_alarm", days_ago=i / 10, episode=i) for i in range(50)]
    assert sensitivity_factor(many, NOW) == MAX_FACTOR == 1.5


def test_false_alarms_age_out_and_the_threshold_comes_back_down() -> None:
    old = [answered("false_alarm", days_ago=31, episode=i) for i in range(3)]
    assert sensitivity_factor(old, NOW) == 1.0


def test_a_replay_counts_only_the_answers_given_before_its_moment() -> None:
    later = answered("false_alarm", days_ago=-1)
    assert sensitivity_factor([later], NOW) == 1.0


def test_other_answers_leave_the_threshold_alone() -> None:
    given = [answered(a) for a in ("acknowledge", "expected_change", "mute_day", "mute_week")]
    assert sensitivity_factor(given, NOW) == 1.0


def test_factors_are_per_series_and_only_where_raised() -> None:
    answers = [answered("false_alarm", segment="DE"), answered("acknowledge", segment="FR")]
    assert series_factors(answers, NOW) == {"revenue": {"DE": pytest.approx(1.15)}}


def test_a_button_value_names_the_alert_by_a_digest_of_its_segment() -> None:
    segment = "<script>" + "x" * 5000
    value = AlertRef("revenue", segment, 12).value()
    assert len(value) < 100 and "<" not in value
    parsed = ButtonValue.parse(value)
    assert (parsed.check, parsed.episode, parsed.digest) == ("revenue", 12, segment_digest(segment))


@pytest.mark.parametrize("text", ["", "revenue", "revenue:x:0123456789abcdef", "revenue:1:short",
                                  ":1:0123456789abcdef", "a:1:0123456789abcdef:extra"])
def test_a_value_this_daemon_did_not_write_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        ButtonValue.parse(text)


def test_feedback_reads_back_from_its_json() -> None:
    feedback = answered("mute_week", segment="DE \u00e9\x00")
    assert Feedback.from_json(feedback.to_json()) == feedback
