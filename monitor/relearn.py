"""A series' model learned again from its history, carrying on where the one before left off.
Pure (the detector's compiled loop; no I/O).

The daemon builds models this way after a restart, after a config reload and when a series'
sensitivity changed (answers to its alerts); ``backtest`` does the same when it replays recorded
answers, so both judge with the same model.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import numpy as np
import pandas as pd

from monitor.alerts.state import AlertState
from monitor.calendar.days import Calendar
from monitor.calendar.detector import detector_for
from monitor.detection import Detector, DetectorSpec, Verdict


def relearned(
    spec: DetectorSpec,
    buckets: pd.DatetimeIndex,
    values: np.ndarray,
    *,
    rebaselined: datetime | None = None,
    state: AlertState | None = None,
    judge: bool = False,
    calendar: Calendar | None = None,
) -> tuple[Detector, list[Verdict]]:
    """A model that learned ``buckets`` (each marked by the check's ``calendar``), re-based at
    ``rebaselined`` (an intended change), carrying on from the alert ``state`` of the series
    (its anomalous run, quiet period and hold), so the aftermath of an incident is not judged a
    new one. With ``judge``, also the verdicts of the newer half of the history, as stepping
    through it gives: the older half is what the model learns before its verdicts are worth
    recording (judged on its second day, a model pages on its own immaturity, and those
    episodes would number the real ones)."""
    model = detector_for(spec, calendar)
    judged = len(buckets) - len(buckets) // 2 if judge else 0
    verdicts = model.warm(buckets, values, judge_last=judged)
    if rebaselined is not None:
        model.acknowledge(pd.Timestamp(rebaselined))
    if state is not None and state.last_bucket is not None:
        quiet = None if state.quiet_start is None else pd.Timestamp(state.quiet_start)
        model.resume(
            state.anomalous_run,
            quiet,
            pd.Timestamp(state.last_bucket),
            (state.hold_sign, state.hold_evidence),
        )
    return model, verdicts


def carried(state: AlertState, model: Detector) -> AlertState:
    """The series' alert state with the model's quiet period and hold, saved with it so that
    ``relearned`` carries them on after a restart."""
    quiet = model.quiet_start
    sign, evidence = model.hold
    return replace(
        state,
        quiet_start=quiet.to_pydatetime() if quiet is not None else state.quiet_start,
        hold_sign=sign,
        hold_evidence=evidence,
    )
