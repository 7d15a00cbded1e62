"""The chart in an alert's thread: a PNG a person can read at a glance, rendered fast."""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from monitor.alerts.charts import (
    BESIDE_PX,
    HEIGHT_PX,
    WIDTH_PX,
    _DurationLocator,
    compact_number,
    duration_label,
    history_frame,
    render_chart,
)
from monitor.detection import Verdict


def history(n: int = 72, anomalous: Sequence[int] = (), baseline_from: int = 0) -> pd.DataFrame:
    """``n`` hourly buckets around a daily cycle; ``anomalous`` buckets collapse to a tenth."""
    buckets = pd.date_range("2026-11-23 12:00", periods=n, freq="h", tz="UTC")
    expected = 1500 + 500 * np.sin(np.arange(n) / 24 * 2 * np.pi)
    value = expected * (1 + 0.03 * np.cos(np.arange(n)))
    flagged = np.zeros(n, dtype=bool)
    flagged[list(anomalous)] = True
    value[flagged] *= 0.1
    lower, upper, expected = expected * 0.7, expected * 1.4, expected.copy()
    for column in (lower, upper, expected):
        column[:baseline_from] = np.nan
    return pd.DataFrame(
        {
            "bucket": buckets,
            "value": value,
            "expected": expected,
            "lower": lower,
            "upper": upper,
            "anomalous": flagged,
        }
    )


# The plot area, in pixels from the top: the title and the legend (whose swatches repeat the
# band's blue and the anomaly red) sit above it.
PLOT_TOP, PLOT_BOTTOM = 66, 344


def pixels(png: bytes) -> np.ndarray:
    """RGB 0-255 of the whole image."""
    return (imread(io.BytesIO(png), format="png")[:, :, :3] * 255).round()


def plot(png: bytes) -> np.ndarray:
    """The plot area only, blanked elsewhere so coordinates stay those of the image."""
    image = pixels(png)
    image[:PLOT_TOP] = 255
    image[PLOT_BOTTOM:] = 255
    return image


def red(image: np.ndarray) -> np.ndarray:
    """Where the anomaly red is: strongly red, little green or blue."""
    r, g, b = image[:, :, 0], image[:, :, 1], image[:, :, 2]
    return (r > 180) & (g < 80) & (b < 80)


def band(image: np.ndarray) -> np.ndarray:
    """Where the light blue of the normal band is (its colour blended on white)."""
    r, g, b = image[:, :, 0], image[:, :, 1], image[:, :, 2]
    return (abs(r - 210) < 12) & (abs(g - 228) < 12) & (abs(b - 244) < 12)


def test_the_chart_is_a_png_of_900_by_400() -> None:
    png = render_chart(history(), title="revenue [DE]")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    assert (width, height) == (WIDTH_PX, HEIGHT_PX) == (900, 400)
    assert pixels(png).shape == (400, 900, 3)


def test_anomalous_buckets_and_only_they_are_red() -> None:
    calm = pixels(render_chart(history(), title="revenue [DE]"))
    assert not red(calm).any()  # legend included: no "anomalous" entry either

    incident = plot(render_chart(history(anomalous=range(66, 72)), title="revenue [DE]"))
    rows, columns = np.nonzero(red(incident))
    assert len(columns) > 100
    # the last six of 72 buckets: the red marks sit at the right end of the plot
    assert columns.min() > 0.85 * WIDTH_PX
    # the collapse is drawn low, below the middle of the picture
    assert rows.min() > HEIGHT_PX / 2


def band_columns(png: bytes) -> np.ndarray:
    """Columns of the plot the band fills (a few anti-aliased pixels of a line can share its
    colour, a filled band covers many in each column)."""
    [columns] = np.nonzero(band(plot(png)).sum(axis=0) >= 5)
    return columns


def test_the_band_is_drawn_only_where_a_baseline_exists() -> None:
    full = band_columns(render_chart(history(), title="revenue"))
    assert len(full) > 0.8 * WIDTH_PX

    half = band_columns(render_chart(history(baseline_from=36), title="revenue"))
    assert len(half) > 0.4 * WIDTH_PX
    # the first 36 of 72 buckets have no baseline yet: no band left of the middle of the plot
    assert half.min() > 0.45 * WIDTH_PX

    assert len(band_columns(render_chart(history(baseline_from=72), title="revenue"))) == 0


def test_a_single_bucket_is_still_a_readable_chart() -> None:
    one = history(1, anomalous=[0], baseline_from=1)
    image = plot(render_chart(one, title="new_check"))
    _, columns = np.nonzero(red(image))
    assert len(columns) > 10
    # centred in its window
    assert 0.4 * WIDTH_PX < columns.mean() < 0.65 * WIDTH_PX


def test_verdicts_make_the_history_and_buckets_without_a_baseline_have_no_band() -> None:
    buckets = pd.date_range("2026-11-25 00:00", periods=48, freq="h", tz="UTC")
    verdicts = [
        Verdict(bucket=b, value=100.0, expected=None, lower=None, upper=None, score=0.0, anomalous=False)
        if i < 24
        else Verdict(bucket=b, value=10.0 if i >= 44 else 100.0, expected=100.0, lower=80.0, upper=125.0, score=-9.0 if i >= 44 else 0.1, anomalous=i >= 44)
        for i, b in enumerate(buckets)
    ]
    frame = history_frame(verdicts)
    assert list(frame.columns) == ["bucket", "value", "expected", "lower", "upper", "anomalous"]
    assert frame["lower"].isna().sum() == 24
    png = render_chart(frame, title="orders [DE]")
    assert red(plot(png)).any()
    assert band_columns(png).min() > 0.45 * WIDTH_PX


def test_missing_values_and_unsorted_rows_are_drawn() -> None:
    frame = history(48, anomalous=[40]).sample(frac=1.0, random_state=1)
    frame.loc[frame.index[:5], "value"] = np.nan
    assert render_chart(frame, title="avg_basket").startswith(b"\x89PNG")


def test_a_history_without_the_columns_or_rows_is_refused() -> None:
    with pytest.raises(ValueError, match="lacks columns: anomalous"):
        render_chart(history().drop(columns="anomalous"), title="x")
    with pytest.raises(ValueError, match="no buckets"):
        render_chart(history().iloc[0:0], title="x")


def test_freshness_ages_read_as_durations() -> None:
    assert duration_label(0) == "0"
    assert duration_label(45) == "45s"
    assert duration_label(90) == "1m30s"
    assert duration_label(900) == "15m"
    assert duration_label(5400) == "1h30m"
    assert duration_label(18_300) == "5h5m"
    assert duration_label(3 * 86_400 + 7200) == "3d2h"
    ticks = _DurationLocator().tick_values(0, 18_300)
    assert [duration_label(t) for t in ticks] == ["0", "1h", "2h", "3h", "4h", "5h", "6h"]
    ticks = _DurationLocator().tick_values(0, 1_800)
    assert all(t % 300 == 0 for t in ticks)  # whole multiples of 5 minutes
    png = render_chart(history().assign(value=lambda f: f["value"] * 10), title="events_freshness", unit="seconds")
    assert png.startswith(b"\x89PNG")


def test_value_ticks_stay_short_on_any_scale() -> None:
    assert [compact_number(v) for v in (0, 0.25, 12, 950, 1500, 12_500, 2_400_000, 3e9)] == [
        "0", "0.25", "12", "950", "1.5k", "12.5k", "2.4M", "3B",
    ]
    assert compact_number(-1500) == "-1.5k"


def test_charts_rendered_from_several_threads_are_the_same_as_one_at_a_time() -> None:
    frames = [history(72, anomalous=range(72 - k, 72)) for k in range(1, 7)]
    alone = [render_chart(f, title=f"check {i}") for i, f in enumerate(frames)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        together = list(pool.map(lambda i: render_chart(frames[i], title=f"check {i}"), range(6)))
    assert together == alone


TITLE_ROWS = slice(0, 40)  # the title line, above the legend


def ink(png: bytes) -> int:
    """Dark pixels of the title line."""
    return int((pixels(png)[TITLE_ROWS].mean(axis=2) < 128).sum())


@pytest.mark.parametrize("title", ["price [$$]", "revenue [$\\frac$]", "tax [$a_$]", "revenue [$x]"])
def test_a_title_is_plain_text_whatever_dollar_signs_a_segment_holds(title: str) -> None:
    assert render_chart(history(), title=title).startswith(b"\x89PNG")


def test_dollar_signs_are_drawn_not_read_as_a_formula() -> None:
    plain = ink(render_chart(history(), title="a"))
    # mathtext would draw "$a$" as one italic a; as text it is three characters
    assert ink(render_chart(history(), title="$a$")) > 2 * plain


def test_holidays_events_and_exclusions_are_shaded_in_their_colours() -> None:
    from monitor.alerts.charts import SPAN_COLOURS
    from monitor.calendar.days import Span

    frame = history()
    start = frame["bucket"][24]
    spans = [
        Span("holiday", "Thanksgiving Day", start, start + pd.Timedelta(hours=24)),
        Span("exclusion", "backfill $5 <b>", start + pd.Timedelta(hours=30),
             start + pd.Timedelta(hours=36)),
    ]  # fmt: skip
    plain = plot(render_chart(frame, title="revenue"))
    shaded = plot(render_chart(frame, title="revenue", spans=spans))

    def tinted(image: np.ndarray, kind: str) -> np.ndarray:
        colour = np.array([int(SPAN_COLOURS[kind][i : i + 2], 16) for i in (1, 3, 5)])
        blended = 255 * 0.85 + colour * 0.15  # alpha 0.15 on white
        return np.asarray((abs(image - blended) < 6).all(axis=2))

    [columns] = np.nonzero(tinted(shaded, "holiday").sum(axis=0) >= 20)
    assert not tinted(plain, "holiday").any()
    # hours 24 to 48 of 0 to 71, on axes from x = 76 to 881 (the band hides a little of it)
    assert 76 + 805 * 22 / 71 < columns.min() < 76 + 805 * 26 / 71
    assert 76 + 805 * 46 / 71 < columns.max() < 76 + 805 * 50 / 71
    assert tinted(shaded, "exclusion").sum() > 500


def test_the_segments_that_explain_a_total_are_drawn_beside_it_below_and_never_red() -> None:
    frame = history(anomalous=range(66, 72))
    buckets = pd.DatetimeIndex(frame["bucket"])
    beside = {
        "DE": pd.Series(np.r_[np.full(66, 400.0), np.full(6, 10.0)], index=buckets),
        "FR": pd.Series(np.full(72, 150.0), index=buckets),
    }
    png = render_chart(frame, title="revenue", beside=beside)
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (900, HEIGHT_PX + BESIDE_PX)
    image = pixels(png)
    purple = (abs(image[:, :, 0] - 0x7B) < 20) & (abs(image[:, :, 1] - 0x32) < 20) & (abs(image[:, :, 2] - 0x94) < 20)
    rows, _ = np.nonzero(purple)
    # Germany's line sits in the panel under the total's chart (its legend swatch above that)
    assert len(rows) > 100 and np.median(rows) > HEIGHT_PX
    # only the total's anomalous buckets are red: none in the segments' panel
    assert not red(image[HEIGHT_PX + 40 :]).any()
