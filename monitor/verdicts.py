"""A verdict as the state store keeps it (``series_state.verdict``), so that any replica can
answer for a check another one runs, and one taking a check over exports its latest verdicts at
once [pure]."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import pandas as pd

from monitor.detection import Verdict


def verdict_json(verdict: Verdict) -> str:
    fields = asdict(verdict)
    fields["bucket"] = pd.Timestamp(verdict.bucket).isoformat()
    # NaN (a bucket without a value) is not JSON: kept as null
    for name in ("value", "expected", "lower", "upper", "score", "sustained"):
        value = fields[name]
        if value is not None and not math.isfinite(value):
            fields[name] = None
    return json.dumps(fields)


def verdict_from_json(text: str) -> Verdict:
    fields = json.loads(text)
    fields["bucket"] = pd.Timestamp(fields["bucket"])
    for name in ("value", "score", "sustained"):
        if fields.get(name) is None:
            fields[name] = float("nan") if name == "value" else 0.0
    return Verdict(**fields)
