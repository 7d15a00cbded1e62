"""What an answer to an alert is, and what answers add up to. Pure.

An answer is one person's click on one alert (a series' episode): **acknowledge** (someone is on
it), **expected change** (the deviation is real and intended: the baseline restarts at the
episode's onset), **false alarm** (nothing was wrong: the series' threshold rises), or a mute
for a day or a week. One alert takes one answer: the first wins, a second click changes nothing.

Two figures come out of the answers:

- the **precision** of a check: of its alerts answered in the last 30 days as acknowledged,
  expected change or false alarm, the share that were real (the first two); a mute says nothing
  about whether the alert was right and is left out;
- the **sensitivity factor** of a series: each false alarm answered on it in the last 30 days
  raises its threshold by ``FALSE_ALARM_STEP`` of the configured one, at most to ``MAX_FACTOR``
  times it, so no number of clicks can silence a check; an answer older than the window no
  longer counts (the threshold comes back down as they age out).

A false alarm also closes its episode, and the deviation it was about counts as normal until
the series is back in its band (``hush``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, cast

AnswerKind = Literal["acknowledge", "expected_change", "false_alarm", "mute_day", "mute_week"]
ANSWERS: tuple[AnswerKind, ...] = (
    "acknowledge", "expected_change", "false_alarm", "mute_day", "mute_week"
)  # fmt: skip
LABELS: dict[AnswerKind, str] = {
    "acknowledge": "Acknowledge",
    "expected_change": "Expected change",
    "false_alarm": "False alarm",
    "mute_day": "Mute 1 day",
    "mute_week": "Mute 1 week",
}
# how the answer reads after a name: "Acknowledged by @ana"
DONE: dict[AnswerKind, str] = {
    "acknowledge": "Acknowledged",
    "expected_change": "Marked as an expected change (baseline restarted at the onset)",
    "false_alarm": "Marked as a false alarm",
    "mute_day": "Check muted for 1 day",
    "mute_week": "Check muted for 1 week",
}
MUTES: dict[AnswerKind, timedelta] = {
    "mute_day": timedelta(days=1),
    "mute_week": timedelta(weeks=1),
}
REAL: frozenset[AnswerKind] = frozenset({"acknowledge", "expected_change"})
JUDGED: frozenset[AnswerKind] = REAL | {"false_alarm"}

WINDOW = timedelta(days=30)
FALSE_ALARM_STEP = 0.15
MAX_FACTOR = 1.5
ACTION_PREFIX = "kpimon_answer:"  # a button's action_id is this and the answer


@dataclass(frozen=True)
class AlertRef:
    """Which alert a button belongs to: a check's series and its episode number. The segment
    travels as a digest (button values are short, and segment values come from the warehouse):
    ``segment_digest`` finds it again among the check's series."""

    check: str
    segment: str
    episode: int

    def value(self) -> str:
        """The button's value: ``check:episode:digest``."""
        return f"{self.check}:{self.episode}:{segment_digest(self.segment)}"


@dataclass(frozen=True)
class ButtonValue:
    """A button's value as Slack sends it back, before the segment is found."""

    check: str
    episode: int
    digest: str

    @classmethod
    def parse(cls, text: str) -> ButtonValue:
        """:raises ValueError: for anything this daemon did not put on a button."""
        parts = text.split(":")
        if len(parts) != 3 or not (parts[0] and parts[1].isdigit() and len(parts[2]) == 16):
            raise ValueError(f"not an alert reference: {text[:100]!r}")
        return cls(parts[0], int(parts[1]), parts[2])


def segment_digest(segment: str) -> str:
    return hashlib.sha256(segment.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@dataclass(frozen=True)
class Feedback:
    """One recorded answer."""

    ref: AlertRef
    answer: AnswerKind
    user_id: str
    user_name: str
    answered_at: datetime
    since: datetime  # the episode's onset (first anomalous bucket)
    applied: bool = True  # its effect (mute, baseline, threshold) has been carried out

    def to_json(self) -> str:
        return json.dumps(
            {
                "check": self.ref.check, "segment": self.ref.segment, "episode": self.ref.episode,
                "answer": self.answer, "user_id": self.user_id, "user_name": self.user_name,
                "answered_at": self.answered_at.isoformat(), "since": self.since.isoformat(),
            }
        )  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> Feedback:
        data = json.loads(text)
        return cls(
            AlertRef(data["check"], data["segment"], int(data["episode"])),
            cast(AnswerKind, data["answer"]),
            data["user_id"],
            data["user_name"],
            datetime.fromisoformat(data["answered_at"]),
            datetime.fromisoformat(data["since"]),
        )

    def json(self) -> dict[str, object]:
        """As the API shows it."""
        return {
            "answer": self.answer,
            "user_id": self.user_id,
            "user_name": self.user_name,
            "answered_at": self.answered_at.isoformat(),
        }


def precision(answers: Iterable[Feedback], now: datetime) -> float | None:
    """Share of the judged answers of the last ``WINDOW`` that say the alert was real; None
    without any."""
    judged = [a for a in answers if a.answer in JUDGED and now - a.answered_at <= WINDOW]
    if not judged:
        return None
    return sum(a.answer in REAL for a in judged) / len(judged)


def sensitivity_factor(answers: Iterable[Feedback], now: datetime) -> float:
    """How many times its configured sensitivity a series is judged at, from the false alarms
    answered on it in the last ``WINDOW`` (answers up to ``now`` only: a replay asks about the
    past)."""
    false = sum(
        a.answer == "false_alarm" and timedelta(0) <= now - a.answered_at <= WINDOW
        for a in answers
    )
    return min(1.0 + FALSE_ALARM_STEP * false, MAX_FACTOR)


def series_factors(answers: Iterable[Feedback], now: datetime) -> dict[str, dict[str, float]]:
    """Per check and segment, the sensitivity factor of every series whose answers raise it
    (the others are judged at the configured sensitivity)."""
    by_series: dict[tuple[str, str], list[Feedback]] = {}
    for a in answers:
        by_series.setdefault((a.ref.check, a.ref.segment), []).append(a)
    factors: dict[str, dict[str, float]] = {}
    for (check, segment), given in by_series.items():
        factor = sensitivity_factor(given, now)
        if factor != 1.0:
            factors.setdefault(check, {})[segment] = factor
    return factors

