"""A series' model learned again from its history, carrying on where the one before left off.
Pure (the detector's compiled loop; no I/O).

The daemon builds models this way after a restart, after a config reload and when a series'
sensitivity changed (answers to its alerts); ``backtest`` does the same when it replays recorded
answers, so both judge with the same model.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from monitor.alerts.state import AlertState
from monitor.detection import Detector, DetectorSpec, Verdict


def relearned(
    spec: DetectorSpec,
    buckets: pd.DatetimeIndex,
    values: np.ndarray,
    *,
    rebaselined: datetime | None = None,
    state: AlertState | None = None,
    judge: bool = False,
) -> tuple[Detector, list[Verdict]]:
    """A model that learned ``buckets`` (with ``judge``, also their verdicts, as stepping
    through them gives), re-based at ``rebaselined`` (an intended change), carrying on from the
    alert ``state`` of the series (its anomalous run, quiet period and hold), so the aftermath of
    an incident is not judged a new one."""
    model = Detector(spec)
    verdicts = model.warm(buckets, values, judge_last=len(buckets) if judge else 0)
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
