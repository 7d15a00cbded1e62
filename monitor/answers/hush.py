"""A series whose alert was answered as a false alarm, while its deviation lasts. Pure.

The answer closes the episode; were the series' verdicts fed as they are, the same deviation
would open a new episode two buckets later. Until the series is back in its band, its verdicts
count as normal for the alert state machine; the first judged bucket back ends that (as if the
deviating buckets had joined the baseline for as long as they last).
"""

from __future__ import annotations

from dataclasses import replace

from monitor.detection import Verdict


def hushed(verdict: Verdict) -> tuple[Verdict, bool]:
    """A verdict of a series whose alert was answered as a false alarm, as the alert state
    machine gets it while the deviation lasts (anomalous or holding: counted as normal), and
    whether the deviation still lasts (False from the first judged bucket back in the band)."""
    if verdict.expected is not None and not verdict.anomalous and not verdict.holding:
        return verdict, False
    if not verdict.anomalous and not verdict.holding:
        return verdict, True  # not judged: says nothing either way
    return replace(verdict, anomalous=False, span=0, holding=False), True
