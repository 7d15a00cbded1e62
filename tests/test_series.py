"""From query rows to clean series: completeness, zero filling, malformed results."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pandas as pd
import pytest

from monitor.config import CheckConfig
from monitor.errors import MalformedResult
from monitor.series import normalise
from tests.conftest import one_check

NOW = datetime(2026, 11, 26, 15, 20, tzinfo=UTC)


ROW_COUNT: dict[str, object] = {
    "name": "c", "kind": "row_count", "table": "t", "timestamp_column": "ts", "settle": "15m"
}


def check(**fields: object) -> CheckConfig:
    return one_check(ROW_COUNT, **fields)


def frame(rows: Sequence[tuple[str, str, object]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["bucket", "segment", "value"]).assign(
        bucket=lambda f: pd.to_datetime(f["bucket"])
    )


def test_incomplete_buckets_are_dropped_and_empty_ones_are_zero() -> None:
    rows = [("2026-11-26 11:00", "", 5), ("2026-11-26 13:00", "", 7), ("2026-11-26 15:00", "", 1)]
    series = normalise(frame(rows), check(), NOW)[""]
    assert isinstance(series.index, pd.DatetimeIndex)
    assert list(series.index.strftime("%H")) == ["11", "12", "13", "14"]
    assert list(series) == [5, 0, 7, 0]


def test_averages_are_not_zero_filled() -> None:
    rows = [("2026-11-26 11:00", "", 5.5), ("2026-11-26 13:00", "", 7.5)]
    series = normalise(
        frame(rows), check(kind="metric", expression="avg(x)", fill_missing="none"), NOW
    )[""]
    assert list(series) == [5.5, 7.5]


def test_segments_beyond_the_limit_are_added_into_other() -> None:
    rows = [("2026-11-26 11:00", s, v) for s, v in (("a", 1), ("b", 2), ("c", 3), ("__other__", 4))]
    rows += [("2026-11-26 12:00", "a", 1), ("2026-11-26 12:00", "b", 1)]
    found = normalise(
        frame(rows),
        check(kind="sql", sql="x :since", table=None, timestamp_column=None, max_segments=2),
        NOW,
    )
    assert sorted(found) == ["__other__", "a", "b"]
    assert found["__other__"].iloc[0] == 7


def test_naive_buckets_are_utc_and_aware_ones_are_converted() -> None:
    aware = pd.DataFrame(
        {"bucket": [pd.Timestamp("2026-11-26 08:00", tz="America/New_York")], "value": [3]}
    )
    series = normalise(aware, check(kind="sql", sql=":since", fill_missing="none"), NOW)[""]
    assert series.index[0] == pd.Timestamp("2026-11-26 13:00", tz="UTC")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            pd.DataFrame({"when": [1], "value": [2]}),
            "the query returned no bucket column (got when, value)",
        ),
        (
            pd.DataFrame({"bucket": ["yesterday-ish"], "value": [2]}),
            "bucket column is not a timestamp",
        ),
        (
            pd.DataFrame({"bucket": [pd.Timestamp("2026-11-26 10:00")], "value": ["lots"]}),
            "value 'lots' is not a number",
        ),
        (
            pd.DataFrame({"bucket": [pd.Timestamp("2026-11-26 10:00")] * 2, "value": [1, 2]}),
            "several rows for bucket 2026-11-26T10:00:00+00:00 segment ''",
        ),
    ],
)
def test_malformed_results_name_the_problem(data: pd.DataFrame, message: str) -> None:
    with pytest.raises(MalformedResult, match="check c: ") as info:
        normalise(data, check(kind="sql", sql=":since"), NOW)
    assert message in str(info.value)


def test_null_values_are_missing_buckets_not_zero() -> None:
    data = pd.DataFrame(
        {"bucket": pd.to_datetime(["2026-11-26 10:00", "2026-11-26 11:00"]), "value": [None, 4.0]}
    )
    series = normalise(data, check(kind="sql", sql=":since", fill_missing="none"), NOW)[""]
    assert list(series) == [4.0]
