"""Which segments of a check are tracked: each has a model, an alert state and metric series.

A check with dimensions tracks the ``max_segments`` segments with most rows over its lookback;
the rest add up in ``__other__``. The ranking is made by a full read (a check's first run, and
one a day after) and every read until the next folds by it, so cold and warm reads agree. A
re-rank that leaves a segment out does not make it an outage: it stops being tracked (its alert
resolves saying why, its model and metric series go) and its rows count in ``__other__``, whose
model then learns its history again, since it sums other segments than before. A segment with
no row for ``state.retention.segments`` before the check's newest row stops being tracked the
same way (until then its empty buckets are zeros: rows that stop are an outage; and when every
segment stopped, the table did: an outage, not churn); so that such segments make way for live
ones, a re-rank ranks the segments with a row within the retention first (generated queries;
an ``sql`` check ranks the rows it returns). The series of a check without segments (``""``)
is always tracked. Pure.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from monitor.queries import OTHER_SEGMENT


@dataclass(frozen=True)
class Ranking:
    """The outcome of a re-rank."""

    tracked: list[str]  # the segments tracked from now on (``__other__`` aside), sorted
    dropped: dict[str, str]  # known segments no longer tracked, each with why
    refolded: bool  # ``__other__`` sums other segments than before: its model learns anew


def rerank(
    ranked: Sequence[str],
    previous: Sequence[str] | None,
    known: Collection[str],
    newest: Mapping[str, pd.Timestamp],
    cutoff: pd.Timestamp,
    max_segments: int,
) -> Ranking:
    """Track the ``ranked`` segments (a full read's top ``max_segments``) that had a row since
    ``cutoff`` (``newest``: each segment's newest row); drop the ``known`` ones left out.
    ``previous`` is the ranking the reads folded by until now (None: there was none)."""
    tracked = sorted(s for s in ranked if s == "" or newest.get(s, cutoff) >= cutoff)
    dropped = {}
    for segment in sorted(set(known) - set(tracked) - {OTHER_SEGMENT, ""}):
        if segment not in newest:
            dropped[segment] = "no rows over the lookback: the segment is no longer tracked"
        elif segment in ranked:
            dropped[segment] = (
                f"no rows since {newest[segment].isoformat()}: the segment is no longer tracked"
            )
        else:
            dropped[segment] = (
                f"no longer among the {max_segments} segments with most rows: its rows count"
                f" in {OTHER_SEGMENT}"
            )
    refolded = previous is not None and set(previous) != set(tracked)
    return Ranking(tracked, dropped, refolded)
