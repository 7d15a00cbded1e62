"""`kpi-monitor backtest` as a user runs it: on a CSV or a configured check of the live demo
warehouse; every output option honoured, the window reported without changing the verdicts, and
a picture of what alerted."""

from __future__ import annotations

import io
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from monitor.alerts.charts import value_limits
from monitor.answers.model import AlertRef, AnswerKind, Feedback
from monitor.backtest import Episode
from monitor.cli import main
from monitor.config import StateConfig
from monitor.deployments import Deployment, WatchedCheck
from monitor.plots import Mark, Panel, render_backtest
from monitor.store import StateStore
from tests.answers.shop import build_shop, shop_document
from tests.conftest import demo_document, write_config
from tests.slack_server import SlackServer

EPISODE_RGB = np.array([0xF4, 0xA6, 0xA6]) / 255 * 0.35 + 0.65  # alpha-blended on white
DEPLOYMENT_RGB = np.array([0x7C, 0x3A, 0xED]) / 255
ANOMALY_RGB = np.array([0xD7, 0x19, 0x1C]) / 255


def pixels_like(png: bytes, rgb: np.ndarray, tolerance: float = 0.04) -> int:
    image = imread(io.BytesIO(png), format="png")[..., :3]
    return int((np.abs(image - rgb).max(axis=-1) < tolerance).sum())


def backtest(config: Path, check: str, since: str, *options: str) -> int:
    return main(["backtest", "-c", str(config), "--check", check, "--since", since, *options])


@pytest.fixture
def live_config(tmp_path: Path, live_demo_warehouse: Path) -> Path:
    shutil.copy(live_demo_warehouse, tmp_path / "demo.duckdb")
    return write_config(tmp_path / "kpi.yaml", demo_document(tmp_path))


@pytest.fixture
def incident_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    idx = pd.date_range("2026-01-05", periods=4 * 168, freq="h", tz="UTC")
    values = rng.poisson(200 * (1.2 + np.sin(np.arange(idx.size) * 2 * np.pi / 24))).astype(float)
    values[600:606] = 0.0
    path = tmp_path / "orders.csv"
    pd.DataFrame({"timestamp": idx, "value": values}).to_csv(path, index=False)
    return path


def test_csv_plot_draws_the_alerts_without_needing_out(
    tmp_path: Path, incident_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "orders.png"
    assert main(["backtest", "--csv", str(incident_csv), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "orders.png" in out and "alert at 2026-01-30 00:00 UTC" in out and " UTC " in out
    png = plot.read_bytes()
    assert png.startswith(b"\x89PNG")
    assert pixels_like(png, ANOMALY_RGB) > 20 and pixels_like(png, EPISODE_RGB) > 500


def test_csv_out_writes_the_scored_rows(tmp_path: Path, incident_csv: Path) -> None:
    out = tmp_path / "scored.csv"
    assert main(["backtest", "--csv", str(incident_csv), "--out", str(out)]) == 0
    rows = pd.read_csv(out)
    assert list(rows.columns) == ["timestamp", "value", "expected", "lower", "upper", "score", "alert"]
    assert rows["alert"].sum() == 1 and len(rows) == 4 * 168


def test_csv_min_alerts_on_a_value_the_model_accepts(
    tmp_path: Path, incident_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scored.csv"
    assert main(["backtest", "--csv", str(incident_csv), "--out", str(out), "--max", "1e9"]) == 0
    plain = pd.read_csv(out)["alert"].sum()
    assert main(["backtest", "--csv", str(incident_csv), "--out", str(out), "--min", "30"]) == 0
    assert pd.read_csv(out)["alert"].sum() > plain  # the nightly lows under 30 alert too


def test_check_out_writes_every_segments_rows_of_the_window(
    tmp_path: Path, live_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "revenue.csv"
    assert backtest(live_config, "revenue", "2d", "--out", str(out)) == 0
    rows = pd.read_csv(out, keep_default_na=False)
    assert list(rows.columns) == ["segment", "timestamp", "value", "expected", "lower", "upper", "score", "alert"]
    assert {"DE", "US", "__other__"} <= set(rows["segment"])
    stamps = pd.to_datetime(rows["timestamp"], utc=True)
    assert stamps.min() >= pd.Timestamp(datetime.now(UTC) - timedelta(days=2, minutes=1))
    # learned from the lookback before the window: every row of the window has a band
    assert rows["expected"].replace("", np.nan).astype(float).notna().all()
    de = rows[rows["segment"] == "DE"]
    assert de["alert"].sum() == 1


def test_since_limits_what_is_shown_not_what_the_model_learns(
    tmp_path: Path, live_config: Path
) -> None:
    short, long = tmp_path / "short.csv", tmp_path / "long.csv"
    for since, out in (("1d", short), ("6d", long)):
        assert backtest(live_config, "signups", since, "--out", str(out)) == 0
    a, b = pd.read_csv(short), pd.read_csv(long)
    overlap = b[b["timestamp"].isin(a["timestamp"])].reset_index(drop=True)
    assert len(overlap) == len(a) >= 20
    pd.testing.assert_frame_equal(a, overlap)  # the same verdicts, whatever the window


def test_the_plot_shows_the_segment_that_alerted(
    tmp_path: Path, live_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "revenue.png"
    assert backtest(live_config, "revenue", "1d", "--plot", str(plot)) == 0
    out = capsys.readouterr().out
    # the segments that alerted (not the first segment, BR): the total and Germany
    assert "chart of revenue, revenue [DE], 0 deployments marked ->" in out
    assert "revenue [DE]: alert at " in out and " EST" in out  # UTC and the business zone
    # the total's alert says where it moved, as the daemon's would have
    [where] = [line for line in out.splitlines() if line.startswith("revenue: where, at ")]
    assert " EST: DE -" in where and "drop in revenue" in where
    png = plot.read_bytes()
    assert pixels_like(png, EPISODE_RGB) > 500 and pixels_like(png, ANOMALY_RGB) > 10
    with pytest.raises(SystemExit):
        main(["backtest", "-c", str(live_config), "--check", "revenue", "--segment"])
    assert main(["backtest", "-c", str(live_config), "--check", "revenue", "--segment", "Mars",
                 "--plot", str(plot)]) == 2
    assert "revenue has no segment 'Mars'; segments: '' (the total), 'BR', 'DE'" in capsys.readouterr().err


def test_deployments_that_watched_the_check_are_marked_while_the_daemon_holds_the_store(
    tmp_path: Path, live_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the config's state store, opened (and locked) as the running daemon opens it
    store = StateStore.open(StateConfig(path=str(tmp_path / "kpimon-state.db")))
    now = datetime.now(UTC)
    for number, check in ((1, "revenue"), (2, "signups")):
        deployment = Deployment(id=f"ci-{number}", environment="prod", received_at=now - timedelta(hours=5),
                                models=["fct_orders"], checks=[WatchedCheck(check, now)])
        store.deployments.record(deployment.id, "prod", "passed", deployment.received_at, deployment.to_json())
    plot = tmp_path / "revenue.png"
    try:
        assert backtest(live_config, "revenue", "1d", "--plot", str(plot)) == 0
        assert "1 deployments marked" in capsys.readouterr().out
        assert pixels_like(plot.read_bytes(), DEPLOYMENT_RGB, 0.08) > 20
        store.ping()  # the daemon's store is still its own and writable
    finally:
        store.close()


def test_a_freshness_check_replays_its_data_age(
    tmp_path: Path, live_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, plot = tmp_path / "fresh.csv", tmp_path / "fresh.png"
    assert backtest(live_config, "events_freshness", "1d", "--out", str(out), "--plot", str(plot)) == 0
    printed = capsys.readouterr().out
    assert "events_freshness: alert at " in printed and "still open" in printed
    rows = pd.read_csv(out)
    assert len(rows) >= 24 * 60 - 2  # judged every schedule interval (1m)
    assert rows["alert"].sum() == 1
    assert rows["value"].iloc[-1] > 4 * 3600  # the raw events stopped loading hours ago
    assert rows["upper"].iloc[-1] < 3600  # against a learned limit of minutes, not hours
    assert backtest(live_config, "orders_freshness", "1d") == 0
    assert capsys.readouterr().out == "orders_freshness: no alert would have fired\n"


def test_an_unknown_check_lists_the_checks(live_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backtest", "-c", str(live_config), "--check", "revenu"]) == 2
    assert "no check named 'revenu' (did you mean 'revenue'?); the checks are: revenue, " in capsys.readouterr().err


def test_the_value_axis_follows_the_data_not_a_warm_up_band() -> None:
    value = np.full(10, 2000.0) + np.arange(10)
    lower, upper = np.full(10, 100_000.0), np.full(10, 150_000.0)
    limits = value_limits(value, value, lower, upper)
    assert limits is not None
    low, high = limits
    assert 0 <= low < 2000 < 2009 < high < 3000
    near = value_limits(value, value, value - 300, value + 300)
    assert near is not None and near[0] < 1700 and near[1] > 2309  # a normal band stays in view


def test_the_plot_shades_episodes_and_marks_deployments() -> None:
    idx = pd.date_range("2026-01-01", periods=96, freq="h", tz="UTC")
    buckets = pd.DataFrame({"bucket": idx, "value": 100.0, "expected": 100.0, "lower": 80.0,
                            "upper": 120.0, "anomalous": False})
    buckets.loc[50:55, ["value", "anomalous"]] = [5.0, True]
    plain = render_backtest([Panel("rows", buckets)], title="rows")
    episode = Episode(since=idx[50], opened=idx[51], resolved=idx[58])
    marked = render_backtest([Panel("rows", buckets, [episode])], title="rows",
                             marks=[Mark(idx[40], "ci-7 (prod)")], timezone="Europe/Berlin")
    assert pixels_like(plain, EPISODE_RGB) < 100 < 2000 < pixels_like(marked, EPISODE_RGB)  # anti-aliased red dots aside
    assert pixels_like(plain, DEPLOYMENT_RGB, 0.08) == 0 and pixels_like(marked, DEPLOYMENT_RGB, 0.08) > 20


def test_a_csv_backtest_knows_a_countrys_holidays_as_local_days(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    days = pd.date_range("2024-06-03", "2025-12-31", freq="D", tz="America/New_York")
    rng = np.random.default_rng(5)
    values = 1000 * np.array([1.0, 1.0, 1.0, 1.0, 1.1, 1.2, 0.9])[days.day_of_week]
    values = values * rng.normal(1, 0.02, len(days))
    for day in ("2024-11-28", "2024-12-25", "2025-11-27", "2025-12-25"):
        values[days.get_loc(pd.Timestamp(day, tz="America/New_York"))] *= 0.4
    csv = tmp_path / "revenue.csv"
    # local midnights written in UTC, as a warehouse export would have them
    pd.DataFrame({"timestamp": days.tz_convert("UTC"), "value": values}).to_csv(csv, index=False)
    assert main(["backtest", "--csv", str(csv)]) == 0
    plain = capsys.readouterr().out
    plot = tmp_path / "plot.png"
    assert main(["backtest", "--csv", str(csv), "--timezone", "America/New_York",
                 "--country", "US", "--plot", str(plot)]) == 0  # fmt: skip
    known = capsys.readouterr().out
    assert "2025-12-25" in plain and "2025-11-27" in plain
    assert "2025-12-25" not in known and "2025-11-27" not in known
    assert "America/New_York" in known or "EST" in known
    holiday = np.array([0x16, 0xA3, 0x4A]) / 255 * 0.15 + 0.85
    assert pixels_like(plot.read_bytes(), holiday, 0.02) > 200


def test_an_unknown_country_is_refused_by_name(
    tmp_path: Path, incident_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["backtest", "--csv", str(incident_csv), "--country", "XX"]) == 2
    assert "unknown country 'XX'" in capsys.readouterr().err


def test_a_checks_backtest_uses_its_calendar_and_the_events_recorded_in_the_store(
    tmp_path: Path, live_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from monitor.calendar.config import EventRequest, RecordedEvent

    assert backtest(live_config, "signups", "1d") == 0
    plain = capsys.readouterr().out
    assert "signups: alert at" in plain  # the demo's signup spike
    # an exclusion over the spike, recorded through the API into the daemon's store
    now = datetime.now(UTC)
    window = EventRequest.model_validate({
        "kind": "exclusion", "reason": "signup bot", "checks": ["signups"],
        "start": (now - timedelta(hours=8)).isoformat(), "end": (now + timedelta(hours=3)).isoformat(),
    })  # fmt: skip
    recorded = RecordedEvent.new(window, now)
    store = StateStore.open(StateConfig(path=str(tmp_path / "kpimon-state.db")))
    try:
        store.calendar.save(recorded.id, now, json.dumps(recorded.json()))
        plot = tmp_path / "signups.png"
        assert backtest(live_config, "signups", "1d", "--plot", str(plot)) == 0
    finally:
        store.close()
    excluded = capsys.readouterr().out
    assert "signups: alert at" not in excluded
    exclusion = np.array([0x6B, 0x72, 0x80]) / 255 * 0.15 + 0.85
    assert pixels_like(plot.read_bytes(), exclusion, 0.02) > 200


def test_answers_recorded_by_the_daemon_are_replayed_against_the_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the shop's visits collapsed five hours ago; its alert was answered as a false alarm two
    # hours after it began, FR's acknowledged; the daemon's state store holds both answers
    build_shop(tmp_path / "shop.duckdb", datetime.now(UTC))
    document = shop_document(tmp_path, SlackServer())  # Slack is not reached by a backtest
    config = write_config(tmp_path / "kpi.yaml", document)
    onset = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
    store = StateStore.open(StateConfig(path=str(tmp_path / "state.db")))
    answers: list[tuple[AlertRef, AnswerKind]] = [
        (AlertRef("visits", "", 1), "false_alarm"), (AlertRef("sales", "FR", 1), "acknowledge"),
    ]  # fmt: skip
    for ref, answer in answers:
        store.answers.record(Feedback(ref, answer, "U1", "ana", onset + timedelta(hours=3), onset), [])
    store.close()

    assert backtest(config, "visits", "2d", "--answers") == 0
    out = capsys.readouterr().out
    assert "(answered: false alarm)" in out
    assert "visits: 1 recorded answers replayed" in out
    assert "visits: 1 alerts with the answers (false_alarm), 1 without" in out
    assert backtest(config, "sales", "2d", "--answers") == 0
    out = capsys.readouterr().out
    assert "sales [FR]: 1 alerts with the answers (acknowledge), 1 without" in out
    assert "sales [DE]: 1 alerts with the answers (none), 1 without" in out
