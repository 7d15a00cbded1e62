"""From query rows to one clean series per segment, complete buckets only. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import numpy as np
import pandas as pd

from monitor.buckets import grid, last_complete
from monitor.config import CheckConfig
from monitor.errors import MalformedResult
from monitor.queries import OTHER_SEGMENT


def _utc_column(values: pd.Series, check: str) -> pd.Series:
    try:
        stamps = pd.to_datetime(values, errors="raise")
    except (ValueError, TypeError) as exc:
        raise MalformedResult(f"check {check}: bucket column is not a timestamp: {exc}") from None
    if isinstance(stamps.dtype, pd.DatetimeTZDtype):
        return stamps.dt.tz_convert("UTC")
    return stamps.dt.tz_localize("UTC")


def normalise(
    frame: pd.DataFrame,
    check: CheckConfig,
    now: datetime,
    *,
    expected: Iterable[str] = (),
    start: pd.Timestamp | None = None,
) -> dict[str, pd.Series]:
    """Per segment, values of complete buckets up to the newest complete one, sorted.

    Rows with a null value are dropped; a non-numeric value, a missing column or two rows for
    one bucket and segment raise MalformedResult. Checks that aggregate rows (metric, row_count,
    or ``fill_missing: zero``) get 0 for buckets without rows, from the segment's first bucket
    (or ``start``, the first bucket the query covered) to the newest complete bucket; so do the
    ``expected`` segments (already known) that have no row at all: a segment whose rows stopped
    is a series of zeros, not a series that vanished.
    """
    columns = {str(c).lower(): c for c in frame.columns}
    missing = [c for c in ("bucket", "value") if c not in columns]
    if missing:
        raise MalformedResult(
            f"check {check.name}: the query returned no {' or '.join(missing)} column "
            f"(got {', '.join(map(str, frame.columns)) or 'no columns'})"
        )
    data = pd.DataFrame(
        {
            "bucket": _utc_column(frame[columns["bucket"]], check.name),
            "segment": (
                frame[columns["segment"]].fillna("(null)").astype(str)
                if "segment" in columns
                else ""
            ),
            "value": pd.to_numeric(frame[columns["value"]], errors="coerce"),
        }
    )
    bad = frame[columns["value"]].notna() & data["value"].isna()
    if bad.any():
        sample = frame[columns["value"]][bad].iloc[0]
        raise MalformedResult(f"check {check.name}: value {sample!r} is not a number")
    # a row whose value is null (or infinite) is a bucket with data but no number: it is
    # missing, never zero, so it stays NaN through zero filling and is dropped at the end
    data = data.dropna(subset=["bucket"])
    data.loc[~np.isfinite(data["value"].to_numpy(dtype=float)), "value"] = np.nan
    dup = data.duplicated(["bucket", "segment"])
    if dup.any():
        row = data[dup].iloc[0]
        raise MalformedResult(
            f"check {check.name}: the query returned several rows for bucket "
            f"{row['bucket'].isoformat()} segment {row['segment']!r}; group by bucket"
        )
    newest = last_complete(now, check.grain, check.timezone, check.settle)
    data = data[data["bucket"] <= newest]
    data = _fold_segments(data, check.max_segments)
    out: dict[str, pd.Series] = {}
    for segment, rows in data.groupby("segment", sort=True):
        out[str(segment)] = pd.Series(
            rows["value"].to_numpy(dtype=float),
            index=pd.DatetimeIndex(rows["bucket"]),
            name="value",
        ).sort_index()
    if not check.fills_zero:
        return {segment: series.dropna() for segment, series in out.items()}
    for segment in expected:
        out.setdefault(segment, pd.Series([], index=pd.DatetimeIndex([], tz="UTC"), dtype=float))
    for segment, series in out.items():
        first = start if start is not None else (series.index[0] if len(series) else None)
        if first is None:
            continue
        full = grid(first, newest, check.grain, check.timezone)
        out[segment] = series.reindex(full.union(pd.DatetimeIndex(series.index)), fill_value=0.0)
    return {segment: series.dropna() for segment, series in out.items()}


def _fold_segments(data: pd.DataFrame, limit: int) -> pd.DataFrame:
    """Keep at most ``limit`` segments (most rows first); add the rest into __other__.

    Generated queries fold in SQL already; this bounds what custom ``sql`` checks return.
    """
    counts = data["segment"].value_counts().drop(OTHER_SEGMENT, errors="ignore")
    if len(counts) <= limit:
        return data
    keep = set(counts.index[:limit])
    folded = data.assign(segment=data["segment"].where(data["segment"].isin(keep), OTHER_SEGMENT))
    return folded.groupby(["bucket", "segment"], as_index=False).agg(value=("value", "sum"))
