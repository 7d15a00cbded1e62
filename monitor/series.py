"""From query rows to one clean series per segment, complete buckets only. Pure."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import datetime

import numpy as np
import numpy.typing as npt
import pandas as pd

from monitor.buckets import grid, last_complete
from monitor.config import CheckConfig
from monitor.errors import MalformedResult
from monitor.queries import OTHER_SEGMENT, TOTAL_SEGMENT

Points = tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]
"""A segment's buckets (UTC nanoseconds, ascending) and their values (NaN: missing)."""


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
    keep: Collection[str] | None = None,
) -> dict[str, pd.Series]:
    """Per segment, values of complete buckets up to the newest complete one, sorted.

    Rows with a null value are dropped; a non-numeric value, a missing column, two rows for
    one bucket and segment, or an sql check's rows past ``max_rows`` raise MalformedResult.
    Checks that aggregate rows (metric, row_count, or ``fill_missing: zero``) get 0 for buckets
    without rows, from the segment's first bucket (or ``start``, the first bucket the query
    covered) to the newest complete bucket; so do the ``expected`` segments (already known) that
    have no row at all: a segment whose rows stopped is a series of zeros, not a series that
    vanished. ``keep``: the segments the last ranking tracks, kept whatever their rows in this
    read (see ``_fold_segments``).
    """
    if check.kind == "sql" and len(frame) > check.max_rows:
        raise MalformedResult(
            f"check {check.name}: the query returned more than {check.max_rows:,} rows "
            "(max_rows); aggregate it to one row per bucket and segment, or raise max_rows"
        )
    columns = {str(c).lower(): c for c in frame.columns}
    missing = [c for c in ("bucket", "value") if c not in columns]
    if missing:
        raise MalformedResult(
            f"check {check.name}: the query returned no {' or '.join(missing)} column "
            f"(got {', '.join(map(str, frame.columns)) or 'no columns'})"
        )
    found = _split(*_rows(frame, columns, check.name), check.name)
    newest = last_complete(now, check.grain, check.timezone, check.settle)
    found = {segment: _until(*points, newest.value) for segment, points in found.items()}
    found = dict(sorted(_fold_segments(found, check.max_segments, keep).items()))
    if not check.fills_zero:
        return {segment: _series(*points) for segment, points in found.items()}
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0))
    for segment in expected:
        found.setdefault(segment, empty)
    grids: dict[int, npt.NDArray[np.int64]] = {}
    out: dict[str, pd.Series] = {}
    for segment, (buckets, points) in found.items():
        first = start.value if start is not None else (buckets[0] if len(buckets) else None)
        if first is None:
            out[segment] = _series(buckets, points)
            continue
        if first not in grids:
            grids[first] = (
                grid(pd.Timestamp(first, tz="UTC"), newest, check.grain, check.timezone)
                .as_unit("ns")
                .asi8
            )
        full = grids[first]
        at = np.searchsorted(full, buckets)
        if (at == len(full)).any() or (full[np.minimum(at, len(full) - 1)] != buckets).any():
            full = np.union1d(full, buckets)  # rows off the grid (a revised bucket start)
            at = np.searchsorted(full, buckets)
        filled = np.zeros(len(full))
        filled[at] = points
        out[segment] = _series(full, filled)
    return out


def _series(buckets: npt.NDArray[np.int64], values: npt.NDArray[np.float64]) -> pd.Series:
    """A series of the buckets (UTC nanoseconds) whose value is not missing."""
    known = ~np.isnan(values)
    index = pd.DatetimeIndex(buckets[known].view("M8[ns]")).tz_localize("UTC")
    return pd.Series(values[known], index=index, name="value")


def _rows(
    frame: pd.DataFrame, columns: Mapping[str, object], check: str
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.object_], npt.NDArray[np.float64]]:
    """The rows as bucket, segment and value arrays; rows without a bucket dropped."""
    stamps = pd.DatetimeIndex(_utc_column(frame[columns["bucket"]], check)).as_unit("ns")
    raw = frame[columns["value"]]
    numbers = pd.to_numeric(raw, errors="coerce")
    bad = raw.notna().to_numpy() & numbers.isna().to_numpy()
    if bad.any():
        raise MalformedResult(f"check {check}: value {raw[bad].iloc[0]!r} is not a number")
    # a row whose value is null (or infinite) is a bucket with data but no number: it is
    # missing, never zero, so it stays NaN through zero filling and is dropped at the end
    values = numbers.to_numpy(dtype=float, na_value=np.nan, copy=True)
    values[~np.isfinite(values)] = np.nan
    segments = (
        frame[columns["segment"]].fillna("(null)").astype(str).to_numpy(dtype=object)
        if "segment" in columns
        else np.full(len(frame), "", dtype=object)
    )
    dated = stamps.notna()
    return stamps.asi8[dated], segments[dated], values[dated]


def _split(
    ns: npt.NDArray[np.int64],
    segments: npt.NDArray[np.object_],
    values: npt.NDArray[np.float64],
    check: str,
) -> dict[str, Points]:
    """Per segment (in the order the query returned them), its rows sorted by bucket."""
    codes, names = pd.factorize(segments)
    order = np.lexsort((ns, codes))
    ns, codes, values = ns[order], codes[order], values[order]
    again = np.flatnonzero((np.diff(ns) == 0) & (np.diff(codes) == 0)) + 1
    if len(again):
        row = again[np.argmin(order[again])]  # the first repeat in the query's order
        raise MalformedResult(
            f"check {check}: the query returned several rows for bucket "
            f"{pd.Timestamp(int(ns[row]), tz='UTC').isoformat()} segment "
            f"{names[codes[row]]!r}; group by bucket"
        )
    bounds = np.searchsorted(codes, np.arange(len(names) + 1))
    return {
        str(name): (ns[bounds[i] : bounds[i + 1]], values[bounds[i] : bounds[i + 1]])
        for i, name in enumerate(names)
    }


def _until(buckets: npt.NDArray[np.int64], values: npt.NDArray[np.float64], last: int) -> Points:
    keep = int(np.searchsorted(buckets, last, side="right"))
    return buckets[:keep], values[:keep]


def _fold_segments(
    found: dict[str, Points], limit: int, keep: Collection[str] | None = None
) -> dict[str, Points]:
    """Keep at most ``limit`` segments (most rows first, ties in the query's order; or the
    ``keep`` ones: a short read's counts must not re-rank them); add the rest into __other__.
    Generated queries fold in SQL already; this bounds what custom ``sql`` checks return."""
    counts = {segment: len(points[0]) for segment, points in found.items()}
    counts.pop(OTHER_SEGMENT, None)
    counts.pop(TOTAL_SEGMENT, None)  # the total is no segment to fold
    if len(counts) <= limit:
        return found
    if keep is not None:
        kept = [segment for segment in counts if segment in keep]
    else:
        kept = sorted(counts, key=lambda segment: -counts[segment])[:limit]
    if TOTAL_SEGMENT in found:
        kept.insert(0, TOTAL_SEGMENT)
    rest = [points for segment, points in found.items() if segment not in kept]
    buckets, inverse = np.unique(np.concatenate([b for b, _ in rest]), return_inverse=True)
    # a sum over rows: a null value adds nothing
    values = np.nan_to_num(np.concatenate([v for _, v in rest]), nan=0.0)
    sums = np.bincount(inverse, weights=values, minlength=len(buckets)).astype(np.float64)
    folded: Points = (buckets.astype(np.int64), sums)
    return {**{segment: found[segment] for segment in kept}, OTHER_SEGMENT: folded}


def newest_rows(frame: pd.DataFrame, check: CheckConfig) -> dict[str, pd.Timestamp]:
    """Per segment of a query's rows, the bucket of its newest row (a null value counts: the
    segment has rows)."""
    columns = {str(c).lower(): c for c in frame.columns}
    if "bucket" not in columns or "value" not in columns:
        return {}
    ns, segments, _ = _rows(frame, columns, check.name)
    newest = pd.Series(ns).groupby(segments).max()
    return {str(s): pd.Timestamp(int(t), tz="UTC") for s, t in newest.items()}
