"""The kpi-monitor command: tables, exit codes, precise errors without tracebacks."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from monitor.cli import main
from tests.conftest import demo_document, write_config
from tests.daemon_process import KPI_MONITOR


@pytest.fixture
def live_config(tmp_path: Path, live_demo_warehouse: Path) -> Path:
    shutil.copy(live_demo_warehouse, tmp_path / "demo.duckdb")
    return write_config(tmp_path / "kpi.yaml", demo_document(tmp_path))


def test_check_prints_a_table_and_exits_1_on_an_anomaly(
    live_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "-c", str(live_config)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "CHECK",
        "SEGMENT",
        "BUCKET",
        "(UTC)",
        "VALUE",
        "EXPECTED",
        "BAND",
        "SCORE",
        "STATUS",
    ]
    seg, bucket, status = (out[0].index(h) for h in ("SEGMENT", "BUCKET", "STATUS"))
    rows = {
        (line[:seg].strip(), line[seg:bucket].strip()): line[status:].strip() for line in out[1:]
    }
    assert rows[("revenue", "DE")] == "ANOMALY"
    assert rows[("revenue", "US")] == "ok"
    assert rows[("events_freshness", "")] == "ANOMALY"


def test_check_exits_0_when_all_is_normal(live_config: Path) -> None:
    assert (
        main(
            [
                "check",
                "-c",
                str(live_config),
                "--check",
                "orders_rows",
                "--check",
                "orders_freshness",
            ]
        )
        == 0
    )


def test_check_exits_2_on_an_error_or_unknown_check(
    tmp_path: Path, live_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "-c", str(live_config), "--check", "nope"]) == 2
    assert "no check named 'nope'" in capsys.readouterr().err
    document = yaml.safe_load(live_config.read_text())
    document["warehouse"]["path"] = str(tmp_path / "gone.duckdb")
    broken = write_config(tmp_path / "gone.yaml", document)
    assert main(["check", "-c", str(broken), "--check", "signups"]) == 2
    assert "ERROR: DuckDB file" in capsys.readouterr().out


def test_validate_and_connect(
    tmp_path: Path, live_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "-c", str(live_config), "--connect"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{live_config}: valid, 7 checks",
        "warehouse default (duckdb): ok",
    ]
    document = yaml.safe_load(live_config.read_text())
    document["warehouse"]["path"] = str(tmp_path / "gone.duckdb")
    assert (
        main(["validate", "-c", str(write_config(tmp_path / "gone.yaml", document)), "--connect"])
        == 2
    )
    assert "warehouse default (duckdb): FAILED: DuckDB file" in capsys.readouterr().out


def test_config_from_the_environment(live_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPIMON_CONFIG", str(live_config))
    assert main(["validate"]) == 0
    monkeypatch.delenv("KPIMON_CONFIG")
    assert main(["validate"]) == 2


def test_a_broken_config_stops_the_daemon_with_the_field_and_exit_2(
    tmp_path: Path, live_config: Path
) -> None:
    document = yaml.safe_load(live_config.read_text())
    document["checks"][3]["grain"] = "fortnight"
    config = write_config(tmp_path / "bad.yaml", document)
    result = subprocess.run(
        [KPI_MONITOR, "run", "-c", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"invalid configuration {config}:",
        "  checks[3].grain: Input should be 'hour' or 'day' (got 'fortnight')",
    ]
    assert "Traceback" not in result.stderr + result.stdout
